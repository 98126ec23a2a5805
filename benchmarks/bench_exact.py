"""Exact decoding (`--decoding exact`) against beam search and exhaustive scoring, on one run.

The cases are those `cftrec evaluate --check-search N` picks (a seeded sample of the test case
ids). Each case is ranked exactly by exhaustive scoring (the oracle; cached with
`--exact-cache`, as bench_search_error.py does), then decoded by exact top-K and by beam search
with each beam count, in batches of `--batch-size` as `cftrec evaluate` runs them. Per method:
wall and process CPU seconds per case, peak resident memory of the decoding, the share of
cases whose top K differs from the exhaustive top K (search error; ties within 1e-4 nats
count as equal); for exact also the prefixes it fed the model per case. `--bound-widths`
adds exact rows whose bound comes from a beam search of that many beams (the default is
exact.bound_beams(K)): how the bound's width trades its search against the walk.

    .venv/bin/python benchmarks/bench_exact.py --run RUN --data DIR \
        [--cases 20] [--k 10] [--beams 10 50 100] [--bound-widths 20 100] [--threads 1] \
        [--exact-cache FILE [--read-caches FILE...]] [--oracle-part I/N] [--out FILE]

The oracle dominates on a large catalogue (about 650 CPU s per case on Amazon Toys). To spread
it over N processes, run N with `--oracle-part I/N` (I = 0..N-1), each with its own
`--exact-cache` and the others' as `--read-caches`: each scores the cases at positions I, I + N,
... that no cache holds, and stops. Then one run with all the caches times the decodings.

Results: benchmarks/results/exact.json (or --out); the .md is written by hand from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_search_error import clock, exact_rankings, since  # noqa: E402

from cftrec.data.dataset import DEFAULT_MAX_HISTORY, Dataset  # noqa: E402
from cftrec.decoding.beam import constrained_beam_search  # noqa: E402
from cftrec.decoding.exact import ExactStats, exact_top_k  # noqa: E402
from cftrec.decoding.recommender import LLMRecommender  # noqa: E402
from cftrec.evaluation.evaluate import evaluation_cases  # noqa: E402
from cftrec.evaluation.search_check import checked_case_ids  # noqa: E402
from cftrec.runs.info import read_run_info  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "exact.json"
TIE = 1e-4  # nats: scores this close are a tie, whose order no search can be blamed for


def reset_peak_memory() -> None:
    """Reset the process's peak resident set (Linux: VmHWM), so the next reading is this
    method's own peak."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def differs(found: list[int], exact_scores: torch.Tensor, k: int) -> bool:
    """Whether a top-k list is not the exact top k: a title is missing whose score beats the
    list's worst by more than a tie, or the list is out of order beyond ties."""
    best = exact_scores.topk(k).values
    scores = exact_scores[found[:k]] if found else torch.empty(0)
    if len(scores) < k:
        return True
    return bool(((best - scores).abs() > TIE).any())


def decode(method, recommender, prompts, k, width, stats):
    args = (recommender.model, prompts, recommender.trie)
    if method == "exact":  # width: the bound's beams (None: the default)
        titles, _ = exact_top_k(*args, k, recommender.pad_id, stats=stats, bound_width=width)
    else:
        titles, _ = constrained_beam_search(*args, width, recommender.pad_id)
    return [[t for t in row if t >= 0] for row in titles.tolist()]


def oracle_part(text: str) -> tuple[int, int]:
    index, _, parts = text.partition("/")
    if not (index.isdigit() and parts.isdigit() and int(index) < int(parts)):
        raise argparse.ArgumentTypeError(f"{text!r}: use I/N with 0 <= I < N")
    return int(index), int(parts)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--beams", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--bound-widths", type=int, nargs="*", default=[])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact-cache", type=Path)
    parser.add_argument("--read-caches", type=Path, nargs="*", default=[])
    parser.add_argument("--oracle-part", type=oracle_part, help="I/N: score a share, then stop")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default {RESULTS.name}")
    args = parser.parse_args()
    if args.oracle_part and args.exact_cache is None:
        parser.error("--oracle-part keeps its share in --exact-cache: give one")
    torch.set_num_threads(args.threads)

    info = read_run_info(args.run)
    dataset = Dataset.load(args.data)
    all_cases = evaluation_cases(dataset, "test", info.get("max_history") or DEFAULT_MAX_HISTORY)
    chosen = checked_case_ids([c for c, _ in all_cases], args.cases, args.seed)
    cases = [(case_id, sample) for case_id, sample in all_cases if case_id in chosen]
    recommender = LLMRecommender.from_run(args.run, batch_size=args.batch_size)
    if args.oracle_part:
        exact_rankings(recommender, cases, args.exact_cache, args.read_caches, args.oracle_part)
        return
    oracle, oracle_timing = exact_rankings(recommender, cases, args.exact_cache, args.read_caches)

    histories = [list(sample.history) for _, sample in cases]
    prompts = recommender.prompts(histories)
    rows = []
    methods = [("exact", None), *(("exact", w) for w in args.bound_widths),
               *(("beam", w) for w in args.beams)]  # fmt: skip
    for method, width in methods:
        stats = ExactStats()
        lists: list[list[int]] = []
        reset_peak_memory()
        start = clock()
        for first in range(0, len(prompts), args.batch_size):
            batch = prompts[first : first + args.batch_size]
            lists += decode(method, recommender, batch, args.k, width, stats)
        wall, cpu = since(start)
        errors = sum(differs(found, oracle[i], args.k) for i, found in enumerate(lists))
        row = {
            "method": method if width is None else f"{method} {width}",
            "cpu_s_per_case": round(cpu / len(cases), 3),
            "wall_s_per_case": round(wall / len(cases), 3),
            "peak_rss_mb": round(peak_memory_mb(), 1),
            f"top{args.k}_differs": errors,
            "search_error_share": round(errors / len(cases), 3),
        }
        if method == "exact":
            row["prefixes_per_case"] = round(stats.prefixes / len(cases), 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    exhaustive = {"method": "exhaustive", **{k: round(v, 3) for k, v in oracle_timing.items()}}
    exact = rows[0]
    report = {
        "benchmark": "bench_exact.py",
        "date": date.today().isoformat(),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
        ).stdout.strip(),  # fmt: skip
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores",
        "threads": args.threads,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "run": str(args.run),
        "run_info": {k: info.get(k) for k in ("method", "base_model", "summary")},
        "data": str(args.data),
        "data_fingerprint": dataset.fingerprint,
        "titles": len(recommender.catalog.titles),
        "trie_nodes": recommender.trie.num_nodes,
        "cases": len(cases),
        "case_ids": [case_id for case_id, _ in cases],
        "k": args.k,
        "batch_size": args.batch_size,
        "rows": [*rows, exhaustive],
        "exact_vs_exhaustive_cpu": round(exhaustive["cpu_s_per_case"] / exact["cpu_s_per_case"], 1),
    }
    for row in rows[1:]:
        report[f"exact_vs_{row['method'].replace(' ', '')}_cpu"] = round(
            exact["cpu_s_per_case"] / row["cpu_s_per_case"], 2
        )
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
