"""BIGRec/D3/CFT CSV files: `train_NAME.csv`, `valid_NAME.csv`, `test_NAME.csv` (whichever
exist; `train.csv`... without a name) plus the item file `info_NAME.txt` (`title<TAB>item_id` or
`semantic_id<TAB>title<TAB>item_id`), each file also gzipped (`.csv.gz`, `.txt.gz`). Each CSV
row is one sample: `history_item_id` (a list written as a Python literal, parsed with
ast.literal_eval, never eval) and `item_id`, optionally `user_id`, `timestamp` and
`history_timestamp`.

Per-user chronological sequences are rebuilt from the rows (file order: train, valid, test):
the first row's history, then every row's target; each row's history must end the sequence
built so far. Items that appear only in a user's first history are earlier interactions and
are labelled train, the targets keep the split of their file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from ...errors import CftrecError, InputError
from ._common import (
    InteractionBuilder,
    ReadOptions,
    SourceData,
    find_file,
    header_index,
    items_frame,
    iter_delimited,
    iter_lines,
    no_records,
    parse_id,
    parse_int,
    plain_name,
)

SPLITS = ("train", "valid", "test")
INFO_PATTERN = re.compile(r"^info(?:_(.+))?\.txt$")


def _files(folder: Path, name: str | None) -> tuple[dict[str, Path], Path]:
    if not folder.is_dir():
        raise CftrecError(
            f"{folder}: d3 input is a folder with train/valid/test CSVs and info file"
        )
    names = sorted(
        {m.group(1) or "" for p in folder.iterdir() if (m := INFO_PATTERN.match(plain_name(p)))}
    )
    if name is None:
        if len(names) != 1:
            shown = ", ".join(n or "(none)" for n in names) or "no info*.txt file"
            raise CftrecError(f"{folder}: pick the dataset with --name ({shown})")
        name = names[0]
    suffix = f"_{name}" if name else ""
    info = find_file(folder, f"info{suffix}.txt")
    if info is None:
        raise CftrecError(f"{folder / f'info{suffix}.txt'}: no such file (the d3 item file)")
    csvs = {s: find_file(folder, f"{s}{suffix}.csv") for s in SPLITS}
    csvs = {s: path for s, path in csvs.items() if path is not None}
    if not csvs:
        raise CftrecError(f"{folder}: no train/valid/test{suffix}.csv file (.gz accepted)")
    return csvs, info


def read_info(path: Path):
    """Items from the info file: the last field is the item id, the one before it the title."""
    rows, width = [], None
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        fields = text.split("\t")
        width = width or len(fields)
        if len(fields) < 2 or len(fields) != width:
            raise InputError(
                path,
                f"expected {width if width >= 2 else '2 or 3'} tab-separated fields, found {len(fields)}",
                number,
            )
        item = parse_id(fields[-1], path, number, "item id")
        extra = [fields[0]] if width == 3 else []
        rows.append((item, fields[-2], *extra))
    if not rows:
        raise no_records(path)
    return items_frame(rows, ["semantic_id"] if width == 3 else [])


def parse_list(text: str, path: Path, line: int, column: str) -> list:
    """A list of ids or numbers written as a Python/JSON literal, parsed without eval."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise InputError(path, f"{column} is not a list literal: {text[:40]!r}", line) from None
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int | str) and not isinstance(v, bool) for v in value
    ):
        raise InputError(path, f"{column} must be a list of ids or numbers: {text[:40]!r}", line)
    return list(value)


def read(input_path: Path, options: ReadOptions) -> SourceData:
    csvs, info = _files(input_path, options.name)
    builder = InteractionBuilder(with_split=True)
    recent: dict[str, list[str]] = {}  # user -> latest item ids (histories are checked on them)
    length: dict[str, int] = {}  # user -> interactions so far (the position when order-only)
    order_only = None
    for split, path in csvs.items():
        rows = iter_delimited(path, ",")
        first = next(rows, None)
        if first is None:
            raise no_records(path)
        header = [f.strip() for f in first[1]]
        index = header_index(
            path, header, {"history_item_id": ("history_item_id",), "item_id": ("item_id",)}
        )
        user_at = header.index("user_id") if "user_id" in header else None
        timed = "timestamp" in header and "history_timestamp" in header
        if order_only is not None and order_only == timed:
            raise InputError(
                path, "timestamp columns present in some CSV files and not in others", 1
            )
        order_only = not timed
        number = None
        for number, fields in rows:  # noqa: B007 (number used after the loop)
            if len(fields) != len(header):
                raise InputError(
                    path, f"expected {len(header)} fields, found {len(fields)}", number
                )
            user = (
                parse_id(fields[user_at], path, number, "user_id")
                if user_at is not None
                else f"{split}-{number}"
            )
            history = [
                parse_id(v, path, number, "history item id")
                for v in parse_list(
                    fields[index["history_item_id"]], path, number, "history_item_id"
                )
            ]
            target = parse_id(fields[index["item_id"]], path, number, "item_id")
            if timed:
                times = [
                    parse_int(v, path, number, "history timestamp")
                    for v in parse_list(
                        fields[header.index("history_timestamp")], path, number, "history_timestamp"
                    )
                ]
                time = parse_int(fields[header.index("timestamp")], path, number, "timestamp")
                if len(times) != len(history):
                    raise InputError(
                        path, "history_timestamp and history_item_id differ in length", number
                    )
            tail = recent.get(user)
            if tail is None:
                if not history:
                    raise InputError(path, "empty history_item_id in a user's first row", number)
                for position, item in enumerate(history):
                    builder.add(user, item, times[position] if timed else position, "train")
                tail = recent[user] = list(history)
                length[user] = len(history)
            elif len(history) > len(tail) or tail[len(tail) - len(history) :] != history:
                raise InputError(
                    path,
                    f"history of user {user} does not continue the user's earlier rows",
                    number,
                )
            builder.add(user, target, time if timed else length[user], split)
            length[user] += 1
            tail.append(target)
            del tail[: max(0, len(tail) - 1000)]  # bounded: histories are far shorter
        if number is None:
            raise no_records(path)
    return SourceData(
        read_info(info),
        builder.frame(),
        has_split=True,
        order_only=bool(order_only),
        files=[*map(str, csvs.values()), str(info)],
    )
