"""The one source of the training settings: `TrainSettings`, in the style of TRL's configs.

Each field carries its default and, in its metadata, what the rest is derived from: the help
of its `cftrec train` option (the options are generated from these fields), its choices, its
numeric rule, the option's spelling where it is not --field-name. `check_setting` is the one
validation (of TrainSettings and of CFTConfig's CFT fields); YAML presets use the field names
as keys. Torch-free: the command line imports it to build its options.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CftrecError
from ..modeling import DTYPES
from ..prompts import COUNTERFACTUAL_STYLES, TEMPLATES

DEFAULT_ALPHA = 0.1  # the CFT paper's loss weights
DEFAULT_BETA = 0.25
METHODS = ("sft", "cft")
WEIGHTINGS = ("linear", "none")
COUNTERFACTUAL_PASSES = ("auto", "shared_prefix", "separate", "padded")
TRACKERS = ("none", "tensorboard", "wandb", "mlflow")  # Trainer's report_to names
VALIDATION_SHARE = 4  # default validation set: 1 / VALIDATION_SHARE of the train samples,
VALIDATION_CAP = 256  # at most this many


@dataclass(frozen=True)
class NumberRule:
    """What a numeric setting accepts; `meaning` says it in the error message."""

    integer: bool
    valid: Callable[[Any], bool]
    meaning: str

    def accepts(self, value: Any) -> bool:
        kind = int if self.integer else (int, float)
        return not isinstance(value, bool) and isinstance(value, kind) and self.valid(value)

    def describe(self) -> str:
        return f"{'an integer' if self.integer else 'a number'} {self.meaning}"


COUNT = NumberRule(True, lambda v: v >= 1, "at least 1")
NON_NEGATIVE_INTEGER = NumberRule(True, lambda v: v >= 0, "at least 0")
POSITIVE = NumberRule(False, lambda v: 0 < v < math.inf, "greater than 0")
NON_NEGATIVE = NumberRule(False, lambda v: 0 <= v < math.inf, "at least 0")


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] | None = None,
    rule: NumberRule | None = None,
    flag: str | None = None,
    shown_default: str | None = None,
    cli_type: type | None = None,
    from_cli: Callable[[Any], Any] | None = None,
) -> Any:
    """A TrainSettings field. `flag`: the option's spelling where it is not --field-name (e.g.
    "--lora/--full"); `shown_default`: the --help text of a default that depends on the run;
    `cli_type` and `from_cli`: what the option reads, where it is not the field's type, and how
    that becomes the value. A default of None means "decided by the run": None passes the
    checks."""
    metadata = {
        "help": help,
        "choices": choices,
        "rule": rule,
        "flag": flag,
        "shown_default": shown_default,
        "cli_type": cli_type,
        "from_cli": from_cli,
    }
    metadata = {key: value for key, value in metadata.items() if value is not None}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def modules_from_text(text: str) -> list[str] | str:
    """--lora-target-modules: comma-separated module names, or all-linear (peft's keyword)."""
    return text if text == "all-linear" else [name.strip() for name in text.split(",")]


def trackers_from_text(values: list[str]) -> list[str]:
    """--report-to, repeated or comma-separated: one list of tracker names."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def default_weighting(method: str) -> str:
    return "linear" if method == "cft" else "none"  # sft: plain BIGRec


@dataclass
class TrainSettings:
    """Everything `cftrec train` needs; YAML presets use these names as keys."""

    data: str | None = setting(None, "Prepared dataset directory.", cli_type=Path, from_cli=str)
    model: str = setting("bundled:smollm2-135m", "Hub id, local path or bundled:NAME.")
    method: str = setting("cft", "sft (BIGRec) or cft.", choices=METHODS)
    alpha: float = setting(DEFAULT_ALPHA, "Counterfactual loss weight.", rule=NON_NEGATIVE)
    beta: float = setting(
        DEFAULT_BETA,
        "Weight of the last response token.",
        rule=NumberRule(False, lambda v: 0 <= v <= 1, "in [0, 1]"),
    )
    weighting: str | None = setting(
        None,
        f"Token weights: {'|'.join(WEIGHTINGS)}.",
        choices=WEIGHTINGS,
        shown_default="linear for cft, none for sft",
    )
    weight_rec_loss: bool = setting(True, "Apply the token weights to the recommendation loss.")
    counterfactual_style: str = setting(
        "remove",
        f"Counterfactual prompt: {'|'.join(COUNTERFACTUAL_STYLES)} (no history block, or a "
        "placeholder instead of the titles).",
        choices=COUNTERFACTUAL_STYLES,
    )
    counterfactual_pass: str = setting(
        "auto",
        f"How the counterfactual prompt runs: {'|'.join(COUNTERFACTUAL_PASSES)} (padded: the "
        "reference's cost).",
        choices=COUNTERFACTUAL_PASSES,
    )
    template: str = setting("alpaca", f"Prompt template: {'|'.join(TEMPLATES)}.")
    max_history: int = setting(10, "History items per prompt.", rule=COUNT)
    max_prompt_tokens: int | None = setting(
        None,
        "Drop oldest history items above this many prompt tokens.",
        rule=COUNT,
        shown_default="no limit",
    )
    dtype: str = setting("float32", f"Model dtype: {'|'.join(DTYPES)}.", choices=DTYPES)
    lora: bool = setting(False, "LoRA (peft) or full fine-tuning.", flag="--lora/--full")
    lora_r: int = setting(16, "LoRA rank.", rule=COUNT)
    lora_alpha: int = setting(32, "LoRA alpha.", rule=COUNT)
    lora_dropout: float = setting(
        0.05, "LoRA dropout.", rule=NumberRule(False, lambda v: 0 <= v < 1, "in [0, 1)")
    )
    lora_target_modules: list[str] | str = setting(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "Comma-separated module names or all-linear.",
        cli_type=str,
        from_cli=modules_from_text,
    )
    epochs: float = setting(1.0, "Training epochs.", rule=POSITIVE)
    max_steps: int = setting(
        -1,
        "Stop after this many steps (overrides --epochs; -1: --epochs decides).",
        rule=NumberRule(True, lambda v: v == -1 or v >= 1, "at least 1 (or -1: --epochs decides)"),
    )
    max_train_samples: int | None = setting(
        None, "Random subset of the train samples.", rule=COUNT, shown_default="all"
    )
    max_eval_samples: int | None = setting(
        None,
        "Validation samples for the validation loss; 0 = all.",
        rule=NumberRule(True, lambda v: v >= 0, "at least 0 (0: every validation sample)"),
        shown_default=f"1/{VALIDATION_SHARE} of the train samples, at most {VALIDATION_CAP}",
    )
    batch_size: int = setting(8, "Per-device batch size.", rule=COUNT)
    eval_batch_size: int | None = setting(
        None, "Per-device batch size of validation.", rule=COUNT, shown_default="--batch-size"
    )
    gradient_accumulation_steps: int = setting(1, "Batches per optimizer step.", rule=COUNT)
    gradient_checkpointing: bool = setting(
        False,
        "Recompute activations in the backward pass: less memory, slower (cft: the "
        "counterfactual prompt then runs per example).",
    )
    learning_rate: float = setting(1e-4, "Learning rate.", rule=POSITIVE)
    weight_decay: float = setting(0.0, "Weight decay.", rule=NON_NEGATIVE)
    warmup_steps: int = setting(0, "Learning-rate warmup steps.", rule=NON_NEGATIVE_INTEGER)
    eval_steps: int | None = setting(
        None,
        "Validate and checkpoint every N steps.",
        rule=COUNT,
        shown_default="min(50, steps/epoch)",
    )
    patience: int = setting(3, "Early-stopping patience in evaluations.", rule=COUNT)
    logging_steps: int = setting(10, "Log the training loss every N steps.", rule=COUNT)
    report_to: list[str] = setting(
        ["none"],
        f"Experiment trackers for the loss curves: {'|'.join(TRACKERS)}; repeat or "
        "comma-separate for several (pip install 'cftrec[tracking]'). Their files go to RUN/logs.",
        choices=TRACKERS,
        cli_type=list[str],
        from_cli=trackers_from_text,
    )
    seed: int = setting(42, "Random seed.", rule=NON_NEGATIVE_INTEGER)
    # On the command line: the --threads option every model command shares (cli.common).
    threads: int | None = setting(None, "CPU threads for torch.", rule=COUNT)

    def resolved_weighting(self) -> str:
        return self.weighting or default_weighting(self.method)

    def validation_size(self, train_samples: int) -> int | None:
        """Validation samples to use (None: all). By default a quarter of the train samples, at
        most 256: a 64-sample run should not spend half its time on validation."""
        if self.max_eval_samples is None:
            return min(VALIDATION_CAP, max(1, train_samples // VALIDATION_SHARE))
        return self.max_eval_samples or None

    def resolved(self, eval_samples: int, eval_steps: int) -> TrainSettings:
        """The settings with every default that depends on the run filled in (config.yaml)."""
        return dataclasses.replace(
            self,
            weighting=self.resolved_weighting(),
            max_eval_samples=eval_samples,
            eval_steps=eval_steps,
            eval_batch_size=self.eval_batch_size or self.batch_size,
        )

    def validate(self) -> None:
        if not self.data:
            raise CftrecError("--data is required (a prepared dataset directory)")
        for name in SETTINGS:
            check_setting(name, getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SETTINGS = {spec.name: spec for spec in dataclasses.fields(TrainSettings)}


def option_name(name: str) -> str:
    """The command-line spelling of a setting, as error messages name it."""
    return "--" + name.replace("_", "-")


def check_setting(name: str, value: Any) -> None:
    """Refuse (CftrecError) a value the setting's choices or numeric rule do not allow."""
    spec = SETTINGS[name]
    if value is None and spec.default is None:
        return  # a default that depends on the run
    choices, rule = spec.metadata.get("choices"), spec.metadata.get("rule")
    values = value if isinstance(value, list) else [value]  # a list setting: each item
    if choices is not None and any(item not in choices for item in values):
        raise CftrecError(f"{option_name(name)} must be one of {', '.join(choices)}")
    if rule is not None and not rule.accepts(value):
        raise CftrecError(f"{option_name(name)} must be {rule.describe()}, not {value!r}")


def load_settings(config_file: str | Path | None, overrides: dict[str, Any]) -> TrainSettings:
    """Defaults <- YAML preset <- overrides (the flags given on the command line)."""
    import yaml

    values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise CftrecError(f"{path}: cannot read YAML config: {error}") from error
        if not isinstance(loaded, dict):
            raise CftrecError(f"{path}: a YAML config must be a mapping of option: value")
        for key, value in loaded.items():
            name = str(key).replace("-", "_")
            if name not in SETTINGS:
                raise CftrecError(f"{path}: unknown option '{key}'")
            values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    settings = TrainSettings(**values)
    settings.validate()
    return settings
