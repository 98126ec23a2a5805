"""Exact top-K over the catalogue trie: the K titles the model scores highest, no search error.

With length penalty 0 a title's score is a sum of token log-probabilities, each <= 0, so the
score of a trie prefix bounds the score of every title below it (D3 guidance with a scale in
[0, 1] keeps this: both mixed terms are log-probabilities). Branch and bound therefore only has
to extend the prefixes that could still beat the K-th best title:

1. Bound: a constrained beam search returns real titles; the K-th best score among them
   (history titles left out when asked) is a lower bound on the true K-th best score. The
   search is wider than K (bound_beams): a K-beam search misses titles above its own K-th
   best, and the looser bound cost the walk 6.7x more prefixes (BENCHMARKS.md).
2. Search: a breadth-first walk down the trie, one user at a time, that keeps every prefix
   scoring at least the bound, and raises the bound to the K-th best title finished so far.
   Every title of the true top K has all its prefixes above the bound, so none is pruned.

At guidance scale 0 the model plays no part (each step scores the assistant's branch alone), so
the exact top K is the assistant's own ranking, read off without a forward pass.

The bound search is batched over users. The walk feeds one token position per step for all of
a user's kept prefixes in one forward pass, the prompt's keys/values read in place
(shared_prefix.py) as in beam search. Its cost is the number of prefixes above the bound: small
when the model is confident, up to exhaustive scoring's when it is not, and its memory is that
user's frontier (see BENCHMARKS.md, "Exact decoding").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import shared_prefix
from .beam import NEG_INF, constrained_beam_search
from .guidance import branch_log_probs, mix
from .lm import feed_step, prefill
from .methods import check_exact_applies
from .trie import TitleTrie

# The bound's beam search: the K-th best of K beams was a loose bound (on MovieLens-100k, top
# 10: 8,719 prefixes walked per case, 43 CPU s); 50 beams cut that to 1,306 and 11 s in all, and
# for a top 50 twice K beams did best (100: 25 s; 50: 46 s; 250: 33 s). Wider costs more search
# than it saves walking (results/exact.md).
BOUND_BEAMS = 50

# The bound comes from a separate search whose forward passes group rows differently, so the
# same title's score may differ there in the last float bits; the walk relaxes the bound by this
# much (in nats) so such a title is never pruned on its own rounding.
BOUND_SLACK = 1e-3


@dataclass
class ExactStats:
    """Work done by one exact search (summed over its users)."""

    prefixes: int = 0  # prefixes fed to the model by the walk (one token position each)


@torch.inference_mode()
def exact_top_k(
    model,
    prompts: Sequence[Sequence[int]],
    trie: TitleTrie,
    k: int,
    pad_id: int,
    assistant_log_mass: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    excluded: Sequence[Sequence[int]] | None = None,
    share_prompt: bool = True,
    stats: ExactStats | None = None,
    head=None,
    bound_width: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (title indices [B, K], scores [B, K]), best first; -1 / -inf where fewer than K.

    `excluded[b]`: title indices user b must not get (its history, say); the K titles are the
    best of the others. `assistant_log_mass` [B, N]: D3 guidance (guidance.node_log_mass).
    `head`: the prompts' shared head (prompt_head.PromptHead), prefilled once per process.
    `bound_width`: beams of the bound's search (default bound_beams(K); at least K), which
    changes the cost only, never the result.
    """
    check_exact_applies(0.0, guidance_scale if assistant_log_mass is not None else None)
    stats = stats if stats is not None else ExactStats()
    batch = len(prompts)
    excluded = [list(e) for e in excluded] if excluded is not None else [[] for _ in prompts]
    blocked = torch.zeros((batch, trie.num_titles), dtype=torch.bool)
    for row, titles in enumerate(excluded):
        blocked[row, titles] = True
    if assistant_log_mass is not None and guidance_scale == 0:
        return _assistant_ranking(trie, k, assistant_log_mass, blocked)
    bound = _lower_bound(
        model, prompts, trie, k, pad_id, assistant_log_mass, guidance_scale, excluded,
        share_prompt, head, max(k, bound_width or bound_beams(k)),
    )  # fmt: skip
    # One walk per user: a walk holds the keys/values of every open prefix, and all 8 users of
    # a batch walked together took 13.6 GB on MovieLens-100k (with the looser K-beam bound).
    with shared_prefix.attention(model):
        walks = [
            _walk(
                model, [prompt], trie, k, pad_id,
                None if assistant_log_mass is None else assistant_log_mass[row : row + 1],
                guidance_scale, blocked[row : row + 1], bound[row : row + 1] - BOUND_SLACK,
                share_prompt, stats, head,
            )
            for row, prompt in enumerate(prompts)
        ]  # fmt: skip
    return torch.cat([titles for titles, _ in walks]), torch.cat([scores for _, scores in walks])


