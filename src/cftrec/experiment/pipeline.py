"""One experiment: prepare data, train pop / SASRec / sft / cft, evaluate all on the same test
cases, compare against sft with paired significance. Every step runs the real `cftrec` command
in a subprocess and prints it first; a step whose output already exists is skipped."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import CftrecError
from ..files import check_output, mark_output, read_json, write_json
from ..training.settings import DEFAULT_ALPHA, DEFAULT_BETA

# The metrics the CFT/D3 papers report (10-beam lists decide K <= 10 only; "n/a" where the
# lists are shorter than K).
METRIC_COLUMNS = ("ndcg@5", "ndcg@10", "hr@5", "hr@10")


@dataclass
class ExperimentSettings:
    """What to run. Defaults are the demo's budget on MovieLens-100k with the bundled model."""

    data_source: str = "movielens-100k"  # "movielens-100k" (fetched) or "prepared:PATH"
    model: str = "bundled:smollm2-135m"
    methods: tuple[str, ...] = ("pop", "sasrec", "sft", "cft")
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
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
