"""What every command shares: the root app, common options and help texts."""

from __future__ import annotations

from typing import Annotated

import typer

from ..decoding.methods import DEFAULT_BEAMS, GROUNDING_BEAMS, methods_help

# Plain click help (rich_markup_mode=None): it wraps option names and help text to the
# terminal's width, where rich's panels cut long option names short at 80 columns.
app = typer.Typer(
    help="Counterfactual fine-tuning (CFT) for LLM-based sequential recommendation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
STATE = {"debug": False, "signal": None}

# Options shared by several commands.
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an output folder written by another cftrec command (a folder cftrec "
        "did not write is never replaced; the same command's previous output always is).",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="CPU threads for torch. [default: $OMP_NUM_THREADS, else the cores other work "
        "leaves free]",
        show_default=False,
    ),
]
KeepHistory = Annotated[
    bool,
    typer.Option(
        "--keep-history",
        help="Also recommend the history's own titles (domains with repeat purchases). By "
        "default they are left out and the list still holds k new titles.",
    ),
]
BEAMS_HELP = (
    f"LLM runs: number of beams. [default: {DEFAULT_BEAMS}, where search error was rare on "
    f"MovieLens-100k; grounding: {GROUNDING_BEAMS}]"
)


DECODING_HELP = methods_help()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    STATE["debug"] = debug
