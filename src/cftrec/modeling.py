"""Model and tokenizer loading: Hugging Face hub ids, local paths, and the bundled GGUF model."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .assets import BUNDLED_PREFIX, bundled_model_dir
from .errors import CftrecError, first_line

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class LoraSettings:
    """LoRA adapter settings (peft). `target_modules="all-linear"` adapts every linear layer."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


def resolve_model_path(spec: str) -> str:
    """`bundled:NAME` -> its cached folder; anything else (hub id or path) unchanged."""
    if spec.startswith(BUNDLED_PREFIX):
        return str(bundled_model_dir(spec[len(BUNDLED_PREFIX) :]))
    return spec


def load_tokenizer(spec: str):
    """Load a tokenizer; a missing pad token is set to EOS (padding is always masked)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as error:  # transformers raises many types; the user needs one line
        raise CftrecError(f"cannot load tokenizer '{spec}': {first_line(error)}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.eos_token_id is None:
        raise CftrecError(f"tokenizer '{spec}' has no EOS token; responses need one")
    return tokenizer


def torch_dtype(name: str):
    import torch

    if name not in DTYPES:
        raise CftrecError(f"unknown dtype '{name}'; use one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def load_model(spec: str, dtype: str = "float32", lora: LoraSettings | None = None):
    """Load a causal LM by hub id, local path or `bundled:NAME`, optionally wrapped with LoRA."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(spec)
    try:
        # transformers logs warnings for harmless things (e.g. tied weights); keep output clean.
        logging.getLogger("transformers.modeling_utils").setLevel(logging.ERROR)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    except CftrecError:
        raise
    except Exception as error:
        raise CftrecError(f"cannot load model '{spec}': {first_line(error)}") from error
    if lora is not None:
        model = add_lora(model, lora)
    return model


def add_lora(model, settings: LoraSettings):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise CftrecError(f"cannot apply LoRA: {first_line(error)}") from error
