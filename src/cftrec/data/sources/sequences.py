"""SASRec/P5 sequence files: `user item item ...` per line, chronological, plus `items.tsv`
(header with `item_id` and `title`, tab-separated, CSV quoting; other columns are kept).

INPUT is the sequence file, or a folder holding `sequential_data.txt` (or one other `.txt`), or
the pre-split variant `sequential_train.txt`, `sequential_valid.txt`, `sequential_test.txt`
whose line N belongs to the same user in all three files (a user's full history is train, then
valid, then test; a valid/test line may hold the user id alone). Every file may be gzipped
(`.txt.gz`, `items.tsv.gz`). One line per user: a user id on a second line is an error (its
order relative to the first line would be a guess).
"""

from __future__ import annotations

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
    plain_name,
)

SPLIT_FILES = {
    "train": "sequential_train.txt",
    "valid": "sequential_valid.txt",
    "test": "sequential_test.txt",
}
ITEMS_FILE = "items.tsv"


def _new_user(seen: dict[str, int], user: str, path: Path, number: int) -> None:
    """Record `user`'s line, or fail when an earlier line already holds the user."""
    if user in seen:
        raise InputError(
            path, f"user {user} already has line {seen[user]} (one line per user)", number
        )
    seen[user] = number


def read_items_tsv(path: Path):
    """`items.tsv`: header row naming item_id and title; the other columns become extra fields."""
    rows, header, index = [], None, None
    for number, fields in iter_delimited(path, "\t"):
        if header is None:
            header = [f.strip() for f in fields]
            index = header_index(
                path, header, {"item id": ("item_id", "id"), "title": ("title",)}, number
            )
            continue
        if len(fields) != len(header):
            raise InputError(
                path, f"expected {len(header)} tab-separated fields, found {len(fields)}", number
            )
        item = parse_id(fields[index["item id"]], path, number, "item id")
        extra = [fields[i] for i in range(len(header)) if i not in index.values()]
        rows.append((item, fields[index["title"]], *extra))
    if not rows:
        raise no_records(path)
    extra_names = [h for i, h in enumerate(header) if i not in index.values()]
    return items_frame(rows, extra_names)


def _parse_line(path: Path, number: int, text: str) -> tuple[str, list[str]] | None:
    tokens = text.split()
    if not tokens:
        return None
    user = parse_id(tokens[0], path, number, "user id", numeric=True)
    items = [parse_id(t, path, number, "item id", numeric=True) for t in tokens[1:]]
    return user, items


def _sequence_file(folder: Path) -> Path:
    default = find_file(folder, "sequential_data.txt")
    if default:
        return default
    candidates = sorted(
        p
        for p in folder.iterdir()
        if plain_name(p).endswith(".txt") and plain_name(p).lower() != "readme.txt"
    )
    if len(candidates) != 1:
        raise CftrecError(
            f"{folder}: expected sequential_data.txt, one other .txt sequence file, or "
            f"{', '.join(SPLIT_FILES.values())} (.gz accepted)"
        )
    return candidates[0]


def read(input_path: Path, options: ReadOptions) -> SourceData:
    folder = input_path if input_path.is_dir() else input_path.parent
    items_path = options.items or find_file(folder, ITEMS_FILE)
    if items_path is None or not items_path.exists():
        missing = items_path or folder / ITEMS_FILE
        raise CftrecError(f"{missing}: no such file (the item titles; pass --items)")
    presplit = input_path.is_dir() and find_file(folder, SPLIT_FILES["train"]) is not None
    builder = InteractionBuilder(with_split=presplit)
    if presplit:
        files = _read_presplit(builder, folder)
    else:
        sequence_path = _sequence_file(folder) if input_path.is_dir() else input_path
        files = [sequence_path]
        seen: dict[str, int] = {}
        for number, text in iter_lines(sequence_path):
            parsed = _parse_line(sequence_path, number, text)
            if parsed:
                user, items = parsed
                _new_user(seen, user, sequence_path, number)
                for position, item in enumerate(items):
                    builder.add(user, item, position)
        if not seen:
            raise no_records(sequence_path)
    items = read_items_tsv(items_path)
    return SourceData(
        items,
        builder.frame(),
        has_split=presplit,
        order_only=True,
        files=[str(p) for p in [*files, items_path]],
    )


def _read_presplit(builder: InteractionBuilder, folder: Path) -> list[Path]:
    """Walk the three files in step: line N of each holds the same user. Returns the files."""
    files = []
    for name in SPLIT_FILES.values():
        path = find_file(folder, name)
        if path is None:
            raise CftrecError(
                f"{folder / name}: no such file (pre-split sequences need all three files)"
            )
        files.append(path)
    streams = [iter_lines(path) for path in files]
    sentinel = object()
    seen: dict[str, int] = {}
    while True:
        lines = [next(stream, sentinel) for stream in streams]
        if all(line is sentinel for line in lines):
            if not seen:
                raise no_records(files[0])
            return files
        for path, line in zip(files, lines, strict=True):
            if line is sentinel:
                raise InputError(path, "has fewer lines than the train file (lines must match)")
        user, position = None, 0
        for split, path, (number, text) in zip(SPLIT_FILES, files, lines, strict=True):
            parsed = _parse_line(path, number, text)
            if parsed is None:
                raise InputError(path, "blank line (each line starts with the user id)", number)
            if user is not None and parsed[0] != user:
                raise InputError(
                    path, f"user {parsed[0]} where the train file has user {user}", number
                )
            if user is None:
                _new_user(seen, parsed[0], path, number)
            user = parsed[0]
            for item in parsed[1]:
                builder.add(user, item, position, split)
                position += 1
