"""The `cftrec` command line. Thin: parse, call the library, print.

Each command group lives in its own section below; bad input raises CftrecError, which `main`
turns into one line on stderr and exit status 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import sys
from pathlib import Path  # noqa: F401  (used by command sections)
from typing import Annotated, Optional  # noqa: F401

import typer

from .errors import CftrecError

app = typer.Typer(
    help="Counterfactual fine-tuning (CFT) for LLM-based sequential recommendation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch, prepare, inspect and export datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_state = {"debug": False}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


# ---------------------------------------------------------------- data (issue: data layer)


# ---------------------------------------------------------------- train


# ---------------------------------------------------------------- evaluate / compare


# ---------------------------------------------------------------- baselines


# ---------------------------------------------------------------- recommend / serve / diagnose / demo


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app and maps CftrecError to one line + exit status 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        app(args=args, standalone_mode=False)
    except CftrecError as error:
        if debug:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:  # click usage errors carry their own exit code
        import click

        if isinstance(error, click.exceptions.ClickException):
            error.show()
            sys.exit(error.exit_code)
        if isinstance(error, click.exceptions.Exit):
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
