"""The `cftrec` command line. Thin: parse, call the library, print.

One module per command group; bad input raises CftrecError, which `main` turns into one line on
stderr and exit status 2 (`--debug` shows the traceback).
"""

from __future__ import annotations

import sys

import typer

from ..errors import CftrecError
from .common import STATE, app

# Importing a command module registers its commands; the order here is `cftrec --help`'s.
# isort: off
from . import data, train, evaluate, baseline, recommend, serve, catalogue, diagnose, report, demo  # noqa: F401, E402
# isort: on

__all__ = ["app", "main"]


def _quiet_libraries(debug: bool) -> None:
    """Keep library chatter (weight-loading bars, deprecation notices of dependencies) out of
    the command output; --debug shows it. Set before transformers is imported."""
    if debug:
        return
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*")


def _click_exceptions():
    """The exceptions module of the click that typer runs on: recent typer vendors its own copy
    of click (typer._click), older typer uses click itself."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _unwind_on_sigterm(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C (temporary outputs are removed on the way out); `main`
    then ends the process by SIGTERM, as its sender expects."""
    STATE["signal"] = signum
    raise KeyboardInterrupt


def _interrupted() -> None:
    import os
    import signal

    if STATE.get("signal") == signal.SIGTERM:
        print("terminated", file=sys.stderr)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    print("interrupted", file=sys.stderr)
    sys.exit(130)


def _one_line(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return " ".join(str(error).split("\n"))


def main(argv: list[str] | None = None) -> None:
    """Entry point. Errors the user can fix (bad input, usage, files) print one line on stderr
    and exit with status 2 (`--debug` shows the traceback); Ctrl-C prints "interrupted" and
    exits with 130; SIGTERM unwinds the same way, then ends the process by SIGTERM."""
    import signal
    import threading

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    _quiet_libraries(debug)
    click_errors = _click_exceptions()
    STATE["signal"] = None
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _unwind_on_sigterm) if in_main_thread else None
    try:
        code = app(args=args, standalone_mode=False, prog_name="cftrec")
    except (typer.Abort, KeyboardInterrupt):
        code = 130  # older click turns Ctrl-C into Abort; recent typer returns 130
    except click_errors.ClickException as error:
        if isinstance(error, getattr(click_errors, "NoArgsIsHelpError", ())):
            error.show()  # the help text
        else:
            context = getattr(error, "ctx", None)
            hint = f" (see '{context.command_path} --help')" if context is not None else ""
            print(f"error: {error.format_message()}{hint}", file=sys.stderr)
        code = error.exit_code
    except (CftrecError, OSError) as error:
        if debug:
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        code = 2
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
