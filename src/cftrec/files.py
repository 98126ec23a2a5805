"""Files and output folders: what a command may write, and writing it atomically.

The output policy, in one place. A command that writes a folder (`-o OUT`) builds it in a hidden
temporary folder next to OUT and renames it over OUT at the end, so OUT is either complete or
untouched. It never deletes what cftrec did not write:

- OUT may not be, contain or lie inside one of the command's inputs, nor contain the current
  folder; a regular file or a symbolic link is not an output folder;
- an existing non-empty OUT is replaced only when its marker file (`.cftrec-output`, written into
  every output folder) says that the same command wrote it; `--overwrite` also lets a command
  replace another cftrec command's output; a folder without the marker is never replaced;
- temporary folders carry the marker too (with the writer's host and pid): they are removed when
  the command fails or is interrupted, and a later run sweeps those left by a killed process.

A write that fails because the disk is full (whichever library reports it, and however) ends as
one `DiskFull` line naming the output, the space left and what was needed when known; the
partial output is removed first, so nothing half-written is left for a later run to trust.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import CftrecError

OUTPUT_MARKER = ".cftrec-output"
TMP_SUFFIX = ".tmp"
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how libraries that wrap the OS error in their own type word it (safetensors: "os error 28")
DISK_FULL_WORDS = ("no space left on device", "disk quota exceeded", "os error 28")
NEARLY_FULL_BYTES = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import (single-threaded): files made by mkstemp/mkdtemp are private, the
# files and folders a command writes get the usual permissions instead.
UMASK = _umask()


class DiskFull(CftrecError):
    """A write that failed because the disk is full: one line naming `where` (a folder or
    file), the space free now, what the write needed when known (`needed`, a phrase) and what
    to do (`hint`)."""

    def __init__(self, where: str | Path, needed: str = "", hint: str = "nothing was changed"):
        self.where, self.needed = Path(where), needed
        space = f"{format_bytes(free_bytes(where))} free" + (f", {needed}" if needed else "")
        super().__init__(f"{where}: no space left on device ({space}); {hint}")


def format_bytes(size: float) -> str:
    """1536 -> "1.5 KiB" (as df -h counts)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    power = 0
    while size >= 1024 and power < len(units) - 1:
        size /= 1024
        power += 1
    return f"{size:.0f} B" if power == 0 else f"{size:.1f} {units[power]}"


