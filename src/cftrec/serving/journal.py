"""A live catalogue's changes on disk, beside the run (whose `items.parquet` is never modified):

  catalog_overlay.json    the compacted state: {"added": [{"item_id", "title"}, ...],
                          "removed": [item ids], "seq": last journal entry it includes}
                          (an overlay without "seq", as older cftrec wrote it, includes none)
  catalog_journal.jsonl   one line per change since, appended and fsync'd before the change is
                          acknowledged: {"seq": n, "add": [[item id, title], ...]} or
                          {"seq": n, "remove": [item ids]}
  catalog.lock            held (flock) by the one process that may change them

A change costs one appended line, whatever the catalogue's size. Now and then (the journal as
large as the overlay, at least COMPACT_MIN_BYTES) and at a clean shutdown the overlay is
rewritten atomically with the journal's entries folded in, then the journal is emptied. Every
point is crash-safe: the overlay names the last entry it includes and replay skips entries up to
it, and a torn last line (a kill mid-write) is ignored with a warning and cut off before the
next append.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import CftrecError, first_line
from ..files import DiskFull, append_durable, lock_file, read_json, write_json

OVERLAY_FILE = "catalog_overlay.json"
JOURNAL_FILE = "catalog_journal.jsonl"
LOCK_FILE = "catalog.lock"
COMPACT_MIN_BYTES = 1 << 20
log = logging.getLogger("cftrec.serving")


class CatalogueNotSaved(CftrecError):
    """A catalogue change that could not be written: nothing changed (HTTP 507)."""


class CatalogueBusy(CftrecError):
    """Another process holds the run's catalogue (a server): change it through that one."""


def _reason(error: BaseException) -> str:
    if isinstance(error, DiskFull):
        return "no space left on device"
    return (error.strerror if isinstance(error, OSError) else None) or first_line(error)


