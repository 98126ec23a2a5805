"""`cftrec data`: fetch, prepare, inspect and export datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import CftrecError
from .common import Overwrite, app

data_app = typer.Typer(
    help="Fetch, prepare, inspect and export datasets.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset to fetch: movielens-100k.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder for the files.")],
    overwrite: Overwrite = False,
) -> None:
    """Place an embedded dataset's raw files (MovieLens-100k from the recbole wheel, offline)."""
    from ..assets import fetch_movielens_100k

    if name != "movielens-100k":
        raise CftrecError(f"unknown dataset '{name}'; available: movielens-100k")
    for path in fetch_movielens_100k(out, overwrite):
        print(path)
    print(f"next: cftrec data prepare recbole {out} -o DIR")


@data_app.command("prepare")
def data_prepare(
    source: Annotated[
        str, typer.Argument(help="amazon2018 | amazon2023 | movielens | recbole | sequences | d3")
    ],
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="Input file or folder.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Dataset folder to write.")],
    split: Annotated[
        str | None,
        typer.Option(
            help="loo | temporal | given (default: given if the input has a split, "
            "temporal for amazon, else loo)"
        ),
    ] = None,
    max_history: Annotated[int, typer.Option(min=1, help="History items per sample.")] = 10,
    kcore: Annotated[
        int | None, typer.Option(help="Iterative k-core (default: 5 for amazon, else off).")
    ] = None,
    window: Annotated[
        bool,
        typer.Option(
            "--window/--no-window",
            help="--no-window: no time window at all (amazon's default is D3's window).",
        ),
    ] = True,
    start: Annotated[
        str | None,
        typer.Option(help="Time window's first day, YYYY-MM-DD (amazon: 2017-10-01)."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(help="Time window's last day, inclusive (amazon: 2018-11-01)."),
    ] = None,
    min_items: Annotated[
        int | None,
        typer.Option(
            help="Move --start back a year at a time until this many items "
            "(amazon: 10000; 0 = never)."
        ),
    ] = None,
    clean_titles: Annotated[
        bool | None,
        typer.Option(
            "--clean-titles/--no-clean-titles",
            help="Unescape HTML, drop items without a usable title and their interactions "
            "(default: on, except d3, whose given split is kept row for row).",
        ),
    ] = None,
    max_title_words: Annotated[
        int | None, typer.Option(help="Drop longer titles (default: 20 for amazon, else off).")
    ] = None,
    min_rating: Annotated[
        float | None, typer.Option(help="movielens/recbole: keep ratings >= this.")
    ] = None,
    items: Annotated[Path | None, typer.Option(help="sequences: the items.tsv file.")] = None,
    meta: Annotated[Path | None, typer.Option(help="amazon: the metadata file.")] = None,
    name: Annotated[
        str | None, typer.Option(help="d3/recbole: which dataset of the folder.")
    ] = None,
    title_field: Annotated[str | None, typer.Option(help="recbole: the title field.")] = None,
    cold_items: Annotated[
        float | None,
        typer.Option(
            help="Hold this fraction of the titles out of training (cold-start evaluation)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed choosing the --cold-items.")] = 42,
    json_out: Annotated[bool, typer.Option("--json", help="Print meta.json content.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Turn a raw interaction log into a canonical dataset (atomic: all or nothing)."""
    import json

    from ..data.prepare import PrepareOptions, prepare, summary

    options = PrepareOptions(
        split=split,
        max_history=max_history,
        kcore=kcore,
        window=window,
        start=start,
        end=end,
        min_items=min_items,
        clean_titles=clean_titles,
        max_title_words=max_title_words,
        min_rating=min_rating,
        cold_items=cold_items,
        seed=seed,
        items=str(items) if items else None,
        meta=str(meta) if meta else None,
        name=name,
        title_field=title_field,
    )
    result = prepare(source, input_path, out, options, overwrite)
    if json_out:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    print(f"wrote {out}: {summary(result)}")


@data_app.command("stats")
def data_stats(
    path: Annotated[Path, typer.Argument(help="A prepared dataset folder.")],
    max_history: Annotated[
        int | None, typer.Option(help="History length for the average (default: the dataset's).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Users, items, interactions, samples per split, titles, drops."""
    import json

    from rich.console import Console

    from ..data.dataset import Dataset
    from ..data.stats import dataset_stats, stats_table

    stats = dataset_stats(Dataset.load(path), max_history)
    if json_out:
        print(json.dumps(stats, ensure_ascii=False))
    else:
        Console().print(stats_table(stats))


@data_app.command("export")
def data_export(
    path: Annotated[Path, typer.Argument(help="A prepared dataset folder.")],
    fmt: Annotated[str, typer.Option("--format", help="recbole | d3")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Folder to write.")],
    name: Annotated[str | None, typer.Option(help="File name stem (default: folder name).")] = None,
    max_history: Annotated[int, typer.Option(min=1, help="d3: history items per row.")] = 10,
    overwrite: Overwrite = False,
) -> None:
    """Write a prepared dataset as RecBole atomic files or D3/BIGRec CSV files."""
    from ..data.dataset import Dataset
    from ..data.export import export

    for file in export(Dataset.load(path), fmt, out, name, max_history, overwrite):
        print(file)
