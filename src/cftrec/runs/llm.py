"""The LLM run directory written by `cftrec train -o RUN`, and how to load it back.

    RUN/
      run.json        kind "llm", method, base_model, lora (or null), dtype, prompt (encoder
                      config), max_history, seed, data_fingerprint, summary, ...
      items.parquet   catalogue copy (cftrec.runs.info.write_run_info)
      config.yaml     the resolved training configuration: the settings with the defaults that
                      depend on the run filled in (weighting, max_eval_samples = validation
                      samples used, eval_steps, eval_batch_size)
      tokenizer/      the tokenizer (save_pretrained)
      model/          full weights (safetensors), or
      adapter/        a peft LoRA adapter (safetensors) over `base_model`
      metrics.jsonl   one JSON object per logged step: step, loss, rec, cf (means since the
                      previous logged step; logged every --logging-steps and always at the
                      first step, the last step and each validation step); eval lines carry
                      eval_loss (the recommendation loss on the validation samples) and
                      eval_runtime (seconds)

While training, resumable checkpoints live in RUN/checkpoints/; the finished directory is
written into a temporary folder and renamed over RUN, so it is either complete or absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CftrecError, first_line
from ..files import atomic_directory
from ..prompts import PromptEncoder
from .info import RUN_FILE, read_run_info, write_run_info

MODEL_DIR = "model"
ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
TRAIN_COMMAND = "train"  # what the output marker of an LLM run names


@dataclass
class LLMRun:
    """A trained LLM recommender: model (eval mode), tokenizer, prompt encoder, run.json."""

    model: Any
    tokenizer: Any
    encoder: PromptEncoder
    info: dict[str, Any]


def save_llm_run(
    run_dir: str | Path,
    *,
    model,
    tokenizer,
    info: dict[str, Any],
    dataset,
    config: dict[str, Any],
    metrics: list[dict[str, Any]],
) -> Path:
    """Write a complete run directory atomically. `model` may be a peft model (adapter only)."""
    import yaml

    info = {"kind": "llm", **info}
    run_dir = Path(run_dir)
    adapter_only = bool(info.get("lora"))
    # The checkpoints folder lives inside RUN while training; the finished run replaces it.
    with atomic_directory(
        run_dir, TRAIN_COMMAND, needed_bytes=weights_bytes(model, adapter_only)
    ) as tmp:
        write_run_info(tmp, info, dataset)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        tokenizer.save_pretrained(tmp / TOKENIZER_DIR)
        weights = ADAPTER_DIR if adapter_only else MODEL_DIR
        model.save_pretrained(tmp / weights, safe_serialization=True)
        with open(tmp / METRICS_FILE, "w", encoding="utf-8") as handle:
            for line in metrics:
                handle.write(json.dumps(line) + "\n")
    return run_dir


def weights_bytes(model, adapter_only: bool) -> int:
    """About what save_pretrained writes: every parameter, or the trainable ones (a LoRA
    adapter). A full disk is reported with it."""
    return sum(
        p.numel() * p.element_size()
        for p in model.parameters()
        if p.requires_grad or not adapter_only
    )


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    lines = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise CftrecError(f"{path}:{number}: bad JSON ({error.msg})") from None
    return lines


def load_llm_run(run_dir: str | Path, dtype: str | None = None, merge_lora: bool = True) -> LLMRun:
    """Load a run written by `cftrec train`. `dtype=None` uses the training dtype; a LoRA
    adapter is merged into the base weights unless `merge_lora=False` (then a PeftModel)."""
    from ..modeling import load_model, load_tokenizer

    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if info["kind"] != "llm":
        raise CftrecError(f"{run_dir}: a '{info['kind']}' run, not an LLM run")
    dtype = dtype or info.get("dtype", "float32")
    tokenizer = load_tokenizer(str(run_dir / TOKENIZER_DIR))
    if info.get("lora"):
        adapter = run_dir / ADAPTER_DIR
        if not (adapter / "adapter_config.json").exists():
            raise CftrecError(f"{adapter}: missing LoRA adapter (adapter_config.json)")
        from peft import PeftModel

        base = load_model(info["base_model"], dtype=dtype)
        try:
            model = PeftModel.from_pretrained(base, str(adapter))
        except Exception as error:  # peft raises many types; the user needs one line
            raise CftrecError(
                f"{adapter}: cannot load the LoRA adapter ({first_line(error)})"
            ) from error
        if merge_lora:
            model = model.merge_and_unload()
    else:
        weights = run_dir / MODEL_DIR
        if not (weights / "config.json").exists():
            raise CftrecError(f"{weights}: missing model weights (config.json)")
        model = load_model(str(weights), dtype=dtype)
    model.eval()
    try:
        encoder = PromptEncoder(tokenizer, **info["prompt"])
    except (TypeError, ValueError, CftrecError) as error:
        raise CftrecError(
            f"{run_dir / RUN_FILE}: bad 'prompt' settings ({first_line(error)})"
        ) from None
    return LLMRun(model=model, tokenizer=tokenizer, encoder=encoder, info=info)
