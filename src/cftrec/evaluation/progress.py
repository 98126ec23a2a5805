"""Progress of an evaluation, kept so that an interrupted one continues (`evaluate --resume`).

An exact or guided evaluation of a large split can take hours on a CPU. While `cftrec evaluate
-o OUT` works, every finished batch of cases is appended (and fsync'd) to a hidden folder beside
OUT, `.OUT.progress/` (after at most FLUSH_SECONDS of work, and when interrupted):

  settings.json     what is being evaluated: the run, its catalogue, the data, the assistant and
                    every setting that shapes the lists; a resumed evaluation must match it
  batches-R.jsonl   one line per finished batch of process R: {"seconds", "records"}
  lock              held (flock) by the evaluating main process
  .cftrec-output    the marker: the folder is `cftrec evaluate`'s to remove

The folder goes once OUT is written. `--resume` decodes only the cases not finished before (a
torn last line, from a kill mid-write, is dropped); the batch size may change between sessions
(it shapes padding, not the lists). Without `--resume`, earlier progress is never thrown away
silently: the command refuses, and `--overwrite` discards it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import CftrecError
from ..files import (
    OUTPUT_MARKER,
    append_durable,
    lock_file,
    mark_output,
    output_command,
    write_json,
)
from ..runs.info import run_json_digest
from .report import COMMAND

log = logging.getLogger(__name__)
SUFFIX = ".progress"
SETTINGS_FILE = "settings.json"
LOCK_FILE = "lock"
# settings that change how the work is batched, not what each list holds
NOT_IDENTITY = ("batch_size",)
FLUSH_SECONDS = 10.0  # at most this much decoding is lost to a kill


def progress_folder(out_dir: str | Path) -> Path:
    out = Path(os.path.abspath(out_dir))
    return out.parent / f".{out.name}{SUFFIX}"


def evaluation_identity(
    run_dir, data_fingerprint: str, titles: list[str], assistant_dir, settings: dict[str, Any]
) -> dict[str, Any]:
    """What makes two evaluations the same work: the run (its run.json, so a retrained run
    differs), the titles it ranks (a live catalogue may have changed), the data, the assistant
    and the applied settings."""
    identity = {
        "run": str(Path(run_dir).resolve()),
        "run_json_sha256": run_json_digest(run_dir),
        "catalogue_sha256": hashlib.sha256("\n".join(titles).encode()).hexdigest(),
        "data_fingerprint": data_fingerprint,
        "settings": {k: v for k, v in settings.items() if k not in NOT_IDENTITY},
    }
    if settings.get("exclude_history"):
        # Earlier versions removed the history's titles from a beam list after the search,
        # which decodes other lists: such progress is not this evaluation's.
        identity["history_exclusion"] = "while searching"
    if assistant_dir:
        identity["assistant"] = str(Path(assistant_dir).resolve())
        identity["assistant_json_sha256"] = run_json_digest(assistant_dir)
    return identity


def _differences(old: dict, new: dict) -> list[str]:
    flat_old = {**old, **old.get("settings", {})}
    flat_new = {**new, **new.get("settings", {})}
    keys = sorted((set(flat_old) | set(flat_new)) - {"settings"})
    return [k for k in keys if flat_old.get(k) != flat_new.get(k)]


def _batch_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("batches-*.jsonl"))


def _read_batches(path: Path) -> tuple[list[dict], int]:
    """The complete lines of one batch file, and its length up to the last complete line."""
    batches, good = [], 0
    data = path.read_bytes()
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        last = number == len(lines)  # no newline after it: cut by a kill mid-write
        try:
            batch = json.loads(line)
            if not isinstance(batch, dict) or not isinstance(batch.get("records"), list):
                raise ValueError("not a batch")
        except ValueError:
            if last:
                log.warning("%s: dropping a torn last line (a batch never finished)", path)
                break
            raise CftrecError(f"{path}:{number}: not a batch of evaluated cases") from None
        if last:  # complete JSON without its newline: still the write that was cut
            log.warning("%s: dropping a torn last line (a batch never finished)", path)
            break
        batches.append(batch)
        good += len(line) + 1
    return batches, good


class EvaluationProgress:
    """The progress folder of one evaluation (see the module docstring)."""

    def __init__(self, out_dir: str | Path, rank: int = 0):
        self.out_dir = Path(out_dir)
        self.folder = progress_folder(out_dir)
        self.rank = rank
        self.lock_handle = None
        self.pending: list[dict] = []
        self.pending_seconds = 0.0

    def check(self, resume: bool, overwrite: bool) -> None:
        """Before any work: refuse a folder that is not this command's, and earlier progress
        that neither --resume nor --overwrite says what to do with."""
        if not self.folder.exists():
            return
        if output_command(self.folder) != COMMAND:
            raise CftrecError(
                f"{self.folder}: exists and was not written by `cftrec evaluate`; move it away"
            )
        done = self.finished_cases()
        if done and not resume and not overwrite:
            raise CftrecError(
                f"{self.out_dir}: an unfinished evaluation left {done} cases in {self.folder}; "
                "pass --resume to continue it, or --overwrite to start over"
            )

    def prepare(self, identity: dict, resume: bool, overwrite: bool) -> None:
        """Main process, after `check` and before any process reads: keep the progress of the
        same evaluation when resuming, discard it with `overwrite`, refuse otherwise; then
        create the folder and lock it."""
        if self.folder.exists() and not self._same(identity, resume, overwrite):
            shutil.rmtree(self.folder)
        mark_output(self.folder, COMMAND)
        self._lock()
        if not (self.folder / SETTINGS_FILE).exists():
            write_json(self.folder / SETTINGS_FILE, identity, durable=True)
        for path in _batch_files(self.folder):  # the next append must not follow a torn line
            _, good = _read_batches(path)
            if path.stat().st_size != good:
                os.truncate(path, good)

    def _same(self, identity: dict, resume: bool, overwrite: bool) -> bool:
        """Whether the earlier progress is this evaluation's, to continue."""
        try:
            earlier = json.loads((self.folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False  # killed before its settings were written: nothing was finished
        done = self.finished_cases()
        if done == 0:
            return False
        if resume and earlier == identity:
            log.info("resuming: %d cases were evaluated before (%s)", done, self.folder)
            return True
        if overwrite:
            log.info("discarding an unfinished evaluation's %d cases (%s)", done, self.folder)
            return False
        differ = ", ".join(_differences(earlier, identity))
        raise CftrecError(
            f"{self.out_dir}: the unfinished evaluation in {self.folder} ({done} cases) used "
            f"other inputs or settings ({differ}); pass --overwrite to start over"
        )

    def _lock(self) -> None:
        self.lock_handle = lock_file(self.folder / LOCK_FILE)
        if self.lock_handle is None:
            raise CftrecError(f"{self.out_dir}: another `cftrec evaluate` is writing this output")

    def finished_batches(self) -> list[dict]:
        return [b for path in _batch_files(self.folder) for b in _read_batches(path)[0]]

    def finished_cases(self) -> int:
        return sum(len(batch["records"]) for batch in self.finished_batches())

    def record(self, seconds: float, records: list[dict]) -> None:
        """Keep one finished batch; the kept batches go to disk (fsync'd) once FLUSH_SECONDS
        of work have passed since the last write, so quick evaluations pay nothing."""
        self.pending.append({"seconds": round(seconds, 3), "records": records})
        self.pending_seconds += seconds
        if self.pending_seconds >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the kept batches (also called when the evaluation is interrupted)."""
        if not self.pending:
            return
        lines = "".join(json.dumps(b, ensure_ascii=False) + "\n" for b in self.pending)
        append_durable(self.folder / f"batches-{self.rank}.jsonl", lines)
        self.pending, self.pending_seconds = [], 0.0

    def abandon(self) -> None:
        """The evaluation failed or was interrupted: keep what was finished, for --resume (a
        folder with nothing finished goes)."""
        with contextlib.suppress(OSError):
            self.flush()
        if self.finished_cases() == 0:
            self.remove()

    def remove(self) -> None:
        """After OUT is written: the progress is in it now."""
        if self.lock_handle is not None:
            self.lock_handle.close()
            self.lock_handle = None
        if (self.folder / OUTPUT_MARKER).exists():
            shutil.rmtree(self.folder, ignore_errors=True)
