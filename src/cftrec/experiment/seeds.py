"""The experiment once per seed, and the spread and pooled paired differences over seeds."""

from __future__ import annotations

import statistics
from dataclasses import asdict, replace
from pathlib import Path

from ..errors import CftrecError
from ..files import read_json, write_json
from .pipeline import prepare_data, run_experiment, working_folder
from .settings import METRIC_COLUMNS, ExperimentSettings
from .steps import compare_step, outdated, run_step
from .tables import _difference, _format_p
from .variants import SELECTION_METRIC, best_llm_row_pairs, counterpart


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
    comparisons = {
        name: _pair(out, seeds, reference, name, settings) for name in names if name != reference
    }
    # cft against sft under the same guidance and decoding, and the LLM row with the best mean
    # NDCG@10 against SASRec (experiment/variants.py), pooled like the rest
    row_names = {m: settings.cft_run_name if m == "cft" else m for m in settings.methods}
    pairs = {}
    for name in names:
        other = counterpart(name, row_names, names)
        if other is not None and other != reference:
            pairs[f"{name} vs {other}"] = _pair(out, seeds, other, name, settings)
    if settings.guided and "sasrec" in names:
        pairs |= best_llm_row_pairs(
            names,
            lambda row: metrics[row].get(SELECTION_METRIC, {}).get("mean"),
            lambda a, b: _pair(out, seeds, a, b, settings),
        )
    summary = {
        "settings": {k: v for k, v in asdict(settings).items() if k != "seed"},
        "seeds": list(seeds),
        "data": str(data),
        "reference": reference,
        "metrics": metrics,
        "comparisons": comparisons,
        "pairs": pairs,
        # the guidance scale each LLM run chose on validation users, per seed
        "guidance": {
            str(seed): s["guidance"]
            for seed, s in zip(seeds, per_seed, strict=True)
            if s.get("guidance")
        },  # fmt: skip
        "timings_s": timings,
    }
    write_json(out / f"summary-seeds{settings.protocol()}.json", summary)
    return summary


def _pair(out: Path, seeds: list[int], a: str, b: str, settings: ExperimentSettings) -> dict:
    """Row b against row a, per seed and pooled over the seeds (`cftrec compare` with one run
    per seed on each side: each case averaged over the seeds, cases resampled)."""
    results = [settings.results_dir(out / f"seed-{seed}") for seed in seeds]
    per_seed = [compare_step(folder, a, b, settings.force)["metrics"] for folder in results]
    # named by its seeds: a pooled comparison over other seeds is another file, never reused
    pooled_over = "-".join(map(str, seeds))
    target = out / f"compare-{a}-vs-{b}-pooled-seeds-{pooled_over}{settings.protocol()}.json"
    sides = [
        arg
        for side, row in (("-a", a), ("-b", b))
        for folder in results
        for arg in (side, str(folder / row))
    ]
    again = settings.force or outdated(target, [f / row for f in results for row in (a, b)])
    run_step(
        f"Paired significance pooled over seeds {seeds}: {b} vs {a}",
        ["compare", *sides, "-o", str(target)] + (["--overwrite"] if again else []),
        target,
        again,
    )
    pooled = read_json(target)
    return {
        "per_seed": [
            {m: {k: row[k] for k in ("diff", "ci95", "p_value")} for m, row in seed_rows.items()}
            for seed_rows in per_seed
        ],
        "pooled": pooled,
        "same_sign": {
            m: len({_sign(seed_rows[m]["diff"]) for seed_rows in per_seed}) == 1
            for m in pooled["metrics"]
        },
    }


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), min, max and the values."""

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
    labelled = [(f"{method} - {reference}", c) for method, c in summary["comparisons"].items()]
    labelled += [(pair.replace(" vs ", " - "), c) for pair, c in summary.get("pairs", {}).items()]
    for label, comparison in labelled:
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
            lines.append("| " + " | ".join([label, name, *per_seed, pooled, same]) + " |")
    return "\n".join(lines)
