"""`cftrec train` end to end on a tiny random Llama: sft and cft, reload, determinism,
SIGKILL + --resume, two processes with accelerate (gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cftrec.cli import main
from cftrec.runs.llm import load_llm_run, read_metrics
from training_fixtures import one_thread, write_tiny_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow
RUN_FILES = {"run.json", "items.parquet", "config.yaml", "tokenizer", "metrics.jsonl"}
# The counterfactual prompt of the defaults (alpaca, style "remove"), written out by hand.
ALPACA_WITHOUT_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nGiven a list of items the user has interacted "
    "with in order, please recommend a new item that the user likes to the user.\n\n"
    "### Response:\n"
)


def _env():
    return {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


def _train_args(data, model, out, *extra):
    return [
        "train", "--data", str(data), "--model", str(model), "--learning-rate", "3e-3",
        "--batch-size", "4", "--logging-steps", "1", "--eval-steps", "4", "-o", str(out), *extra,
    ]  # fmt: skip


def _train_losses(run):
    return [line["loss"] for line in read_metrics(run) if "loss" in line]


def test_train_sft_and_cft_then_reload(tmp_path, tiny_data, tiny_model_dir, tokenizer):
    for method in ("sft", "cft"):
        run = tmp_path / method
        main(_train_args(tiny_data, tiny_model_dir, run, "--method", method, "--max-steps", "6"))
        assert RUN_FILES | {"model"} <= {p.name for p in run.iterdir()}
        assert not (run / "checkpoints").exists()  # the finished run replaced the work folder
        losses = _train_losses(run)
        assert len(losses) == 6 and losses[-1] < losses[0]  # it learns
        metrics = read_metrics(run)
        cf = [line["cf"] for line in metrics if "cf" in line]
        assert all(v == 0 for v in cf) if method == "sft" else all(v > 0 for v in cf)
        assert any("eval_loss" in line for line in metrics)
        loaded = load_llm_run(run)
        info = json.loads((run / "run.json").read_text())
        assert info["method"] == method and info["weighting"] == (
            "none" if method == "sft" else "linear"
        )
        assert loaded.info["summary"]["best_eval_loss"] is not None
        # the reloaded run builds the counterfactual prompt it trained with
        expected = tokenizer(ALPACA_WITHOUT_INPUT, add_special_tokens=True)["input_ids"]
        assert loaded.encoder.counterfactual_ids() == expected
    # Same config, same seed: identical results on CPU.
    again = tmp_path / "cft-again"
    main(_train_args(tiny_data, tiny_model_dir, again, "--method", "cft", "--max-steps", "6"))
    assert _train_losses(again) == _train_losses(tmp_path / "cft")


def test_gradient_checkpointing_option_trains_the_same(tmp_path, tiny_data, tiny_model_dir, caplog):
    """--gradient-checkpointing reaches the trainer (one notice: the counterfactual prompt runs
    per example) and, with gradient accumulation, trains exactly as without it."""
    runs = {}
    for name, extra in (("plain", ()), ("checkpointed", ("--gradient-checkpointing",))):
        runs[name] = tmp_path / name
        args = ("--method", "cft", "--max-steps", "2", "--gradient-accumulation-steps", "2")
        main(_train_args(tiny_data, tiny_model_dir, runs[name], *args, *extra))
    assert "gradient_checkpointing: true" in (runs["checkpointed"] / "config.yaml").read_text()
    notices = [r for r in caplog.records if "gradient checkpointing" in r.getMessage()]
    assert len(notices) == 1
    plain, checkpointed = (read_metrics(runs[n]) for n in ("plain", "checkpointed"))
    for key in ("loss", "grad_norm", "rec", "cf"):
        got = [line[key] for line in checkpointed if "loss" in line]
        want = [line[key] for line in plain if "loss" in line]
        assert len(got) == 2 and got == pytest.approx(want, rel=1e-4), key


def test_lora_run_saves_an_adapter_and_preset_is_overridden(tmp_path, tiny_data, tiny_model_dir):
    preset = tmp_path / "preset.yaml"
    preset.write_text("method: sft\nlora: true\nlora_r: 4\nalpha: 0.5\nmax_steps: 100\n")
    run = tmp_path / "lora"
    main(
        _train_args(
            tiny_data,
            tiny_model_dir,
            run,
            "--config",
            str(preset),
            "--method",
            "cft",
            "--max-steps",
            "3",
        )
    )
    info = json.loads((run / "run.json").read_text())
    assert info["method"] == "cft" and info["alpha"] == 0.5 and info["lora"]["r"] == 4
    assert info["summary"]["steps"] == 3
    assert (run / "adapter" / "adapter_config.json").exists() and not (run / "model").exists()
    assert load_llm_run(run).model is not None


def test_bad_inputs_are_one_line_exit_2(tmp_path, tiny_data, capsys):
    for args in (
        _train_args(tiny_data, tmp_path / "no-such-model", tmp_path / "r"),
        _train_args(tmp_path / "no-data", tmp_path / "m", tmp_path / "r"),
        _train_args(tiny_data, tmp_path / "m", tmp_path / "r", "--method", "dpo"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rat: 1\n")
    with pytest.raises(SystemExit):
        main(_train_args(tiny_data, tmp_path / "m", tmp_path / "r", "--config", str(bad)))
    assert "bad.yaml: unknown option 'learning_rat'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _cli(*args):
    return [sys.executable, "-m", "cftrec", *args]


def test_sigkill_then_resume_finishes(tmp_path, tiny_data, tiny_model_dir, capsys):
    run = tmp_path / "run"
    args = _train_args(
        tiny_data, tiny_model_dir, run, "--method", "cft", "--max-steps", "10", "--eval-steps", "3"
    )
    env = _env()
    process = subprocess.Popen(
        _cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoints = run / "checkpoints"
    deadline = time.monotonic() + 120
    # kill mid-epoch (10 steps in all, 9 per epoch), once the first checkpoint is complete
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
        assert process.poll() is None and time.monotonic() < deadline, "training ended too early"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "run.json").exists()  # nothing half-written
    main([*args, "--resume"])  # in this process: one interpreter start less
    assert "resuming from checkpoint-" in capsys.readouterr().out
    info = json.loads((run / "run.json").read_text())
    assert info["summary"]["steps"] == 10
    steps = [line["step"] for line in read_metrics(run) if "loss" in line]
    assert steps == list(range(1, 11))  # history carried over from the checkpoint
    assert load_llm_run(run).model is not None


def test_accelerate_two_processes(tmp_path, tiny_data, tiny_model_dir):
    run = tmp_path / "ddp"
    args = _train_args(tiny_data, tiny_model_dir, run, "--method", "cft", "--max-steps", "4")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "cftrec", *args,
    ]  # fmt: skip
    env = _env()
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((run / "run.json").read_text())
    # 36 samples over 2 processes x batch 4: 5 steps per epoch (one process alone: 9)
    assert info["summary"]["steps"] == 4 and info["summary"]["epochs"] == pytest.approx(0.8)
    assert Path(run / "model").is_dir() and load_llm_run(run).model is not None
    # One process with the same batch of 8 per step: the loss is normalised over the whole
    # step (both processes), so the same losses and gradient norms are logged.
    alone = tmp_path / "alone"
    main(_train_args(tiny_data, tiny_model_dir, alone, "--max-steps", "4", "--batch-size", "8"))
    for key in ("loss", "grad_norm", "rec", "cf"):
        two = [line[key] for line in read_metrics(run) if "loss" in line]
        one = [line[key] for line in read_metrics(alone) if "loss" in line]
        assert len(two) == 4 and two == pytest.approx(one, rel=1e-4), key
