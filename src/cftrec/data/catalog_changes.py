"""Catalogue changes without retraining: new items in, old items out.

A title-generating LLM can recommend an item it never saw in training: its title only has to
enter the decoding trie. ID-based recommenders (SASRec, popularity) cannot, and say so with
`CatalogChangeUnsupported`. New titles are cleaned by the same rules as a prepared dataset's.

    catalog = with_items(catalog, new_items([("b42", "Heat 2 (2026)")]))
    catalog = without_items(catalog, ["b42"])
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ..errors import CftrecError
from .dataset import Catalog
from .titles import HTML_LEFTOVERS, clean_title

ITEM_FILE_FORMATS = (".csv", ".tsv", ".jsonl")


class CatalogChangeUnsupported(CftrecError):
    """This kind of run cannot rank items it was not trained on (or drop trained ones)."""

    def __init__(self, run_kind: str):
        super().__init__(
            f"a {run_kind} run ranks only the items it was trained on: it cannot rank new items "
            "or change its catalogue without retraining (an LLM run can: it generates titles)"
        )


def check_text(text: str, what: str) -> str:
    """`text` if it is a non-empty string that UTF-8 can encode (no lone surrogates)."""
    if not isinstance(text, str):
        raise CftrecError(f"{what} must be a string, not {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CftrecError(f"{what} is not valid Unicode text (lone surrogate)") from None
    return text


def clean_item(item_id: object, title: object) -> tuple[str, str]:
    """(item id, cleaned title) of one new item, or CftrecError saying what is wrong."""
    item_id = check_text(item_id, "item id")
    if not item_id or item_id != item_id.strip():
        raise CftrecError(f"item id {item_id!r} is empty or has surrounding spaces")
    cleaned, reason = clean_title(check_text(title, "title"))
    if cleaned is None:
        problem = "has HTML leftovers" if reason == HTML_LEFTOVERS else "is empty or a placeholder"
        raise CftrecError(f"title {title!r} {problem}")
    return item_id, cleaned


def new_items(
    items: Mapping[str, str] | Iterable[tuple[str, str]],
    where: Callable[[int], str] = lambda i: f"new item {i + 1}",
) -> list[tuple[str, str]]:
    """Validated (item id, cleaned title) pairs; `where(i)` names record i in errors."""
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    cleaned: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    for index, pair in enumerate(pairs):
        try:
            item_id, title = clean_item(*pair)
        except (CftrecError, TypeError, ValueError) as error:
            raise CftrecError(f"{where(index)}: {error}") from None
        if item_id in first:
            raise CftrecError(
                f"{where(index)}: item id {item_id!r} appears twice (first as {where(first[item_id])})"
            )
        first[item_id] = index
        cleaned.append((item_id, title))
    if not cleaned:
        raise CftrecError("no items given")
    return cleaned


def with_items(catalog: Catalog, items: Sequence[tuple[str, str]]) -> Catalog:
    """`catalog` plus validated new items (appended in order); an id already in the catalogue
    is an error (remove it first to retitle it)."""
    taken = [item_id for item_id, _ in items if item_id in catalog]
    if taken:
        raise CftrecError(f"item id {taken[0]!r} is already in the catalogue")
    return Catalog(
        catalog.item_ids + [item_id for item_id, _ in items],
        catalog.titles_for(catalog.item_ids) + [title for _, title in items],
    )


def without_items(catalog: Catalog, item_ids: Iterable[str]) -> Catalog:
    """`catalog` without `item_ids` (each must be in it; the catalogue may not become empty)."""
    gone = set()
    for item_id in item_ids:
        if item_id not in catalog:
            raise CftrecError(f"unknown item id {item_id!r}: not in the catalogue")
        gone.add(item_id)
    kept = [item_id for item_id in catalog.item_ids if item_id not in gone]
    if not kept:
        raise CftrecError("cannot remove every item of the catalogue")
    return Catalog(kept, catalog.titles_for(kept))


def read_items_file(path: str | Path) -> list[tuple[str, str]]:
    """New items from a CSV file with `item_id` and `title` columns (a header line), a TSV
    file of `item_id<TAB>title` lines (an `item_id<TAB>title` header is skipped) or a JSON
    lines file of {"item_id": ..., "title": ...} objects; validated like `new_items`."""
    return read_items_lines(path)[0]


def read_items_lines(path: str | Path) -> tuple[list[tuple[str, str]], list[int]]:
    """`read_items_file`, with the line number of each item."""
    path = Path(path)
    if path.suffix.lower() not in ITEM_FILE_FORMATS:
        raise CftrecError(
            f"{path}: use a .csv (item_id,title), .tsv (item_id<TAB>title) or .jsonl file of "
            "new items"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CftrecError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CftrecError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise CftrecError(f"{path}: cannot read ({error.strerror})") from None
    records, lines = [], []
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        missing = {"item_id", "title"} - set(reader.fieldnames or [])
        if missing:
            raise CftrecError(f"{path}: the header must name item_id and title columns")
        for row in reader:
            records.append((row["item_id"], row["title"]))
            lines.append(reader.line_num)
    elif path.suffix.lower() == ".tsv":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or (number == 1 and line.split("\t") == ["item_id", "title"]):
                continue
            fields = line.split("\t")
            if len(fields) != 2:
                raise CftrecError(f"{path}:{number}: expected item_id<TAB>title")
            records.append((fields[0], fields[1]))
            lines.append(number)
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CftrecError(f"{path}:{number}: bad JSON ({error.msg})") from None
            if not isinstance(record, dict) or not {"item_id", "title"} <= set(record):
                raise CftrecError(f'{path}:{number}: expected {{"item_id": ..., "title": ...}}')
            records.append((record["item_id"], record["title"]))
            lines.append(number)
    if not records:
        raise CftrecError(f"{path}: no items")
    return new_items(records, where=lambda i: f"{path}:{lines[i]}"), lines
