"""The two-call GPU accuracy script (benchmarks/gpu/run.py): its sizing, and its whole path at
tiny size on the CPU. `make test-floor` runs this file on the GPU machines' transformers too."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu" / "run.py"


def load_runner():
    spec = importlib.util.spec_from_file_location("gpu_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


runner = load_runner()


def measurements(**overrides):
    values = dict(
        train_s_per_sample={"sft": 0.002, "cft": 0.003},
        encode_s_per_sample=0.0005,
        train_fixed_s=20.0,
        eval_s_per_case=0.05,
        eval_fixed_s=10.0,
    )
    return runner.Measurements(**{**values, **overrides})


def test_plan_fills_the_budget_and_keeps_the_spare():
    m = measurements()
    plan = runner.plan_training(m, 540, 60, 120, 2 * 943, 1_000_000)
    # Worked by hand: evaluation 1886 * 0.05 + 2 * 10 = 114.3 s; fixed training 40 s;
    # per sample 0.002 + 0.003 + 2 * 0.0005 = 0.006 s; room 540 - 120 - 60 - 114.3 - 40 = 205.7 s.
    assert plan.train_samples == int(205.7 / 0.006)
    assert plan.expected_eval_s == pytest.approx(114.3)
    total = 60 + plan.expected_eval_s + plan.expected_train_s
    assert 540 - 120 - 0.01 <= total + plan.left_s <= 540 - 120 + 0.01
    assert total <= 540 - 120


def test_plan_takes_every_sample_when_they_fit_and_refuses_a_budget_too_small():
    plan = runner.plan_training(measurements(), 540, 60, 120, 100, 5_000)
    assert plan.train_samples == 5_000
    assert plan.left_s > 0
    with pytest.raises(SystemExit, match="budget leaves room"):
        runner.plan_training(measurements(), 200, 60, 120, 2 * 943, 1_000_000)


def test_join_gguf_checks_the_sha256(tmp_path):
    halves = [b"first half " * 100, b"second half " * 50]
    for name, data in zip(("gguf.part-aa", "gguf.part-ab"), halves, strict=True):
        (tmp_path / name).write_bytes(data)
    digest = hashlib.sha256(b"".join(halves)).hexdigest()
    (tmp_path / "gguf.sha256").write_text(f"{digest}\n")
    joined = runner.join_gguf(tmp_path)
    assert joined.read_bytes() == b"".join(halves)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "gguf.part-aa").write_bytes(halves[1])  # the halves in the wrong order
    (bad / "gguf.part-ab").write_bytes(halves[0])
    (bad / "gguf.sha256").write_text(digest)
    with pytest.raises(SystemExit, match="sha256"):
        runner.join_gguf(bad)
    assert not (bad / runner.GGUF_NAME).exists()  # a wrong join is not kept


def cftrec(*args):
    result = subprocess.run(
        [sys.executable, "-m", "cftrec", *map(str, args)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.floor  # the GPU machines' versions are the ones that matter here
def test_two_calls_and_report_at_tiny_size(tmp_path, tokenizer):
    """call 1 (smoke) and call 2 (main, with guidance by an assistant run), then the report."""
    from cftrec.assets import movielens_100k_cache
    from cftrec.modeling import resolve_model_path

    stash, out1, out2 = tmp_path / "stash", tmp_path / "out1", tmp_path / "out2"
    shape = stash / "shape"
    shape.mkdir(parents=True)
    model_dir = Path(resolve_model_path("bundled:smollm2-135m"))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (shape / name).write_bytes((model_dir / name).read_bytes())
    halves = [b"a" * 1000, b"b" * 999]
    (stash / "gguf.part-aa").write_bytes(halves[0])
    (stash / "gguf.part-ab").write_bytes(halves[1])
    (stash / "gguf.sha256").write_text(hashlib.sha256(b"".join(halves)).hexdigest())
    cftrec("data", "prepare", "recbole", movielens_100k_cache(), "-o", stash / "ml100k")
    cftrec("baseline", "pop", "--data", stash / "ml100k", "-o", stash / "assistant")

    def run(*args):
        result = subprocess.run(
            [sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    run("smoke", "--stash", stash, "--out", out1, "--tiny")
    sizing = json.loads((out1 / "sizing.json").read_text())
    assert sizing["train_s_per_sample"]["cft"] > 0 and sizing["eval_s_per_case"] > 0
    cost = json.loads((out1 / "training_cft_cost_gpu.json").read_text())
    assert {row["method"] for row in cost["results"]} >= {"sft", "cft-shared", "cft-padded"}
    assert all(row["mfu"] is None or row["mfu"] > 0 for row in cost["results"])

    # A budget that leaves room for a few hundred samples at the measured speed.
    per_sample = sum(sizing["train_s_per_sample"].values()) + 2 * sizing["encode_s_per_sample"]
    evaluation = 2 * sizing["eval_fixed_s"] + 40 * sizing["eval_s_per_case"]
    budget = 60 + 2 * sizing["train_fixed_s"] + evaluation * 4 + 80 * per_sample
    run(
        "main", "--stash", stash, "--out", out2, "--tiny", "--model", stash / "random-model",
        "--budget-s", budget, "--spare-s", 0, "--eval-users", 6, "--valid-users", 3,
        "--guidance-grid", 0.8,
    )  # fmt: skip
    plan = json.loads((out2 / "plan.json").read_text())
    assert plan["train_samples"] >= 64
    for method in ("sft", "cft"):
        summary = json.loads((out2 / f"train-{method}.json").read_text())
        assert summary["train_samples"] == plan["train_samples"]  # same samples for both
    steps = [step["step"] for step in json.loads((out2 / "progress-main.json").read_text())]
    assert steps[-1] == "compared sft-guided vs sft" or "compared cft-guided vs cft" in steps
    case_ids = None
    for row in ("sft", "cft", "sft-guided", "cft-guided"):
        results = json.loads((out2 / "eval" / row / "results.json").read_text())
        assert results["num_cases"] == 6
        case_ids = case_ids or results["case_ids"]
        assert results["case_ids"] == case_ids  # every row on the same users

    cftrec(
        "evaluate", "--run", stash / "assistant", "--data", stash / "ml100k",
        "--sample", 6, "-o", tmp_path / "baselines" / "pop",
    )  # fmt: skip
    results_dir = tmp_path / "results"
    subprocess.run(
        [sys.executable, SCRIPT, "report", "--out", out2, "--name", "accuracy-tiny",
         "--results-dir", results_dir, "--baselines", tmp_path / "baselines" / "pop"],
        check=True, capture_output=True,
    )  # fmt: skip
    payload = json.loads((results_dir / "accuracy-tiny.json").read_text())
    assert set(payload["metrics"]) == {"sft", "cft", "sft-guided", "cft-guided", "pop"}
    assert any(key.endswith("-vs-pop") for key in payload["comparisons"])
    assert "cft-vs-sft" in payload["comparisons"]
    assert "| pop | 6 |" in (results_dir / "accuracy-tiny.md").read_text()
