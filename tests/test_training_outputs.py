"""What a small training run writes: losses of the first and last step whatever
--logging-steps says, a validation set scaled to the run (and its time in the summary), a
config.yaml with resolved values, and a log without tensor-parallel notices."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from cftrec.cli import main
from cftrec.runs.llm import read_metrics
from training_fixtures import one_thread, write_tiny_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")  # 36 train, 12 valid


def _train(data, model, out, *extra):
    return [
        "train", "--data", str(data), "--model", str(model), "--batch-size", "4",
        "-o", str(out), *extra,
    ]  # fmt: skip


def test_short_run_logs_first_and_last_step_and_resolves_its_config(
    tmp_path, tiny_data, tiny_model_dir, capsys
):
    run = tmp_path / "sft"
    # 3 steps, fewer than the default --logging-steps 10
    main(_train(tiny_data, tiny_model_dir, run, "--method", "sft", "--max-steps", "3"))
    out = capsys.readouterr().out
    losses = [line for line in read_metrics(run) if "loss" in line]
    assert [line["step"] for line in losses] == [1, 3]
    assert all({"rec", "cf"} <= set(line) for line in losses)
    info = json.loads((run / "run.json").read_text())
    summary = info["summary"]
    assert summary["first_loss"] == losses[0]["loss"] and summary["last_loss"] == losses[-1]["loss"]

    # validation scaled to the run: a quarter of the 36 train samples (of 12 available)
    assert summary["train_samples"] == 36 and summary["eval_samples"] == 36 // 4
    evals = [line for line in read_metrics(run) if "eval_loss" in line]
    assert evals and summary["validation_seconds"] == pytest.approx(
        sum(line["eval_runtime"] for line in evals), abs=0.01
    )
    assert f"validation on 9 samples took {summary['validation_seconds']} s" in out

    # config.yaml holds what the run used, not the unresolved defaults
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["weighting"] == info["weighting"] == "none"
    assert config["max_eval_samples"] == 9
    assert config["eval_steps"] == 9  # min(50, steps per epoch = 36 / 4)
    assert config["eval_batch_size"] == 4


def test_explicit_validation_size_and_all(tmp_path, tiny_data, tiny_model_dir):
    for flag, expected in (("5", 5), ("0", 12)):  # 0: every validation sample
        run = tmp_path / f"cft-{flag}"
        main(_train(tiny_data, tiny_model_dir, run, "--max-steps", "1",
                    "--max-eval-samples", flag))  # fmt: skip
        info = json.loads((run / "run.json").read_text())
        assert info["summary"]["eval_samples"] == expected
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["weighting"] == "linear" and config["max_eval_samples"] == expected


def test_cli_log_has_no_tensor_parallel_notice(tmp_path, tiny_data, tiny_model_dir):
    """transformers' load-time TP-plan check ("The following layers were not sharded") is about
    tensor parallelism, which cftrec does not use; the CLI keeps it out unless --debug."""
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TRANSFORMERS_VERBOSITY", None)
    args = _train(tiny_data, tiny_model_dir, tmp_path / "run", "--max-steps", "2")
    done = subprocess.run(
        [sys.executable, "-m", "cftrec", *args], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not sharded" not in done.stdout + done.stderr
    assert "done: 36 samples" in done.stdout
