"""`cftrec demo`: the experiment, then diagnose, a sample recommendation, the HTML report, how
to serve."""

from __future__ import annotations

import time
from pathlib import Path

from .pipeline import ExperimentSettings, _model_flags, run_experiment, run_step
from .tables import summary_table


def run_demo(settings: ExperimentSettings, out_dir: str | Path) -> dict:
    """`cftrec demo`: the experiment, then diagnose, a sample recommendation, the HTML report
    (OUT/report.html), how to serve."""
    out = Path(out_dir)
    start = time.perf_counter()
    summary = run_experiment(settings, out)
    llm_runs = [m for m in ("cft", "sft") if m in settings.methods]
    data = summary["data"]
    if llm_runs:
        diagnose_args = [
            "diagnose",
            "--run",
            str(out / "runs" / llm_runs[0]),
            "--data",
            data,
            "--limit",
            str(settings.diagnose_limit or 50),
            "--beams",
            str(settings.beams),
            *_model_flags(settings),
            "-o",
            str(out / "diagnose"),
        ]
        if len(llm_runs) == 2:
            diagnose_args[3:3] = ["--compare-run", str(out / "runs" / llm_runs[1])]
        run_step(
            "Diagnose: how much does the output depend on the history?",
            diagnose_args,
            out / "diagnose" / "diagnose.json",
            settings.force,
        )
        run_step(
            "Recommend for one history",
            [
                "recommend",
                "--run",
                str(out / "runs" / llm_runs[0]),
                "-k",
                "5",
                *_model_flags(settings),
                "--history",
                *settings.sample_history,
            ],
        )
    report = out / "report.html"
    reference = summary["reference"]
    names = [reference, *(name for name in summary["metrics"] if name != reference)]
    report_args = ["report", *(str(out / "results" / name) for name in names), "-o", str(report)]
    if llm_runs:
        report_args += ["--diagnose", str(out / "diagnose")]
    run_step(
        f"One-page HTML report: every result against {reference}, curves, plots, settings",
        report_args + (["--overwrite"] if settings.force else []),  # the report made before
        report,
        settings.force,
    )
    table = summary_table(summary)
    (out / "summary.md").write_text(table + "\n", encoding="utf-8")
    print(
        f"\n==> Results on {summary['metrics'][settings.methods[0]]['num_cases']} test cases "
        f"(full ranking over distinct titles; paired permutation p-values)\n"
    )
    print(table)
    print(f"\nplots: {out}/results/*/popularity.png, {out}/diagnose/")
    if llm_runs:
        print(f"serve it: cftrec serve --run {out / 'runs' / llm_runs[0]} --port 8000")
    print(
        f"demo finished in {(time.perf_counter() - start) / 60:.1f} min; summary: {out}/summary.json"
    )
    print(f"report: {report} (open it in a browser)")
    return summary
