"""The shared prompt head: the tokens every prompt starts with, run through the model once.

Every factual prompt opens with the same template text (the Alpaca preamble, the instruction and
the history introduction: about 70 of ~200 tokens on MovieLens). A causal model's keys/values of
a token prefix depend on that prefix only, so the head's keys/values are computed once per
process and every prefill (beam search, exact decoding, exhaustive scoring, guidance) starts
from them and runs only each user's own tokens. Same scores as the uncached path, up to float
rounding (tests/test_decoding_prompt_head.py).

Safety: a prompt uses the head only if its first tokens are the head's tokens exactly; a batch
with any other prompt is prefilled in full. Models whose cache is not plain full-length layers
(sliding windows and the like) are always prefilled in full.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch


class PromptHead:
    """The head's token ids and, once computed for a model, its keys/values [1, Hkv, H, D]."""

    def __init__(self, ids: Sequence[int]):
        self.ids = list(ids)
        self._model: weakref.ref | None = None  # the model the states were computed with
        self._model_key: tuple | None = None  # and its dtype and device then
        self._states: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.computed = 0  # how many times the head went through a model (once per model)

    def __len__(self) -> int:
        return len(self.ids)

    def applies(self, prompts: Sequence[Sequence[int]]) -> bool:
        """Whether every prompt starts with the head and has tokens of its own after it."""
        size = len(self.ids)
        return size > 0 and all(len(p) > size and list(p[:size]) == self.ids for p in prompts)

    def states(self, model) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The head's keys/values per layer for `model` (computed on first use; the weights are
        taken as frozen, as everywhere in decoding); None where the model's cache is not plain
        full-length layers, so the head cannot be reused."""
        from .lm import forward, model_device, plain_cache

        key = (next(model.parameters()).dtype, model_device(model))
        if self._model is None or self._model() is not model or self._model_key != key:
            device = model_device(model)
            ids = torch.tensor([self.ids], device=device)
            mask = torch.ones_like(ids)
            positions = torch.arange(len(self.ids), device=device).unsqueeze(0)
            with torch.inference_mode():
                _, cache = forward(model, ids, mask, positions, logits_to_keep=1)
            plain = plain_cache(cache)
            self._states = [(layer.keys, layer.values) for layer in cache.layers] if plain else None
            self._model, self._model_key = weakref.ref(model), key
            self.computed += 1
        return self._states

    def cache_for(self, model, batch: int):
        """A fresh cache holding the head's keys/values for `batch` prompts (None: not
        reusable for this model)."""
        from .lm import cache_of

        states = self.states(model)
        if states is None:
            return None
        return cache_of(
            (keys.expand(batch, *keys.shape[1:]), values.expand(batch, *values.shape[1:]))
            for keys, values in states
        )