class CatalogueStore:
    """The overlay and journal of one run folder."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.overlay_path = self.run_dir / OVERLAY_FILE
        self.journal_path = self.run_dir / JOURNAL_FILE
        self.seq = 0  # last change on disk
        self.good_bytes = 0  # the journal's length up to its last whole line
        self.lock_handle = None
        self.seen: tuple = ()

    def _state(self) -> tuple:
        """What identifies the files' contents (compared before the first change)."""
        stats = []
        for path in (self.overlay_path, self.journal_path):
            with contextlib.suppress(FileNotFoundError):
                info = path.stat()
                stats.append((path.name, info.st_size, info.st_mtime_ns))
        return tuple(stats)

    @property
    def exists(self) -> bool:
        return self.overlay_path.exists() or self.journal_path.exists()

    def read(self) -> tuple[dict[str, list], list[tuple[str, dict[str, Any]]]]:
        """(the overlay, the journal's entries after it as (where, entry)); CftrecError naming
        the file (and line) for anything but a torn last line."""
        overlay: dict[str, Any] = {"added": [], "removed": []}
        if self.overlay_path.exists():
            overlay = read_json(self.overlay_path, expect=dict)
        added, removed = overlay.get("added", []), overlay.get("removed", [])
        if not isinstance(added, list) or not isinstance(removed, list):
            raise CftrecError(f"{self.overlay_path}: 'added' and 'removed' must be lists")
        self.seq = overlay.get("seq", 0)
        if not isinstance(self.seq, int) or self.seq < 0:
            raise CftrecError(f"{self.overlay_path}: 'seq' must be a whole number")
        entries = []
        self.good_bytes = 0
        if self.journal_path.exists():
            data = self.journal_path.read_bytes()
            cut = data.rfind(b"\n") + 1  # whole lines end there; after it: a torn write
            lines = data[: cut - 1].split(b"\n") if cut else []
            torn = cut < len(data)
            for number, line in enumerate(lines, 1):
                where = f"{self.journal_path}:{number}"
                entry = _entry(line, where)
                if entry is None:  # not JSON: only the last line may be (a write cut short)
                    if number < len(lines) or torn:
                        raise CftrecError(f"{where}: not a journal entry")
                    torn = True
                    break
                self.good_bytes += len(line) + 1
                if entry["seq"] <= self.seq:  # already folded into the overlay
                    continue
                if entry["seq"] != self.seq + 1:
                    raise CftrecError(f"{where}: entry {entry['seq']} after {self.seq}")
                self.seq = entry["seq"]
                entries.append((where, entry))
            if torn:
                log.warning("%s: ignoring a torn last line (a change never acknowledged)",
                            self.journal_path)  # fmt: skip
        self.seen = self._state()
        return {"added": added, "removed": removed}, entries

    # ---------------------------------------------------------------- one writer
    def hold(self, check_unchanged: bool = False) -> None:
        """Become the run's one catalogue writer (released when the process ends, even by
        kill -9). `check_unchanged`: the files must be as `read` saw them."""
        if self.lock_handle is not None:
            return
        try:
            handle = lock_file(self.run_dir / LOCK_FILE)
        except OSError as error:
            raise CatalogueNotSaved(
                f"{self.run_dir / LOCK_FILE}: cannot lock the catalogue ({_reason(error)}); "
                "nothing changed"
            ) from None
        if handle is None:
            raise CatalogueBusy(
                f"{self.run_dir}: another process (a running server?) is changing this run's "
                "catalogue; send the change to it (cftrec catalogue ... --server URL)"
            )
        if check_unchanged and self._state() != self.seen:
            handle.close()
            raise CatalogueBusy(
                f"{self.run_dir}: the catalogue changed on disk since it was loaded; load it again"
            )
        self.lock_handle = handle

    def release(self) -> None:
        if self.lock_handle is not None:
            self.lock_handle.close()
            self.lock_handle = None

    # ---------------------------------------------------------------- writing
    def append(self, change: dict[str, Any]) -> None:
        """Journal one change (on disk when this returns), or CatalogueNotSaved: nothing
        written."""
        self.hold(check_unchanged=True)
        line = json.dumps({"seq": self.seq + 1, **change}, ensure_ascii=False) + "\n"
        try:
            if self.journal_path.exists() and self.journal_path.stat().st_size != self.good_bytes:
                os.truncate(self.journal_path, self.good_bytes)  # a torn line from a crash
            append_durable(self.journal_path, line)
        except (OSError, DiskFull) as error:
            raise CatalogueNotSaved(
                f"{self.journal_path}: cannot save the catalogue change ({_reason(error)}); "
                "nothing changed"
            ) from None
        self.seq += 1
        self.good_bytes += len(line.encode())
        self.seen = self._state()

    def due(self) -> bool:
        """Whether the journal has grown enough to be folded into the overlay."""
        size = self.overlay_path.stat().st_size if self.overlay_path.exists() else 0
        return self.good_bytes >= max(COMPACT_MIN_BYTES, size)

    def compact(self, overlay: dict[str, list]) -> bool:
        """Write `overlay` (the state after every journal entry) and empty the journal; False
        (a warning, the journal kept: nothing lost) when it cannot be written."""
        if self.good_bytes == 0 and not self.journal_path.exists():
            return True
        self.hold(check_unchanged=True)
        try:
            write_json(self.overlay_path, {**overlay, "seq": self.seq}, durable=True)
            self.journal_path.unlink()
        except (OSError, DiskFull) as error:
            log.warning("%s: cannot compact the catalogue journal (%s); it is kept",
                        self.overlay_path, _reason(error))  # fmt: skip
            return False
        self.good_bytes = 0
        self.seen = self._state()
        return True


def _entry(line: bytes, where: str) -> dict[str, Any] | None:
    """One journal entry, checked; None when the line is not JSON at all."""
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("seq"), int)
        or not (isinstance(entry.get("add"), list) or isinstance(entry.get("remove"), list))
    ):
        raise CftrecError(f"{where}: not a journal entry")
    return entry
