"""Exhaustive scoring: the teacher-forced log-likelihood of every catalogue title per prompt.

Each prompt is prefilled once, alone. Where the model allows it (shared_prefix.supports), the
titles then read that prompt's keys/values in place, as the beams of beam search do: a chunk of
titles is fed one token position per forward pass, and the cache holds only their response
tokens (titles sorted longest first, so the rows still running are the first ones of a chunk).
Otherwise a copy of the model's own cache object is repeated over a chunk of titles and the
chunk is scored in one forward pass; copying the cache keeps every kind of cache layer (sliding
windows included) what the model expects. Exact (no pruning): the oracle for beam search and
the full ranking for small catalogues.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from . import shared_prefix
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
    rows_per_pass: int | None = None,
    length_penalty: float = 0.0,
    share_prompt: bool = True,
    head=None,
) -> torch.Tensor:
    """-> [B, T]: sum of log P(response token) for every (prompt, title), divided by
    len(response) ** length_penalty (0: the plain sum, as in beam search).

    `rows_per_pass`: titles per forward pass (default 512 with the shared prompt, where a pass
    feeds one token per title; 64 with the copied cache, where it feeds whole titles).
    `share_prompt=False` forces the copied cache (same results, slower). `head`: the prompts'
    shared head (prompt_head.PromptHead), prefilled once per process."""
    scores = []
    with shared_prefix.attention(model):
        for prompt in prompts:
            first_log_probs, cache, prompt_mask, _ = prefill(
                model, [prompt], pad_id, head
            )  # [1, V]
            device = first_log_probs.device
            if share_prompt and shared_prefix.supports(model, cache):
                prefix = shared_prefix.SharedPrefix.from_cache(cache, prompt_mask)
                rest = _shared_prompt_scores(
                    model, prefix, len(prompt), responses, pad_id, rows_per_pass or 512
                )
            else:
                rest = _copied_cache_scores(
                    model, cache, len(prompt), responses, pad_id, rows_per_pass or 64
                )
            first = torch.tensor([r[0] for r in responses], device=device)
            scores.append(first_log_probs[0, first] + rest)  # log P(first token | prompt) + rest
    lengths = torch.tensor([len(r) for r in responses], dtype=torch.float, device=device)
    return torch.stack(scores) / lengths.pow(length_penalty)


def _shared_prompt_scores(
    model, prefix, prompt_len, responses, pad_id, rows_per_pass
) -> torch.Tensor:
    """[T]: sum of log P(response token | prompt, earlier tokens) over tokens 2.. of each
    response, the prompt shared in place (`prefix`); one token position per forward pass."""
    from transformers import DynamicCache

    device = prefix.bias.device
    scores = torch.zeros(len(responses), device=device)
    longest_first = sorted(range(len(responses)), key=lambda t: -len(responses[t]))
    for start in range(0, len(responses), max(1, rows_per_pass)):
        chunk = longest_first[start : start + max(1, rows_per_pass)]
        ids = _right_pad([responses[t] for t in chunk], pad_id)[0].to(device)
        lengths = torch.tensor([len(responses[t]) for t in chunk])  # descending
        cache, total = DynamicCache(), torch.zeros(len(chunk), device=device)
        live = len(chunk)  # rows in the cache
        for step in range(int(lengths[0]) - 1):
            rows = int((lengths > step + 1).sum())  # titles with a token after this one
            if rows < live:  # drop the finished titles' rows
                cache.reorder_cache(torch.arange(rows, device=device))
                live = rows
            positions = torch.full((rows, 1), prompt_len + step, dtype=torch.long, device=device)
            out, cache = forward(model, ids[:rows, step : step + 1], None, positions, cache,
                                 shared_prefix=prefix)  # fmt: skip
            logits = out.logits[:, -1].float()  # [rows, V]
            target = ids[:rows, step + 1 : step + 2]
            total[:rows] += (logits.gather(1, target) - logits.logsumexp(-1, keepdim=True))[:, 0]
        scores[torch.tensor(chunk, device=device)] = total
    return scores


def _copied_cache_scores(
    model, cache, prompt_len, responses, pad_id, rows_per_pass
) -> torch.Tensor:
    """[T]: as `_shared_prompt_scores`, with a copy of the prompt's cache per title and whole
    responses per forward pass."""
    device = cache.layers[0].keys.device
    resp_ids, resp_mask = (t.to(device) for t in _right_pad(responses, pad_id))
    scores = torch.zeros(len(responses), device=device)
    if resp_ids.shape[1] == 1:
        return scores
    inputs, targets = resp_ids[:, :-1], resp_ids[:, 1:]  # [T, R-1]
    positions = prompt_len + torch.arange(inputs.shape[1], device=device)
    for start in range(0, len(responses), max(1, rows_per_pass)):
        end = min(start + max(1, rows_per_pass), len(responses))
        rows = end - start
        rows_cache = copy.deepcopy(cache)  # the forward pass extends it
        rows_cache.batch_repeat_interleave(rows)
        mask = torch.cat([resp_mask.new_ones((rows, prompt_len)), resp_mask[start:end, :-1]], 1)
        out, _ = forward(model, inputs[start:end], mask, positions.expand(rows, -1), rows_cache)
        log_probs = out.logits.float().log_softmax(-1)  # [rows, R-1, V]
        token = log_probs.gather(-1, targets[start:end].unsqueeze(-1)).squeeze(-1)
        scores[start:end] = (token * resp_mask[start:end, 1:]).sum(1)
    return scores
