"""Output folders never destroy input (issue 13, section 1): an output that is, contains or lies
in an input, a foreign non-empty folder, a regular file, `-o .`: exit 2, one line, every input
byte-identical; previous outputs of the same command are replaced, other commands' outputs only
with --overwrite, unmarked folders never; interrupted writes leave nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cftrec.files import OUTPUT_MARKER, UMASK, output_command, sweep_stale_temporaries
from hardening_fixtures import (
    assert_one_line_error,
    leftover_temporaries,
    run_entry_point,
    run_main,
    snapshot,
)
from training_fixtures import write_tiny_dataset


def make_tree(root: Path) -> dict[str, Path]:
    """root/raw (RecBole atomic files, the input of `data prepare`), root/data (a dataset),
    root/pop (a popularity run over it)."""
    from cftrec.baselines.popularity import train_popularity
    from cftrec.data.dataset import Dataset
    from cftrec.data.export import export

    data = write_tiny_dataset(root / "data")
    export(Dataset.load(data), "recbole", root / "raw", name="tiny")
    for marker in (root / "raw").glob(OUTPUT_MARKER):  # raw files as a user has them
        marker.unlink()
    train_popularity(data, root / "pop")
    return {"raw": root / "raw", "data": data, "pop": root / "pop"}


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_tree(tmp_path)


def _prepare(raw, out, *extra):
    return ["data", "prepare", "recbole", raw, "-o", out, *extra]


@pytest.mark.parametrize(
    "target, message",
    [
        ("raw", "the output folder is the input raw"),
        (".", "is (or contains) the current folder"),
        ("..", "is (or contains) the current folder"),
        ("raw/inner", "the output folder lies in the input raw"),
        ("raw/tiny.inter", "lies in the input raw"),
    ],
)
def test_prepare_refuses_an_output_over_its_input(tree, capsys, target, message):
    before = snapshot(tree["raw"], tree["data"])
    code, _, err = run_main(_prepare("raw", target), capsys)
    assert_one_line_error(code, err, message)
    assert snapshot(tree["raw"], tree["data"]) == before
    assert not (tree["raw"] / "inner").exists() and not leftover_temporaries(tree["raw"].parent)


def test_output_containing_the_input_is_refused(tmp_path, tmp_path_factory, monkeypatch, capsys):
    make_tree(tmp_path / "work")
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    before = snapshot(tmp_path)
    code, _, err = run_main(_prepare(tmp_path / "work" / "raw", tmp_path), capsys)
    assert_one_line_error(code, err, "the output folder contains the input")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["baseline", "pop", "--data", "data", "-o", "data"], "is the input data"),
        (["evaluate", "--run", "pop", "--data", "data", "-o", "data"], "is the input data"),
        (["evaluate", "--run", "pop", "--data", "data", "-o", "pop"], "is the input pop"),
        (["evaluate", "--run", "pop", "--data", "data", "-o", "pop/eval"], "lies in the input pop"),
        (["data", "export", "data", "--format", "d3", "-o", "data"], "is the input data"),
        (["baseline", "sasrec", "--data", "data", "-o", "data/x"], "lies in the input data"),
        (["diagnose", "--run", "pop", "--data", "data", "-o", "pop"], "is the input pop"),
        (["compare", "pop", "data", "-o", "data/c.json"], "lies in the input data"),
    ],
)
def test_every_command_refuses_an_output_over_its_inputs(tree, capsys, args, message):
    before = snapshot(tree["data"], tree["pop"])
    code, _, err = run_main(args, capsys)
    assert_one_line_error(code, err, message)
    assert snapshot(tree["data"], tree["pop"]) == before


def test_train_refuses_its_data_as_output(tree, capsys, tiny_model_dir):
    before = snapshot(tree["data"])
    code, _, err = run_main(
        ["train", "--data", "data", "--model", tiny_model_dir, "-o", "data/run"], capsys
    )
    assert_one_line_error(code, err, "lies in the input data")
    assert snapshot(tree["data"]) == before


def test_foreign_folder_regular_file_and_symlink_are_never_replaced(tree, capsys):
    foreign = tree["raw"].parent / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my own work")
    regular = tree["raw"].parent / "file.txt"
    regular.write_text("a file")
    link = tree["raw"].parent / "link"
    link.symlink_to(foreign)
    before = snapshot(foreign, regular, tree["raw"])
    for target, message in (
        (foreign, "not empty and was not written by cftrec"),
        (regular, "exists and is not a folder"),
        (link, "is a symbolic link"),
    ):
        for extra in ((), ("--overwrite",)):
            code, _, err = run_main(_prepare("raw", target, *extra), capsys)
            assert_one_line_error(code, err, message)
    assert snapshot(foreign, regular, tree["raw"]) == before


def test_same_command_replaces_other_commands_need_overwrite(tree, capsys):
    out = tree["raw"].parent / "ds"
    assert run_main(_prepare("raw", out), capsys)[0] == 0
    assert output_command(out) == "data prepare"
    (out / "stale.txt").write_text("left by an earlier version of this output")
    assert run_main(_prepare("raw", out), capsys)[0] == 0  # the previous output is replaced
    assert not (out / "stale.txt").exists()

    pop = tree["pop"]
    before = snapshot(pop)
    code, _, err = run_main(_prepare("raw", pop), capsys)
    assert_one_line_error(code, err, "holds the output of `cftrec baseline pop`", "--overwrite")
    assert snapshot(pop) == before
    assert run_main(_prepare("raw", pop, "--overwrite"), capsys)[0] == 0
    assert output_command(pop) == "data prepare" and (pop / "meta.json").exists()


def test_empty_folder_is_used_and_files_get_the_usual_permissions(tree, capsys):
    out = tree["raw"].parent / "empty"
    out.mkdir()
    assert run_main(["baseline", "pop", "--data", "data", "-o", out], capsys)[0] == 0
    mode = 0o666 & ~UMASK
    for name in ("run.json", "popularity.json"):
        assert (out / name).stat().st_mode & 0o777 == mode  # not mkstemp's 0600
    assert (tree["data"] / "meta.json").stat().st_mode & 0o777 == mode
    assert out.stat().st_mode & 0o777 == 0o777 & ~UMASK


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_killed_runs_are_swept_others_kept(tree, capsys):
    parent = tree["raw"].parent
    ours = parent / ".pop2.abc123.tmp"
    ours.mkdir()
    writer = {"command": "baseline pop", "host": socket.gethostname(), "pid": _dead_pid()}
    (ours / OUTPUT_MARKER).write_text(json.dumps(writer))
    live = parent / ".pop2.live.tmp"
    live.mkdir()
    (live / OUTPUT_MARKER).write_text(json.dumps({**writer, "pid": os.getppid()}))
    users = parent / ".pop2.users.tmp"  # looks like ours, but carries no marker
    users.mkdir()
    (users / "keep.txt").write_text("not cftrec's")
    assert run_main(["baseline", "pop", "--data", "data", "-o", "pop2"], capsys)[0] == 0
    assert not ours.exists() and live.exists() and (users / "keep.txt").exists()
    assert sweep_stale_temporaries(parent / "pop2") == []


def test_interrupted_write_leaves_nothing_and_exits_130(tree, capsys, monkeypatch):
    import cftrec.baselines.popularity as popularity

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(popularity, "write_run_info", interrupted)
    before = snapshot(tree["pop"])
    code, _, err = run_main(["baseline", "pop", "--data", "data", "-o", "pop"], capsys)
    assert code == 130 and err.strip() == "interrupted"
    assert snapshot(tree["pop"]) == before and not leftover_temporaries(tree["raw"].parent)


def test_interruption_between_the_two_renames_puts_the_old_output_back(tree, capsys, monkeypatch):
    pop = tree["pop"].resolve()
    before = snapshot(pop)
    replace = os.replace

    def interrupted_rename(source, destination):
        name = Path(source).name
        if Path(destination) == pop and name.endswith(".tmp") and not name.endswith(".old.tmp"):
            raise KeyboardInterrupt  # the new output's rename: the old one has just moved aside
        replace(source, destination)

    monkeypatch.setattr(os, "replace", interrupted_rename)
    code, _, err = run_main(["baseline", "pop", "--data", "data", "-o", "pop"], capsys)
    assert code == 130 and err.strip() == "interrupted"
    assert snapshot(pop) == before and not leftover_temporaries(tree["raw"].parent)


PAUSE_WHILE_WRITING = """
import sys, time
import cftrec.baselines.popularity as popularity
from cftrec.cli import main
write = popularity.write_json
def slow_write(*args):
    write(*args)
    print("writing", flush=True)
    time.sleep(120)
