"""`cftrec report`: evaluation folders -> one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import app


@app.command("report")
def report_command(
    results: Annotated[
        list[Path],
        typer.Argument(
            metavar="RESULTS_DIR",
            help="Evaluation outputs (`cftrec evaluate -o`); the first of those on the same "
            "cases is the reference the others are compared with.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("-o", "--out", help="HTML file to write.")] = Path(
        "report.html"
    ),
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="A prepared dataset the results were made on, where it is no longer at the "
            "path they recorded (for the popularity sections); repeat for several.",
        ),
    ] = None,
    diagnose: Annotated[
        list[Path] | None,
        typer.Option("--diagnose", help="A `cftrec diagnose` output to include; repeatable."),
    ] = None,
    resamples: Annotated[
        int, typer.Option(min=1, help="Bootstrap resamples / permutations of the comparisons.")
    ] = 10_000,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the resampling.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing -o file.")
    ] = False,
) -> None:
    """One self-contained HTML page of evaluations: paired comparisons, metrics against K, by
    history length and target popularity, popularity of recommendations, training curves,
    diagnose plots, settings. Opens offline on a laptop or a phone."""
    from ..report import write_report

    written = write_report(out, results, data or [], diagnose or [], resamples, seed, overwrite)
    print(f"wrote {written} ({written.stat().st_size / 1024:.0f} KB, {len(results)} results)")
