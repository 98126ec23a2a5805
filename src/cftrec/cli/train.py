"""`cftrec train`: fine-tune an LLM recommender."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import Overwrite, Threads, app


@app.command("train")
def train_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory to write.")],
    data: Annotated[Path | None, typer.Option(help="Prepared dataset directory.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Hub id, local path or bundled:smollm2-135m.")
    ] = None,
    method: Annotated[str | None, typer.Option(help="sft (BIGRec) or cft. [default: cft]")] = None,
    alpha: Annotated[
        float | None, typer.Option(help="Counterfactual loss weight. [default: 0.1]")
    ] = None,
    beta: Annotated[
        float | None, typer.Option(help="Weight of the last response token. [default: 0.25]")
    ] = None,
    weighting: Annotated[
        str | None,
        typer.Option(help="Token weights: linear|none. [default: linear for cft, none for sft]"),
    ] = None,
    weight_rec_loss: Annotated[
        bool | None,
        typer.Option(help="Apply the token weights to the recommendation loss. [default: yes]"),
    ] = None,
    counterfactual_style: Annotated[
        str | None, typer.Option(help="remove|placeholder. [default: remove]")
    ] = None,
    counterfactual_pass: Annotated[
        str | None, typer.Option(help="auto|shared_prefix|separate|padded. [default: auto]")
    ] = None,
    template: Annotated[str | None, typer.Option(help="Prompt template: alpaca|chat.")] = None,
    max_history: Annotated[
        int | None, typer.Option(help="History items per prompt. [default: 10]")
    ] = None,
    max_prompt_tokens: Annotated[
        int | None, typer.Option(help="Drop oldest history items above this many prompt tokens.")
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="float32|bfloat16. [default: float32]")] = None,
    lora: Annotated[
        bool | None,
        typer.Option("--lora/--full", help="LoRA (peft) or full fine-tuning. [default: full]"),
    ] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank. [default: 16]")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha. [default: 32]")] = None,
    lora_dropout: Annotated[
        float | None, typer.Option(help="LoRA dropout. [default: 0.05]")
    ] = None,
    lora_target_modules: Annotated[
        str | None,
        typer.Option(help="Comma-separated module names or all-linear. [default: q,k,v,o_proj]"),
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs. [default: 1]")] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many steps (overrides epochs).")
    ] = None,
    max_train_samples: Annotated[
        int | None, typer.Option(help="Random subset of the train samples.")
    ] = None,
    max_eval_samples: Annotated[
        int | None,
        typer.Option(
            help="Validation samples for the validation loss; 0 = all. "
            "[default: a quarter of the train samples, at most 256]"
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Per-device batch size. [default: 8]")
    ] = None,
    gradient_accumulation_steps: Annotated[int | None, typer.Option(help="[default: 1]")] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            "--gradient-checkpointing/--no-gradient-checkpointing",
            help="Recompute activations in the backward pass: less memory, slower (cft: the "
            "counterfactual prompt then runs per example). [default: off]",
        ),
    ] = None,
    learning_rate: Annotated[float | None, typer.Option(help="[default: 1e-4]")] = None,
    warmup_steps: Annotated[int | None, typer.Option(help="[default: 0]")] = None,
    eval_steps: Annotated[
        int | None,
        typer.Option(help="Validate and checkpoint every N steps. [default: min(50, steps/epoch)]"),
    ] = None,
    patience: Annotated[
        int | None, typer.Option(help="Early-stopping patience in evaluations. [default: 3]")
    ] = None,
    logging_steps: Annotated[int | None, typer.Option(help="[default: 10]")] = None,
    seed: Annotated[int | None, typer.Option(help="[default: 42]")] = None,
    threads: Threads = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="YAML preset (e.g. configs/cft.yaml); flags override it."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Fine-tune an LLM recommender with sft (BIGRec) or cft; writes the run directory."""
    # every option left unset (None) falls back to the preset, then to the defaults
    overrides = {
        name: value
        for name, value in locals().items()
        if name not in ("output", "config", "resume", "json_output", "overwrite")
    }
    import json

    from ..training.pipeline import load_settings, resume_settings, train

    if overrides["data"] is not None:
        overrides["data"] = str(overrides["data"])
    if lora_target_modules is not None and lora_target_modules != "all-linear":
        overrides["lora_target_modules"] = [m.strip() for m in lora_target_modules.split(",")]
    if config is None and resume:
        config = resume_settings(output)  # the interrupted run's own settings
    settings = load_settings(config, overrides)
    summary = train(settings, output, resume=resume, overwrite=overwrite)
    if json_output:
        print(json.dumps(summary))
