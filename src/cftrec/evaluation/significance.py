"""Paired comparison of two evaluations over the same cases.

Per metric: the mean difference B - A, a paired bootstrap 95% interval (cases resampled with
replacement, seeded), and a two-sided paired sign-flip permutation test p-value (under the null
hypothesis each case's difference is equally likely to have either sign; Monte Carlo, seeded,
p = (1 + #{|mean of flipped| >= |observed|}) / (1 + permutations)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import CftrecError
from .metrics import case_metrics

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


def compare_results(
    results_a: dict, cases_a: list[dict], results_b: dict, cases_b: list[dict],
    resamples: int = 10_000, seed: int = 0,
) -> dict:  # fmt: skip
    """Per metric: mean A, mean B, B - A, bootstrap interval, p-value. Refuses results that
    were made on different data, splits or cases."""
    for key, label in (("fingerprint", "data"), ("split", "split")):
        if results_a["data"][key] != results_b["data"][key]:
            raise CftrecError(
                f"cannot compare results on different {label}: "
                f"{results_a['data'][key]} vs {results_b['data'][key]}"
            )
    ids_a = [c["case_id"] for c in cases_a]
    ids_b = [c["case_id"] for c in cases_b]
    if ids_a != ids_b:
        raise CftrecError(
            f"cannot compare results on different cases ({len(ids_a)} vs {len(ids_b)} cases, "
            f"{len(set(ids_a) ^ set(ids_b))} not in both)"
        )
    per_case_a = [case_metrics(c["rank"]) for c in cases_a]
    per_case_b = [case_metrics(c["rank"]) for c in cases_b]
    rows = {}
    for name in results_a["metrics"]:
        if name not in per_case_a[0]:
            continue
        a = [m[name] for m in per_case_a]
        b = [m[name] for m in per_case_b]
        low, high = paired_bootstrap_ci(a, b, resamples, seed=seed)
        rows[name] = {
            "a": float(np.mean(a)),
            "b": float(np.mean(b)),
            "diff": float(np.mean(b) - np.mean(a)),
            "ci95": [low, high],
            "p_value": paired_permutation_pvalue(a, b, resamples, seed=seed),
        }
    return {
        "a": results_a.get("name", ""),
        "b": results_b.get("name", ""),
        "num_cases": len(ids_a),
        "test": "paired sign-flip permutation (two-sided); 95% paired percentile bootstrap",
        "resamples": resamples,
        "seed": seed,
        "metrics": rows,
    }
