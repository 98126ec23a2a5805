"""The command line's own errors (issue 13, section 2) and its help (issue 16): usage errors exit
2 with click's one-line message through the installed entry point, Ctrl-C exits 130 with
"interrupted", and every command's --help reads in full in an 80-column terminal."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from hardening_fixtures import ENTRY_POINT, assert_one_line_error, run_entry_point, run_main
from training_fixtures import write_tiny_dataset

USAGE_ERRORS = [
    (["train"], "Missing option '-o' / '--output'"),
    (["evaluate", "--run", "r", "--data", "d", "-o", "o", "--beams", "ten"], "'--beams'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["baseline", "pop", "--data", "d", "-o", "o", "--bogus"], "No such option: --bogus"),
    (["recommend", "--run", "r", "-k", "0"], "Invalid value for '-k' / '--k'"),
    (["recommend", "--run", "r", "-Heat"], "No such option: -H"),
    (["train", "-o", "r", "--threads", "0"], "Invalid value for '--threads'"),
]


@pytest.mark.parametrize("args, message", USAGE_ERRORS)
def test_usage_errors_through_the_entry_point(tmp_path, args, message):
    result = run_entry_point(args, cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, message, "--help")
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", USAGE_ERRORS)
def test_usage_errors_in_process(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(args, capsys)
    assert_one_line_error(code, err, message)


def test_no_arguments_shows_help(capsys):
    code, out, err = run_main([], capsys)
    assert code == 2 and "Usage: cftrec" in out + err and "Traceback" not in out + err


def test_ctrl_c_exits_130_with_nothing_written(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    args = ["baseline", "sasrec", "--data", data, "-o", tmp_path / "run", "--epochs", "100000"]
    args += ["--patience", "100000", "--max-eval-samples", "1"]
    process = subprocess.Popen(
        [str(ENTRY_POINT), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = ""
    deadline = time.monotonic() + 120
    while "best=" not in seen:  # the bar's postfix after the first epoch: training runs
        assert time.monotonic() < deadline and process.poll() is None, seen
        seen += process.stderr.read(1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err.strip().splitlines()[-1].endswith("interrupted") and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def _click_commands():
    """(name path, click command) of every command of the app."""
    import typer

    from cftrec.cli import app

    found = []

    def walk(group, path):
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, [*path, name])
            else:
                found.append(([*path, name], command))

    walk(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize(
    "command, click_command", _click_commands(), ids=[" ".join(n) for n, _ in _click_commands()]
)
def test_help_is_complete_in_80_columns(command, click_command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_main([*command, "--help"], capsys)
    assert code == 0 and out.startswith(f"Usage: cftrec {' '.join(command)}")
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    options = [o for p in click_command.params for o in p.opts + p.secondary_opts]
    for option in options:  # every option, spelled out in full
        if option.startswith("--"):
            assert option in out, option


MODEL_COMMANDS = [["train"], ["evaluate"], ["recommend"], ["serve"], ["diagnose"], ["demo"]]


@pytest.mark.parametrize("command", MODEL_COMMANDS + [["baseline", "sasrec"]], ids=" ".join)
def test_every_command_that_runs_a_model_takes_threads(command, capsys):
    code, out, _ = run_main([*command, "--help"], capsys)
    assert code == 0 and "--threads" in out and "OMP_NUM_THREADS" in out


def test_train_help_shows_full_option_names(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    _, out, _ = run_main(["train", "--help"], capsys)
    for name in ("--max-train-samples", "--counterfactual-style", "--max-prompt-tokens"):
        assert name in out
    assert "[default: 0.1]" in out  # brackets are not swallowed as markup
