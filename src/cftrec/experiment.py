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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .errors import CftrecError
from .files import check_output, mark_output, read_json, write_json

# The metrics the CFT/D3 papers report (10-beam lists decide K <= 10 only; "n/a" where the
# lists are shorter than K).
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
    max_eval_samples: int | None = None  # validation samples (None: cftrec train's default)
    epochs: float = 1.0
    batch_size: int = 8
    learning_rate: float = 1e-3
    eval_limit: int | None = 200
    beams: int = 10  # the published D3/CFT protocol the suite is set beside (not DEFAULT_BEAMS)
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
    threads: int | None = None  # --threads of every step that runs a model (None: its default)


def _cftrec() -> list[str]:
    return [sys.executable, "-m", "cftrec"]


def _model_flags(settings: ExperimentSettings) -> list[str]:
    """What every step that runs a model is given besides its own options."""
    return ["--threads", str(settings.threads)] if settings.threads else []


def working_folder(out: Path) -> Path:
    """The experiment's folder: new, empty or an earlier experiment's (never a folder that
    cftrec did not write); marked as the demo's, as `cftrec demo` writes it."""
    check_output(out, "demo")
    return mark_output(out, "demo")


def run_step(
    title: str,
    args: list[str],
    output: Path | None = None,
    force: bool = False,
    launcher: tuple[str, ...] = (),
) -> float | None:
    """Print and run one `cftrec` command and return its wall seconds; skip it (None) when
    `output` (the file that marks the step complete: a run's run.json, an evaluation's
    results.json) already exists."""
    shown = "cftrec " + " ".join(shlex.quote(a) for a in args)
    print(f"\n==> {title}\n$ {shown}", flush=True)
    if output is not None and output.exists() and not force:
        print(f"    (already done: {output} exists; skipping)", flush=True)
        return None
    start = time.perf_counter()
    command = [*launcher, "-m", "cftrec", *args] if launcher else [*_cftrec(), *args]
    result = subprocess.run(command, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise CftrecError(f"step '{title}' failed (exit {result.returncode}): {shown}")
    elapsed = time.perf_counter() - start
    print(f"    done in {elapsed:.0f} s", flush=True)
    return elapsed


def prepare_data(settings: ExperimentSettings, out: Path, timings: dict[str, float | None]) -> Path:
    """The prepared dataset of `settings.data_source` (fetched and prepared under `out`)."""
    force = settings.force
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
    return data


def run_experiment(settings: ExperimentSettings, out_dir: str | Path) -> dict:
    """Run the pipeline into `out_dir`; return (and write to out_dir/summary.json) the table."""
    out = working_folder(Path(out_dir))
    force = settings.force
    timings: dict[str, float | None] = {}
    data = prepare_data(settings, out, timings)
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
                    *_model_flags(settings),
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
            if settings.max_eval_samples is not None:
                train_args += ["--max-eval-samples", str(settings.max_eval_samples)]
            train_args += [*settings.extra_train_args, *_model_flags(settings)]
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
            *_model_flags(settings),
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
            ["compare", str(results / reference), str(results / name), "-o", str(target)]
            + (["--overwrite"] if force else []),  # the file this experiment wrote before
            target,
            force,
        )
        comparisons[name] = read_json(target)

    # A step an earlier invocation did keeps the time it took then (None: not known).
    earlier = out / "summary.json"
    if earlier.exists():
        before = read_json(earlier).get("timings_s", {})
        timings = {step: before.get(step) if t is None else t for step, t in timings.items()}
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
        cells += [f"{metrics[name]:.4f}" if name in metrics else "n/a" for name in METRIC_COLUMNS]
        cells += [f"{results['coverage@10']:.3f}", f"{results['mean_popularity@10']:.0f}"]
        comparison = summary["comparisons"].get(method)
        if comparison is None:
            cells.append("reference")
        else:
            cells.append(_difference(comparison["metrics"].get("ndcg@10")))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _difference(row: dict | None) -> str:
    """B - A [95% CI], p; "n/a" for a metric that was not compared (lists too short)."""
    if row is None:
        return "n/a"
    low, high = row["ci95"]
    return f"{row['diff']:+.4f} [{low:+.4f}, {high:+.4f}], p={_format_p(row['p_value'])}"


