"""`cftrec data prepare`: any source -> the canonical dataset.

The pipeline, in order: read (streaming) -> keep the first row of each item id (later rows
counted) -> clean titles, dropping items without a usable title and their interactions (d3:
titles verbatim and every row kept unless --clean-titles) -> per-user chronological order ->
time window (end day inclusive; extended back a year at a time until the catalogue has
--min-items items) and iterative k-core -> split -> optional cold items -> write.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import CftrecError
from ..files import check_output
from .dataset import DEFAULT_MAX_HISTORY, PREPARE_COMMAND, write_dataset
from .sources._common import ReadOptions, SourceData
from .splits import (  # noqa: F401 (chronological, kcore: part of this module's interface)
    _epoch,
    _nonempty,
    assign_split,
    choose_cold_items,
    chronological,
    hold_out,
    kcore,
    window_and_kcore,
)
from .titles import clean_titles

SOURCES = ("amazon2018", "amazon2023", "movielens", "recbole", "sequences", "d3")
SPLIT_METHODS = ("loo", "temporal", "given")
# The D3 recipe is the default for raw Amazon logs (D3's own defaults: the window 2017-10-01 ..
# 2018-11-01 moved back a year at a time until 10,000 items survive the 5-core); other sources
# are used as they come, and d3 files keep their given split exactly (titles verbatim).
D3_WINDOW = {"start": "2017-10-01", "end": "2018-11-01", "min_items": 10_000}
D3_RECIPE = {"kcore": 5, "max_title_words": 20, "split": "temporal", **D3_WINDOW}
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "amazon2018": D3_RECIPE,
    "amazon2023": D3_RECIPE,
    "d3": {"clean_titles": False},
}


@dataclass
class PrepareOptions:
    """Every option of `prepare`; all of them are recorded in meta.json. None = the source's
    default (see SOURCE_DEFAULTS), else off."""

    split: str | None = (
        None  # loo | temporal | given; default: given if the source has one, else loo
    )
    max_history: int = DEFAULT_MAX_HISTORY
    kcore: int | None = None
    window: bool = True  # False: no time window at all (not even the source's default)
    start: str | None = None  # YYYY-MM-DD, first day of the time window
    end: str | None = None  # YYYY-MM-DD, last day of the window (inclusive)
    min_items: int | None = None  # move start back a year at a time until this many items
    clean_titles: bool | None = None  # default: yes, except d3 (its split is kept exactly)
    max_title_words: int | None = None
    min_rating: float | None = None
    cold_items: float | None = None  # fraction of distinct titles held out of training
    seed: int = 42  # chooses the cold items
    items: str | None = None
    meta: str | None = None
    name: str | None = None
    title_field: str | None = None

    def resolved(self, source: str) -> PrepareOptions:
        """The source's defaults filled in (all but the split, which depends on the input)."""
        values = asdict(self)
        for key, value in SOURCE_DEFAULTS.get(source, {}).items():
            if values[key] is None and (self.window or key not in D3_WINDOW):
                values[key] = value
        if values["clean_titles"] is None:
            values["clean_titles"] = True
        return PrepareOptions(**values)


def read_source(source: str, input_path: str | Path, options: PrepareOptions) -> SourceData:
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


def _check_options(source: str, options: PrepareOptions) -> None:
    """Refuse bad options before any input is read."""
    if source not in SOURCES:
        raise CftrecError(f"unknown source '{source}'; use one of {', '.join(SOURCES)}")
    if options.split is not None and options.split not in SPLIT_METHODS:
        raise CftrecError(f"unknown split '{options.split}'; use one of {', '.join(SPLIT_METHODS)}")
    if options.min_rating is not None and source not in ("movielens", "recbole"):
        raise CftrecError(f"--min-rating applies to movielens and recbole inputs, not {source}")
    if options.max_history < 1:
        raise CftrecError("--max-history must be at least 1")
    if options.kcore is not None and options.kcore < 0:
        raise CftrecError(f"--kcore {options.kcore}: expected 0 or more")
    if options.min_items is not None and options.min_items < 0:
        raise CftrecError(f"--min-items {options.min_items}: expected 0 or more")
    if options.max_title_words is not None and options.max_title_words < 1:
        raise CftrecError(f"--max-title-words {options.max_title_words}: expected 1 or more")
    for flag, date in (("--start", options.start), ("--end", options.end)):
        if date is not None:
            _epoch(date, flag)
    windowed = options.start or options.end or options.min_items
    if windowed and not options.window:
        raise CftrecError("--no-window turns the time window off; drop --start/--end/--min-items")
    if options.min_items and not options.start:
        raise CftrecError("--min-items extends the window's --start back; give --start too")
    if options.max_title_words is not None and not options.clean_titles:
        raise CftrecError("--max-title-words is part of title cleaning; add --clean-titles")
    if options.cold_items is not None and not 0 < options.cold_items < 1:
        raise CftrecError(f"--cold-items {options.cold_items}: expected a fraction in (0, 1)")


def _check_input(options: PrepareOptions, data: SourceData) -> None:
    """Refuse options that the input read cannot honour."""
    if options.split == "given" and not data.has_split:
        raise CftrecError("--split given: this input has no split of its own; use loo or temporal")
    if (options.start or options.end or options.min_items) and data.order_only:
        raise CftrecError(
            "--start/--end/--min-items need real timestamps; this source only has order"
        )


