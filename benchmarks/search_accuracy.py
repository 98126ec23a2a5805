"""Does search error cost accuracy? One run's evaluations with several decodings, against the
exact one, on the same cases.

Reads `cftrec evaluate` outputs of the same run and cases: the exact top-K (the reference:
no search error) and one or more beam decodings. Per decoding: NDCG@K and HR@K, the paired test
against exact (`cftrec compare`'s: sign-flip permutation p-value, bootstrap 95% interval), and
what the search did to each case's target, read from the per-case lists:
  - same top K: the case's first K titles are the exact first K, in order;
  - lost: the target is in the exact top K but not in the beam's;
  - gained: the target is in the beam's top K but not in the exact one, which only a beam list
    that misses titles ranked above the target can do;
  - moved up / down: in both, at a better / worse rank in the beam list.

    .venv/bin/python benchmarks/search_accuracy.py --exact OUT_EXACT \
        --beam "10 beams=OUT_10" --beam "50 beams=OUT_50" [--k 10] --out FILE.json [--md FILE.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cftrec.evaluation.metrics import target_rank
from cftrec.evaluation.report import read_results
from cftrec.evaluation.significance import compare_results


def movements(exact_cases: list[dict], beam_cases: list[dict], k: int) -> dict:
    """How the beam list moved each case's target relative to the exact top K (module docstring)."""
    counts = dict.fromkeys(("same_top_k", "lost", "gained", "moved_up", "moved_down"), 0)
    for exact, beam in zip(exact_cases, beam_cases, strict=True):
        if exact["case_id"] != beam["case_id"]:
            raise SystemExit(f"case {exact['case_id']} vs {beam['case_id']}: not the same cases")
        counts["same_top_k"] += exact["titles"][:k] == beam["titles"][:k]
        target = exact["target_title"]
        in_exact = target_rank(exact["titles"][:k], target)
        in_beam = target_rank(beam["titles"][:k], target)
        if in_exact and not in_beam:
            counts["lost"] += 1
        elif in_beam and not in_exact:
            counts["gained"] += 1
        elif in_exact and in_beam and in_beam != in_exact:
            counts["moved_up" if in_beam < in_exact else "moved_down"] += 1
    return counts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exact", type=Path, required=True)
    parser.add_argument("--beam", action="append", required=True, metavar="NAME=OUT")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()

    exact_results, exact_cases = read_results(args.exact)
    if exact_results["decoding"]["method"] != "exact":
        raise SystemExit(f"{args.exact}: not an exact evaluation")
    metrics = (f"ndcg@{args.k}", f"hr@{args.k}")
    rows = {"exact": {m: exact_results["metrics"][m] for m in metrics}}
    for spec in args.beam:
        name, _, path = spec.partition("=")
        results, cases = read_results(path)
        for field in ("assistant", "guidance_scale", "length_penalty"):
            if results["decoding"].get(field) != exact_results["decoding"].get(field):
                raise SystemExit(f"{path}: another {field} than {args.exact}")
        if any(results["run"][f] != exact_results["run"][f] for f in ("path", "data_fingerprint")):
            raise SystemExit(f"{path}: another run than {args.exact}")
        comparison = compare_results(results, cases, exact_results, exact_cases)
        rows[name] = {
            **{m: results["metrics"][m] for m in metrics},
            "exact_minus_this": {m: comparison["metrics"][m] for m in metrics},
            "cases": movements(exact_cases, cases, args.k),
            "path": path,
        }
    report = {
        "benchmark": "search_accuracy.py",
        "run": exact_results["run"]["path"],
        "decoding": {k: v for k, v in exact_results["decoding"].items() if k != "method"},
        "num_cases": exact_results["num_cases"],
        "k": args.k,
        "exact": str(args.exact),
        "rows": rows,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report, metrics)
    if args.md:
        args.md.write_text(table + "\n")
    print(table)


def markdown(report: dict, metrics) -> str:
    k, n = report["k"], report["num_cases"]
    header = [
        "decoding", *metrics, *(f"exact - this, {m} (95% CI, p)" for m in metrics),
        f"same top {k}", "target lost", "target gained", "moved up / down",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in report["rows"].items():
        cells = [name, *(f"{row[m]:.4f}" for m in metrics)]
        if name == "exact":
            cells += ["reference"] * len(metrics) + [f"{n} of {n}", "", "", ""]
        else:
            for m in metrics:
                d = row["exact_minus_this"][m]
                low, high = d["ci95"]
                cells.append(f"{d['diff']:+.4f} [{low:+.4f}, {high:+.4f}], p={d['p_value']:.3f}")
            c = row["cases"]
            cells += [f"{c['same_top_k']} of {n}", str(c["lost"]), str(c["gained"]),
                      f"{c['moved_up']} / {c['moved_down']}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
