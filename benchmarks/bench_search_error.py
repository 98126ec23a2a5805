"""Search error of constrained beam search vs the beam count, on MovieLens-100k: what
`cftrec evaluate --check-search N` measures, for several beam counts on the same cases.

The cases are those `--check-search N` picks from the test split (a seeded sample of the case
ids, seed `--seed`). Each is ranked exactly once (exhaustive scoring over every title, shared
prompt), then beam search runs with every beam count; per beam count: how often the beam's
top K differs from the exact top K, the exact top-K recall of the beam list, the score gap,
HR@K of the beam lists beside HR@K of the exact ranking, and wall and process CPU seconds per
case (batches of `--batch-size`, as `cftrec evaluate`).

    .venv/bin/python benchmarks/bench_search_error.py --run RUN --data DIR \
        [--cases 40] [--beams 5 10 20] [--threads 1] [--exact-cache FILE] [--out FILE]

`--exact-cache` keeps the exact scores (safetensors, with their times in a .json beside it) so
that a rerun, or an interrupted run, skips the cases already scored exactly (the expensive
part). Results: benchmarks/results/search_error.json, or --out (the .md is written by hand
from it).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cftrec.data.dataset import DEFAULT_MAX_HISTORY, Dataset
from cftrec.decoding.recommender import LLMRecommender
from cftrec.evaluation.evaluate import evaluation_cases
from cftrec.evaluation.search_check import (
    case_check,
    checked_case_ids,
    exact_scores,
    search_cutoffs,
    summarise_checks,
)
from cftrec.runs.info import read_run_info

RESULTS = Path(__file__).parent / "results" / "search_error.json"


def clock():
    return time.perf_counter(), time.process_time()


def since(start) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def exact_rankings(
    recommender, cases, cache: Path | None, more_caches=(), part: tuple[int, int] = (0, 1)
) -> tuple[torch.Tensor, dict] | None:
    """[C, T] exact scores of every title per case, and the wall and CPU seconds they took.
    With a cache file, the cases already scored there (and their times) are read back, and
    every newly scored case is added at once (an interrupted run resumes). `more_caches` are
    read, never written: those of other processes. `part` (i, n) scores only the cases at
    positions i, i + n, i + 2n, ... that no cache holds, leaving the others to n - 1 processes
    with their own cache files, and then returns None."""
    scores, seconds = {}, {}
    for path in [*more_caches, cache]:
        if path is not None and path.exists():
            loaded = load_file(path)
            scores.update(loaded)
            seconds.update(json.loads(path.with_suffix(".json").read_text()))
            print(f"{len(loaded)} cases' exact scores read from {path}")
    index, parts = part
    for n, (case_id, sample) in enumerate(cases, start=1):
        if (n - 1) % parts != index or case_id in scores:
            continue
        start = clock()
        scores[case_id] = exact_scores(recommender, [list(sample.history)])[0].contiguous()
        seconds[case_id] = since(start)
        print(f"exact {n}/{len(cases)} ({case_id}): {seconds[case_id][0]:.1f} s wall, "
              f"{seconds[case_id][1]:.1f} s CPU", flush=True)  # fmt: skip
        if cache is not None:
            save_file(scores, cache)
            cache.with_suffix(".json").write_text(json.dumps(seconds))
    if parts > 1:
        return None
    ids = [case_id for case_id, _ in cases]
    timing = {
        "wall_s_per_case": sum(seconds[i][0] for i in ids) / len(ids),
        "cpu_s_per_case": sum(seconds[i][1] for i in ids) / len(ids),
    }
    return torch.stack([scores[i] for i in ids]), timing


def hit_rates(lists: list[list[int]], targets: list[int], cutoffs) -> dict:
    return {
        f"hr@{k}": sum(t in ranked[:k] for ranked, t in zip(lists, targets, strict=True))
        / len(lists)
        for k in cutoffs
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--beams", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact-cache", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default {RESULTS.name}")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dataset = Dataset.load(args.data)
    max_history = read_run_info(args.run).get("max_history") or DEFAULT_MAX_HISTORY
    every = evaluation_cases(dataset, "test", max_history)
    chosen = checked_case_ids([case_id for case_id, _ in every], args.cases, args.seed)
    cases = [(case_id, sample) for case_id, sample in every if case_id in chosen]
    recommender = LLMRecommender.from_run(args.run, batch_size=args.batch_size)
    catalog = recommender.catalog
    targets = [catalog.index_of_title[catalog.title(s.target)] for _, s in cases]
    print(f"{len(cases)} cases, {len(catalog.titles)} titles, {args.threads} thread(s)")

    exact, exact_timing = exact_rankings(recommender, cases, args.exact_cache)
    exact_lists = exact.argsort(dim=1, descending=True, stable=True)[:, :50].tolist()
    rows = []
    for beams in args.beams:
        histories = [list(sample.history) for _, sample in cases]
        start = clock()
        found = recommender.recommend(histories, k=50, num_beams=beams)
        wall, cpu = since(start)
        lists = [[catalog.index_of_title[r.title] for r in recs] for recs in found]
        # the beam's own scores against the exact ones (float rounding between the two passes)
        score_error = max(
            abs(r.score - row[catalog.index_of_title[r.title]].item())
            for recs, row in zip(found, exact, strict=True)
            for r in recs
        )
        cutoffs = search_cutoffs(beams, len(catalog.titles))
        checks = [
            case_check(ranked, row, cutoffs) for ranked, row in zip(lists, exact, strict=True)
        ]
        row = {
            "beams": beams,
            **summarise_checks(checks, cutoffs),
            "beam_hit_rates": hit_rates(lists, targets, cutoffs),
            "exact_hit_rates": hit_rates(exact_lists, targets, cutoffs),
            "max_beam_score_error": score_error,
            "wall_s_per_case": wall / len(cases),
            "cpu_s_per_case": cpu / len(cases),
            "per_case": [
                {
                    "case_id": case_id,
                    "gap": round(c["gap"], 6),
                    **{f"differs@{k}": c[f"differs@{k}"] for k in cutoffs},
                }
                for (case_id, _), c in zip(cases, checks, strict=True)
            ],  # fmt: skip
        }
        rows.append(row)
        shown = {k: v for k, v in row.items() if k != "per_case"}
        print(json.dumps(shown), flush=True)

    record = {
        "date": date.today().isoformat(),
        "machine": f"{os.cpu_count()}-core CPU, shared with other jobs",
        "load_average_at_end": os.getloadavg()[0],
        "threads": args.threads,
        "run": str(args.run),
        "run_info": {k: read_run_info(args.run).get(k) for k in ("method", "base_model", "lora")},
        "data": str(args.data),
        "split": "test",
        "titles": len(catalog.titles),
        "cases": len(cases),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "exact": exact_timing,
        "beams": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