def prepare(
    source: str,
    input_path: str | Path,
    out_dir: str | Path,
    options: PrepareOptions | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Read, clean, filter, split and write a dataset; returns its meta.json content.
    `overwrite`: see cftrec.io.check_output (the input files are never replaced)."""
    import pandas as pd

    options = (options or PrepareOptions()).resolved(source)
    _check_options(source, options)
    inputs = (input_path, options.items, options.meta)
    check_output(out_dir, PREPARE_COMMAND, inputs, overwrite)
    data = read_source(source, input_path, options)
    if options.split is None:
        options.split = "given" if data.has_split else "loo"
    _check_input(options, data)
    interactions = data.interactions
    if len(interactions) == 0:
        raise CftrecError(f"{input_path}: no interactions found")
    read_counts = {
        "users": int(interactions["user_id"].nunique()),
        "items": int(data.items["item_id"].nunique()),
        "interactions": len(interactions),
    }
    if data.has_split:  # what the input's own split holds, to report what was kept of it
        read_counts["samples"] = _sample_counts(chronological(interactions))
    _progress(f"read {read_counts['interactions']:,} interactions, {read_counts['items']:,} items")

    # Repeated item ids: the first row wins (counted). Items without a usable title go, with
    # their interactions; so do interactions whose item the item file does not know.
    repeated = data.items["item_id"].duplicated().to_numpy()
    items = data.items[~repeated].reset_index(drop=True)
    unknown = set(interactions["item_id"].astype(str).unique()) - set(items["item_id"])
    if options.clean_titles:
        items, dropped_by_reason = clean_titles(items, options.max_title_words)
        if unknown:
            dropped_by_reason["not_in_item_file"] = len(unknown)
    else:
        _check_verbatim(items, unknown, data.item_file)
        dropped_by_reason = {}
    titled = interactions["item_id"].isin(items["item_id"]).to_numpy()
    interactions = _nonempty(
        interactions[titled],
        input_path,
        f"dropping the items without a usable title in {data.item_file}",
    )

    interactions = chronological(interactions)
    interactions, window = window_and_kcore(interactions, options, input_path)
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
    cold_info = {"count": 0}
    if options.cold_items is not None:
        cold = choose_cold_items(items, options.cold_items, options.seed, input_path)
        before = len(interactions)
        interactions = hold_out(interactions, cold, input_path)
        items = items.assign(cold=items["item_id"].isin(cold))
        cold_info = {
            "count": len(cold),
            "titles": int(items.loc[items["cold"], "title"].nunique()),
            "fraction": options.cold_items,
            "seed": options.seed,
            "dropped_train_interactions": before - len(interactions),
            "cases": _sample_counts(interactions, interactions["item_id"].isin(cold)),
        }
    samples = _sample_counts(interactions)
    titles = items["title"]
    counts = {
        "users": int(interactions["user_id"].nunique()),
        "items": len(items),
        "interactions": len(interactions),
        "samples": samples,
        "distinct_titles": int(titles.nunique()),
        "shared_titles": int((titles.value_counts() > 1).sum()),
        "duplicate_item_rows": int(repeated.sum()),
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
        "cold_items": cold_info,
    }
    write_dataset(out_dir, items, interactions, meta, inputs, overwrite)
    return meta


def summary(meta: dict[str, Any]) -> str:
    """One line for people: what was written, and everything prepare dropped or held out."""
    counts = meta["counts"]
    parts = [
        f"{counts['users']:,} users, {counts['items']:,} items, "
        f"{counts['interactions']:,} interactions; samples "
        + ", ".join(f"{k} {v:,}" for k, v in counts["samples"].items()),
        f"dropped {counts['dropped_items']:,} items without a usable title "
        f"({counts['dropped_interactions']:,} interactions)",
    ]
    if counts["duplicate_item_rows"]:
        parts.append(
            f"{counts['duplicate_item_rows']:,} repeated item rows ignored "
            "(the first row of each item id kept)"
        )
    if meta["window"]:
        window = meta["window"]
        parts.append(f"time window {window['start'] or 'first'} .. {window['end'] or 'last'}")
    given = meta["read"].get("samples")
    if given and meta["options"]["split"] == "given":
        kept = [f"{k} {counts['samples'][k]:,} of {v:,}" for k, v in given.items()]
        parts.append("given samples kept: " + ", ".join(kept))
    cold = meta["cold_items"]
    if cold["count"]:
        parts.append(
            f"{cold['count']:,} cold items (fraction {cold['fraction']} of the titles, seed "
            f"{cold['seed']}; "
            f"{cold['dropped_train_interactions']:,} train interactions dropped): cold cases "
            f"valid {cold['cases']['valid']:,}, test {cold['cases']['test']:,}"
        )
    return "; ".join(parts)


def _check_verbatim(items, unknown: set[str], item_file: str) -> None:
    """Without title cleaning every interaction is kept: each item needs a non-empty title."""
    if unknown:
        example = sorted(unknown)[0]
        raise CftrecError(
            f"{item_file}: {len(unknown):,} item ids of the interactions are missing here "
            f"(e.g. {example!r}); --clean-titles drops them with their interactions"
        )
    empty = items["title"].astype(str).str.strip() == ""
    if empty.any():
        example = items.loc[empty, "item_id"].iloc[0]
        raise CftrecError(
            f"{item_file}: {int(empty.sum()):,} items have an empty title (e.g. item "
            f"{example!r}); --clean-titles drops them with their interactions"
        )


def _sample_counts(interactions, among=None) -> dict[str, int]:
    """Samples per split: interactions with at least one earlier item of the same user (and,
    with `among`, a True there)."""
    import numpy as np

    position = interactions.groupby("user_id", sort=False).cumcount().to_numpy()
    wanted = position >= 1 if among is None else (position >= 1) & np.asarray(among)
    splits = interactions["split"].to_numpy()[wanted]
    return {split: int((splits == split).sum()) for split in ("train", "valid", "test")}


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr)
