"""Helpers of the hardening tests (not a test module itself): run the command line in this
process or through the installed entry point, and snapshots proving that inputs are untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENTRY_POINT = Path(sys.executable).parent / "cftrec"


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every file under `roots` (or the file itself) -> its bytes."""
    files = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in paths:
            files[str(path)] = path.read_bytes()
    return files


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """`cftrec ARGS` in this process -> (exit status, stdout, stderr). An exception other than
    SystemExit (a traceback for the user) fails the test."""
    from transformers.utils import logging

    from cftrec.cli import main

    # The command line quiets transformers (progress bars, warnings) before importing it; in
    # this process the fixtures imported it first.
    logging.disable_progress_bar()
    logging.set_verbosity_error()

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_entry_point(args: list[str], cwd: Path | None = None, **kwargs):
    """`cftrec ARGS` through the installed console script."""
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    return subprocess.run(
        [str(ENTRY_POINT), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """Exit status 2, exactly one line on stderr ("error: ..."), no traceback."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def leftover_temporaries(folder: Path) -> list[Path]:
    """Hidden temporary folders/files of cftrec's atomic writes left in `folder` (recursive)."""
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]
