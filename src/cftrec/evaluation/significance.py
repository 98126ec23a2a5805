"""Paired comparison of two evaluations over the same cases.

Per metric: the mean difference B - A, a paired bootstrap 95% interval (cases resampled with
replacement, seeded), and a two-sided paired sign-flip permutation test p-value (under the null
hypothesis each case's difference is equally likely to have either sign; Monte Carlo, seeded,
p = (1 + #{|mean of flipped| >= |observed|}) / (1 + permutations)).

Each side may be several runs (e.g. the same method trained with several seeds): a case's
metric on a side is then its mean over that side's runs, and the test and the interval above
run over these per-case means. The case stays the independent unit: one case scored under
several seeds is one user, not several independent observations, so (seed, case) pairs are not
resampled one by one (that would understate the uncertainty). The difference equals the mean
of the per-seed differences; seed-to-seed spread shows in the per-run means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import CftrecError
from .metrics import CUTOFFS, case_metrics
from .report import available_metrics

# Rows of resampled differences drawn at once: bounds memory on large case sets.
_CHUNK_VALUES = 4_000_000


def _chunks(total: int, n: int):
    step = max(1, _CHUNK_VALUES // max(n, 1))
    for start in range(0, total, step):
        yield min(step, total - start)


def paired_bootstrap_ci(
    a: Sequence[float], b: Sequence[float], resamples: int = 10_000, confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """Percentile bootstrap interval of mean(b - a), resampling cases in pairs."""
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [diff[rng.integers(0, len(diff), size=(rows, len(diff)))].mean(1)
         for rows in _chunks(resamples, len(diff))]
    )  # fmt: skip
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_permutation_pvalue(
    a: Sequence[float], b: Sequence[float], permutations: int = 10_000, seed: int = 0
) -> float:
    """Two-sided sign-flip permutation test of mean(b - a) = 0."""
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if not np.any(diff):
        return 1.0
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    for rows in _chunks(permutations, len(diff)):
        signs = rng.integers(0, 2, size=(rows, len(diff))) * 2 - 1
        extreme += int((np.abs((signs * diff).mean(1)) >= observed - 1e-12).sum())
    return (1 + extreme) / (1 + permutations)


Run = tuple[dict, list[dict]]  # (results.json content, cases.jsonl records)


def _check_same_cases(runs: list[Run]) -> list[str]:
    """The common case ids; refuses runs made on different data, splits or cases."""
    first, first_cases = runs[0]
    ids = [c["case_id"] for c in first_cases]
    for results, cases in runs[1:]:
        for key, label in (("fingerprint", "data"), ("split", "split")):
            if results["data"][key] != first["data"][key]:
                raise CftrecError(
                    f"cannot compare results on different {label}: "
                    f"{first['data'][key]} vs {results['data'][key]}"
                )
        if _excludes_history(results) != _excludes_history(first):
            raise CftrecError(
                "cannot compare results with and without --exclude-history (different protocols)"
            )
        other = [c["case_id"] for c in cases]
        if other != ids:
            raise CftrecError(
                f"cannot compare results on different cases ({len(ids)} vs {len(other)} cases, "
                f"{len(set(ids) ^ set(other))} not in both)"
            )
    return ids


def _excludes_history(results: dict) -> bool:
    # results.json files written before the option existed never excluded history
    return bool(results.get("settings", {}).get("exclude_history", False))


def _side_label(runs: list[Run]) -> str:
    names = dict.fromkeys(results.get("name", "") for results, _ in runs)
    return " + ".join(n for n in names if n)


def compare_runs(
    runs_a: list[Run], runs_b: list[Run], resamples: int = 10_000, seed: int = 0
) -> dict:
    """Per metric that every run decides: mean A, mean B, B - A, bootstrap interval, p-value;
    several runs per side are averaged per case first (module docstring). Refuses runs made
    on different data, splits or cases, or with and without history exclusion."""
    if not runs_a or not runs_b:
        raise CftrecError("compare needs at least one evaluation on each side")
    ids = _check_same_cases(runs_a + runs_b)
    names = [
        name
        for name in available_metrics(runs_a[0][0])
        if all(name in available_metrics(results) for results, _ in runs_a + runs_b)
    ]
    compared = {int(name.split("@")[1]) for name in names}
    per_case_a = [[case_metrics(c["rank"]) for c in cases] for _, cases in runs_a]
    per_case_b = [[case_metrics(c["rank"]) for c in cases] for _, cases in runs_b]
    rows = {}
    for name in names:
        # [runs, cases]
        a_runs = np.array([[m[name] for m in run] for run in per_case_a])
        b_runs = np.array([[m[name] for m in run] for run in per_case_b])
        a, b = a_runs.mean(0), b_runs.mean(0)  # per case, averaged over each side's runs
        low, high = paired_bootstrap_ci(a, b, resamples, seed=seed)
        rows[name] = {
            "a": float(a.mean()),
            "b": float(b.mean()),
            "diff": float(b.mean() - a.mean()),
            "ci95": [low, high],
            "p_value": paired_permutation_pvalue(a, b, resamples, seed=seed),
        }
        if len(runs_a) > 1 or len(runs_b) > 1:
            rows[name] |= {"a_runs": a_runs.mean(1).tolist(), "b_runs": b_runs.mean(1).tolist()}
    test = "paired sign-flip permutation (two-sided); 95% paired percentile bootstrap"
    if len(runs_a) > 1 or len(runs_b) > 1:
        test += "; each case's metric averaged over its side's runs, cases resampled"
    return {
        "a": _side_label(runs_a),
        "b": _side_label(runs_b),
        "runs": {"a": len(runs_a), "b": len(runs_b)},
        "num_cases": len(ids),
        "test": test,
        "resamples": resamples,
        "seed": seed,
        "metrics": rows,
        "unavailable_cutoffs": [k for k in CUTOFFS if k not in compared],
    }


def compare_results(
    results_a: dict, cases_a: list[dict], results_b: dict, cases_b: list[dict],
    resamples: int = 10_000, seed: int = 0,
) -> dict:  # fmt: skip
    """`compare_runs` with one run on each side."""
    return compare_runs([(results_a, cases_a)], [(results_b, cases_b)], resamples, seed)
