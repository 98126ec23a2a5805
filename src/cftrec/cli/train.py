"""`cftrec train`: fine-tune an LLM recommender.

One option per TrainSettings field (cftrec.training.settings), generated from the field: its
name, type, help, default and flag spelling. A new setting is one new field there.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from ..training.settings import SETTINGS, TrainSettings
from .common import Overwrite, Threads, app

SHARED_OPTIONS = {"threads": Threads}  # the same option as every other model command's
FIELD_TYPES = typing.get_type_hints(TrainSettings)


def train_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory to write.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML preset (e.g. configs/cft.yaml); flags override it."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    overwrite: Overwrite = False,
    **options: Any,
) -> None:
    """Fine-tune an LLM recommender with sft (BIGRec) or cft; writes the run directory."""
    import json

    from ..training.pipeline import load_settings, resume_settings, train

    # every option left unset (None) falls back to the preset, then to the defaults
    overrides = {
        name: setting_value(name, value) for name, value in options.items() if value is not None
    }
    if config is None and resume:
        config = resume_settings(output)  # the interrupted run's own settings
    settings = load_settings(config, overrides)
    summary = train(settings, output, resume=resume, overwrite=overwrite)
    if json_output:
        print(json.dumps(summary))


def setting_value(name: str, value: Any) -> Any:
    """An option's value as the setting takes it (e.g. the module list of a comma list)."""
    from_cli = SETTINGS[name].metadata.get("from_cli")
    return from_cli(value) if from_cli else value


def setting_option(spec: dataclasses.Field) -> Any:
    """The Annotated type of a setting's option: None (unset) unless given."""
    if spec.name in SHARED_OPTIONS:
        return SHARED_OPTIONS[spec.name]
    metadata = spec.metadata
    value_type = metadata.get("cli_type") or _without_none(FIELD_TYPES[spec.name])
    spelling = (metadata["flag"],) if "flag" in metadata else ()
    help_text = metadata["help"] + shown_default(spec)
    return Annotated[value_type | None, typer.Option(*spelling, help=help_text)]


def shown_default(spec: dataclasses.Field) -> str:
    """The end of a setting's help: " [default: VALUE]", the value as it would be typed (a
    default that depends on the run: its explanation; no default: nothing)."""
    if "shown_default" in spec.metadata:
        return f" [default: {spec.metadata['shown_default']}]"
    has_factory = spec.default_factory is not dataclasses.MISSING
    value = spec.default_factory() if has_factory else spec.default
    if value is None:
        return ""
    if isinstance(value, bool):  # on/off, or the word of a flag pair (--lora/--full: full)
        on, off = spec.metadata.get("flag", "--on/--off").split("/")
        text = (on if value else off).removeprefix("--")
    elif isinstance(value, list):
        text = ",".join(value)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return f" [default: {text}]"


def _without_none(annotation: Any) -> Any:
    """int | None -> int."""
    kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)]
    return kinds[0] if kinds else annotation


def _signature() -> inspect.Signature:
    """-o, one option per setting in TrainSettings' order, then the command's other options."""
    output, *others, _ = inspect.signature(train_command, eval_str=True).parameters.values()
    settings = [
        inspect.Parameter(
            name,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None,
            annotation=setting_option(spec),
        )
        for name, spec in SETTINGS.items()
    ]
    return inspect.Signature([output, *settings, *others])


train_command.__signature__ = _signature()  # typer reads the options from it
app.command("train")(train_command)
