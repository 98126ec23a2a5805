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
    only in case stands for them). `add` and `remove` change the index in time proportional
    to the change (removed strings are skipped; `stale` says when a rebuild would pay)."""

    def __init__(self, strings: Iterable[str]):
        self.originals: list[str] = []
        self.keys: list[str] = []
        self.index_of_key: dict[str, int] = {}
        self.dead: set[int] = set()
        postings: dict[str, list[int]] = {}
        gram_counts = []
        for string in strings:
            key = string.lower()
            if key in self.index_of_key:
                continue
            self.index_of_key[key] = len(self.keys)
            grams = _grams(key)
            for gram in grams:
                postings.setdefault(gram, []).append(len(self.keys))
            gram_counts.append(len(grams))
            self.keys.append(key)
            self.originals.append(string)
        self.postings = {gram: np.array(ids, dtype=np.int32) for gram, ids in postings.items()}
        self.added: dict[str, list[int]] = {}  # postings of strings added since
        self.gram_counts = np.array(gram_counts, dtype=np.float64)
        self.size = len(self.keys)  # gram_counts[:size] in use (the rest: spare capacity)

    def __len__(self) -> int:
        return len(self.keys) - len(self.dead)

    def live(self) -> Iterable[tuple[str, str]]:
        """(key, original) of every string not removed, in order."""
        return (
            (key, original)
            for i, (key, original) in enumerate(zip(self.keys, self.originals, strict=True))
            if i not in self.dead
        )

    def add(self, strings: Iterable[str]) -> None:
        for string in strings:
            key = string.lower()
            if key in self.index_of_key:
                continue
            index = self.index_of_key[key] = len(self.keys)
            grams = _grams(key)
            for gram in grams:
                self.added.setdefault(gram, []).append(index)
            if index == len(self.gram_counts):
                grown = np.zeros(max(16, 2 * index), dtype=np.float64)
                grown[:index] = self.gram_counts
                self.gram_counts = grown
            self.gram_counts[index] = len(grams)
            self.size = index + 1
            self.keys.append(key)
            self.originals.append(string)

    def remove(self, strings: Iterable[str]) -> None:
        for string in strings:
            index = self.index_of_key.get(string.lower())
            if index is not None and self.originals[index] == string:
                del self.index_of_key[string.lower()]
                self.dead.add(index)

    @property
    def stale(self) -> bool:
        """More removed strings than live ones: a fresh index would be smaller and faster."""
        return len(self.dead) > len(self)

    def candidates(self, key: str) -> list[int]:
        """At most CANDIDATES indices of the strings sharing the most trigrams with `key`
        (relative to both lengths), reading at most POSTINGS_BUDGET index entries."""
        if len(self) <= CANDIDATES:
            return [i for i in range(len(self.keys)) if i not in self.dead]
        query = _grams(key)
        lists = [self.postings[g] for g in query if g in self.postings]
        lists += [np.array(self.added[g], dtype=np.int32) for g in query if g in self.added]
        lists.sort(key=len)
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
        shared = np.bincount(np.concatenate(taken), minlength=self.size)
        if self.dead:
            shared[np.fromiter(self.dead, dtype=np.int64)] = 0
        score = shared / (len(query) + self.gram_counts[: self.size])
        best = np.argpartition(-score, CANDIDATES)[:CANDIDATES]
        return [int(i) for i in best if shared[i] > 0]

    def find(self, query: str, n: int = 3, cutoff: float = 0.5) -> list[str]:
        """Up to `n` strings whose difflib similarity to `query` is at least `cutoff`, best
        first (ignoring case)."""
        key = query.lower()
        pool = {self.keys[i]: self.originals[i] for i in self.candidates(key)}
        return [pool[match] for match in difflib.get_close_matches(key, list(pool), n, cutoff)]