def free_bytes(path: str | Path) -> int:
    """Space a write may still use on the file system of `path` (or of its nearest existing
    folder: a failed write may have removed `path`)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def tree_size(path: str | Path) -> int:
    """Bytes in the files under `path` (what a partial output took before it failed)."""
    path = Path(path)
    files = [path] if path.is_file() else path.rglob("*")
    return sum(f.stat().st_size for f in files if f.is_file() and not f.is_symlink())


def is_disk_full(error: BaseException, path: str | Path) -> bool:
    """Whether `error`, raised while writing under `path`, means that the disk is full: an
    ENOSPC (or quota) error anywhere in its chain, by errno or in the words of a library that
    wraps it (safetensors), or a writer that does not say why (torch.save: "unexpected pos")
    failing while less than 1 MiB is free. Call it before removing the partial output."""
    if isinstance(error, DiskFull):
        return True
    if not isinstance(error, Exception) or isinstance(error, CftrecError):
        return False
    cause, seen = error, set()
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:
            return True
        if any(words in str(cause).lower() for words in DISK_FULL_WORDS):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return isinstance(error, OSError | RuntimeError) and free_bytes(path) < NEARLY_FULL_BYTES


def output_command(folder: str | Path) -> str | None:
    """The command named by a folder's marker file (None: no readable marker)."""
    try:
        marker = json.loads((Path(folder) / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    command = marker.get("command") if isinstance(marker, dict) else None
    return command if isinstance(command, str) else None


def _contains(outer: Path, inner: Path) -> bool:
    return outer == inner or outer in inner.parents


def check_output(
    target: str | Path,
    command: str,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
) -> Path:
    """Refuse (CftrecError, nothing touched) an output folder that `command` may not write or
    replace; see the module docstring. Call it before any work, with every input path.
    Returns the folder's resolved path (`a/../b` and linked parents resolved)."""
    target = Path(target)
    if target.is_symlink():
        raise CftrecError(f"{target}: is a symbolic link; name the folder itself")
    where = target.resolve()
    if _contains(where, Path.cwd().resolve()):
        raise CftrecError(
            f"{target}: is (or contains) the current folder; name a new folder for the output"
        )
    for given in inputs:
        if given is None:
            continue
        source = Path(given).resolve()
        if _contains(where, source) or _contains(source, where):
            relation = (
                "is" if where == source else "contains" if _contains(where, source) else "lies in"
            )
            raise CftrecError(
                f"{target}: the output folder {relation} the input {given}; choose another folder"
            )
    if not where.exists():
        return where
    if not where.is_dir():
        raise CftrecError(f"{target}: exists and is not a folder; name a folder for the output")
    if not any(where.iterdir()):
        return where
    previous = output_command(where)
    if previous is None:
        raise CftrecError(
            f"{target}: folder is not empty and was not written by cftrec; "
            "choose a new or empty folder (nothing was changed)"
        )
    if previous != command and not overwrite:
        raise CftrecError(
            f"{target}: holds the output of `cftrec {previous}`, not `cftrec {command}`; "
            "pass --overwrite to replace it, or choose another folder"
        )
    return where


def _write_marker(folder: Path, command: str) -> None:
    writer = {"command": command, "host": socket.gethostname(), "pid": os.getpid()}
    (folder / OUTPUT_MARKER).write_text(json.dumps(writer) + "\n", encoding="utf-8")


def mark_output(target: str | Path, command: str) -> Path:
    """Create the output folder (if needed) and mark it as `command`'s, for commands that write
    into OUT while they work (train's resumable checkpoints). Check it first."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    _write_marker(target, command)
    return target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the temporary folders of `target` left by killed cftrec processes on this host:
    only hidden `.NAME.*.tmp` folders that carry the marker of a process that is gone."""
    target = Path(target)
    removed = []
    host = socket.gethostname()
    for folder in target.parent.glob(f".{glob.escape(target.name)}.*{TMP_SUFFIX}"):
        try:
            writer = json.loads((folder / OUTPUT_MARKER).read_text(encoding="utf-8"))
            pid = int(writer["pid"]) if writer["host"] == host else None
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not recognisably ours: leave it
        if pid is not None and pid != os.getpid() and not _alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def atomic_directory(
    target: str | Path,
    command: str,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    needed_bytes: int | None = None,
) -> Iterator[Path]:
    """Yield a temporary folder next to `target` (marked as `command`'s); on success it replaces
    `target`. The output policy (`check_output`) is applied on entry and again just before the
    replacement. On any exception or interruption the temporary folder is removed and `target`
    is left untouched; a full disk is a DiskFull naming `target` (and `needed_bytes`, what the
    output takes at least, when the writer knows it)."""
    inputs = tuple(inputs)
    target = check_output(target, command, inputs, overwrite)  # resolved: renames stay valid
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    # the old output moves aside under a name the sweep recognises, then goes
    backup = tmp.with_name(tmp.name.removesuffix(TMP_SUFFIX) + ".old" + TMP_SUFFIX)
    try:
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it private; outputs are meant to be shared
        _write_marker(tmp, command)
        yield tmp
        check_output(target, command, inputs, overwrite)
        if target.exists():
            os.replace(target, backup)
        os.replace(tmp, target)
    except BaseException as error:
        disk_full = is_disk_full(error, tmp)  # judged before the cleanup frees the space
        if backup.exists() and not target.exists():  # stopped between the two renames
            os.replace(backup, target)
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full:
            needed = f"at least {format_bytes(needed_bytes)} needed" if needed_bytes else ""
            raise DiskFull(target, needed) from error
        raise
    shutil.rmtree(backup, ignore_errors=True)


def check_output_file(
    target: str | Path, inputs: Iterable[str | Path | None] = (), overwrite: bool = False
) -> Path:
    """The policy for a command that writes one file (`compare -o FILE`): not inside an input,
    not a folder, and an existing file only with `overwrite`."""
    target = Path(target)
    where = Path(os.path.abspath(target)).resolve()
    for given in inputs:
        if given is not None and _contains(Path(given).resolve(), where):
            raise CftrecError(f"{target}: lies in the input {given}; choose another file")
    if target.is_dir():
        raise CftrecError(f"{target}: is a folder; name a file for the output")
    if target.exists() and not overwrite:
        raise CftrecError(f"{target}: exists; pass --overwrite to replace it")
    return target


def atomic_write_text(path: str | Path, text: str, durable: bool = False) -> None:
    """Write `text` to `path` through a temporary file and a rename (usual permissions); a full
    disk is a DiskFull naming `path`, which is left as it was. `durable`: the file and the
    rename are on disk (fsync) before returning."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
        if durable:
            _fsync_folder(path.parent)
    except BaseException as error:
        disk_full = is_disk_full(error, tmp)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if disk_full:
            raise DiskFull(path, f"{format_bytes(len(text.encode()))} needed") from error
        raise


def write_json(path: str | Path, obj: Any, durable: bool = False) -> None:
    """`obj` as indented JSON, atomically; `durable`: on disk (fsync) before returning."""
    text = json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    atomic_write_text(path, text, durable)


def append_durable(path: str | Path, text: str) -> None:
    """Append `text` to `path` (created if missing) and fsync before returning. On failure the
    file is cut back to its former length (removed if this call created it): nothing
    half-written stays. A full disk is a DiskFull naming `path`."""
    path = Path(path)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666 & ~UMASK)
    size = os.fstat(fd).st_size
    try:
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_folder(path.parent)
    except BaseException as error:
        with contextlib.suppress(OSError):
            if created:
                os.unlink(path)
            else:
                os.truncate(path, size)
        if is_disk_full(error, path):
            raise DiskFull(path, f"{format_bytes(len(text.encode()))} needed") from error
        raise


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def lock_file(path: str | Path):
    """Open `path` (created if missing) and take an exclusive lock on it without waiting: the
    open handle, which holds the lock until it is closed or the process ends (even by kill -9),
    or None when another process holds it. Opening errors are raised (OSError)."""
    import fcntl

    handle = open(path, "a+")  # noqa: SIM115 (held open: the lock lives as long as it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex): whether a small file, such as a run.json, changed."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_json(path: str | Path, expect: type = object) -> Any:
    """Parse a JSON file; bad JSON, an unreadable file or a top-level value that is not an
    `expect` (e.g. dict) is a CftrecError naming the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except FileNotFoundError:
        raise CftrecError(f"{path}: missing") from None
    except UnicodeDecodeError:
        raise CftrecError(f"{path}: not UTF-8 text (corrupt JSON file)") from None
    except json.JSONDecodeError as error:
        raise CftrecError(f"{path}:{error.lineno}: bad JSON ({error.msg})") from None
    if not isinstance(value, expect):
        kind = "an object" if expect is dict else "a list" if expect is list else expect.__name__
        raise CftrecError(f"{path}: expected {kind} of JSON, found {type(value).__name__}")
    return value


def read_parquet(path: str | Path, columns: Iterable[str] = ()):
    """Read a Parquet file into a DataFrame; a missing, truncated or foreign file, or one
    without the expected columns, is a CftrecError naming the file."""
    import pandas as pd
    import pyarrow as pa

    path = Path(path)
    if not path.is_file():
        raise CftrecError(f"{path}: missing")
    try:
        frame = pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as error:
        problem = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CftrecError(f"{path}: not a readable Parquet file ({problem})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise CftrecError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame
