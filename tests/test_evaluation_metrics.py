"""Metrics and paired statistics against hand-computed values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from cftrec.errors import CftrecError
from cftrec.evaluation.metrics import (
    CUTOFFS,
    case_metrics,
    coverage,
    hit_at,
    mean_metrics,
    ndcg_at,
    reported_cutoffs,
    target_rank,
)
from cftrec.evaluation.popularity_bias import mean_popularity
from cftrec.evaluation.significance import (
    compare_results,
    compare_runs,
    paired_bootstrap_ci,
    paired_permutation_pvalue,
)


def test_target_rank():
    assert target_rank(["a", "b", "c"], "a") == 1
    assert target_rank(["a", "b", "c"], "c") == 3
    assert target_rank(["a", "b", "c"], "z") is None
    assert target_rank([], "a") is None


def test_hit_and_ndcg_by_hand():
    assert hit_at(1, 1) == 1.0 and hit_at(2, 1) == 0.0 and hit_at(0, 50) == 0.0
    assert ndcg_at(1, 10) == 1.0
    assert ndcg_at(2, 10) == pytest.approx(1 / math.log2(3))  # 0.6309
    assert ndcg_at(3, 10) == pytest.approx(0.5)
    assert ndcg_at(7, 10) == pytest.approx(1 / 3)  # log2(8) = 3
    assert ndcg_at(11, 10) == 0.0 and ndcg_at(None, 10) == 0.0 and hit_at(None, 50) == 0.0
    assert ndcg_at(0, 10) == 0.0  # how older cases.jsonl files marked a miss


def test_mean_metrics_by_hand():
    # ranks: 1, 3, absent, 6  ->  HR@1 = 1/4, HR@3 = 2/4, HR@5 = 2/4, HR@10 = 3/4
    # NDCG@3 = (1 + 0.5) / 4; NDCG@10 = (1 + 0.5 + 1/log2(7)) / 4
    metrics = mean_metrics([1, 3, None, 6])
    assert metrics["hr@1"] == 0.25
    assert metrics["hr@3"] == 0.5 and metrics["hr@5"] == 0.5 and metrics["hr@10"] == 0.75
    assert metrics["ndcg@1"] == 0.25
    assert metrics["ndcg@3"] == pytest.approx(0.375)
    assert metrics["ndcg@10"] == pytest.approx((1.5 + 1 / math.log2(7)) / 4)
    assert set(metrics) == {f"{m}@{k}" for m in ("ndcg", "hr") for k in (1, 3, 5, 10, 20, 50)}
    assert case_metrics(2)["ndcg@1"] == 0.0 and case_metrics(2)["hr@3"] == 1.0


def test_reported_cutoffs_stop_at_the_list_length():
    # 10-title beam lists decide K <= 10 only: HR@50 of such lists would equal HR@10
    assert reported_cutoffs(10, num_titles=1663) == (1, 3, 5, 10)
    assert reported_cutoffs(4, num_titles=1663) == (1, 3)
    assert reported_cutoffs(50, num_titles=1663) == (1, 3, 5, 10, 20, 50)
    # a list of the whole catalogue is a complete ranking: every K is decided
    assert reported_cutoffs(8, num_titles=8) == (1, 3, 5, 10, 20, 50)
    assert set(mean_metrics([1, None], (1, 3))) == {"ndcg@1", "ndcg@3", "hr@1", "hr@3"}


def test_coverage_and_popularity_by_hand():
    lists = [["a", "b", "c"], ["a", "d", "e"]]
    assert coverage(lists, num_titles=10, k=2) == pytest.approx(3 / 10)  # a, b, d
    assert coverage(lists, num_titles=10, k=3) == pytest.approx(5 / 10)
    popularity = {"a": 10, "b": 4, "d": 1}
    assert mean_popularity(lists, popularity, k=2) == pytest.approx((10 + 4 + 10 + 1) / 4)


def test_bootstrap_interval():
    assert paired_bootstrap_ci([0, 0, 0], [1, 1, 1]) == (1.0, 1.0)
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 2000), rng.normal(0.1, 1, 2000)
    low, high = paired_bootstrap_ci(a, b, resamples=4000)
    diff = b - a
    half = 1.96 * diff.std(ddof=1) / math.sqrt(len(diff))  # normal approximation
    assert low == pytest.approx(diff.mean() - half, abs=0.2 * half)
    assert high == pytest.approx(diff.mean() + half, abs=0.2 * half)
    assert paired_bootstrap_ci(a, b, resamples=500, seed=1) == paired_bootstrap_ci(
        a, b, resamples=500, seed=1
    )


def test_permutation_pvalue_matches_exact_enumeration():
    a = [0.0, 0.0, 1.0, 0.0, 0.5, 0.0, 1.0, 0.0]
    b = [1.0, 0.5, 1.0, 1.0, 0.0, 1.0, 1.0, 0.3]
    diff = np.subtract(b, a)
    observed = abs(diff.mean())
    flips = [abs((np.array(s) * diff).mean()) for s in itertools.product([-1, 1], repeat=len(a))]
    exact = np.mean([f >= observed - 1e-12 for f in flips])
    assert paired_permutation_pvalue(a, b, permutations=20000) == pytest.approx(exact, abs=0.01)
    assert paired_permutation_pvalue(a, a) == 1.0


def _fake_output(ranks, fingerprint="f1", ids=None, cutoffs=CUTOFFS, name="x"):
    ids = ids or [f"u{i}#0" for i in range(len(ranks))]
    results = {"name": name, "metrics": mean_metrics(ranks, cutoffs), "cutoffs": list(cutoffs),
               "data": {"fingerprint": fingerprint, "split": "test"}}  # fmt: skip
    return results, [{"case_id": i, "rank": r} for i, r in zip(ids, ranks, strict=True)]


def test_compare_results_values_and_refusals():
    ra, ca = _fake_output([1, 0, 3, 0])
    rb, cb = _fake_output([1, 1, 1, 2])
    comparison = compare_results(ra, ca, rb, cb, resamples=2000)
    row = comparison["metrics"]["hr@1"]
    assert row["a"] == 0.25 and row["b"] == 0.75 and row["diff"] == 0.5
    assert row["ci95"][0] <= 0.5 <= row["ci95"][1]
    assert 0 < row["p_value"] <= 1
    with pytest.raises(CftrecError, match="different data"):
        compare_results(ra, ca, *_fake_output([1, 1, 1, 2], fingerprint="f2"))
    with pytest.raises(CftrecError, match="different cases"):
        compare_results(ra, ca, *_fake_output([1, 1, 1], ids=["u0#0", "u1#0", "u9#0"]))


def test_compare_leaves_out_cutoffs_a_side_does_not_decide():
    beam = _fake_output([1, None, 3, None], cutoffs=(1, 3, 5, 10))  # 10-title lists
    full = _fake_output([1, 30, 3, 12])  # a full ranking to 50
    comparison = compare_results(*beam, *full, resamples=500)
    assert set(comparison["metrics"]) == {f"{m}@{k}" for m in ("ndcg", "hr") for k in (1, 3, 5, 10)}
    assert comparison["unavailable_cutoffs"] == [20, 50]
    # a results.json written before cutoffs were recorded: K up to its list length only
    old = dict(beam[0], list_length=10, metrics=mean_metrics([1, 0, 3, 0]))
    del old["cutoffs"]
    assert "hr@50" not in compare_results(old, beam[1], *full, resamples=500)["metrics"]


def test_several_runs_per_side_average_each_case_over_the_runs():
    """Two seeds per side: the pooled difference is the mean of the per-seed differences, and
    the test runs over cases on each case's seed-averaged metric (cases stay the unit)."""
    rng = np.random.default_rng(3)
    n = 40
    ranks = {side: [[int(r) if r <= 12 else None for r in rng.integers(1, 20, n)] for _ in range(2)]
             for side in ("a", "b")}  # fmt: skip
    runs = {side: [_fake_output(r, name=side) for r in ranks[side]] for side in ranks}
    pooled = compare_runs(runs["a"], runs["b"], resamples=2000, seed=1)
    assert pooled["runs"] == {"a": 2, "b": 2} and pooled["num_cases"] == n

    def hits(rank_list, k):  # by hand
        return np.array([1.0 if r is not None and r <= k else 0.0 for r in rank_list])

    a = (hits(ranks["a"][0], 10) + hits(ranks["a"][1], 10)) / 2
    b = (hits(ranks["b"][0], 10) + hits(ranks["b"][1], 10)) / 2
    row = pooled["metrics"]["hr@10"]
    per_seed = [hits(ranks["b"][s], 10).mean() - hits(ranks["a"][s], 10).mean() for s in (0, 1)]
    assert row["diff"] == pytest.approx(np.mean(per_seed))
    assert row["a_runs"] == pytest.approx([hits(r, 10).mean() for r in ranks["a"]])
    assert row["ci95"] == pytest.approx(list(paired_bootstrap_ci(a, b, 2000, seed=1)))
    assert row["p_value"] == paired_permutation_pvalue(a, b, 2000, seed=1)
    # one run per side is exactly the plain paired comparison
    single = compare_runs(runs["a"][:1], runs["b"][:1], resamples=500)
    assert single["metrics"] == compare_results(*runs["a"][0], *runs["b"][0], 500)["metrics"]
    with pytest.raises(CftrecError, match="different cases"):
        compare_runs(runs["a"], [_fake_output([1] * (n - 1))], resamples=10)