def _assistant_ranking(
    trie: TitleTrie, k: int, log_mass: torch.Tensor, blocked: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Guidance scale 0: every step scores the assistant's branch log-probability alone, and
    along a title's path those telescope to log P(title leaf) - log P(root). The exact top K is
    then the assistant's own ranking, read off without running the model."""
    leaves = torch.as_tensor(trie.title_leaf_[: trie.num_titles], dtype=torch.long)
    log_mass = log_mass.cpu()
    scores = (log_mass[:, leaves] - log_mass[:, :1]).masked_fill(blocked, NEG_INF)
    # ties: catalogue order, as the stable sorts of exhaustive scoring
    order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    top = scores.gather(1, order)
    return order.masked_fill(top == NEG_INF, -1), top


def bound_beams(k: int) -> int:
    """Beams of the search whose K-th best title bounds the walk (measured: BOUND_BEAMS)."""
    return max(BOUND_BEAMS, 2 * k)


def _lower_bound(
    model, prompts, trie, k, pad_id, mass, guidance_scale, excluded, share_prompt, head, beams
) -> torch.Tensor:
    """[B]: the K-th best score of a beam search of `beams` beams that skips the excluded
    titles (-inf when it found fewer than K)."""
    _, scores = constrained_beam_search(
        model, prompts, trie, min(trie.num_titles, beams), pad_id, assistant_log_mass=mass,
        guidance_scale=guidance_scale, share_prompt=share_prompt, head=head, excluded=excluded,
    )  # fmt: skip
    return scores[:, k - 1].cpu()


def _walk(
    model, prompts, trie, k, pad_id, mass, guidance_scale, blocked, bound, share_prompt, stats,
    head=None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    from transformers import DynamicCache

    batch = len(prompts)
    log_probs, cache, prompt_mask, prompt_len = prefill(model, prompts, pad_id, head)
    device = log_probs.device
    prefix = None
    if share_prompt and shared_prefix.supports(model, cache):
        prefix, cache = shared_prefix.SharedPrefix.from_cache(cache, prompt_mask), DynamicCache()
    log_probs = log_probs.unsqueeze(1)  # [A, R=1, V]: the root, one row per user
    users = torch.arange(batch, device=device)  # active users -> batch index
    scores = torch.zeros((batch, 1), device=device)  # [A, R] prefix scores (-inf: padding)
    nodes = torch.zeros((batch, 1), dtype=torch.long, device=device)  # [A, R] trie nodes
    bound = bound.to(device)
    blocked = blocked.to(device)
    pool_scores = torch.full((batch, k), NEG_INF, device=device)  # best finished, best first
    pool_titles = torch.full((batch, k), -1, dtype=torch.long, device=device)
    out_scores, out_titles = pool_scores.clone(), pool_titles.clone()
    mass = mass.to(device) if mass is not None else None

    for step in range(trie.max_length):
        active = len(users)
        tokens, children, valid = trie.children(nodes)  # [A, R, D]
        token_scores = log_probs.gather(-1, tokens)
        if mass is not None:
            token_scores = mix(token_scores, branch_log_probs(mass[users], nodes, children),
                               guidance_scale)  # fmt: skip
        candidates = (scores.unsqueeze(-1) + token_scores).masked_fill(~valid, NEG_INF)
        flat = candidates.view(active, -1)  # [A, R*D]
        flat_child = children.view(active, -1)
        flat_title = trie.leaf_title[flat_child]
        ends = flat_title >= 0
        allowed = ~blocked[users].gather(1, flat_title.clamp_min(0))

        # Finished titles enter the pool (best K kept); the K-th best raises the bound.
        finished = flat.masked_fill(~(ends & allowed), NEG_INF)
        merged_scores = torch.cat([pool_scores, finished], 1)
        merged_titles = torch.cat([pool_titles, flat_title.masked_fill(~ends, -1)], 1)
        pool_scores, keep = merged_scores.topk(k, dim=1)
        pool_titles = merged_titles.gather(1, keep)
        bound = torch.maximum(bound, pool_scores[:, -1])

        # Open prefixes that could still hold a title at least as good as the bound.
        running = flat.masked_fill(ends | (flat < bound.unsqueeze(1)), NEG_INF)
        counts = (running > NEG_INF).sum(1)
        done = counts == 0
        if done.any():
            out_scores[users[done]] = pool_scores[done]
            out_titles[users[done]] = pool_titles[done]
        keep_users = (~done).nonzero().squeeze(1)
        if len(keep_users) == 0:
            break
        width = int(counts[keep_users].max())  # rows per user: the widest user's frontier
        run_scores, pick = running[keep_users].topk(width, dim=1)  # [A', width]
        # padding rows sit on a node without children, so they add no candidates
        nodes = flat_child[keep_users].gather(1, pick)
        nodes = nodes.masked_fill(run_scores == NEG_INF, trie.dead_end)
        next_tokens = tokens.view(active, -1)[keep_users].gather(1, pick)
        parents = pick // tokens.shape[-1]  # row (within R) each kept prefix extends
        rows_per_user = scores.shape[1]
        cache.reorder_cache((keep_users.unsqueeze(1) * rows_per_user + parents).view(-1))
        stats.prefixes += int(counts[keep_users].sum())
        users, scores, bound = users[keep_users], run_scores, bound[keep_users]
        pool_scores, pool_titles = pool_scores[keep_users], pool_titles[keep_users]
        prompt_mask, prompt_len = prompt_mask[keep_users], prompt_len[keep_users]
        if prefix is not None and len(keep_users) < active:
            prefix = prefix.select(keep_users)
        log_probs, cache = feed_step(
            model, next_tokens, cache, prompt_mask, prompt_len, step, prefix
        )
    else:  # every path ends within max_length tokens, so this only catches a broken trie
        raise RuntimeError("exact search did not finish within the longest title")
    return out_titles, out_scores
