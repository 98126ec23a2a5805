"""Shared-prefix attention for beam decoding: every beam of a user reads that user's prompt
keys/values in place instead of a private copy.

With a plain KV cache each beam row holds a copy of its prompt's keys and values, and every
step re-gathers (beam reordering) and re-concatenates (new token) the whole cache: on CPU that
copying cost more than the model's matmuls. Here the prompt part is kept once per user and the
cache holds only the response tokens (a few per beam); attention for the W beams of a user is
computed against the prompt in one grouped matmul and merged with the response part under one
softmax. Same result as full attention over [prompt; response], up to float rounding.

Used through `attention(model)`, a context manager that switches the model's attention
implementation to one that takes this path when a `shared_prefix` keyword is passed to the
forward call, and plain SDPA otherwise. It does so only for models whose own attention is plain
causal SDPA: sliding windows, logit soft-capping, attention sinks or another implementation
(eager, flash) keep the model's attention and the per-beam cache.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

NAME = "cftrec_shared_prefix"


@dataclass
class SharedPrefix:
    """Prompt keys/values per layer [A, Hkv, L, D] and the prompt padding bias [A, 1, 1, L]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    bias: torch.Tensor

    @classmethod
    def from_cache(cls, cache, prompt_mask: torch.Tensor) -> SharedPrefix:
        bias = torch.zeros(prompt_mask.shape, dtype=cache.layers[0].keys.dtype)
        bias = bias.to(prompt_mask.device).masked_fill(prompt_mask == 0, float("-inf"))
        return cls(
            [layer.keys for layer in cache.layers],
            [layer.values for layer in cache.layers],
            bias[:, None, None, :],
        )

    def select(self, users: torch.Tensor) -> SharedPrefix:
        """Keep the prompts of `users` (rows of A)."""
        return SharedPrefix(
            [k[users] for k in self.keys], [v[users] for v in self.values], self.bias[users]
        )


def plain_attention(model) -> bool:
    """Whether every attention layer of `model` is plain causal SDPA over the whole sequence:
    what `_attention` computes. Sliding windows, soft-capped logits and attention sinks reach
    the attention function as extra keywords that `_attention` does not apply."""
    config = model.config
    modules = [m for m in model.modules() if m.__class__.__name__.endswith("Attention")]
    return (
        config._attn_implementation == "sdpa"
        and getattr(config, "sliding_window", None) is None
        and getattr(config, "attn_logit_softcapping", None) is None
        and all(kind == "full_attention" for kind in getattr(config, "layer_types", None) or ())
        and bool(modules)
        and all(hasattr(m, "layer_idx") and not hasattr(m, "sinks") for m in modules)
    )


def supports(model, cache) -> bool:
    """Inside `attention(model)`: whether beams may share the prompt of this prefilled cache
    (the model was switched, and every cache layer is a plain full-length one)."""
    from .lm import plain_cache

    return model.config._attn_implementation == NAME and plain_cache(cache)


# Keywords the model passes to its attention function that do not change the result here.
_NEUTRAL_KWARGS = {"position_ids", "use_cache", "output_attentions"}


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """query [R, Hq, q, D]: q new tokens per row (1 in a search step, a title's tail when one
    is scored in one pass); key/value [R, Hkv, t, D]: the response tokens of each row, the new
    ones last. Rows are grouped by user (R = A * W). Returns ([R, q, Hq, D], None) like SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    prefix: SharedPrefix | None = kwargs.pop("shared_prefix", None)
    if prefix is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    unapplied = sorted(k for k, v in kwargs.items() if v is not None and k not in _NEUTRAL_KWARGS)
    if unapplied:  # plain_attention() should have kept this model on the per-beam path
        raise RuntimeError(f"shared-prefix attention cannot apply {', '.join(unapplied)}")
    prompt_keys, prompt_values = prefix.keys[module.layer_idx], prefix.values[module.layer_idx]
    users, kv_heads, length, dim = prompt_keys.shape
    rows, q_heads, new = query.shape[0], query.shape[1], query.shape[2]
    beams, group = rows // users, q_heads // kv_heads  # query head h reads kv head h // group
    width = group * new  # the queries of one kv head in one row
    scaling = scaling if scaling is not None else dim**-0.5

    # Prompt part: all beams of a user against its prompt in one matmul.
    q = query.reshape(users, beams, kv_heads, width, dim).transpose(1, 2)
    q = q.reshape(users, kv_heads, beams * width, dim)
    prompt_scores = (q @ prompt_keys.transpose(-1, -2)) * scaling + prefix.bias  # [A,Hkv,W*w,L]
    prompt_scores = prompt_scores.view(users, kv_heads, beams, width, length).transpose(1, 2)
    # Response part: each row against its own response tokens, causal among the new ones.
    q_rows = query.reshape(rows, kv_heads, width, dim)
    response_scores = (q_rows @ key.transpose(-1, -2)) * scaling  # [R, Hkv, w, t]
    if new > 1:
        total = key.shape[2]
        future = torch.arange(total, device=query.device) > (
            total - new + torch.arange(new, device=query.device)
        ).unsqueeze(1)  # [q, t]: key j is after query i
        response_scores = response_scores.view(rows, kv_heads, group, new, total)
        response_scores = response_scores.masked_fill(future, float("-inf")).view(
            rows, kv_heads, width, total
        )
    scores = torch.cat([prompt_scores.reshape(rows, kv_heads, width, length), response_scores], -1)
    probs = scores.float().softmax(-1).to(query.dtype)  # [R, Hkv, w, L + t]

    prompt_probs = probs[..., :length].reshape(users, beams, kv_heads, width, length)
    prompt_probs = prompt_probs.transpose(1, 2).reshape(users, kv_heads, beams * width, length)
    out = (prompt_probs @ prompt_values).view(users, kv_heads, beams, width, dim).transpose(1, 2)
    out = out.reshape(rows, kv_heads, width, dim) + probs[..., length:] @ value  # [R, Hkv, w, D]
    return out.reshape(rows, q_heads, new, dim).transpose(1, 2), None


@contextlib.contextmanager
def attention(model):
    """Switch `model` to shared-prefix-capable attention for the duration of the block, if its
    attention is plain (`plain_attention`); otherwise leave it as it is."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if not plain_attention(model):
        yield
        return
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    previous = model.config._attn_implementation
    model.config._attn_implementation = NAME
    try:
        yield
    finally:
        model.config._attn_implementation = previous
