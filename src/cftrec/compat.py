"""The transformers API that differs between the supported versions, in one place.

Supported and tested: transformers 5.17 (the floor, `make test-floor`) to the newest.

- The KV cache: transformers 5.24 renamed it from `past_key_values` to `cache`, as a forward
  keyword and as a field of the model output. An older model silently swallows `cache=` in its
  `**kwargs` (wrong logits, no error), so both names follow the installed version.
- Activation (gradient) checkpointing: newer TrainingArguments call it
  `activation_checkpointing` (`gradient_checkpointing` is a deprecated alias there).
- Gradient accumulation needs no switch: CFTTrainer normalises its loss itself and says so with
  `model_accepts_loss_kwargs`, which every supported Trainer reads the same way.
"""

from __future__ import annotations

import functools

from transformers.modeling_outputs import CausalLMOutputWithPast

CACHE_KWARG = (
    "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
)


def cache_kwargs(cache) -> dict:
    """Forward keywords that pass `cache` to the model (and ask for an updated one back)."""
    return {CACHE_KWARG: cache, "use_cache": True}


def output_cache(output):
    """The KV cache of a model output (None when the model returned none)."""
    return getattr(output, CACHE_KWARG, None)


@functools.cache
def _checkpointing_field() -> str:
    from transformers import TrainingArguments

    fields = TrainingArguments.__dataclass_fields__
    return (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else ("gradient_checkpointing")
    )


def checkpointing_kwargs(enabled: bool) -> dict:
    """The TrainingArguments keyword that turns activation checkpointing on or off."""
    return {_checkpointing_field(): enabled}


def checkpointing(args) -> bool:
    """Whether TrainingArguments `args` turn activation checkpointing on."""
    return bool(getattr(args, _checkpointing_field()))
