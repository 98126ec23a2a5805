"""Does CFT beat plain fine-tuning? The accuracy suite, one command per scale.

    python benchmarks/accuracy/run.py cpu-small            # MovieLens-100k, about an hour on 2 CPU cores
    python benchmarks/accuracy/run.py gpu --out $OUT       # one GPU, about 9 minutes (see gpu.sh)
    python benchmarks/accuracy/run.py tiny --model PATH    # dry run of the whole suite in minutes
    python benchmarks/accuracy/run.py sweep --alphas 0.05 0.1 0.2 --betas 0.25 0.5
    python benchmarks/accuracy/run.py cpu-small --seeds 1 2 3   # every method once per seed

Each run writes benchmarks/results/accuracy-<scale>.json and .md (machine, date, commit, data,
every setting, the metrics of every method, and cft vs sft paired significance). With --seeds
it writes accuracy-<scale>-seeds.json and .md instead: the seeds (under "seeds"), per method
and metric the mean, standard deviation, min, max and per-seed values, and per method the
paired difference to sft per seed and pooled over the seeds (each test case averaged over the
seeds, then the paired bootstrap and sign-flip test over cases; see cftrec compare).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from cftrec.experiment import (  # noqa: E402
    ExperimentSettings,
    run_experiment,
    run_seeds,
    seeds_table,
    summary_table,
)

SCALES = {
    # About an hour on this 2-core CPU: LoRA on the bundled model, every test user, 10 beams.
    "cpu-small": ExperimentSettings(
        max_train_samples=512,
        epochs=1,
        batch_size=8,
        eval_limit=None,
        beams=10,
        diagnose_limit=100,
    ),
    # One H100/H200 in about 9 minutes: every train sample, one epoch, every test user.
    "gpu": ExperimentSettings(
        max_train_samples=None,
        epochs=1,
        batch_size=64,
        learning_rate=5e-4,
        eval_limit=None,
        beams=10,
        eval_batch_size=64,
        dtype="bfloat16",
        diagnose_limit=200,
    ),
    # A dry run of the whole suite in a few minutes (use a tiny --model).
    "tiny": ExperimentSettings(
        max_train_samples=16,
        epochs=1,
        batch_size=4,
        eval_limit=12,
        beams=4,
        sasrec_epochs=2,
        diagnose_limit=8,
    ),
}


def machine_description() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    except ImportError:
        pass
    import os

    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def git_commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return result.stdout.strip() or "unknown"


def guidance_lines(summary: dict) -> list[str]:
    """The guidance scale each LLM run chose, with the validation NDCG@10 of every grid point."""
    per_seed = summary.get("guidance") or {}
    if per_seed and "chosen" in next(iter(per_seed.values()), {}):  # one experiment, no seeds
        per_seed = {"": per_seed}
    lines = []
    for seed, runs in per_seed.items():
        for run, choice in runs.items():
            grid = ", ".join(f"{scale} {score:.4f}" for scale, score in choice["scores"].items())
            lines.append(
                f"- guidance {run}{f' seed {seed}' if seed else ''}: scale {choice['chosen']:g} "
                f"chosen on {choice['validation_users']} validation users ({choice['metric']} "
                f"per scale: {grid})"
            )
    return lines


def record(name: str, summary: dict, results_dir: Path, table: str) -> None:
    header = {
        "scale": name,
        "machine": machine_description(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {**header, **summary}
    (results_dir / f"accuracy-{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = [
        f"# Accuracy: {name}",
        "",
        f"- machine: {header['machine']}",
        f"- date: {header['date']}, commit {header['commit']}",
        f"- data: {summary['data']}",
        f"- settings: `{json.dumps(summary['settings'])}`",
        *([f"- seeds: {', '.join(map(str, summary['seeds']))}"] if "seeds" in summary else []),
        *guidance_lines(summary),
        "- wall time (s): "
        + ", ".join(
            f"{step} {'reused' if seconds is None else f'{seconds:.0f}'}"
            for step, seconds in summary["timings_s"].items()
        ),
        "",
        "Full ranking over the distinct titles; LLM runs list `beams` titles (metrics at K above "
        "that are not reported). p: paired sign-flip permutation test over the same cases; "
        "interval: paired bootstrap 95%"
        + (
            "; pooled: each case averaged over the seeds, then the same test over cases."
            if "seeds" in summary
            else "."
        ),
        "",
        table,
        "",
    ]
    (results_dir / f"accuracy-{name}.md").write_text("\n".join(lines))
    print(f"\nrecorded {results_dir / f'accuracy-{name}.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scale", choices=[*SCALES, "sweep"])
    parser.add_argument("--out", default=None, help="working folder (default runs-accuracy/SCALE)")
    parser.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--model", default=None, help="override the model (hub id, path)")
    parser.add_argument("--data", default=None, help="a prepared dataset instead of ML-100k")
    parser.add_argument(
        "--base-scale",
        default="cpu-small",
        choices=list(SCALES),
        help="budget used by each sweep point",
    )
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--betas", type=float, nargs="+", default=[0.25, 0.5, 0.9])
    parser.add_argument("--force", action="store_true", help="redo steps whose outputs exist")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="train and evaluate once per seed"
    )
    parser.add_argument(
        "--methods", nargs="+", default=None, choices=["pop", "sasrec", "sft", "cft"],
        help="methods to run (default: all four)",
    )  # fmt: skip
    parser.add_argument(
        "--guided", action="store_true",
        help="add sft+g and cft+g: D3 guidance by the suite's SASRec, the scale chosen on "
        "validation users (--guidance-scales, --guidance-valid-users)",
    )  # fmt: skip
    parser.add_argument("--guidance-scales", type=float, nargs="+", default=None)
    parser.add_argument("--guidance-valid-users", type=int, default=None)
    parser.add_argument(
        "--extra-decodings", nargs="+", default=None, metavar="beam:N|exact",
        help="also evaluate every LLM row with these decodings (e.g. beam:50 exact)",
    )  # fmt: skip
    parser.add_argument(
        "--extra-decodings-rows", choices=["all", "guided"], default="all",
        help="which LLM rows get --extra-decodings (guided: sft+g and cft+g only)",
    )  # fmt: skip
    parser.add_argument(
        "--sample", type=int, default=None,
        help="evaluate the test cases of a seeded sample of N users (e.g. 2000 on Amazon Toys)",
    )  # fmt: skip
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of --sample")
    parser.add_argument(
        "--exclude-history", action="store_true",
        help="every row ranks without the case's history titles (its own results folders and "
        "table, the runs shared with the history-kept protocol)",
    )  # fmt: skip
    parser.add_argument(
        "--table", default=None,
        help="name of the results table (accuracy-NAME.json/.md; default from the scale)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads of every step that runs a model (1: run suites side by side)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.seeds and args.scale == "sweep":
        parser.error("--seeds works with a scale, not with the sweep")

    base = SCALES[args.base_scale if args.scale == "sweep" else args.scale]
    overrides = {"force": args.force}
    if args.model:
        overrides["model"] = args.model
    if args.data:
        overrides["data_source"] = f"prepared:{args.data}"
    if args.methods:
        overrides["methods"] = tuple(args.methods)
    if args.guided:
        overrides["guided"] = True
    if args.guidance_scales:
        overrides["guidance_scales"] = tuple(args.guidance_scales)
    if args.guidance_valid_users:
        overrides["guidance_valid_users"] = args.guidance_valid_users
    if args.extra_decodings:
        overrides["extra_decodings"] = tuple(args.extra_decodings)
        overrides["extra_decodings_rows"] = args.extra_decodings_rows
    if args.threads:
        overrides["threads"] = args.threads
    if args.sample:
        overrides |= {"eval_sample": args.sample, "eval_sample_seed": args.sample_seed}
    if args.exclude_history:
        overrides["exclude_history"] = True
    settings = replace(base, **overrides)
    out = Path(args.out or ROOT / "runs-accuracy" / args.scale)

    if args.seeds:
        summary = run_seeds(settings, out, args.seeds)
        # the guided suite is its own table; it never replaces the plain one
        name = args.table or (
            f"{args.scale}-guided-seeds" if args.guided else f"{args.scale}-seeds"
        )
        record(name + settings.protocol(), summary, Path(args.results_dir), seeds_table(summary))
        return
    if args.scale != "sweep":
        summary = run_experiment(settings, out)
        record(
            (args.table or (f"{args.scale}-guided" if args.guided else args.scale))
            + settings.protocol(),
            summary,
            Path(args.results_dir),
            summary_table(summary),
        )
        return

    # The sweep runs sft once (the first point trains it; the others find it complete), then
    # cft for every (alpha, beta), in sequence, all in one working folder.
    rows = []
    for alpha in args.alphas:
        for beta in args.betas:
            name = f"cft-a{alpha}-b{beta}"
            point = replace(
                settings, alpha=alpha, beta=beta, methods=("sft", "cft"), cft_run_name=name
            )
            summary = run_experiment(point, out)
            rows.append({"alpha": alpha, "beta": beta, **summary["metrics"][name]["metrics"]})
    sweep = {"settings": settings.__dict__ | {"methods": ["sft", "cft"]}, "points": rows}
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.results_dir) / "accuracy-sweep.json").write_text(json.dumps(sweep, indent=2))
    header = "| alpha | beta | ndcg@10 | hr@10 |\n|---|---|---|---|"
    body = "\n".join(
        f"| {r['alpha']} | {r['beta']} | "
        + " | ".join(f"{r[m]:.4f}" if m in r else "n/a" for m in ("ndcg@10", "hr@10"))
        + " |"
        for r in rows
    )
    print(header + "\n" + body)


if __name__ == "__main__":
    main()
