"""One experiment: prepare data, train pop / SASRec / sft / cft, evaluate all on the same test
cases, compare against sft with paired significance. Every step runs the real `cftrec` command
in a subprocess and prints it first; a step whose output already exists is skipped."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..errors import CftrecError
from ..files import check_output, mark_output, read_json, write_json
from .settings import ExperimentSettings
from .steps import _model_flags, compare_step, evaluate_step, run_step  # noqa: F401 (demo.py)
from .variants import SELECTION_METRIC, best_llm_row_pairs, counterpart, variant_rows


def working_folder(out: Path) -> Path:
    """The experiment's folder: new, empty or an earlier experiment's (never a folder that
    cftrec did not write); marked as the demo's, as `cftrec demo` writes it."""
    check_output(out, "demo")
    return mark_output(out, "demo")


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

    runs, results = out / "runs", settings.results_dir(out)
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
                "--resume",  # a training stopped in an earlier session continues
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
        timings[f"evaluate {name}"] = evaluate_step(
            settings, data, run, results / name,
            f"Evaluate {name} on the test cases (full ranking over distinct titles)",
            ["--decoding", settings.decoding, "--beams", str(settings.beams)],
        )  # fmt: skip
    rows, guidance = variant_rows(settings, data, names, out, timings)

    comparisons, pairs = {}, {}
    reference = "sft" if "sft" in names else names[settings.methods[0]]
    every_row = [*names.values(), *rows]
    for name in every_row:
        if name != reference:
            comparisons[name] = compare_step(results, reference, name, force)
    # cft against sft with the same guidance and decoding; the best LLM row against SASRec
    for name in rows:
        other = counterpart(name, names, every_row)
        if other is not None and other != reference:
            pairs[f"{name} vs {other}"] = compare_step(results, other, name, force)
    if settings.guided and "sasrec" in names:
        pairs |= best_llm_row_pairs(
            every_row,
            lambda row: read_json(results / row / "results.json")["metrics"].get(SELECTION_METRIC),
            lambda a, b: compare_step(results, a, b, force),
        )

    # A step an earlier invocation did keeps the time it took then (None: not known).
    earlier = out / f"summary{settings.protocol()}.json"
    if earlier.exists():
        before = read_json(earlier).get("timings_s", {})
        timings = {step: before.get(step) if t is None else t for step, t in timings.items()}
    summary = {
        "settings": asdict(settings),
        "data": str(data),
        "reference": reference,
        "metrics": {n: read_json(results / n / "results.json") for n in every_row},
        "comparisons": comparisons,
        "pairs": pairs,
        "guidance": guidance,
        "timings_s": timings,
    }
    write_json(out / f"summary{settings.protocol()}.json", summary)
    return summary
