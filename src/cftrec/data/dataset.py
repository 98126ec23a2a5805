"""The canonical on-disk dataset that every `cftrec data prepare` source writes.

A dataset directory holds:
  items.parquet         item_id (str), title (str; cleaned unless prepared without title
                        cleaning, as d3 is by default), optional extra string columns, and
                        `cold` (bool) when cold items were held out (no column: no cold items)
  interactions.parquet  user_id (str), item_id (str), timestamp (int64), split (train|valid|test);
                        rows are grouped by user and in chronological order within a user
                        (`timestamp` is a real time or, for order-only sources, the position)
  meta.json             source, options, counts, fingerprint, cftrec version, and `cold_items`:
                        {"count": N} plus, when used, titles, fraction, seed,
                        dropped_train_interactions and cases (cold samples per split)

A *sample* is one target interaction with up to `max_history` earlier items of the same user
(earlier splits included) and at least one. Train samples come from train interactions, and so on.

Cold items (`prepare --cold-items FRACTION --seed N`): a seeded fraction of the distinct titles
is held out of training entirely; every item carrying one is cold. No train interaction is on a
cold item, so no train sample has one as its target or in its history; valid/test samples
whose target is cold are the cold cases. The contract for evaluation: `Dataset.cold_items`, a
frozenset of item ids (empty when not used); a sample is cold when `sample.target` is in it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import CftrecError
from ..files import atomic_directory, read_json, read_parquet, write_json
from .titles import clean_title

SPLITS = ("train", "valid", "test")
ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
META_FILE = "meta.json"
PREPARE_COMMAND = "data prepare"  # what the output marker of a dataset names
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
    *distinct titles*, each mapped back to all of its item ids.

    A live catalogue changes in place (`add`, `remove`: work proportional to the change). Item
    ids keep their order; a title that leaves gives its index to the last title, so indices
    stay dense (decoding's trie, responses and embeddings make the same moves)."""

    def __init__(self, item_ids: Sequence[str], titles: Sequence[str]):
        if len(item_ids) != len(titles):
            raise ValueError("item_ids and titles differ in length")
        self.title_of: dict[str, str] = dict(zip(item_ids, titles, strict=True))
        self.items_of_title: dict[str, list[str]] = {}
        for item_id, title in zip(item_ids, titles, strict=True):
            self.items_of_title.setdefault(title, []).append(item_id)
        # Distinct titles in order of first appearance: a stable index for decoding/evaluation.
        self.titles: list[str] = list(self.items_of_title)
        self.index_of_title: dict[str, int] = {t: i for i, t in enumerate(self.titles)}

    @property
    def item_ids(self) -> list[str]:
        return list(self.title_of)

    def __len__(self) -> int:
        return len(self.title_of)

    def add(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """Add (item id, title) pairs in place (every id new: else CftrecError, nothing
        changed). Returns the titles new to the catalogue, in index order, after the others."""
        taken = [item_id for item_id, _ in items if item_id in self.title_of]
        if taken:
            raise CftrecError(f"item id {taken[0]!r} is already in the catalogue")
        new = []
        for item_id, title in items:
            self.title_of[item_id] = title
            holders = self.items_of_title.setdefault(title, [])
            if not holders:
                self.index_of_title[title] = len(self.titles)
                self.titles.append(title)
                new.append(title)
            holders.append(item_id)
        self._matches_changed(new, [item_id for item_id, _ in items], "add")
        return new

    def remove(self, item_ids: Iterable[str]) -> list[int]:
        """Remove items in place (each must be in the catalogue and one item must stay: else
        CftrecError, nothing changed). Returns the index of every title that left, in order:
        each time, the last title took that index."""
        gone = self.check_removal(item_ids)
        left, left_titles = [], []
        for item_id in gone:
            title = self.title_of.pop(item_id)
            holders = self.items_of_title[title]
            holders.remove(item_id)
            if holders:
                continue
            del self.items_of_title[title]
            index = self.index_of_title.pop(title)
            last = self.titles.pop()
            if index < len(self.titles):
                self.titles[index] = last
                self.index_of_title[last] = index
            left.append(index)
            left_titles.append(title)
        self._matches_changed(left_titles, gone, "remove")
        return left

    def check_removal(self, item_ids: Iterable[str]) -> list[str]:
        """The distinct ids of a removal that `remove` would make, or CftrecError."""
        gone = list(dict.fromkeys(item_ids))
        for item_id in gone:
            if item_id not in self.title_of:
                raise CftrecError(f"unknown item id {item_id!r}: not in the catalogue")
        if len(gone) == len(self.title_of):
            raise CftrecError("cannot remove every item of the catalogue")
        return gone

    def _matches_changed(self, titles: list[str], item_ids: list[str], change: str) -> None:
        """Keep the close-match indexes built so far up to date (dropped when mostly removed
        strings: rebuilt on their next use)."""
        for name, strings in (("title_matches", titles), ("item_id_matches", item_ids)):
            matches = self.__dict__.get(name)
            if matches is not None:
                getattr(matches, change)(strings)
                if matches.stale:
                    del self.__dict__[name]

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

    def items_titled(self, text: str) -> list[str]:
        """The items whose title is `text`, as prepared or as a raw source wrote it (after the
        cleaning `prepare` applies: HTML entities, surrounding quotes); [] when none."""
        found = self.items_of_title.get(text)
        if found is None:
            cleaned, _ = clean_title(text)
            found = self.items_of_title.get(cleaned, []) if cleaned is not None else []
        return list(found)

    @cached_property
    def title_matches(self):
        """`CloseMatches` over the titles: suggestions for a mistyped one (built on first use)."""
        from .close_matches import CloseMatches

        return CloseMatches(self.titles)

    @cached_property
    def item_id_matches(self):
        from .close_matches import CloseMatches

        return CloseMatches(self.item_ids)


def content_fingerprint(items, interactions) -> str:
    """sha256 over the dataset's content (independent of file encoding details)."""
    import pandas as pd

    digest = hashlib.sha256()
    for frame in (items, interactions):
        digest.update(",".join(frame.columns).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return digest.hexdigest()[:16]


def write_dataset(
    out_dir: str | Path,
    items,
    interactions,
    meta: dict[str, Any],
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
) -> Path:
    """Write a canonical dataset atomically (temp dir, then rename).

    `items`: DataFrame with item_id, title (+ extra columns); `interactions`: DataFrame with
    user_id, item_id, timestamp, split, already in per-user chronological order. `inputs` and
    `overwrite`: the output policy of cftrec.io.check_output.
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
    with atomic_directory(out_dir, PREPARE_COMMAND, inputs, overwrite) as tmp:
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
        path = Path(path)
        for name in (ITEMS_FILE, INTERACTIONS_FILE, META_FILE):
            if not (path / name).exists():
                raise CftrecError(
                    f"{path}: not a prepared cftrec dataset (missing {name}); "
                    "run `cftrec data prepare` first"
                )
        meta = read_json(path / META_FILE, expect=dict)
        if not isinstance(meta.get("fingerprint"), str):
            raise CftrecError(f"{path / META_FILE}: missing the dataset 'fingerprint'")
        items = read_parquet(path / ITEMS_FILE, ("item_id", "title"))
        interactions = read_parquet(
            path / INTERACTIONS_FILE, ("user_id", "item_id", "timestamp", "split")
        )
        return cls(path, items, interactions, meta)

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @cached_property
    def cold_items(self) -> frozenset[str]:
        """Item ids held out of training (`prepare --cold-items`); empty when none were."""
        if "cold" not in self.items.columns:
            return frozenset()
        return frozenset(self.items.loc[self.items["cold"].astype(bool), "item_id"])

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
    """The catalogue titles closest to a mistyped `entry`, ignoring case (for error messages);
    milliseconds per call whatever the catalogue size."""
    return catalog.title_matches.find(entry, n)


def unknown_item_message(entry: str, close: Sequence[str]) -> str:
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown item {entry!r}: not a catalogue title or item id{hint}"


def resolve_history(catalog: Catalog, entries: Sequence[str]) -> list[str]:
    """Map what a person typed (titles or item ids) to item ids, never guessing.

    An entry is an item id or a catalogue title, either as prepared or as the raw file wrote it
    (HTML entities such as `&rdquo;`, surrounding quotes: `prepare`'s cleaning is applied to
    the entry). A title maps to the first item carrying it (items sharing a title read the same
    to a text model). An entry that is an item id and also the title of another item is an
    error naming both; an unknown one fails with the closest titles. Evaluation and the Python
    API take item ids only (`require_item_ids`).
    """
    resolved = []
    for entry in entries:
        by_title = catalog.items_titled(entry)
        if entry in catalog.title_of:
            if by_title and entry not in by_title:
                other = by_title[0]
                raise CftrecError(
                    f"ambiguous item {entry!r}: it is item id {entry} (titled "
                    f"{catalog.title_of[entry]!r}) and the title of item {other}; type item "
                    f"{entry}'s title or item {other}'s id instead"
                )
            resolved.append(entry)
        elif by_title:
            resolved.append(by_title[0])
        else:
            raise CftrecError(unknown_item_message(entry, close_titles(catalog, entry)))
    return resolved


def require_item_ids(catalog: Catalog, item_ids: Sequence[str]) -> list[str]:
    """`item_ids` as a list when every one is a catalogue item id (no title lookup), else a
    CftrecError naming the first unknown one."""
    for item_id in item_ids:
        if item_id not in catalog.title_of:
            raise CftrecError(f"unknown item id {item_id!r} (expected catalogue item ids)")
    return list(item_ids)
