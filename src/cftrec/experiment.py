"""The whole job end to end: prepare data, train pop / SASRec / sft / cft, evaluate all on the
same test cases, compare against sft with paired significance, diagnose, recommend.

One pipeline serves `cftrec demo` (small, about 15 minutes on 2 CPU cores) and the accuracy
suite in benchmarks/accuracy/ (larger budgets, GPU). Every step runs the real `cftrec` command
in a subprocess and prints it first, so the output doubles as a tutorial; a step whose output
already exists is skipped (delete the folder or pass force=True to redo it).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import CftrecError
from .io import read_json, write_json

# The metrics the CFT/D3 papers report; beam search lists only `beams` titles, so @20/@50 are
# left to the per-run reports.
METRIC_COLUMNS = ("ndcg@5", "ndcg@10", "hr@5", "hr@10")


@dataclass
class ExperimentSettings:
    """What to run. Defaults are the demo's budget on MovieLens-100k with the bundled model."""

    data_source: str = "movielens-100k"  # "movielens-100k" (fetched) or "prepared:PATH"
    model: str = "bundled:smollm2-135m"
    methods: tuple[str, ...] = ("pop", "sasrec", "sft", "cft")
    alpha: float = 0.1
    beta: float = 0.25
    lora: bool = True
    max_train_samples: int | None = 256
    max_eval_samples: int = 128  # validation samples for the validation loss / early stopping
    epochs: float = 1.0
    batch_size: int = 8
    learning_rate: float = 1e-3
    eval_limit: int | None = 200
    beams: int = 10
    eval_batch_size: int = 8  # test cases decoded together
    decoding: str = "beam"
    sasrec_epochs: int = 30
    cft_run_name: str = "cft"  # folder/row name of the cft run (a sweep names each point)
    seed: int = 42
    dtype: str = "float32"
    extra_train_args: tuple[str, ...] = ()
    diagnose_limit: int | None = 50
    sample_history: tuple[str, ...] = ("Toy Story (1995)", "Heat (1995)", "Fargo (1996)")
    force: bool = False
    launcher: tuple[str, ...] = field(default_factory=tuple)  # e.g. ("accelerate", "launch")


def _cftrec() -> list[str]:
    return [sys.executable, "-m", "cftrec"]


