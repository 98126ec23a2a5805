"""Amazon Reviews 2018 (McAuley lab): reviews with `reviewerID`, `asin`, `unixReviewTime`
(seconds) and metadata with `asin`, `title`. See `_amazon` for the files and options."""

from __future__ import annotations

from pathlib import Path

from ._amazon import AmazonFields, read_amazon
from ._common import ReadOptions, SourceData

FIELDS = AmazonFields(user="reviewerID", item="asin", time="unixReviewTime", time_divisor=1)


def read(input_path: Path, options: ReadOptions) -> SourceData:
    return read_amazon(input_path, options, FIELDS)
