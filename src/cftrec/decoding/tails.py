"""Title tails: where a search row's trie node has a single title below it, the rest of that
title is known, so it is scored in one forward pass instead of one pass per token.

After the first few tokens almost every prefix of a catalogue title is unique (MovieLens-100k:
every beam of every user is on such a path by step 8 of 23). A one-token step over a few rows
uses the CPU poorly (the model's weights are read for little arithmetic, and a second thread
adds more CPU than it saves time), so scoring the tails in one pass of many positions removes
most of the steps (benchmarks/results/decoding.md). The token log-probabilities are those of the stepwise search up to
float rounding (a pass over several tokens groups the arithmetic differently).
"""

from __future__ import annotations

import torch

from .lm import cache_of, forward
from .shared_prefix import SharedPrefix
from .trie import TitleTrie

# Response positions scored per forward pass (rows x tail length): bounds the logits held at
# once (positions x vocabulary floats, about 100 MB for SmolLM2's vocabulary).
TAIL_POSITIONS = 512


def chain_below(trie: TitleTrie, nodes: torch.Tensor, pad_id: int):
    """Follow each node down while it has a single child.

    nodes [R] -> (single [R]: exactly one title lies below the node, so its tail is fixed;
    tokens [R, M]: the tokens from the node down to that title (EOS included), right-padded;
    lengths [R]: how many; title indices [R]). Where `single` is false the rest is meaningless.
    A node that ends a title is single with length 0."""
    count, start = trie.child_count, trie.child_start
    edge_tokens, edge_nodes = trie.child_token, trie.child_node
    last_edge = len(edge_tokens) - 1
    single = torch.ones(nodes.shape, dtype=torch.bool, device=nodes.device)
    tokens, moved, current = [], [], nodes
    for _ in range(trie.max_length + 1):
        children = count[current]
        single = single & (children <= 1)
        step = single & (children == 1)
        if not bool(step.any()):
            break
        edge = start[current].clamp(0, last_edge)
        tokens.append(torch.where(step, edge_tokens[edge], pad_id))
        moved.append(step)
        current = torch.where(step, edge_nodes[edge], current)
    if tokens:
        stacked, lengths = torch.stack(tokens, 1), torch.stack(moved, 1).sum(1)
    else:
        stacked, lengths = nodes.new_zeros((len(nodes), 0)), nodes.new_zeros(len(nodes))
    return single, stacked, lengths, trie.leaf_title[current]


def tail_scores(
    model,
    first: torch.Tensor,
    tails: torch.Tensor,
    lengths: torch.Tensor,
    cache,
    cache_rows: torch.Tensor,
    prompt_mask: torch.Tensor,
    prompt_len: torch.Tensor,
    step: int,
    prefix: SharedPrefix | None,
) -> torch.Tensor:
    """Log-probabilities of each row's tail tokens, one forward pass per chunk of users.

    Rows are grouped by user, `rows // users` per user, as in the search. `first` [R]: the
    token each row takes now (not yet fed); `tails` [R, M]: the tokens after it, `lengths`
    valid. Row r's keys/values are row `cache_rows[r]` of `cache` (left unchanged), which
    holds `step` response tokens per row (and the prompts, unless `prefix` holds them).
    -> [R, M] log P(tails[r, i] | prompt, response so far, first, tails[r, :i]), 0 past a
    row's length."""
    users = len(prompt_len)
    rows, span = tails.shape
    per_user = rows // users
    out = torch.zeros((rows, span), device=tails.device)
    if span == 0:
        return out
    inputs = torch.cat([first.unsqueeze(1), tails[:, :-1]], 1)  # position i predicts tails[:, i]
    chunk = max(1, TAIL_POSITIONS // (per_user * span))
    for start in range(0, users, chunk):
        group = torch.arange(start, min(start + chunk, users), device=tails.device)
        index = group.unsqueeze(1) * per_user + torch.arange(per_user, device=group.device)
        index = index.reshape(-1)
        positions = (prompt_len[group].repeat_interleave(per_user) + step).unsqueeze(1)
        positions = positions + torch.arange(span, device=positions.device)
        rows_cache = _cache_rows(cache, cache_rows[index])
        if prefix is not None:
            result, _ = forward(model, inputs[index], None, positions, rows_cache,
                                shared_prefix=prefix.select(group))  # fmt: skip
        else:
            seen = torch.ones((len(index), step + span), dtype=prompt_mask.dtype,
                              device=prompt_mask.device)  # fmt: skip
            mask = torch.cat([prompt_mask[group].repeat_interleave(per_user, 0), seen], 1)
            result, _ = forward(model, inputs[index], mask, positions, rows_cache)
        logits = result.logits.float()  # [r, M, V]; only the targets' log-probs are kept
        target = logits.gather(-1, tails[index].unsqueeze(-1)).squeeze(-1)
        out[index] = target - logits.logsumexp(-1)
    valid = torch.arange(span, device=tails.device) < lengths.unsqueeze(1)
    return out.masked_fill(~valid, 0.0)


def _cache_rows(cache, index: torch.Tensor):
    """A new cache holding rows `index` of `cache` (which is left as it is)."""
    layers = [entry for entry in cache.layers if getattr(entry, "keys", None) is not None]
    if len(layers) < len(cache.layers) or any(e.keys.numel() == 0 for e in layers):
        return cache_of([])  # nothing cached yet (the first step with a shared prompt)
    return cache_of(
        (e.keys.index_select(0, index), e.values.index_select(0, index)) for e in layers
    )