def run_step(
    title: str,
    args: list[str],
    output: Path | None = None,
    force: bool = False,
    launcher: tuple[str, ...] = (),
) -> float:
    """Print and run one `cftrec` command; skip it when `output` (the file that marks the step
    complete: a run's run.json, an evaluation's results.json) already exists."""
    shown = "cftrec " + " ".join(shlex.quote(a) for a in args)
    print(f"\n==> {title}\n$ {shown}", flush=True)
    if output is not None and output.exists() and not force:
        print(f"    (already done: {output} exists; skipping)", flush=True)
        return 0.0
    start = time.perf_counter()
    command = [*launcher, "-m", "cftrec", *args] if launcher else [*_cftrec(), *args]
    result = subprocess.run(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise CftrecError(f"step '{title}' failed (exit {result.returncode}): {shown}")
    elapsed = time.perf_counter() - start
    print(f"    done in {elapsed:.0f} s", flush=True)
    return elapsed


def run_experiment(settings: ExperimentSettings, out_dir: str | Path) -> dict:
    """Run the pipeline into `out_dir`; return (and write to out_dir/summary.json) the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    force = settings.force
    timings: dict[str, float] = {}

    if settings.data_source == "movielens-100k":
        raw = out / "raw" / "ml-100k"
        data = out / "data" / "ml100k"
        timings["fetch"] = run_step(
            "Fetch MovieLens-100k (from the recbole wheel on PyPI)",
            ["data", "fetch", "movielens-100k", "-o", str(raw)],
            raw,
            force,
        )
        timings["prepare"] = run_step(
            "Prepare: titles, leave-one-out split, samples with up to 10 history items",
            ["data", "prepare", "recbole", str(raw), "-o", str(data), "--split", "loo"],
            data,
            force,
        )
    elif settings.data_source.startswith("prepared:"):
        data = Path(settings.data_source.removeprefix("prepared:"))
    else:
        raise CftrecError(f"unknown data source {settings.data_source!r}")
    run_step("Dataset statistics", ["data", "stats", str(data)])

    runs, results = out / "runs", out / "results"
    limit = ["--limit", str(settings.eval_limit)] if settings.eval_limit else []
    names = {m: settings.cft_run_name if m == "cft" else m for m in settings.methods}
    for method, name in names.items():
        run = runs / name
        if method == "pop":
            timings["train pop"] = run_step(
                "Popularity baseline",
                ["baseline", "pop", "--data", str(data), "-o", str(run)],
                run / "run.json",
                force,
            )
        elif method == "sasrec":
            timings["train sasrec"] = run_step(
                "SASRec baseline (full-softmax cross-entropy, early stopping on valid NDCG@10)",
                [
                    "baseline",
                    "sasrec",
                    "--data",
                    str(data),
                    "-o",
                    str(run),
                    "--epochs",
                    str(settings.sasrec_epochs),
                    "--seed",
                    str(settings.seed),
                ],
                run / "run.json",
                force,
            )
        else:
            train_args = [
                "train",
                "--data",
                str(data),
                "--model",
                settings.model,
                "--method",
                method,
                "--alpha",
                str(settings.alpha),
                "--beta",
                str(settings.beta),
                "--epochs",
                str(settings.epochs),
                "--batch-size",
                str(settings.batch_size),
                "--learning-rate",
                str(settings.learning_rate),
                "--seed",
                str(settings.seed),
                "--dtype",
                settings.dtype,
                "-o",
                str(run),
            ]
            if settings.lora:
                train_args.append("--lora")
            if settings.max_train_samples:
                train_args += ["--max-train-samples", str(settings.max_train_samples)]
            train_args += ["--max-eval-samples", str(settings.max_eval_samples)]
            train_args += list(settings.extra_train_args)
            label = (
                "BIGRec baseline (sft)" if method == "sft" else "Counterfactual fine-tuning (cft)"
            )
            timings[f"train {name}"] = run_step(
                f"Train {label} on {settings.model}",
                train_args,
                run / "run.json",
                force,
                settings.launcher,
            )
        eval_args = [
            "evaluate",
            "--run",
            str(run),
            "--data",
            str(data),
            "--split",
            "test",
            "--decoding",
            settings.decoding,
            "--beams",
            str(settings.beams),
            *limit,
            "--batch-size",
            str(settings.eval_batch_size),
            "-o",
            str(results / name),
        ]
        timings[f"evaluate {name}"] = run_step(
            f"Evaluate {name} on the test cases (full ranking over distinct titles)",
            eval_args,
            results / name / "results.json",
            force,
            settings.launcher,
        )

    comparisons = {}
    reference = "sft" if "sft" in names else names[settings.methods[0]]
    for name in names.values():
        if name == reference:
            continue
        target = results / f"compare-{reference}-vs-{name}.json"
        run_step(
            f"Paired significance: {name} vs {reference}",
            ["compare", str(results / reference), str(results / name), "-o", str(target)],
            target,
            force,
        )
        comparisons[name] = read_json(target)

    summary = {
        "settings": asdict(settings),
        "data": str(data),
        "reference": reference,
        "metrics": {n: read_json(results / n / "results.json") for n in names.values()},
        "comparisons": comparisons,
        "timings_s": timings,
    }
    write_json(out / "summary.json", summary)
    return summary


def _format_p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def summary_table(summary: dict) -> str:
    """Markdown: one row per method with its metrics, and each metric's difference to the
    reference (sft) with the paired 95% interval and p-value."""
    reference = summary["reference"]
    header = [
        "method",
        "cases",
        *METRIC_COLUMNS,
        "coverage@10",
        "mean pop@10",
        f"ndcg@10 vs {reference} (95% CI, p)",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, results in summary["metrics"].items():
        metrics = results["metrics"]
        cells = [method, str(results["num_cases"])]
        cells += [f"{metrics[name]:.4f}" for name in METRIC_COLUMNS]
        cells += [f"{results['coverage@10']:.3f}", f"{results['mean_popularity@10']:.0f}"]
        comparison = summary["comparisons"].get(method)
        if comparison is None:
            cells.append("reference")
        else:
            row = comparison["metrics"]["ndcg@10"]
            low, high = row["ci95"]
            cells.append(
                f"{row['diff']:+.4f} [{low:+.4f}, {high:+.4f}], p={_format_p(row['p_value'])}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_demo(settings: ExperimentSettings, out_dir: str | Path) -> dict:
    """`cftrec demo`: the experiment, then diagnose, a sample recommendation, how to serve."""
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
                "--history",
                *settings.sample_history,
            ],
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
    return summary
