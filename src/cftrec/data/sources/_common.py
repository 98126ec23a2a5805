"""What every source reader shares: streaming line readers (.gz accepted) that turn bad bytes,
bad numbers and bad JSON into one-line `InputError`s, and a compact interaction accumulator."""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import CftrecError, InputError

# Rows buffered as Python objects before they are packed into categorical columns; bounds the
# memory a multi-GB log needs to the packed table plus one chunk.
CHUNK_ROWS = 500_000


@dataclass
class ReadOptions:
    """Reader options from the command line; each reader uses the ones that apply to it."""

    items: Path | None = None  # item/title file when not next to the input
    meta: Path | None = None  # Amazon metadata file when not next to the reviews
    name: str | None = None  # which dataset of a folder holding several (d3, recbole)
    title_field: str | None = None  # recbole: the item field holding the title
    min_rating: float | None = None  # keep only interactions rated at least this


@dataclass
class SourceData:
    """What a reader returns. `items`: item_id, title (raw), optional extra string columns.
    `interactions`: user_id, item_id, timestamp (int64) and `split` when the source has its own;
    rows in source order (prepare sorts them per user, stably by timestamp)."""

    items: object  # pandas.DataFrame
    interactions: object  # pandas.DataFrame
    has_split: bool = False
    # True when timestamps are only positions (no real time): temporal windows do not apply.
    order_only: bool = False
    files: list[str] = field(default_factory=list)  # every file read; the item file last

    @property
    def item_file(self) -> str:
        return self.files[-1]


def find_file(folder: Path, name: str) -> Path | None:
    """`folder/name` or its gzipped twin `folder/name.gz`, whichever exists (None if neither);
    both at once is ambiguous."""
    plain, gz = folder / name, folder / f"{name}.gz"
    if plain.exists() and gz.exists():
        raise CftrecError(f"{folder}: both {name} and {name}.gz exist; keep one")
    return plain if plain.exists() else gz if gz.exists() else None


def plain_name(path: Path) -> str:
    """The file name without a trailing .gz (what the readers match their patterns on)."""
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def no_records(path: Path) -> InputError:
    """The error for an input file without a single record."""
    return InputError(path, "no records (the file is empty or holds only a header)")


def open_binary(path: Path):
    """Open a file for binary reading, through gzip when it ends in .gz."""
    if not path.exists():
        raise CftrecError(f"{path}: no such file")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without the line break), decoding line by line."""
    number = 0
    try:
        with open_binary(path) as handle:
            from tqdm import tqdm

            # Progress on a terminal only (disable=None); multi-GB dumps take minutes.
            lines = tqdm(
                handle,
                desc=path.name,
                unit=" lines",
                unit_scale=True,
                leave=False,
                mininterval=1.0,
                disable=None,
            )
            for number, raw in enumerate(lines, start=1):  # noqa: B007 (number used after loop)
                try:
                    text = raw.decode(encoding)
                except UnicodeDecodeError as error:
                    raise InputError(
                        path, f"undecodable bytes (not {encoding}) at byte {error.start}", number
                    ) from None
                yield number, text.rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise InputError(path, f"corrupt gzip data ({error})", number + 1) from None


def iter_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for every non-blank line of a JSON-lines file."""
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            problem = getattr(error, "msg", "nested too deeply")
            raise InputError(path, f"broken JSON ({problem})", number) from None
        if not isinstance(record, dict):
            raise InputError(path, "expected a JSON object", number)
        yield number, record


