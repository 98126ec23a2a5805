"""Title cleaning: what makes a source title usable as an LLM's answer (the D3 recipe)."""

from __future__ import annotations

import html
import re

# Titles that stand for "no title" in the sources (MovieLens-100k item 267 is "unkonwn").
PLACEHOLDER_TITLES = frozenset({"", "unknown", "unkonwn", "n/a", "na", "null", "nan", "none"})
# Markup that survived unescaping: a tag (also one cut off, as in some Amazon CD titles) or an
# entity that was escaped twice.
HTML_LEFTOVER = re.compile(r"<\s*[a-zA-Z/!][^>]*>?|&(?:#\d+|#[xX][0-9a-fA-F]+|[a-zA-Z]\w*);")
QUOTES = "\"'"

# Why an item was dropped (keys of the counts written to meta.json).
NO_TITLE, HTML_LEFTOVERS, TOO_LONG = "no_title", "html_leftovers", "too_long"


def clean_title(raw: object, max_words: int | None = None) -> tuple[str | None, str | None]:
    """(cleaned title, None) or (None, reason it is unusable)."""
    if not isinstance(raw, str):
        return None, NO_TITLE
    title = raw
    for _ in range(3):  # some sources escape twice ("&amp;amp;")
        unescaped = html.unescape(title)
        if unescaped == title:
            break
        title = unescaped
    title = title.strip()
    # A surrounding pair of quotes is packaging, not part of the name; a lone trailing quote is
    # (12'' doll, 36" pool), and so are inner quotes ("Weird" Al ... "Hits").
    while (
        len(title) >= 2
        and title[0] in QUOTES
        and title[-1] == title[0]
        and title[0] not in title[1:-1]
    ):
        title = title[1:-1].strip()
    if title.lower() in PLACEHOLDER_TITLES:
        return None, NO_TITLE
    if HTML_LEFTOVER.search(title):
        return None, HTML_LEFTOVERS
    if max_words is not None and len(title.split()) > max_words:
        return None, TOO_LONG
    return title, None


def clean_titles(items, max_words: int | None = None):
    """(items with cleaned titles and unusable ones removed, {reason: dropped item count})."""
    cleaned, reasons = [], []
    for raw in items["title"].tolist():
        title, reason = clean_title(raw, max_words)
        cleaned.append(title)
        reasons.append(reason)
    items = items.assign(title=cleaned)
    dropped: dict[str, int] = {}
    for reason in reasons:
        if reason is not None:
            dropped[reason] = dropped.get(reason, 0) + 1
    return items[items["title"].notna()].reset_index(drop=True), dropped
