"""`cftrec data export`: a prepared dataset as RecBole atomic files or BIGRec/D3 CSV files."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CftrecError
from ..files import atomic_directory
from .dataset import DEFAULT_MAX_HISTORY, SPLITS, Dataset

FORMATS = ("recbole", "d3")


def export(
    dataset: Dataset,
    fmt: str,
    out_dir: str | Path,
    name: str | None = None,
    max_history: int = DEFAULT_MAX_HISTORY,
    overwrite: bool = False,
) -> list[Path]:
    """Write the dataset in `fmt` into `out_dir` (atomically); returns the files written.
    `overwrite`: see cftrec.io.check_output."""
    if fmt not in FORMATS:
        raise CftrecError(f"unknown export format '{fmt}'; use one of {', '.join(FORMATS)}")
    name = check_name(dataset.path.resolve().name if name is None else name)
    with atomic_directory(out_dir, "data export", (dataset.path,), overwrite) as tmp:
        names = (
            _recbole(dataset, tmp, name)
            if fmt == "recbole"
            else _d3(dataset, tmp, name, max_history)
        )
    return [Path(out_dir) / n for n in names]


def check_name(name: str) -> str:
    """A file-name stem that stays inside the output folder: no path separator, not '.'/'..'."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise CftrecError(
            f"--name {name!r}: expected a plain file-name stem (no '/', '\\', '.' or '..')"
        )
    return name


def _clean(text: str) -> str:
    # Atomic files are tab-separated lines: a tab or line break inside a title would break them.
    return str(text).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def _recbole(dataset: Dataset, out: Path, name: str) -> list[str]:
    frame = dataset.interactions
    with open(out / f"{name}.inter", "w", encoding="utf-8") as handle:
        handle.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, item, time in zip(
            frame["user_id"], frame["item_id"], frame["timestamp"], strict=True
        ):
            handle.write(f"{user}\t{item}\t{time}\n")
    with open(out / f"{name}.item", "w", encoding="utf-8") as handle:
        handle.write("item_id:token\ttitle:token_seq\n")
        for item, title in zip(dataset.items["item_id"], dataset.items["title"], strict=True):
            handle.write(f"{item}\t{_clean(title)}\n")
    return [f"{name}.inter", f"{name}.item"]


def _d3(dataset: Dataset, out: Path, name: str, max_history: int) -> list[str]:
    """One CSV row per sample (D3's columns), lists as JSON (a valid Python literal too); a
    split without samples gets no file (the d3 reader refuses a header-only one)."""
    import csv

    catalog = dataset.catalog
    numeric = all(i.isdigit() and str(int(i)) == i for i in catalog.item_ids)
    as_id = int if numeric else str  # D3 files hold integer ids
    with_samples = {
        splits[position]
        for _, _, splits in dataset.user_sequences.values()
        for position in range(1, len(splits))
    }
    names = []
    for split in (s for s in SPLITS if s in with_samples):
        file_name = f"{split}_{name}.csv"
        with open(out / file_name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "user_id",
                    "history_item_id",
                    "item_id",
                    "history_item_title",
                    "item_title",
                    "history_timestamp",
                    "timestamp",
                ]
            )
            for user, (items, stamps, splits) in dataset.user_sequences.items():
                for position in range(1, len(items)):
                    if splits[position] != split:
                        continue
                    start = max(0, position - max_history)
                    history = items[start:position]
                    writer.writerow(
                        [
                            user,
                            json.dumps([as_id(i) for i in history]),
                            as_id(items[position]),
                            json.dumps(catalog.titles_for(history), ensure_ascii=False),
                            catalog.title(items[position]),
                            json.dumps([int(t) for t in stamps[start:position]]),
                            int(stamps[position]),
                        ]
                    )
        names.append(file_name)
    info = f"info_{name}.txt"
    with open(out / info, "w", encoding="utf-8") as handle:
        for item, title in zip(dataset.items["item_id"], dataset.items["title"], strict=True):
            handle.write(f"{_clean(title)}\t{item}\n")
    return [*names, info]
