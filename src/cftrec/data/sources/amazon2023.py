"""Amazon Reviews 2023 (McAuley lab): reviews with `user_id`, `parent_asin`, `timestamp`
(milliseconds) and metadata with `parent_asin`, `title`. See `_amazon` for the files."""

from __future__ import annotations

from pathlib import Path

from ._amazon import AmazonFields, read_amazon
from ._common import ReadOptions, SourceData

FIELDS = AmazonFields(user="user_id", item="parent_asin", time="timestamp", time_divisor=1000)


def read(input_path: Path, options: ReadOptions) -> SourceData:
    return read_amazon(input_path, options, FIELDS)
