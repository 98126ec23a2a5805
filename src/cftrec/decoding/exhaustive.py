"""Exhaustive scoring: the teacher-forced log-likelihood of every catalogue title per prompt.

Each prompt is prefilled once; its KV cache rows are repeated over chunks of titles, and each
chunk is scored in one forward pass. Exact (no pruning): the oracle for beam search and the
full ranking for small catalogues.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from .lm import forward, prefill


def _right_pad(
    sequences: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


@torch.inference_mode()
def score_all_titles(
    model,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int,
    rows_per_pass: int = 64,
    length_penalty: float = 0.0,
) -> torch.Tensor:
    """-> [B, T]: sum of log P(response token) for every (prompt, title), divided by
    len(response) ** length_penalty (0: the plain sum, as in beam search)."""
    first_log_probs, cache, prompt_mask, prompt_len = prefill(model, prompts, pad_id)
    device = first_log_probs.device
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    resp_ids, resp_mask = (t.to(device) for t in _right_pad(responses, pad_id))
    lengths = resp_mask.sum(1).float()  # [T]
    num_prompts, num_titles = len(prompts), len(responses)
    # log P(first token | prompt) for all titles at once: [B, T]
    scores = first_log_probs[:, resp_ids[:, 0]]
    chunk = max(1, rows_per_pass)
    if resp_ids.shape[1] > 1:
        inputs, targets = resp_ids[:, :-1], resp_ids[:, 1:]  # [T, R-1]
        target_mask = resp_mask[:, 1:].float()
        for b in range(num_prompts):
            for start in range(0, num_titles, chunk):
                end = min(start + chunk, num_titles)
                rows = end - start
                # A fresh cache holding this prompt's keys/values repeated for `rows` titles.
                rows_cache = DynamicCache(
                    [(k[b : b + 1].expand(rows, -1, -1, -1), v[b : b + 1].expand(rows, -1, -1, -1))
                     for k, v in layers]
                )  # fmt: skip
                mask = torch.cat(
                    [prompt_mask[b : b + 1].expand(rows, -1), resp_mask[start:end, :-1]], 1
                )
                positions = prompt_len[b] + torch.arange(inputs.shape[1], device=device)
                out = forward(
                    model, inputs[start:end], mask, positions.expand(rows, -1), rows_cache
                )
                log_probs = out.logits.float().log_softmax(-1)  # [rows, R-1, V]
                token = log_probs.gather(-1, targets[start:end].unsqueeze(-1)).squeeze(-1)
                scores[b, start:end] += (token * target_mask[start:end]).sum(1)
    return scores / lengths.pow(length_penalty)
