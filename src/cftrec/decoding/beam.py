"""Constrained beam search over the catalogue trie (D3 decoding), batched over users.

Each prompt is prefilled once; its KV cache rows are then gathered for the live beams (no
per-beam prefill). At every step the candidates are the trie children of each beam's node,
gathered with tensor operations, so every finished hypothesis is a catalogue title.

The prompt keys/values are shared by the beams of a user (shared_prefix.py) where the model
allows it, so a step only moves the few response tokens per beam; otherwise the cache rows are
gathered per beam.

Selection follows Hugging Face beam search: the 2W best candidates per user are taken; those
that end a title (EOS) and rank among the first W enter the finished pool (best W kept), the
best W others continue. With length_penalty 0 (D3) a score is the sum of token log-probs, which only
falls along a path: beams scoring below the W-th finished title are dropped, and a user is done
once no beam is left. (With a length penalty, or guidance scales above 1, every beam runs to the
end of its title.) With at least as many beams as titles nothing is ever pruned, so
the result is the exact (exhaustive) ranking. At guidance scale 0 the model is not run: the step
scores are the assistant's alone (the same lists, bit for bit, measured on 300 MovieLens cases).

Titles excluded for a user (its history, say) are skipped while the beams are filled: the
search never enters a prefix below which every title is excluded (TitleTrie.blocked_nodes), so
it runs as on a trie without those titles and still returns W titles.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import shared_prefix
from .guidance import branch_log_probs, mix
from .lm import feed_step, model_device, plain_cache, prefill
from .tails import chain_below, tail_scores
from .trie import TitleTrie

NEG_INF = float("-inf")


@torch.inference_mode()
def constrained_beam_search(
    model,
    prompts: Sequence[Sequence[int]],
    trie: TitleTrie,
    num_beams: int,
    pad_id: int,
    length_penalty: float = 0.0,
    assistant_log_mass: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    share_prompt: bool = True,
    head=None,
    score_tails: bool = True,
    excluded: Sequence[Sequence[int]] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (title indices [B, W], scores [B, W]), best first; -1 / -inf where fewer than W.

    `excluded[b]`: title indices user b must not get, skipped while the beams are filled.

    `assistant_log_mass` [B, N]: the assistant's log mass per trie node (guidance.node_log_mass).
    `share_prompt=False` forces the plain per-beam cache (same results, slower). `head`: the
    prompts' shared head (prompt_head.PromptHead), prefilled once per process.
    """
    with shared_prefix.attention(model):
        return _search(
            model, prompts, trie, num_beams, pad_id, length_penalty, assistant_log_mass,
            guidance_scale, share_prompt, head, score_tails, excluded,
        )  # fmt: skip


