"""Encoding samples into token ids and batching them for the CFT trainer.

Every sequence is LEFT-padded so that all responses end in the same last column. The model
input is the sequence without its final token (EOS), so the logits of the last R input
positions (`logits_to_keep=R`) predict exactly the right-aligned response tokens `labels`
[B, R] (R = longest response in the batch; -100 left of a shorter response).

The counterfactual pass is never padded to the factual length. When every counterfactual
prompt in the batch is the same token sequence (always true for the built-in templates), the
batch carries it once as `cf_prefix_ids` [1, P-1] and per example only the short segment
`cf_input_ids` [B, R] = the last prompt token followed by the response without EOS; the
trainer runs the prefix once and reuses its KV cache over the batch. Otherwise
(`counterfactual_pass="separate"`, or prompts that differ) each counterfactual sequence is
padded only to the longest counterfactual sequence. "padded" pads it to the factual width,
as the reference implementation does (kept for benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..prompts import PromptEncoder
from .loss import IGNORE_INDEX
from .settings import COUNTERFACTUAL_PASSES


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one training example."""

    prompt_ids: list[int]  # factual prompt
    counterfactual_ids: list[int]  # counterfactual prompt
    response_ids: list[int]  # quoted title + EOS


def encode_samples(samples: Sequence, catalog, encoder: PromptEncoder, progress: bool = True):
    """Samples -> (list of EncodedExample, number of prompts whose history was truncated)."""
    from tqdm.auto import tqdm

    examples, truncated = [], 0
    counterfactual = encoder.counterfactual_ids()
    for sample in tqdm(samples, desc="encoding", unit="sample", disable=not progress, leave=False):
        prompt, dropped = encoder.factual_ids([catalog.title(i) for i in sample.history])
        truncated += dropped > 0
        response = encoder.response_ids(catalog.title(sample.target))
        examples.append(EncodedExample(prompt, counterfactual, response))
    return examples, truncated


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None):
    """Rows of ids -> (ids [B, W], attention mask [B, W]) padded on the left."""
    width = max(width or 0, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        if row:
            ids[b, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[b, width - len(row) :] = 1
    return ids, mask


@dataclass
class CFTCollator:
    """Batches EncodedExamples (see the module docstring for the layout)."""

    pad_token_id: int
    counterfactual: bool = True
    counterfactual_pass: str = "auto"

    def __post_init__(self):
        if self.counterfactual_pass not in COUNTERFACTUAL_PASSES:
            raise ValueError(f"counterfactual_pass must be one of {COUNTERFACTUAL_PASSES}")

    def __call__(self, examples: Sequence[EncodedExample]) -> dict[str, Any]:
        responses = [e.response_ids for e in examples]
        width = max(len(r) for r in responses)  # R
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        for b, response in enumerate(responses):
            labels[b, width - len(response) :] = torch.tensor(response, dtype=torch.long)
        factual = [e.prompt_ids + e.response_ids[:-1] for e in examples]
        input_ids, attention_mask = left_pad(factual, self.pad_token_id)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if not self.counterfactual:
            return batch
        if self.use_shared_prefix(examples):
            prefix = examples[0].counterfactual_ids
            batch["cf_prefix_ids"] = torch.tensor([prefix[:-1]], dtype=torch.long)
            segments = [prefix[-1:] + e.response_ids[:-1] for e in examples]
            batch["cf_input_ids"], batch["cf_attention_mask"] = left_pad(
                segments, self.pad_token_id
            )
        else:
            rows = [e.counterfactual_ids + e.response_ids[:-1] for e in examples]
            pad_to = input_ids.shape[1] if self.counterfactual_pass == "padded" else None
            batch["cf_input_ids"], batch["cf_attention_mask"] = left_pad(
                rows, self.pad_token_id, pad_to
            )
        return batch

    def use_shared_prefix(self, examples: Sequence[EncodedExample]) -> bool:
        if self.counterfactual_pass not in ("auto", "shared_prefix"):
            return False
        first = examples[0].counterfactual_ids
        shared = len(first) >= 2 and all(e.counterfactual_ids == first for e in examples)
        if self.counterfactual_pass == "shared_prefix" and not shared:
            raise ValueError("counterfactual prompts differ within the batch: no shared prefix")
        return shared
