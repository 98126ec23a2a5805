"""The numbers of a report: which results are compared pairwise (only those on the same cases,
by `compare_runs`, the code behind `cftrec compare`), and metrics by history length and by
target popularity, from each evaluation's per-case records and its dataset."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..evaluation.metrics import hit_at, ndcg_at
from ..evaluation.report import available_cutoffs
from ..evaluation.significance import compare_runs
from .inputs import DatasetFacts, ResultFolder

# History lengths grouped (the first length of each group)
HISTORY_EDGES = (1, 3, 6, 11, 21, 51, 101, 201)


@dataclass
class CaseGroup:
    """Results made on the same cases: `members[0]` is the reference the others are compared to
    (B - A per metric, paired interval and p-value: a `compare_runs` dict each)."""

    letter: str  # "A", "B", ...: how tables and plots tell the groups apart
    members: list[ResultFolder]
    comparisons: list[tuple[ResultFolder, dict]]


def case_groups(folders: list[ResultFolder], resamples: int, seed: int = 0) -> list[CaseGroup]:
    """The results grouped by the cases they were made on, in the order given; each group's
    first result is its reference."""
    grouped: dict[tuple, list[ResultFolder]] = {}
    for folder in folders:
        grouped.setdefault(folder.data_key, []).append(folder)
    groups = []
    for number, members in enumerate(grouped.values()):
        reference = members[0]
        runs_a = [(reference.results, reference.cases)]
        comparisons = [
            (other, compare_runs(runs_a, [(other.results, other.cases)], resamples, seed))
            for other in members[1:]
        ]
        groups.append(CaseGroup(chr(ord("A") + number), members, comparisons))
    return groups


def shared_cutoff(folders: list[ResultFolder], preferred: int = 10) -> int:
    """The K of the breakdowns: `preferred` when every result decides it, else the largest K
    that every result decides."""
    common = set.intersection(*(set(available_cutoffs(f.results)) for f in folders))
    return preferred if preferred in common else max(common, default=1)


def history_length(case: dict, folder: ResultFolder, facts: DatasetFacts) -> int:
    """The user's interactions before the case (its whole history, not the prompt's window)."""
    return facts.history_lengths[folder.results["data"]["split"]][case["case_id"]]


def target_popularity(case: dict, folder: ResultFolder, facts: DatasetFacts) -> int:
    """Train interactions of the case's target title."""
    return facts.popularity.get(case["target_title"], 0)


def history_bucket(length: int) -> tuple[int, str]:
    """(sort key, label) of a history length: the HISTORY_EDGES group it falls in."""
    start = max(edge for edge in HISTORY_EDGES if edge <= max(length, 1))
    following = [edge for edge in HISTORY_EDGES if edge > start]
    if not following:
        return start, f"{start}+"
    end = following[0] - 1
    return start, str(start) if end == start else f"{start}-{end}"


def popularity_bucket(count: int) -> tuple[int, str]:
    """(sort key, label) of a train interaction count, by powers of ten."""
    if count == 0:
        return 0, "0 (not in train)"
    decade = int(math.log10(count))
    low = 10**decade
    return decade + 1, f"{low}-{10 * low - 1}"


@dataclass
class Breakdown:
    """Per bucket (in order) and per result label: (cases, NDCG@K, HR@K)."""

    cutoff: int
    buckets: list[str]
    values: dict[str, dict[str, tuple[int, float, float]]]


def breakdown(
    folders: list[ResultFolder],
    facts: dict[str, DatasetFacts],
    value_of: Callable[[dict, ResultFolder, DatasetFacts], int],
    bucket_of: Callable[[int], tuple[int, str]],
) -> Breakdown:
    """NDCG@K and HR@K per bucket of a per-case value (`value_of`, grouped by `bucket_of`),
    for the results whose dataset was found (`facts`, by fingerprint)."""
    cutoff = shared_cutoff(folders)
    order: dict[str, int] = {}
    values = {}
    for folder in folders:
        known = facts.get(folder.results["data"]["fingerprint"])
        if known is None:
            continue
        ranks: dict[str, list] = {}
        for case in folder.cases:
            key, label = bucket_of(value_of(case, folder, known))
            order[label] = key
            ranks.setdefault(label, []).append(case["rank"])
        values[folder.label] = {
            label: (
                len(found),
                sum(ndcg_at(r, cutoff) for r in found) / len(found),
                sum(hit_at(r, cutoff) for r in found) / len(found),
            )
            for label, found in ranks.items()
        }
    return Breakdown(cutoff, sorted(order, key=order.get), values)


def recommended_popularity(folder: ResultFolder, popularity: dict, k: int = 10) -> list[int]:
    """Train interactions of every title in the result's top-k lists."""
    return [popularity.get(title, 0) for case in folder.cases for title in case["titles"][:k]]