def _search(
    model,
    prompts: Sequence[Sequence[int]],
    trie: TitleTrie,
    num_beams: int,
    pad_id: int,
    length_penalty: float,
    assistant_log_mass: torch.Tensor | None,
    guidance_scale: float,
    share_prompt: bool,
    head,
    score_tails: bool,
    excluded: Sequence[Sequence[int]] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import DynamicCache

    width = num_beams
    batch = len(prompts)
    # Scores only fall along a path when every step adds a log-prob <= 0: no length
    # normalisation, and guidance weights g in [0, 1] (g > 1 can add positive terms).
    guided = assistant_log_mass is not None
    monotone = length_penalty == 0 and (not guided or 0 <= guidance_scale <= 1)
    # At guidance scale 0 a step scores the assistant's branch alone (0 * (llm - assist) +
    # assist, the LLM's log-probs being finite): the same lists without running the model.
    model_free = guided and guidance_scale == 0
    prefix = log_probs = cache = None
    if model_free:
        device = model_device(model)
        prompt_mask = prompt_len = torch.zeros(batch, device=device)  # carried, never read
    else:
        log_probs, cache, prompt_mask, prompt_len = prefill(model, prompts, pad_id, head)
        device = log_probs.device
        if share_prompt and shared_prefix.supports(model, cache):
            # From here on the cache holds response tokens only; prompts live in `prefix`.
            prefix = shared_prefix.SharedPrefix.from_cache(cache, prompt_mask)
            cache = DynamicCache()
        log_probs = log_probs.unsqueeze(1)  # [A, Wc=1, V]: one live beam (the prompt) per user
    users = torch.arange(batch, device=device)  # active users -> batch index
    scores = torch.zeros((batch, 1), device=device)  # [A, Wc] cumulative scores
    nodes = torch.zeros((batch, 1), dtype=torch.long, device=device)  # [A, Wc] trie nodes
    pool_scores = torch.full((batch, width), NEG_INF, device=device)  # finished, best first
    pool_titles = torch.full((batch, width), -1, dtype=torch.long, device=device)
    out_scores, out_titles = pool_scores.clone(), pool_titles.clone()
    mass = assistant_log_mass.to(device) if assistant_log_mass is not None else None
    blocked = trie.blocked_nodes(excluded).to(device) if excluded and any(excluded) else None

    for step in range(trie.max_length):
        active = len(users)
        tokens, children, valid = trie.children(nodes)  # [A, Wc, D]
        if blocked is not None:
            valid = valid & ~blocked[users.view(-1, 1, 1), children]
        if model_free:
            token_scores = torch.zeros(tokens.shape, device=device)
        else:
            token_scores = log_probs.gather(-1, tokens)  # [A, Wc, D]
        if mass is not None:
            assist = branch_log_probs(mass[users], nodes, children)
            token_scores = mix(token_scores, assist, guidance_scale)
        candidates = (scores.unsqueeze(-1) + token_scores).masked_fill(~valid, NEG_INF)
        per_beam = candidates.shape[-1]
        flat = candidates.view(active, -1)
        top, index = flat.topk(min(2 * width, flat.shape[1]), dim=1)  # [A, K2], sorted
        cand_child = children.view(active, -1).gather(1, index)
        cand_token = tokens.view(active, -1).gather(1, index)
        cand_parent = index // per_beam  # beam (within Wc) each candidate extends
        cand_title = trie.leaf_title[cand_child]
        alive = top > NEG_INF
        ends = cand_title >= 0

        # Finished: titles completed by a top-W candidate; merge into the pool, keep best W.
        in_top_w = torch.arange(top.shape[1], device=device) < width
        finished = ends & alive & in_top_w
        normalised = top / float(step + 1) ** length_penalty
        merged_scores = torch.cat([pool_scores, normalised.masked_fill(~finished, NEG_INF)], 1)
        merged_titles = torch.cat([pool_titles, cand_title.masked_fill(~finished, -1)], 1)
        pool_scores, keep = merged_scores.topk(width, dim=1)
        pool_titles = merged_titles.gather(1, keep)

        # Running: the best W candidates that did not just end a title.
        running = top.masked_fill(ends | ~alive, NEG_INF)
        if running.shape[1] < width:
            running = torch.nn.functional.pad(running, (0, width - running.shape[1]), value=NEG_INF)
            pad = (0, width - index.shape[1])
            cand_child = torch.nn.functional.pad(cand_child, pad)
            cand_token = torch.nn.functional.pad(cand_token, pad, value=pad_id)
            cand_parent = torch.nn.functional.pad(cand_parent, pad)
        run_scores, pick = running.topk(width, dim=1)  # [A, W]
        if monotone:
            # A beam scoring below the W-th finished title can only produce titles that never
            # enter the pool, and never outrank a candidate that could: stop feeding it.
            # (Hugging Face keeps such beams running; the results are the same.)
            run_scores = run_scores.masked_fill(run_scores < pool_scores[:, -1:], NEG_INF)
        done = run_scores[:, 0] == NEG_INF
        if done.any():
            out_scores[users[done]] = pool_scores[done]
            out_titles[users[done]] = pool_titles[done]
        keep_users = (~done).nonzero().squeeze(1)
        if len(keep_users) == 0:
            break
        # Only as many beam rows as the user with the most live beams needs.
        live = int((run_scores[keep_users] > NEG_INF).sum(1).max())
        run_scores = run_scores[keep_users, :live]
        pick = pick[keep_users, :live]
        # dead rows sit on a node without children, so they add no candidates
        nodes = cand_child[keep_users].gather(1, pick)
        nodes = nodes.masked_fill(run_scores == NEG_INF, trie.dead_end)
        next_tokens = cand_token[keep_users].gather(1, pick)
        parents = cand_parent[keep_users].gather(1, pick)  # [A', live]
        rows_per_user = scores.shape[1]
        if cache is not None:
            cache.reorder_cache((keep_users.unsqueeze(1) * rows_per_user + parents).view(-1))
        users, scores = users[keep_users], run_scores
        pool_scores, pool_titles = pool_scores[keep_users], pool_titles[keep_users]
        prompt_mask, prompt_len = prompt_mask[keep_users], prompt_len[keep_users]
        if prefix is not None and len(keep_users) < active:
            prefix = prefix.select(keep_users)

        # A user whose every live beam has a single title left below it: under the rules
        # above each of those beams runs to its title's end and enters the pool (there are at
        # most W candidates per step from now on), so its tails are scored in one pass.
        fixed = None
        if score_tails and cache is not None and plain_cache(cache):
            single, all_tails, all_lengths, all_titles = chain_below(trie, nodes.view(-1), pad_id)
            fixed = (single.view(nodes.shape) | (scores == NEG_INF)).all(1)
        if fixed is not None and bool(fixed.any()):
            ended = fixed.nonzero().squeeze(1)
            rows = _row_index(ended, live)
            tails, lengths, titles = all_tails[rows], all_lengths[rows], all_titles[rows]
            llm = tail_scores(
                model, next_tokens[ended].view(-1), tails, lengths,
                cache, rows, prompt_mask[ended], prompt_len[ended], step,
                prefix.select(ended) if prefix is not None else None,
            )  # fmt: skip
            total = scores[ended].view(-1)
            for position in range(tails.shape[1]):  # in the order the stepwise search adds
                step_scores = llm[:, position] if mass is None else mix(
                    llm[:, position], torch.zeros_like(llm[:, position]), guidance_scale
                )  # a single-title branch has assistant log-prob 0  # fmt: skip
                total = total + step_scores
            length = (step + 1 + lengths).float()
            total = (total / length**length_penalty).masked_fill(total == NEG_INF, NEG_INF)
            titles = titles.masked_fill(total == NEG_INF, -1)
            merged_scores = torch.cat([pool_scores[ended], total.view(len(ended), -1)], 1)
            merged_titles = torch.cat([pool_titles[ended], titles.view(len(ended), -1)], 1)
            best, keep = merged_scores.topk(width, dim=1)
            out_scores[users[ended]] = best
            out_titles[users[ended]] = merged_titles.gather(1, keep)
            going = (~fixed).nonzero().squeeze(1)
            if len(going) == 0:
                break
            cache.reorder_cache(_row_index(going, live))
            users, scores, nodes = users[going], scores[going], nodes[going]
            next_tokens = next_tokens[going]
            pool_scores, pool_titles = pool_scores[going], pool_titles[going]
            prompt_mask, prompt_len = prompt_mask[going], prompt_len[going]
            if prefix is not None:
                prefix = prefix.select(going)

        # Feed the chosen tokens: one new position per beam row.
        if not model_free:
            log_probs, cache = feed_step(
                model, next_tokens, cache, prompt_mask, prompt_len, step, prefix
            )
    else:  # every path ends within max_length tokens, so this only catches a broken trie
        raise RuntimeError("constrained beam search did not finish within the longest title")
    return out_titles, out_scores


def _row_index(users: torch.Tensor, rows_per_user: int) -> torch.Tensor:
    """The cache rows of `users` (positions among the active users), `rows_per_user` each."""
    offsets = torch.arange(rows_per_user, device=users.device)
    return (users.unsqueeze(1) * rows_per_user + offsets).view(-1)