def run_seeds(settings: ExperimentSettings, out_dir: str | Path, seeds: list[int]) -> dict:
    """The experiment once per seed (every method trains and evaluates with that seed, in
    out_dir/seed-N, on the same data and test cases), then per method and metric the mean and
    spread over the seeds, and per method the paired difference to the reference (sft) per
    seed and pooled over the seeds (`cftrec compare` with one run per seed on each side: each
    case averaged over the seeds, cases resampled)."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise CftrecError(f"--seeds needs distinct seeds, got {seeds}")
    out = working_folder(Path(out_dir))
    timings: dict[str, float | None] = {}
    data = prepare_data(settings, out, timings)
    per_seed = [
        run_experiment(
            replace(settings, seed=seed, data_source=f"prepared:{data}"), out / f"seed-{seed}"
        )
        for seed in seeds
    ]
    for seed, summary in zip(seeds, per_seed, strict=True):
        timings |= {f"seed {seed} {step}": s for step, s in summary["timings_s"].items()}
    reference = per_seed[0]["reference"]
    names = list(per_seed[0]["metrics"])
    metrics = {}
    for name in names:
        runs = [summary["metrics"][name] for summary in per_seed]
        shared = set.intersection(*(set(r["metrics"]) for r in runs))
        metrics[name] = {
            "num_cases": runs[0]["num_cases"],
            **{m: spread([r["metrics"][m] for r in runs]) for m in runs[0]["metrics"] if m in shared},
        }  # fmt: skip
    comparisons = {}
    for name in names:
        if name == reference:
            continue
        target = out / f"compare-{reference}-vs-{name}-pooled.json"
        sides = [
            arg
            for side, method in (("-a", reference), ("-b", name))
            for seed in seeds
            for arg in (side, str(out / f"seed-{seed}" / "results" / method))
        ]
        run_step(
            f"Paired significance pooled over seeds {seeds}: {name} vs {reference}",
            ["compare", *sides, "-o", str(target)] + (["--overwrite"] if settings.force else []),
            target,
            settings.force,
        )
        pooled = read_json(target)
        rows = [summary["comparisons"][name]["metrics"] for summary in per_seed]
        comparisons[name] = {
            "per_seed": [
                {m: {k: row[k] for k in ("diff", "ci95", "p_value")} for m, row in seed_rows.items()}
                for seed_rows in rows
            ],
            "pooled": pooled,
            "same_sign": {
                m: len({_sign(seed_rows[m]["diff"]) for seed_rows in rows}) == 1
                for m in pooled["metrics"]
            },
        }  # fmt: skip
    summary = {
        "settings": {k: v for k, v in asdict(settings).items() if k != "seed"},
        "seeds": list(seeds),
        "data": str(data),
        "reference": reference,
        "metrics": metrics,
        "comparisons": comparisons,
        "timings_s": timings,
    }
    write_json(out / "summary-seeds.json", summary)
    return summary


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), min, max and the values."""
    import statistics

    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def seeds_table(summary: dict) -> str:
    """Markdown: per method the mean +- standard deviation of each metric over the seeds; per
    method compared with the reference the ndcg@10 and hr@10 differences (with p), per seed
    and pooled."""
    seeds, reference = summary["seeds"], summary["reference"]
    header = ["method", "cases", *(f"{m} (mean ± sd)" for m in METRIC_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, metrics in summary["metrics"].items():
        cells = [method, str(metrics["num_cases"])]
        for name in METRIC_COLUMNS:
            value = metrics.get(name)
            std = "" if value is None or value["std"] is None else f" ± {value['std']:.4f}"
            cells.append("n/a" if value is None else f"{value['mean']:.4f}{std}")
        lines.append("| " + " | ".join(cells) + " |")
    header = ["B - A", "metric", *(f"seed {s}" for s in seeds), "pooled", "same sign"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, comparison in summary["comparisons"].items():
        for name in ("ndcg@10", "hr@10"):
            row = comparison["pooled"]["metrics"].get(name)
            per_seed = [
                f"{rows[name]['diff']:+.4f} (p={_format_p(rows[name]['p_value'])})"
                if row
                else "n/a"
                for rows in comparison["per_seed"]
            ]
            pooled = _difference(row)
            same = "n/a" if row is None else "yes" if comparison["same_sign"][name] else "no"
            lines.append(
                "| " + " | ".join([f"{method} - {reference}", name, *per_seed, pooled, same]) + " |"
            )
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