def iter_delimited(
    path: Path, delimiter: str, encoding: str = "utf-8", quoted: bool = True
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a delimited text file. `quoted`: CSV quoting rules (a
    quoted field may hold the delimiter); the line number is the record's first line."""
    if not quoted:
        for number, text in iter_lines(path, encoding):
            if text.strip():
                yield number, text.split(delimiter)
        return
    lines = iter_lines(path, encoding)
    position = {"line": 0}

    def texts() -> Iterator[str]:
        for number, text in lines:
            position["line"] = number
            yield text + "\n"

    reader = csv.reader(texts(), delimiter=delimiter, strict=True)
    while True:
        start = position["line"] + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise InputError(path, f"malformed quoted field ({error})", start) from None
        if fields and any(f.strip() for f in fields):
            yield start, fields


def parse_int(value: object, path: Path, line: int, what: str) -> int:
    """An integer (also from a float-looking text such as '881250949.0'), else InputError."""
    if isinstance(value, bool):
        raise InputError(path, f"{what} is not a number: {value!r}", line)
    if isinstance(value, int):
        return value
    try:
        if isinstance(value, float):
            number = value
        else:
            text = str(value).strip()
            try:
                number = int(text)
            except ValueError:
                number = float(text)  # '881250949.0', '8.8e8'
    except (TypeError, ValueError):
        raise InputError(path, f"{what} is not a number: {str(value)[:40]!r}", line) from None
    if isinstance(number, float):
        if number != number or number in (float("inf"), float("-inf")):
            raise InputError(path, f"{what} is not a finite number: {str(value)[:40]!r}", line)
        number = int(number)
    if abs(number) >= 2**63:
        raise InputError(path, f"{what} is out of range: {str(value)[:40]!r}", line)
    return number


def parse_float(value: object, path: Path, line: int, what: str) -> float:
    """A finite float, else InputError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{what} is not a number: {str(value)[:40]!r}", line) from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InputError(path, f"{what} is not a finite number: {str(value)[:40]!r}", line)
    return number


def parse_id(value: object, path: Path, line: int, what: str, numeric: bool = False) -> str:
    """An id token as text: non-empty, no surrounding space; integer text when `numeric`."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(path, f"{what} must be a string or integer, got {value!r}"[:120], line)
    text = str(value).strip()
    if not text:
        raise InputError(path, f"empty {what}", line)
    if numeric:
        try:
            return str(int(text))
        except ValueError:
            raise InputError(path, f"{what} is not an integer: {text[:40]!r}", line) from None
    return text


def require_fields(record: dict, names: tuple[str, ...], path: Path, line: int) -> list:
    missing = [name for name in names if name not in record or record[name] is None]
    if missing:
        raise InputError(path, f"missing field {', '.join(repr(m) for m in missing)}", line)
    return [record[name] for name in names]


def header_index(
    path: Path, header: list[str], wanted: dict[str, tuple[str, ...]], line: int = 1
) -> dict[str, int]:
    """Map logical column names to positions; each has accepted spellings, the first found wins."""
    index = {}
    for logical, spellings in wanted.items():
        found = next((header.index(s) for s in spellings if s in header), None)
        if found is None:
            raise InputError(
                path, f"missing {logical} column (expected one of {', '.join(spellings)})", line
            )
        index[logical] = found
    return index


class InteractionBuilder:
    """Accumulates (user, item, timestamp[, split]) rows and packs them into categorical columns
    every CHUNK_ROWS rows, so memory grows with the packed table, not with Python objects."""

    def __init__(self, with_split: bool = False):
        self.with_split = with_split
        self._rows: list[tuple] = []
        self._chunks: list = []

    def add(self, user: str, item: str, timestamp: int, split: str | None = None) -> None:
        self._rows.append(
            (user, item, timestamp, split) if self.with_split else (user, item, timestamp)
        )
        if len(self._rows) >= CHUNK_ROWS:
            self._flush()

    def __len__(self) -> int:
        return len(self._rows) + sum(len(c) for c in self._chunks)

    def _flush(self) -> None:
        import pandas as pd

        if not self._rows:
            return
        columns = ["user_id", "item_id", "timestamp"] + (["split"] if self.with_split else [])
        frame = pd.DataFrame(self._rows, columns=columns)
        frame["timestamp"] = frame["timestamp"].astype("int64")
        for name in ("user_id", "item_id", "split"):
            if name in frame:
                frame[name] = frame[name].astype("category")
        self._chunks.append(frame)
        self._rows = []

    def frame(self):
        """All rows as one DataFrame (string columns as categoricals)."""
        import pandas as pd
        from pandas.api.types import union_categoricals

        self._flush()
        columns = ["user_id", "item_id", "timestamp"] + (["split"] if self.with_split else [])
        if not self._chunks:
            return pd.DataFrame(
                {c: pd.Series([], dtype="int64" if c == "timestamp" else object) for c in columns}
            )
        if len(self._chunks) == 1:
            return self._chunks[0]
        result = {}
        for name in columns:
            parts = [chunk[name] for chunk in self._chunks]
            if name == "timestamp":
                result[name] = pd.concat(parts, ignore_index=True)
            else:
                result[name] = pd.Series(union_categoricals(parts))
        self._chunks = []
        return pd.DataFrame(result)


def items_frame(rows: list[tuple], extra: list[str] | None = None):
    """Items DataFrame from (item_id, title, *extra) tuples, in file order. Repeated item ids
    stay: `prepare` keeps the first row of each id and counts the others."""
    import pandas as pd

    columns = ["item_id", "title"] + list(extra or [])
    frame = pd.DataFrame(rows, columns=columns, dtype=object)
    return frame.astype(str) if frame.empty else frame
