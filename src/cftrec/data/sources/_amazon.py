"""Amazon review dumps (2018 and 2023 share this reader; they differ in field names only).

Reviews and metadata are JSON lines (.gz accepted). INPUT is the reviews file (its metadata is
`meta_<same name>` beside it, or --meta) or a folder holding one reviews file and one `meta_`
file. Metadata is streamed after the reviews and only titles of reviewed items are kept, so
memory follows the reviews actually used, not the catalogue of the whole store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...errors import CftrecError
from ._common import (
    InteractionBuilder,
    ReadOptions,
    SourceData,
    items_frame,
    iter_json_lines,
    no_records,
    parse_id,
    parse_int,
    require_fields,
)


@dataclass(frozen=True)
class AmazonFields:
    user: str
    item: str
    time: str
    time_divisor: int  # 1000 for millisecond timestamps


def _files(input_path: Path, meta: Path | None) -> tuple[Path, Path]:
    if input_path.is_dir():
        files = sorted(p for p in input_path.iterdir() if ".json" in p.name)
        metas = [p for p in files if p.name.startswith("meta_")]
        reviews = [p for p in files if not p.name.startswith("meta_")]
        if len(reviews) != 1 or (meta is None and len(metas) != 1):
            raise CftrecError(
                f"{input_path}: expected one reviews file and one meta_ file (.json/.jsonl)"
            )
        return reviews[0], meta or metas[0]
    meta = meta or input_path.with_name(f"meta_{input_path.name}")
    if not meta.exists():
        raise CftrecError(f"{meta}: no such file (the metadata with titles; pass --meta)")
    return input_path, meta


def read_amazon(input_path: Path, options: ReadOptions, fields: AmazonFields) -> SourceData:
    reviews, meta = _files(input_path, options.meta)
    builder = InteractionBuilder()
    for number, record in iter_json_lines(reviews):
        user, item, time = require_fields(
            record, (fields.user, fields.item, fields.time), reviews, number
        )
        builder.add(
            parse_id(user, reviews, number, fields.user),
            parse_id(item, reviews, number, fields.item),
            parse_int(time, reviews, number, fields.time) // fields.time_divisor,
        )
    if not len(builder):
        raise no_records(reviews)
    interactions = builder.frame()
    reviewed = set(interactions["item_id"].astype(str).unique())
    items, number = [], 0
    for number, record in iter_json_lines(meta):  # noqa: B007 (number used after the loop)
        (item,) = require_fields(record, (fields.item,), meta, number)
        item = parse_id(item, meta, number, fields.item)
        if item in reviewed:
            title = record.get("title")
            items.append((item, title if isinstance(title, str) else ""))
    if not number:
        raise no_records(meta)
    return SourceData(items_frame(items), interactions, files=[str(reviews), str(meta)])
