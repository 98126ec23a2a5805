"""CPU threads (issue 16, section 1): every command that runs a model takes --threads, the default
honours OMP_NUM_THREADS and otherwise uses only the cores other work leaves free."""

from __future__ import annotations

import json

import pytest
import torch

from cftrec import threads
from hardening_fixtures import assert_one_line_error, run_main
from serving_fixtures import make_dataset, make_pop_run


@pytest.fixture
def machine(monkeypatch):
    """An 8-core machine whose other work keeps `busy` cores busy."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: list(range(8)))
    state = {"busy": 0.0}
    monkeypatch.setattr(threads, "busy_cores", lambda cores: state["busy"])
    return state


@pytest.mark.parametrize(
    "busy, processes, expected",
    [(0.0, "1", 8), (2.6, "1", 5), (2.4, "1", 6), (8.0, "1", 1), (7.9, "1", 1), (2.6, "2", 2),
     (0.0, "16", 1), (0.0, "bogus", 8)],
)  # fmt: skip
def test_default_uses_the_free_cores_shared_by_local_processes(
    machine, monkeypatch, busy, processes, expected
):
    machine["busy"] = busy
    monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
    assert threads.default_threads() == expected


@pytest.mark.parametrize("value, expected", [("3", 3), ("1", 1), ("0", 8), ("many", 8), ("", 8)])
def test_omp_num_threads_is_honoured_when_valid(machine, monkeypatch, value, expected):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert threads.default_threads() == expected


def test_busy_cores_is_the_busy_share_of_the_sampled_cores(monkeypatch):
    samples = iter([(100, 1000), (160, 1100)])  # 60 of 100 jiffies busy over 2 cores
    monkeypatch.setattr(threads, "_cpu_times", lambda cores: next(samples))
    assert threads.busy_cores([0, 1], seconds=0.01) == pytest.approx(1.2, abs=0.05)


# /proc/stat before and after the sample: the aggregate "cpu" line, cores 0, 1, 2 and 10 (only
# 0 and 1 are sampled: "cpu1" must not match "cpu10"), fields user nice system idle iowait irq
# softirq steal guest guest_nice (guest time is already in user time: not counted again).
PROC_STAT = [
    "cpu  9999 0 9999 9999 0 0 0 0 0 0\n"
    "cpu0 100 10 40 800 50 5 5 0 70 0\n"
    "cpu1 200 0 100 600 0 0 0 0 0 0\n"
    "cpu2 100 0 100 100 0 0 0 0 0 0\n"
    "cpu10 100 0 100 100 0 0 0 0 0 0\n"
    "intr 12345 1 2 3\nctxt 999\n",
    "cpu  19999 0 19999 19999 0 0 0 0 0 0\n"
    "cpu0 160 10 60 860 60 5 5 0 500 0\n"  # busy 160 -> 240 of 1010 -> 1160 jiffies
    "cpu1 230 0 110 660 0 0 0 0 0 0\n"  # busy 300 -> 340 of 900 -> 1000
    "cpu2 900 0 100 100 0 0 0 0 0 0\n"
    "cpu10 900 0 100 100 0 0 0 0 0 0\n"
    "intr 23456 1 2 3\nctxt 1999\n",
]


def _fake_machine(monkeypatch, own_seconds: float, wall_seconds: float, stat=PROC_STAT):
    """/proc/stat snapshots from `stat`, and this process's CPU and wall clocks."""
    import io
    import types

    snapshots = iter(stat)

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/stat"
        text = next(snapshots)
        if text is None:
            raise OSError("unreadable")
        return io.StringIO(text)

    cpu = iter([1.0, 1.0 + own_seconds])
    wall = iter([50.0, 50.0 + wall_seconds])
    clock = types.SimpleNamespace(
        process_time=lambda: next(cpu), monotonic=lambda: next(wall), sleep=lambda s: None
    )
    monkeypatch.setattr(threads, "open", fake_open, raising=False)
    monkeypatch.setattr(threads, "time", clock)


def test_busy_cores_reads_proc_stat_by_the_documented_rule(monkeypatch):
    # cores 0 and 1 together: busy 120 of 250 jiffies, over 2 cores = 0.96 cores, less this
    # process's own use (0.1 s of CPU over 0.4 s) = 0.71
    _fake_machine(monkeypatch, own_seconds=0.1, wall_seconds=0.4)
    assert threads.busy_cores([0, 1]) == pytest.approx(2 * 120 / 250 - 0.1 / 0.4, abs=1e-12)
    # never below zero (this process alone busier than the sampled cores)
    _fake_machine(monkeypatch, own_seconds=0.5, wall_seconds=0.4)
    assert threads.busy_cores([0, 1]) == 0.0
    # /proc/stat unreadable: the 1-minute load average, at most the number of cores
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.25, 9.0, 9.0))
    _fake_machine(monkeypatch, own_seconds=0.1, wall_seconds=0.4, stat=[None])
    assert threads.busy_cores([0, 1]) == 1.25
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (7.5, 0.0, 0.0))
    _fake_machine(monkeypatch, own_seconds=0.1, wall_seconds=0.4, stat=[None])
    assert threads.busy_cores([0, 1]) == 2.0


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("threads")
    data = make_dataset(root)
    return make_pop_run(root, data), data


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_option_sets_torch_threads(pop_run, capsys, restore_threads):
    run, data = pop_run
    assert run_main(["recommend", "--run", run, "-k", "2", "--threads", "3"], capsys)[0] == 0
    assert torch.get_num_threads() == 3


def test_evaluate_records_the_threads_it_used(pop_run, tmp_path, capsys, restore_threads):
    run, data = pop_run
    args = ["evaluate", "--run", run, "--data", data, "-o", tmp_path / "out", "--threads", "2"]
    assert run_main(args, capsys)[0] == 0
    assert json.loads((tmp_path / "out" / "results.json").read_text())["threads"] == 2


def test_zero_threads_is_a_usage_error(pop_run, capsys):
    run, _ = pop_run
    code, _, err = run_main(["recommend", "--run", run, "--threads", "0"], capsys)
    assert_one_line_error(code, err, "Invalid value for '--threads'")
