"""Close matches for a mistyped title or item id, with bounded work per query.

`difflib.get_close_matches` over a whole catalogue costs seconds per query on 30k Amazon titles
(it compares the query with every title). `CloseMatches` first picks a few candidates through
an inverted index of character trigrams (the rarest trigrams of the query first, at most
`POSTINGS_BUDGET` index entries read in all), then ranks only those with difflib, so a query
costs milliseconds whatever the catalogue size, and small catalogues are ranked exactly as
difflib ranks them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import numpy as np

GRAM = 3
CANDIDATES = 32  # strings ranked with difflib per query
POSTINGS_BUDGET = 200_000  # inverted-index entries read per query


def _grams(key: str) -> set[str]:
    padded = f" {key} "
    return {padded[i : i + GRAM] for i in range(max(1, len(padded) - GRAM + 1))}


class CloseMatches:
    """Case-insensitive close matches among `strings` (the first of several strings that differ
    only in case stands for them)."""

    def __init__(self, strings: Iterable[str]):
        self.originals: list[str] = []
        self.keys: list[str] = []
        seen: set[str] = set()
        postings: dict[str, list[int]] = {}
        gram_counts = []
        for string in strings:
            key = string.lower()
            if key in seen:
                continue
            seen.add(key)
            grams = _grams(key)
            for gram in grams:
                postings.setdefault(gram, []).append(len(self.keys))
            gram_counts.append(len(grams))
            self.keys.append(key)
            self.originals.append(string)
        self.postings = {gram: np.array(ids, dtype=np.int32) for gram, ids in postings.items()}
        self.gram_counts = np.array(gram_counts, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.keys)

    def candidates(self, key: str) -> list[int]:
        """At most CANDIDATES indices of the strings sharing the most trigrams with `key`
        (relative to both lengths), reading at most POSTINGS_BUDGET index entries."""
        if len(self.keys) <= CANDIDATES:
            return list(range(len(self.keys)))
        query = _grams(key)
        lists = sorted((self.postings[g] for g in query if g in self.postings), key=len)
        if not lists:
            return []
        taken, read = [], 0
        for ids in lists:  # rarest trigrams first: they say the most
            if read + len(ids) > POSTINGS_BUDGET:
                break
            taken.append(ids)
            read += len(ids)
        if not taken:  # every trigram of the query is very common
            taken = [lists[0][:POSTINGS_BUDGET]]
        shared = np.bincount(np.concatenate(taken), minlength=len(self.keys))
        score = shared / (len(query) + self.gram_counts)
        best = np.argpartition(-score, CANDIDATES)[:CANDIDATES]
        return [int(i) for i in best if shared[i] > 0]

    def find(self, query: str, n: int = 3, cutoff: float = 0.5) -> list[str]:
        """Up to `n` strings whose difflib similarity to `query` is at least `cutoff`, best
        first (ignoring case)."""
        key = query.lower()
        pool = {self.keys[i]: self.originals[i] for i in self.candidates(key)}
        return [pool[match] for match in difflib.get_close_matches(key, list(pool), n, cutoff)]
