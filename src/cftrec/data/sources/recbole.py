"""RecBole atomic files: `NAME.inter` and `NAME.item`, tab-separated, typed headers
(`user_id:token`, `item_id:token`, `timestamp:float`, `movie_title:token_seq`, ...).

INPUT is the folder (with --name when it holds several datasets) or the `.inter` file; either
file may be gzipped (`NAME.inter.gz`). When the item file keeps the year apart
(`release_year:token`, as the MovieLens copy in the recbole wheel does), it is appended the way
MovieLens writes titles: "Toy Story (1995)".
"""

from __future__ import annotations

from pathlib import Path

from ...errors import CftrecError, InputError
from ._common import (
    InteractionBuilder,
    ReadOptions,
    SourceData,
    find_file,
    items_frame,
    iter_delimited,
    no_records,
    parse_float,
    parse_id,
    parse_int,
    plain_name,
)

TITLE_FIELDS = ("movie_title", "title", "item_name", "name")
YEAR_FIELD = "release_year"


def _header(path: Path, fields: list[str]) -> list[str]:
    """Field names without their `:type` suffix."""
    names = [f.split(":", 1)[0].strip() for f in fields]
    if len(set(names)) != len(names):
        raise InputError(path, "duplicate field names in the header", 1)
    return names


def _files(input_path: Path, name: str | None) -> tuple[Path, Path]:
    if input_path.is_file():
        inter = input_path
        stem = Path(plain_name(inter)).stem
    else:
        stems = sorted(
            {
                plain_name(p).removesuffix(".inter")
                for p in input_path.iterdir()
                if plain_name(p).endswith(".inter")
            }
        )
        if name is not None:
            stems = [s for s in stems if s == name]
        if len(stems) != 1:
            found = ", ".join(stems) or "none"
            raise CftrecError(
                f"{input_path}: expected one NAME.inter file (found: {found}); pass --name"
            )
        stem = stems[0]
        inter = find_file(input_path, f"{stem}.inter")
    item = find_file(inter.parent, f"{stem}.item")
    if item is None:
        raise CftrecError(
            f"{inter.parent / stem}.item: no such file (RecBole item file with the titles)"
        )
    return inter, item


def _rows(path: Path):
    """(header names, iterator of (line, fields)) with the field count checked."""
    records = iter_delimited(path, "\t", quoted=False)
    first = next(records, None)
    if first is None:
        raise no_records(path)
    header = _header(path, first[1])

    def checked():
        found = False
        for number, fields in records:
            found = True
            if len(fields) != len(header):
                raise InputError(
                    path,
                    f"expected {len(header)} tab-separated fields, found {len(fields)}",
                    number,
                )
            yield number, fields
        if not found:
            raise no_records(path)

    return header, checked()


def read(input_path: Path, options: ReadOptions) -> SourceData:
    inter_path, item_path = _files(input_path, options.name)

    header, rows = _rows(item_path)
    if "item_id" not in header:
        raise InputError(item_path, "missing item_id field in the header", 1)
    title_field = options.title_field or next((f for f in TITLE_FIELDS if f in header), None)
    if title_field not in header:
        wanted = options.title_field or " or ".join(TITLE_FIELDS)
        raise InputError(
            item_path, f"missing title field {wanted} in the header (see --title-field)", 1
        )
    id_at, title_at = header.index("item_id"), header.index(title_field)
    year_at = header.index(YEAR_FIELD) if YEAR_FIELD in header else None
    extra = [i for i in range(len(header)) if i not in (id_at, title_at)]
    items, item_header = [], header
    for number, fields in rows:
        title = fields[title_at]
        year = fields[year_at].strip() if year_at is not None else ""
        # A year is a number or a MovieLens-style tag like "V" (the source's "(1995) (V)").
        if year and year.lower() not in ("unknown", "unkonwn") and not title.endswith(f"({year})"):
            title = f"{title} ({year})"
        item = parse_id(fields[id_at], item_path, number, "item id")
        items.append((item, title, *(fields[i] for i in extra)))

    header, rows = _rows(inter_path)
    for needed in ("user_id", "item_id"):
        if needed not in header:
            raise InputError(inter_path, f"missing {needed} field in the header", 1)
    user_at, item_at = header.index("user_id"), header.index("item_id")
    time_at = header.index("timestamp") if "timestamp" in header else None
    rating_at = header.index("rating") if "rating" in header else None
    if options.min_rating is not None and rating_at is None:
        raise InputError(inter_path, "--min-rating given but the file has no rating field", 1)
    builder = InteractionBuilder()
    for position, (number, fields) in enumerate(rows):
        low = options.min_rating is not None and (
            parse_float(fields[rating_at], inter_path, number, "rating") < options.min_rating
        )
        if low:
            continue
        if time_at is None:
            timestamp = position
        else:
            timestamp = parse_int(fields[time_at], inter_path, number, "timestamp")
        builder.add(
            parse_id(fields[user_at], inter_path, number, "user id"),
            parse_id(fields[item_at], inter_path, number, "item id"),
            timestamp,
        )
    return SourceData(
        items_frame(items, [item_header[i] for i in extra]),
        builder.frame(),
        order_only=time_at is None,
        files=[str(inter_path), str(item_path)],
    )
