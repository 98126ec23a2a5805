"""Where cftrec keeps its cache (converted bundled model, downloaded wheels, example data)."""

import os
from pathlib import Path


def cache_home() -> Path:
    """`$CFTREC_HOME`, default `~/.cache/cftrec`."""
    return Path(os.environ.get("CFTREC_HOME") or Path.home() / ".cache" / "cftrec")
