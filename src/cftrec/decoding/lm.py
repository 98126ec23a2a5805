"""Small helpers around a causal LM forward pass with left padding and a reusable KV cache.

Left padding keeps every prompt's last token in the last column; explicit position ids
(counting real tokens only) make a padded prompt compute exactly what it computes alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..compat import cache_kwargs, output_cache


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def left_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ids [B, L], attention mask [B, L] (0 on the left padding)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)


def forward(model, ids, mask, positions, cache=None, logits_to_keep: int = 0, **kwargs):
    """One forward pass that continues `cache` (a new one when None); `mask` covers cached +
    new tokens. Returns (model output, updated cache). `kwargs` reach the attention."""
    from transformers import DynamicCache

    if cache is None:
        cache = DynamicCache(config=model.config)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        logits_to_keep=logits_to_keep,
        **cache_kwargs(cache),
        **kwargs,
    )
    return out, output_cache(out)


def plain_cache(cache) -> bool:
    """Whether every layer of `cache` is a plain full-length one (no sliding window and the
    like): its keys/values can then be shared, copied by rows or reused as they are."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def cache_of(layers):
    """A new plain cache holding (keys, values) per layer, in order."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for index, (keys, values) in enumerate(layers):
        cache.update(keys, values, index)
    return cache


def prefill(model, prompts: Sequence[Sequence[int]], pad_id: int, head=None):
    """Run the prompts once. -> (next-token log-probs [B, V], cache, mask [B, L], lengths [B]).

    With a `head` (prompt_head.PromptHead) that every prompt starts with, only the tokens after
    it are run, on top of its keys/values; the cache then holds [head; padding; own tokens] and
    the mask is 0 on the padding in the middle (positions count real tokens, as always)."""
    device = model_device(model)
    cache = head.cache_for(model, len(prompts)) if head and head.applies(prompts) else None
    if cache is None:
        ids, mask = left_pad(prompts, pad_id, device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
    else:
        ids, own = left_pad([p[len(head) :] for p in prompts], pad_id, device)
        positions = len(head) + (own.cumsum(-1) - 1).clamp_min(0)
        mask = torch.cat([own.new_ones((len(prompts), len(head))), own], 1)
    out, cache = forward(model, ids, mask, positions, cache, logits_to_keep=1)
    log_probs = out.logits[:, -1].float().log_softmax(-1)
    return log_probs, cache, mask, mask.sum(-1)


def feed_step(model, tokens, cache, prompt_mask, prompt_len, step: int, prefix=None):
    """Feed one chosen token per response row, `tokens` [A, W] (W rows per user, all at the
    same `step`), continuing `cache` (response tokens only when the prompts are shared in place
    as `prefix`, else prompts too). -> (next-token log-probs [A, W, V], cache)."""
    users, width = tokens.shape
    rows = users * width
    positions = (prompt_len.repeat_interleave(width) + step).unsqueeze(1)
    if prefix is not None:
        out, cache = forward(model, tokens.reshape(rows, 1), None, positions, cache,
                             shared_prefix=prefix)  # fmt: skip
    else:
        response = torch.ones((rows, step + 1), dtype=prompt_mask.dtype, device=tokens.device)
        mask = torch.cat([prompt_mask.repeat_interleave(width, 0), response], 1)
        out, cache = forward(model, tokens.reshape(rows, 1), mask, positions, cache)
    return out.logits[:, -1].float().log_softmax(-1).view(users, width, -1), cache
