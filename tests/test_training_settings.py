"""TrainSettings is the one source of the training settings: the `cftrec train` options with
their help and defaults, CFTConfig's CFT fields, the presets' keys, and one validation."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import typer
import yaml

from cftrec.cli import app
from cftrec.cli.train import shown_default
from cftrec.errors import CftrecError
from cftrec.experiment import ExperimentSettings
from cftrec.training import pipeline
from cftrec.training.loss import cft_loss, token_weights
from cftrec.training.settings import SETTINGS, TrainSettings, load_settings
from cftrec.training.trainer import CFT_FIELDS, CFTConfig
from hardening_fixtures import assert_one_line_error, run_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
COMMAND_OPTIONS = {"output", "config", "resume", "json_output", "overwrite"}  # not settings


def _train_click_command():
    return typer.main.get_command(app).commands["train"]


def _squeezed(text: str) -> str:
    """Without whitespace: help text compares whatever the wrapping."""
    return "".join(text.split())


def test_every_setting_is_a_train_option_and_back():
    options = {param.name for param in _train_click_command().params}
    assert options == set(SETTINGS) | COMMAND_OPTIONS


def test_help_shows_each_settings_help_and_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_main(["train", "--help"], capsys)
    assert code == 0
    for name, spec in SETTINGS.items():
        assert _squeezed(spec.metadata["help"]) in _squeezed(out), name
        if name != "threads":  # the option every model command shares, with its own default
            assert _squeezed(spec.metadata["help"] + shown_default(spec)) in _squeezed(out), name
    for line in (  # written out by hand
        "--alpha <float> Counterfactual loss weight. [default: 0.1]",
        "--weight-rec-loss / --no-weight-rec-loss Apply the token weights to the recommendation "
        "loss. [default: on]",
        "--lora / --full LoRA (peft) or full fine-tuning. [default: full]",
        "--lora-target-modules <str> Comma-separated module names or all-linear. "
        "[default: q_proj,k_proj,v_proj,o_proj]",
        "--eval-steps <int> Validate and checkpoint every N steps. [default: min(50, steps/epoch)]",
    ):
        assert _squeezed(line) in _squeezed(out), line


@pytest.mark.parametrize(
    "flags, preset, message",
    [
        (["--beta", "1.5"], "", "--beta must be a number in [0, 1], not 1.5"),
        ([], "beta: 1.5\n", "--beta must be a number in [0, 1], not 1.5"),
        (["--method", "dpo"], "", "--method must be one of sft, cft"),
        ([], "weighting: cubic\n", "--weighting must be one of linear, none"),
        (["--batch-size", "0"], "", "--batch-size must be an integer at least 1, not 0"),
        ([], "lora_r: true\n", "--lora-r must be an integer at least 1, not True"),
    ],
)
def test_a_bad_value_is_refused_once_in_one_line(tmp_path, capsys, flags, preset, message):
    config = tmp_path / "preset.yaml"
    config.write_text(preset or "{}\n")
    run = tmp_path / "run"
    args = ["train", "--data", tmp_path, "-o", run, "--config", config, *flags]
    code, _, err = run_main(args, capsys)
    assert_one_line_error(code, err, message)
    assert err.count("must be") == 1 and not run.exists()


def test_cftconfig_is_checked_like_the_settings(tmp_path):
    with pytest.raises(CftrecError, match=r"^--beta must be a number in \[0, 1\], not 1.5$"):
        CFTConfig(output_dir=str(tmp_path), report_to=[], beta=1.5)
    with pytest.raises(CftrecError, match="^--counterfactual-pass must be one of auto, "):
        CFTConfig(output_dir=str(tmp_path), report_to=[], counterfactual_pass="twice")


def test_unset_options_fall_back_to_the_preset_then_the_defaults(tmp_path, capsys, monkeypatch):
    used = []
    monkeypatch.setattr(pipeline, "train", lambda settings, *_, **__: used.append(settings) or {})
    preset = tmp_path / "preset.yaml"
    preset.write_text("alpha: 0.5\nbeta: 0.5\nlora: true\nmax_steps: 100\n")
    flags = ["--alpha", "0.3", "--full", "--lora-target-modules", "q_proj, v_proj"]
    args = ["train", "--config", preset, "--data", "data/tiny/", "-o", tmp_path / "run", *flags]
    assert run_main(args, capsys)[0] == 0
    settings = used[-1]
    chosen = {name: getattr(settings, name) for name in ("alpha", "beta", "lora", "max_steps")}
    assert chosen == {"alpha": 0.3, "beta": 0.5, "lora": False, "max_steps": 100}  # flag > preset
    assert settings.lora_target_modules == ["q_proj", "v_proj"]
    assert settings.data == "data/tiny"  # read as a path, kept as a string
    defaults = TrainSettings()
    assert (settings.method, settings.epochs, settings.weighting) == ("cft", defaults.epochs, None)

    args = ["train", "--data", "d", "-o", tmp_path / "r2", "--lora-target-modules", "all-linear"]
    assert run_main(args, capsys)[0] == 0
    assert used[-1].lora_target_modules == "all-linear"
    assert used[-1].alpha == defaults.alpha and used[-1].lora is defaults.lora


def test_cftconfig_and_the_loss_take_their_defaults_from_the_settings(tmp_path):
    defaults = TrainSettings()
    config = CFTConfig(output_dir=str(tmp_path), report_to=[])
    for name in CFT_FIELDS:
        expected = defaults.resolved_weighting() if name == "weighting" else getattr(defaults, name)
        assert getattr(config, name) == expected, name
    sft = CFTConfig(output_dir=str(tmp_path), report_to=[], method="sft")
    assert sft.weighting == "none"  # the method's default, as for `cftrec train`
    assert inspect.signature(cft_loss).parameters["alpha"].default == defaults.alpha
    assert inspect.signature(cft_loss).parameters["beta"].default == defaults.beta
    assert inspect.signature(token_weights).parameters["beta"].default == defaults.beta
    assert ExperimentSettings().alpha == defaults.alpha


@pytest.mark.parametrize("preset", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_preset_keys_are_settings(preset):
    keys = set(yaml.safe_load(preset.read_text()))
    assert keys <= set(SETTINGS)
    settings = load_settings(preset, {"data": "d"})
    assert settings.method == preset.stem
