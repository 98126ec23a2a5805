"""The HTML of a report: one self-contained page (inline CSS, images as data URIs, no script),
laid out for a laptop and a phone: a viewport tag, a column of at most 70rem, plots two abreast
where there is room and one above the other where there is not, and wide tables that scroll
sideways inside their own box instead of widening the page."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

STYLE = """
:root { --ink: #1f2430; --muted: #5d6676; --line: #dde1e8; --paper: #ffffff;
        --back: #f3f4f7; --accent: #2457c5; --warn: #fff4dc; --warn-edge: #d89a00; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--back); color: var(--ink);
       font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
main { max-width: 70rem; margin: 0 auto; padding: 1rem 1.25rem 3rem; background: var(--paper); }
h1 { font-size: 1.6rem; margin: .5rem 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2.25rem 0 .75rem; padding-bottom: .25rem;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.25rem 0 .5rem; }
p { margin: .5rem 0; }
.muted, figcaption { color: var(--muted); font-size: .875rem; }
nav ul { display: flex; flex-wrap: wrap; gap: .25rem .9rem; list-style: none; padding: 0; }
a { color: var(--accent); }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; margin: 0 0 1rem; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: .875rem; }
th, td { padding: .3rem .65rem; border-bottom: 1px solid var(--line); text-align: right;
         white-space: nowrap; vertical-align: top; }
th { background: var(--back); font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td.text { text-align: left; white-space: normal; min-width: 12rem; }
.significant { font-weight: 700; }
.grid { display: grid; gap: 1rem;
        grid-template-columns: repeat(auto-fit, minmax(min(100%, 26rem), 1fr)); }
figure { margin: 0; }
img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
.note { background: var(--warn); border-left: 4px solid var(--warn-edge); padding: .5rem .75rem;
        margin: .5rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .9rem; margin: .5rem 0; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .9rem; }
.card h3 { margin-top: .25rem; }
details summary { cursor: pointer; color: var(--accent); }
@media (max-width: 40rem) {
  main { padding: .75rem .75rem 2rem; }
  h1 { font-size: 1.35rem; }
  dl { grid-template-columns: 1fr; }
  dt { margin-top: .35rem; }
}
"""


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    caption: str = "",
    text_columns: Sequence[int] = (),
    strong: Iterable[tuple[int, int]] = (),
) -> str:
    """A table in its own sideways-scrolling box. Cells are plain text (escaped here);
    `text_columns` wrap and align left, (row, column) in `strong` are bold."""
    bold = set(strong)
    head = "".join(f"<th scope='col'>{escape(h)}</th>" for h in headers)
    body = []
    for r, row in enumerate(rows):
        cells = []
        for c, cell in enumerate(row):
            classes = [
                name
                for name, on in (("text", c in text_columns), ("significant", (r, c) in bold))
                if on
            ]
            attribute = f" class='{' '.join(classes)}'" if classes else ""
            cells.append(f"<td{attribute}>{escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    # the caption stays outside the scrolling box: it wraps at the page's width
    above = paragraph(caption, muted=True) if caption else ""
    return (
        f"{above}<div class='scroll'><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def image(uri: str, alt: str, caption: str = "") -> str:
    below = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img src='{uri}' alt='{escape(alt)}'>{below}</figure>"


def grid(items: Iterable[str]) -> str:
    return "<div class='grid'>" + "".join(items) + "</div>"


def note(text: str) -> str:
    """A clearly marked remark: what the report could not show, or must warn about."""
    return f"<p class='note'>{escape(text)}</p>"


def paragraph(text: str, muted: bool = False) -> str:
    attribute = " class='muted'" if muted else ""
    return f"<p{attribute}>{escape(text)}</p>"


def definitions(pairs: Iterable[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in pairs)
    return f"<dl>{items}</dl>"


def card(title: str, body: str) -> str:
    return f"<div class='card'><h3>{escape(title)}</h3>{body}</div>"


def details(summary: str, body: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: sections are (anchor, heading, inner HTML), listed in a contents
    line at the top."""
    contents = "".join(f"<li><a href='#{a}'>{escape(h)}</a></li>" for a, h, _ in sections)
    body = "".join(
        f"<section id='{a}'><h2>{escape(h)}</h2>{inner}</section>" for a, h, inner in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main><header><h1>{escape(title)}</h1>{paragraph(subtitle, muted=True)}"
        f"<nav aria-label='contents'><ul>{contents}</ul></nav></header>{body}</main>"
        "</body></html>\n"
    )
