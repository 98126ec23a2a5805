"""`cftrec data prepare`: any source -> the canonical dataset.

The pipeline, in order: read (streaming) -> clean titles, dropping items without a usable title
and their interactions -> per-user chronological order -> time window (extended back a year at
a time until the catalogue has --min-items items) and iterative k-core -> split -> write.
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CftrecError
from .catalog import clean_titles
from .dataset import DEFAULT_MAX_HISTORY, write_dataset
from .sources._common import ReadOptions, SourceData

SOURCES = ("amazon2018", "amazon2023", "movielens", "recbole", "sequences", "d3")
SPLIT_METHODS = ("loo", "temporal", "given")
# The D3 recipe is the default for raw Amazon logs; other sources are used as they come.
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "amazon2018": {"kcore": 5, "max_title_words": 20, "split": "temporal"},
    "amazon2023": {"kcore": 5, "max_title_words": 20, "split": "temporal"},
}
TEMPORAL_FRACTIONS = (0.8, 0.1)  # train, valid; test takes the rest


@dataclass
class PrepareOptions:
    """Every option of `prepare`; all of them are recorded in meta.json. None = the source's
    default (see SOURCE_DEFAULTS), else off."""

    split: str | None = (
        None  # loo | temporal | given; default: given if the source has one, else loo
    )
    max_history: int = DEFAULT_MAX_HISTORY
    kcore: int | None = None
    start: str | None = None  # YYYY-MM-DD, first day of the time window
    end: str | None = None  # YYYY-MM-DD, first day after the window
    min_items: int | None = None
    max_title_words: int | None = None
    min_rating: float | None = None
    items: str | None = None
    meta: str | None = None
    name: str | None = None
    title_field: str | None = None

    def resolved(self, source: str, data: SourceData) -> PrepareOptions:
        values = asdict(self)
        for key, value in SOURCE_DEFAULTS.get(source, {}).items():
            if values[key] is None:
                values[key] = value
        if values["split"] is None:
            values["split"] = "given" if data.has_split else "loo"
        return PrepareOptions(**values)


def read_source(source: str, input_path: str | Path, options: PrepareOptions) -> SourceData:
    if source not in SOURCES:
        raise CftrecError(f"unknown source '{source}'; use one of {', '.join(SOURCES)}")
    input_path = Path(input_path)
    if not input_path.exists():
        raise CftrecError(f"{input_path}: no such file or directory")
    read_options = ReadOptions(
        items=Path(options.items) if options.items else None,
        meta=Path(options.meta) if options.meta else None,
        name=options.name,
        title_field=options.title_field,
        min_rating=options.min_rating,
    )
    module = importlib.import_module(f"{__package__}.sources.{source}")
    return module.read(input_path, read_options)


def _check(options: PrepareOptions, data: SourceData) -> None:
    if options.split not in SPLIT_METHODS:
        raise CftrecError(f"unknown split '{options.split}'; use one of {', '.join(SPLIT_METHODS)}")
    if options.split == "given" and not data.has_split:
        raise CftrecError("--split given: this input has no split of its own; use loo or temporal")
    if options.max_history < 1:
        raise CftrecError("--max-history must be at least 1")
    if (options.start or options.end or options.min_items) and data.order_only:
        raise CftrecError(
            "--start/--end/--min-items need real timestamps; this source only has order"
        )
    if options.min_items and not options.start:
        raise CftrecError("--min-items extends the window's --start back; give --start too")


def _epoch(date: str, flag: str) -> int:
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise CftrecError(f"{flag} {date!r}: expected a date YYYY-MM-DD") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp())


def _year_before(date: str) -> str:
    day = dt.date.fromisoformat(date)
    return day.replace(year=day.year - 1, day=min(day.day, 28)).isoformat()


def _nonempty(frame, after: str):
    if len(frame) == 0:
        raise CftrecError(f"no interactions left after {after}; loosen that filter")
    return frame


def chronological(interactions):
    """Rows grouped by user (users in order of first appearance), stably by timestamp within a
    user so that equal timestamps keep the source's order."""
    import numpy as np
    import pandas as pd

    user_codes, _ = pd.factorize(interactions["user_id"])
    order = np.lexsort((interactions["timestamp"].to_numpy(), user_codes))
    return interactions.iloc[order].reset_index(drop=True)


def kcore(interactions, k: int):
    """Iteratively keep users and items with at least k interactions until both hold."""
    if not k or k <= 1:
        return interactions
    while True:
        user_counts = interactions.groupby("user_id", observed=True)["user_id"].transform("size")
        item_counts = interactions.groupby("item_id", observed=True)["item_id"].transform("size")
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return interactions
        interactions = interactions[keep.to_numpy()]


def window_and_kcore(interactions, options: PrepareOptions) -> tuple[Any, dict]:
    """Apply the time window and k-core; extend --start back a year at a time until at least
    --min-items items remain (or the window reaches the first interaction)."""
    timestamps = interactions["timestamp"].to_numpy()
    first = int(timestamps.min())
    end = _epoch(options.end, "--end") if options.end else None
    start = options.start
    while True:
        keep = timestamps >= (_epoch(start, "--start") if start else first)
        if end is not None:
            keep &= timestamps < end
        windowed = interactions[keep]
        result = kcore(windowed, options.kcore)
        if (
            not options.min_items
            or result["item_id"].nunique() >= options.min_items
            or _epoch(start, "--start") <= first
        ):
            break
        start = _year_before(start)
    info = {"start": start, "end": options.end} if (options.start or options.end) else {}
    if info:
        _nonempty(windowed, f"the time window [{start or 'first'}, {options.end or 'last'})")
    if options.kcore and options.kcore > 1:
        within = " within the time window" if info else ""
        _nonempty(result, f"the {options.kcore}-core filter (--kcore){within}")
    return result, info


