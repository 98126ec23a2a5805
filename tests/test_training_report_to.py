"""`cftrec train --report-to`: the training curves reach TensorBoard, W&B and MLflow (offline,
local files in RUN/logs), the CFT loss terms as their own series; a tracker that is not
installed is a one-line error naming the extra. A tracker's test is skipped where it is absent
(CI installs `.[dev]`, which holds tensorboard only)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from cftrec.training import pipeline
from cftrec.training.settings import TrainSettings, load_settings
from hardening_fixtures import assert_one_line_error, run_main
from training_fixtures import one_thread, write_tiny_dataset  # noqa: F401 (fixture)

TRACKER_VARIABLES = ("TENSORBOARD_LOGGING_DIR", "WANDB_DIR", "WANDB_MODE", "WANDB_PROJECT",
                     "MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE")  # fmt: skip


def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install 'cftrec[tracking]')")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture
def no_tracker_variables(monkeypatch):
    """The defaults under test, whatever the developer's shell sets."""
    for name in TRACKER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _train(tmp_path, data, model, capsys, *report_to):
    run = tmp_path / "run"
    args = ["train", "--data", data, "--model", model, "--method", "cft", "--max-steps", "4",
            "--batch-size", "4", "--logging-steps", "1", "--eval-steps", "2", "-o", run,
            *report_to]  # fmt: skip
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    assert not (run / "checkpoints").exists()
    return run


def test_report_to_is_repeated_or_comma_separated_and_defaults_to_none(tmp_path, capsys,
                                                                       monkeypatch):  # fmt: skip
    used = []
    monkeypatch.setattr(pipeline, "train", lambda settings, *_, **__: used.append(settings) or {})
    base = ["train", "--data", "d", "-o", tmp_path / "run"]
    assert run_main([*base, "--report-to", "tensorboard", "--report-to", "wandb"], capsys)[0] == 0
    assert used[-1].report_to == ["tensorboard", "wandb"]
    assert run_main([*base, "--report-to", "mlflow, tensorboard"], capsys)[0] == 0
    assert used[-1].report_to == ["mlflow", "tensorboard"]
    assert run_main(base, capsys)[0] == 0
    assert used[-1].report_to == TrainSettings().report_to == ["none"]
    assert pipeline.requested_trackers(["none"]) == []

    code, _, err = run_main([*base, "--report-to", "comet"], capsys)
    assert_one_line_error(code, err, "--report-to must be one of none, tensorboard, wandb, mlflow")
    preset = tmp_path / "preset.yaml"
    preset.write_text("report_to: tensorboard\n")  # one name in a preset
    settings = load_settings(preset, {"data": "d"})
    _needs("tensorboard")
    assert pipeline.requested_trackers(settings.report_to) == ["tensorboard"]


def test_a_tracker_that_is_not_installed_is_one_line_naming_the_extra(tmp_path, capsys,
                                                                      monkeypatch):  # fmt: skip
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "wandb" else real_find_spec(name, *a),
    )
    run = tmp_path / "run"
    args = ["train", "--data", tmp_path, "-o", run, "--report-to", "wandb"]
    code, _, err = run_main(args, capsys)
    assert_one_line_error(code, err, "--report-to wandb: wandb is not installed",
                          "pip install 'cftrec[tracking]'")  # fmt: skip
    assert not run.exists()


@pytest.mark.slow
def test_tensorboard_gets_the_loss_terms_as_series(tmp_path, tiny_data, tiny_model_dir, capsys,
                                                   no_tracker_variables):  # fmt: skip
    _needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(tmp_path, tiny_data, tiny_model_dir, capsys, "--report-to", "tensorboard")
    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    series = events.Tags()["scalars"]
    assert {"train/loss", "train/rec", "train/cf", "eval/loss"} <= set(series)
    assert [e.step for e in events.Scalars("train/cf")] == [1, 2, 3, 4]
    assert all(e.value > 0 for e in events.Scalars("train/cf"))  # cft: a real second term
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # the default was only for the run


@pytest.mark.slow
def test_wandb_and_mlflow_work_offline_into_the_run(tmp_path, tiny_data, tiny_model_dir, capsys,
                                                    no_tracker_variables):  # fmt: skip
    _needs("wandb")
    _needs("mlflow")
    run = _train(tmp_path, tiny_data, tiny_model_dir, capsys, "--report-to", "wandb,mlflow")
    offline = list((run / "logs" / "wandb").glob("offline-run-*/*.wandb"))
    assert len(offline) == 1 and b"train/rec" in offline[0].read_bytes()
    mlflow_runs = list((run / "logs" / "mlruns").glob("*/*/metrics"))
    assert len(mlflow_runs) == 1
    assert {"loss", "rec", "cf", "eval_loss"} <= {p.name for p in mlflow_runs[0].iterdir()}
    assert not any(name in os.environ for name in TRACKER_VARIABLES)
