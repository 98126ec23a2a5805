"""Ranking metrics for one target per case, at title level (pure functions).

A case is described by the 1-based rank of its target title in the recommended list, or None
when the target is not in the list. Then, for a cutoff K:
    HR@K   = 1 if rank <= K else 0   (0 for a miss)
    NDCG@K = 1 / log2(rank + 1) if rank <= K else 0   (one relevant item: IDCG = 1)

A list of L titles decides HR@K and NDCG@K only for K <= L, unless it ranks the whole catalogue:
`reported_cutoffs` gives the cutoffs a list length supports (`decided_cutoffs`: those every
case's list supports), and only those are reported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

CUTOFFS = (1, 3, 5, 10, 20, 50)
LIST_LENGTH = max(CUTOFFS)  # titles per evaluated list unless asked otherwise


def target_rank(ranked_titles: Sequence[str], target_title: str) -> int | None:
    """1-based position of the target title in the list, None when absent."""
    for position, title in enumerate(ranked_titles, start=1):
        if title == target_title:
            return position
    return None


def _found(rank: int | None, k: int) -> bool:
    # rank 0 is how cases.jsonl files written before a miss became null (None) marked one
    return rank is not None and 1 <= rank <= k


def hit_at(rank: int | None, k: int) -> float:
    return 1.0 if _found(rank, k) else 0.0


def ndcg_at(rank: int | None, k: int) -> float:
    return 1.0 / math.log2(rank + 1) if _found(rank, k) else 0.0


def reported_cutoffs(list_length: int, num_titles: int) -> tuple[int, ...]:
    """The cutoffs that lists of `list_length` titles decide: K <= list_length, or every K
    when the lists rank the whole catalogue of `num_titles` distinct titles."""
    if list_length >= num_titles:
        return CUTOFFS
    return tuple(k for k in CUTOFFS if k <= list_length)


def decided_cutoffs(lists: Iterable[tuple[int, int]]) -> tuple[int, ...]:
    """The cutoffs that every list decides, from (list length, number of titles the list may
    rank) per case: the catalogue, or less when some titles are excluded from a ranking."""
    decided = set(CUTOFFS)
    for length, rankable in lists:
        decided &= set(reported_cutoffs(length, rankable))
    return tuple(k for k in CUTOFFS if k in decided)


METRICS = {"ndcg": ndcg_at, "hr": hit_at}


def metric_names(cutoffs: Iterable[int] = CUTOFFS) -> list[str]:
    return [f"{name}@{k}" for name in METRICS for k in cutoffs]


def case_metrics(rank: int | None, cutoffs: Iterable[int] = CUTOFFS) -> dict[str, float]:
    """Every metric for one case, keyed like "ndcg@10"."""
    return {f"{name}@{k}": fn(rank, k) for name, fn in METRICS.items() for k in cutoffs}


def mean_metrics(ranks: Sequence[int | None], cutoffs: Iterable[int] = CUTOFFS) -> dict[str, float]:
    """Mean of every metric over the cases."""
    if not ranks:
        raise ValueError("no cases to average")
    cutoffs = list(cutoffs)
    return {
        f"{name}@{k}": sum(fn(r, k) for r in ranks) / len(ranks)
        for name, fn in METRICS.items()
        for k in cutoffs
    }


def coverage(ranked_lists: Iterable[Sequence[str]], num_titles: int, k: int = 10) -> float:
    """Share of the catalogue's distinct titles that appear in some top-k list."""
    seen = {title for titles in ranked_lists for title in titles[:k]}
    return len(seen) / num_titles if num_titles else 0.0
