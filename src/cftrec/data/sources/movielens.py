"""GroupLens MovieLens files, recognised by their names in the INPUT folder:
ml-100k (`u.data` tab-separated + `u.item` `|`-separated, latin-1), ml-1m / ml-10m
(`ratings.dat` + `movies.dat`, `::`-separated) and ml-latest / ml-latest-small / ml-20m / ml-25m
(`ratings.csv` + `movies.csv`, with a header and CSV quoting), each also gzipped (`u.data.gz`).
Titles already carry the year.
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
    no_records,
    parse_float,
    parse_id,
    parse_int,
)

# layout: (ratings file, items file, ratings delimiter, items delimiter, encoding, has header)
LAYOUTS = {
    "ml-100k": ("u.data", "u.item", "\t", "|", "latin-1", False),
    "ml-1m": ("ratings.dat", "movies.dat", "::", "::", "latin-1", False),
    "ml-latest": ("ratings.csv", "movies.csv", ",", ",", "utf-8", True),
}


def _layout(folder: Path):
    """(ratings path, items path, *the rest of the layout) of the files found in `folder`."""
    for ratings_name, items_name, *rest in LAYOUTS.values():
        ratings, items = find_file(folder, ratings_name), find_file(folder, items_name)
        if ratings and items:
            return ratings, items, *rest
    names = "; ".join(f"{r} + {i}" for r, i, *_ in LAYOUTS.values())
    raise CftrecError(f"{folder}: no MovieLens files found (expected {names}, .gz accepted)")


def _records(path: Path, delimiter: str, encoding: str, header: bool, names: dict, width: int):
    """The `names` fields of each record, in that order. Without a header they are the first
    fields and a record has exactly `width` fields (`width` < 0: at least -width)."""
    records = iter_delimited(path, delimiter, encoding, quoted=delimiter == ",")
    positions = list(range(len(names)))
    if header:
        first = next(records, None)
        if first is None:
            raise no_records(path)
        width = len(first[1])
        positions = list(
            header_index(path, [f.strip() for f in first[1]], names, first[0]).values()
        )
    found = False
    for number, fields in records:
        found = True
        if len(fields) < abs(width) or (width > 0 and len(fields) != width):
            expected = f"at least {-width}" if width < 0 else str(width)
            raise InputError(
                path,
                f"expected {expected} {delimiter!r}-separated fields, found {len(fields)}",
                number,
            )
        yield number, [fields[i] for i in positions]
    if not found:
        raise no_records(path)


def read(input_path: Path, options: ReadOptions) -> SourceData:
    folder = input_path if input_path.is_dir() else input_path.parent
    ratings_path, items_path, ratings_sep, items_sep, encoding, header = _layout(folder)

    items = []
    item_names = {"movie id": ("movieId", "movie_id", "item_id"), "title": ("title",)}
    # u.item: id, title, dates, url, genre flags (older copies have fewer flags); movies.dat: 3.
    item_width = -2 if items_sep == "|" else 3
    for number, (item, title) in _records(
        items_path, items_sep, encoding, header, item_names, item_width
    ):
        items.append((parse_id(item, items_path, number, "movie id", numeric=True), title))

    builder = InteractionBuilder()
    rating_names = {
        "user id": ("userId", "user_id"),
        "movie id": ("movieId", "movie_id", "item_id"),
        "rating": ("rating",),
        "timestamp": ("timestamp",),
    }
    for number, (user, item, rating, timestamp) in _records(
        ratings_path, ratings_sep, encoding, header, rating_names, 4
    ):
        if (
            options.min_rating is not None
            and parse_float(rating, ratings_path, number, "rating") < options.min_rating
        ):
            continue
        builder.add(
            parse_id(user, ratings_path, number, "user id", numeric=True),
            parse_id(item, ratings_path, number, "movie id", numeric=True),
            parse_int(timestamp, ratings_path, number, "timestamp"),
        )
    return SourceData(
        items_frame(items), builder.frame(), files=[str(ratings_path), str(items_path)]
    )