popularity.write_json = slow_write
sys.argv = ["cftrec", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_writing_removes_the_temporary_folder(tree, signum):
    command = [sys.executable, "-c", PAUSE_WHILE_WRITING, "baseline", "pop", "--data", "data"]
    process = subprocess.Popen(
        [*command, "-o", "fresh"],
        cwd=tree["raw"].parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "writing"
    assert leftover_temporaries(tree["raw"].parent)  # the write is in progress
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    if signum == signal.SIGTERM:  # cleaned up, then ended by the signal as its sender expects
        assert process.returncode == -signal.SIGTERM and err.strip() == "terminated"
    else:
        assert process.returncode == 130 and err.strip() == "interrupted"
    assert not (tree["raw"].parent / "fresh").exists()
    assert not leftover_temporaries(tree["raw"].parent)


def test_entry_point_refusals_are_one_line(tree):
    before = snapshot(tree["raw"], tree["data"])
    for args, message in (
        (_prepare("raw", "."), "is (or contains) the current folder"),
        (_prepare("raw", "raw"), "the output folder is the input raw"),
        (["evaluate", "--run", "pop", "--data", "data", "-o", "data"], "is the input data"),
    ):
        result = run_entry_point(args, cwd=tree["raw"].parent)
        assert_one_line_error(result.returncode, result.stderr, message)
    assert snapshot(tree["raw"], tree["data"]) == before


COMPONENTS = ["raw", "data", "pop", "new", "..", ".", "tiny.inter", "meta.json", "x"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("template")
    make_tree(root)
    return root


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(parts=st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=3), absolute=st.booleans())
def test_random_output_paths_never_touch_an_input(template, parts, absolute, capsys):
    """`baseline pop` reads data/ (raw/ and pop/ hold other files): wherever -o points, only
    the output changes, never inside or around the input; or one line and nothing changes."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "work"
        shutil.copytree(template, root, symlinks=True)
        target = Path(*parts)
        if absolute:
            target = root / target
        before = snapshot(root)
        os.chdir(root)
        try:
            code, _, err = run_main(["baseline", "pop", "--data", "data", "-o", target], capsys)
        finally:
            os.chdir(previous)
        after = snapshot(root)
        if code == 0:
            where = (root / target).resolve()
            assert output_command(where) == "baseline pop" and (where / "run.json").exists()
            changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
            assert all(Path(p).resolve().is_relative_to(where) for p in changed), changed
            data = (root / "data").resolve()  # the command's input
            assert not where.is_relative_to(data) and not data.is_relative_to(where)
        else:
            assert_one_line_error(code, err)
            assert after == before
        assert not leftover_temporaries(root)


def test_demo_refuses_a_foreign_working_folder(tmp_path, capsys):
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    started = time.perf_counter()
    code, _, err = run_main(["demo", "-o", folder], capsys)
    assert_one_line_error(code, err, "not empty and was not written by cftrec")
    assert (folder / "thesis.tex").read_text() == "years of work"
    assert time.perf_counter() - started < 30  # refused before any step ran
