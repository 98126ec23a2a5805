"""Where a result came from: the cftrec version, the source commit (when cftrec runs from a git
checkout) and the time it was made, recorded in every results.json."""

from __future__ import annotations

import datetime as dt
import functools
import subprocess
from pathlib import Path
from typing import Any


@functools.cache
def source_commit() -> str | None:
    """The short commit of the git checkout cftrec's source lies in (a "+" when it has
    uncommitted changes), or None for an installed package or without git."""
    source = Path(__file__).parent
    try:
        head = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)  # fmt: skip
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def provenance() -> dict[str, Any]:
    from . import __version__

    return {
        "cftrec": __version__,
        "commit": source_commit(),
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
