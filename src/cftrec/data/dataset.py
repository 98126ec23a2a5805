"""The canonical on-disk dataset that every `cftrec data prepare` source writes.

A dataset directory holds:
  items.parquet         item_id (str), title (str, cleaned), optional extra string columns
  interactions.parquet  user_id (str), item_id (str), timestamp (int64), split (train|valid|test);
                        rows are grouped by user and in chronological order within a user
                        (`timestamp` is a real time or, for order-only sources, the position)
  meta.json             source, options, counts, fingerprint, cftrec version

A *sample* is one target interaction with up to `max_history` earlier items of the same user
(earlier splits included) and at least one. Train samples come from train interactions, and so on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import CftrecError
from ..io import atomic_directory, read_json, write_json

SPLITS = ("train", "valid", "test")
ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
META_FILE = "meta.json"
DEFAULT_MAX_HISTORY = 10


@dataclass(frozen=True)
class Sample:
    """One next-item prediction case. `history` holds item ids, oldest first."""

    user_id: str
    history: tuple[str, ...]
    target: str
    timestamp: int


class Catalog:
    """Items and their titles. Several items may share a title: evaluation and decoding work on
    *distinct titles*, each mapped back to all of its item ids."""

    def __init__(self, item_ids: Sequence[str], titles: Sequence[str]):
        if len(item_ids) != len(titles):
            raise ValueError("item_ids and titles differ in length")
        self.item_ids: list[str] = list(item_ids)
        self.title_of: dict[str, str] = dict(zip(self.item_ids, titles, strict=True))
        self.items_of_title: dict[str, list[str]] = {}
        for item_id, title in zip(self.item_ids, titles, strict=True):
            self.items_of_title.setdefault(title, []).append(item_id)
        # Distinct titles in order of first appearance: a stable index for decoding/evaluation.
        self.titles: list[str] = list(self.items_of_title)
        self.index_of_title: dict[str, int] = {t: i for i, t in enumerate(self.titles)}

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.title_of

    @property
    def shared_titles(self) -> int:
        """How many distinct titles belong to more than one item."""
        return sum(1 for ids in self.items_of_title.values() if len(ids) > 1)

    def title(self, item_id: str) -> str:
        return self.title_of[item_id]

    def titles_for(self, item_ids: Iterable[str]) -> list[str]:
        return [self.title_of[i] for i in item_ids]


def content_fingerprint(items, interactions) -> str:
    """sha256 over the dataset's content (independent of file encoding details)."""
    import pandas as pd

    digest = hashlib.sha256()
    for frame in (items, interactions):
        digest.update(",".join(frame.columns).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return digest.hexdigest()[:16]


def write_dataset(out_dir: str | Path, items, interactions, meta: dict[str, Any]) -> Path:
    """Write a canonical dataset atomically (temp dir, then rename).

    `items`: DataFrame with item_id, title (+ extra columns); `interactions`: DataFrame with
    user_id, item_id, timestamp, split, already in per-user chronological order.
    """
    from .. import __version__

    items = items.reset_index(drop=True).astype({"item_id": str, "title": str})
    interactions = interactions[["user_id", "item_id", "timestamp", "split"]].reset_index(drop=True)
    interactions = interactions.astype(
        {"user_id": str, "item_id": str, "timestamp": "int64", "split": str}
    )
    bad_split = set(interactions["split"].unique()) - set(SPLITS)
    if bad_split:
        raise ValueError(f"unknown split labels {sorted(bad_split)}")
    meta = dict(meta)
    meta["fingerprint"] = content_fingerprint(items, interactions)
    meta["cftrec_version"] = __version__
    with atomic_directory(out_dir) as tmp:
        items.to_parquet(tmp / ITEMS_FILE, index=False)
        interactions.to_parquet(tmp / INTERACTIONS_FILE, index=False)
        write_json(tmp / META_FILE, meta)
    return Path(out_dir)


class Dataset:
    """A prepared dataset: `Dataset.load(dir)`, then `.catalog` and `.samples(split)`."""

    def __init__(self, path: Path, items, interactions, meta: dict[str, Any]):
        self.path = path
        self.items = items
        self.interactions = interactions
        self.meta = meta

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        import pandas as pd

        path = Path(path)
        for name in (ITEMS_FILE, INTERACTIONS_FILE, META_FILE):
            if not (path / name).exists():
                raise CftrecError(
                    f"{path}: not a prepared cftrec dataset (missing {name}); "
                    "run `cftrec data prepare` first"
                )
        items = pd.read_parquet(path / ITEMS_FILE)
        interactions = pd.read_parquet(path / INTERACTIONS_FILE)
        return cls(path, items, interactions, read_json(path / META_FILE))

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.items["item_id"].tolist(), self.items["title"].tolist())

    @cached_property
    def user_sequences(self) -> dict[str, tuple[list[str], list[int], list[str]]]:
        """user -> (item ids, timestamps, splits), chronological."""
        sequences: dict[str, tuple[list[str], list[int], list[str]]] = {}
        columns = (
            self.interactions[c].tolist() for c in ("user_id", "item_id", "timestamp", "split")
        )
        for user, item, timestamp, split in zip(*columns, strict=True):
            entry = sequences.get(user)
            if entry is None:
                entry = sequences[user] = ([], [], [])
            entry[0].append(item)
            entry[1].append(timestamp)
            entry[2].append(split)
        return sequences

    def samples(self, split: str, max_history: int = DEFAULT_MAX_HISTORY) -> list[Sample]:
        """Every `split` interaction that has at least one earlier item, with its history."""
        if split not in SPLITS:
            raise CftrecError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
        if max_history < 1:
            raise CftrecError("max_history must be at least 1")
        result = []
        for user, (items, timestamps, splits) in self.user_sequences.items():
            for position in range(1, len(items)):
                if splits[position] == split:
                    history = tuple(items[max(0, position - max_history) : position])
                    result.append(Sample(user, history, items[position], timestamps[position]))
        return result

    def train_popularity(self) -> dict[str, int]:
        """Number of train interactions per distinct title (for popularity baselines/analysis)."""
        train = self.interactions[self.interactions["split"] == "train"]
        counts: dict[str, int] = {}
        title_of = self.catalog.title_of
        for item_id in train["item_id"].tolist():
            title = title_of[item_id]
            counts[title] = counts.get(title, 0) + 1
        return counts


def close_titles(catalog: Catalog, entry: str, n: int = 3) -> list[str]:
    """The catalogue titles closest to a mistyped `entry`, ignoring case (for error messages)."""
    import difflib

    by_lower: dict[str, str] = {}
    for title in catalog.titles:
        by_lower.setdefault(title.lower(), title)
    matches = difflib.get_close_matches(entry.lower(), list(by_lower), n=n, cutoff=0.5)
    return [by_lower[match] for match in matches]


def resolve_history(catalog: Catalog, entries: Sequence[str]) -> list[str]:
    """Map what a person typed (titles or item ids) to item ids, or fail with close matches.

    An exact title maps to the first item carrying it (items sharing a title read the same to
    a text model); an exact item id maps to itself.
    """
    resolved = []
    for entry in entries:
        if entry in catalog.items_of_title:
            resolved.append(catalog.items_of_title[entry][0])
        elif entry in catalog.title_of:
            resolved.append(entry)
        else:
            close = close_titles(catalog, entry)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise CftrecError(f"unknown item {entry!r}: not a catalogue title or item id{hint}")
    return resolved