def assign_split(interactions, method: str):
    """Split labels for per-user chronological rows."""
    import numpy as np

    users = interactions.groupby("user_id", observed=True, sort=False)["user_id"]
    position = users.cumcount().to_numpy()
    size = users.transform("size").to_numpy()
    if method == "given":
        return interactions["split"].astype(str).to_numpy()
    labels = np.full(len(interactions), "train", dtype=object)
    if method == "loo":
        # Per user: last item test, second-last valid; a user needs the earlier items as history.
        labels[(position == size - 1) & (size >= 2)] = "test"
        labels[(position == size - 2) & (size >= 3)] = "valid"
        return labels
    # temporal (D3): samples (interactions with at least one earlier item) sorted by time,
    # first 80% train, next 10% valid, the rest test; stable, so a user's labels stay in order.
    samples = np.flatnonzero(position >= 1)
    by_time = samples[np.argsort(interactions["timestamp"].to_numpy()[samples], kind="stable")]
    n_train = int(len(by_time) * TEMPORAL_FRACTIONS[0])
    n_valid = int(len(by_time) * sum(TEMPORAL_FRACTIONS)) - n_train
    labels[by_time[n_train : n_train + n_valid]] = "valid"
    labels[by_time[n_train + n_valid :]] = "test"
    return labels


def prepare(
    source: str, input_path: str | Path, out_dir: str | Path, options: PrepareOptions | None = None
) -> dict[str, Any]:
    """Read, clean, filter, split and write a dataset; returns its meta.json content."""
    import pandas as pd

    options = options or PrepareOptions()
    data = read_source(source, input_path, options)
    options = options.resolved(source, data)
    _check(options, data)
    interactions = data.interactions
    read_counts = {
        "users": int(interactions["user_id"].nunique()),
        "items": len(data.items),
        "interactions": len(interactions),
    }
    if len(interactions) == 0:
        raise CftrecError(f"{input_path}: no interactions found")
    if options.min_rating is not None and source not in ("movielens", "recbole"):
        raise CftrecError(f"--min-rating applies to movielens and recbole inputs, not {source}")
    _progress(f"read {read_counts['interactions']:,} interactions, {read_counts['items']:,} items")

    # Items without a usable title go, with their interactions; so do interactions whose item
    # the item file does not know.
    items, dropped_by_reason = clean_titles(data.items, options.max_title_words)
    titled = interactions["item_id"].isin(items["item_id"]).to_numpy()
    unknown_items = interactions.loc[~titled, "item_id"].astype(str).unique()
    unknown_items = set(unknown_items) - set(data.items["item_id"])
    if unknown_items:
        dropped_by_reason["not_in_item_file"] = len(unknown_items)
    interactions = _nonempty(interactions[titled], "dropping items without a usable title")

    interactions = chronological(interactions)
    interactions, window = window_and_kcore(interactions, options)
    if window:
        _progress(f"window {window['start'] or 'first'} .. {window['end'] or 'last'}")
    used = set(interactions["item_id"].astype(str).unique())
    unused = int((~items["item_id"].isin(used)).sum())
    items = items[items["item_id"].isin(used)].reset_index(drop=True)

    interactions = pd.DataFrame(
        {
            "user_id": interactions["user_id"].astype(str).to_numpy(),
            "item_id": interactions["item_id"].astype(str).to_numpy(),
            "timestamp": interactions["timestamp"].to_numpy(),
            "split": assign_split(interactions, options.split),
        }
    )
    samples = _sample_counts(interactions)
    titles = items["title"]
    counts = {
        "users": int(interactions["user_id"].nunique()),
        "items": len(items),
        "interactions": len(interactions),
        "samples": samples,
        "distinct_titles": int(titles.nunique()),
        "shared_titles": int((titles.value_counts() > 1).sum()),
        "dropped_items": sum(dropped_by_reason.values()),
        "dropped_items_by_reason": dropped_by_reason,
        "dropped_interactions": read_counts["interactions"] - int(titled.sum()),
        "filtered_interactions": int(titled.sum()) - len(interactions),
        "unused_items": unused,
        # users whose every interaction was dropped or filtered away
        "dropped_users": read_counts["users"] - int(interactions["user_id"].nunique()),
    }
    meta = {
        "source": source,
        "input": str(Path(input_path).resolve()),
        "files": data.files,
        "order_only": data.order_only,
        "options": asdict(options),
        "window": window,
        "read": read_counts,
        "counts": counts,
    }
    write_dataset(out_dir, items, interactions, meta)
    return meta


def _sample_counts(interactions) -> dict[str, int]:
    """Samples per split: interactions with at least one earlier item of the same user."""
    position = interactions.groupby("user_id", sort=False).cumcount().to_numpy()
    splits = interactions["split"].to_numpy()[position >= 1]
    return {split: int((splits == split).sum()) for split in ("train", "valid", "test")}


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr)
