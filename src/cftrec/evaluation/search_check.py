"""Search error of constrained beam search, measured against the exact ranking.

For a case, every catalogue title gets the score beam search maximises, computed exactly
(exhaustive scoring, no pruning): the LLM's log-likelihood of the title, with D3 guidance
g * llm + (1 - g) * log P_assist(title) (the per-step assistant scores telescope to the title's
log-probability), divided by len(title tokens) ** length_penalty. Against that exact ranking
of the titles a case may get (with the history excluded, the others) the beam's list gives, per
cutoff K:

    differs@K  the beam's top K is not an exact top K (compared as sets; scores within
               SCORE_TOLERANCE of the exact K-th count as ties)
    recall@K   the share of the exact top K found anywhere in the beam list
and the score gap: the exact best score minus the exact score of the beam's best title
(0 when the beam found the best title).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

SEARCH_CUTOFFS = (1, 5, 10)
# Float32 sums of up to ~30 token log-probs: beam search and exhaustive scoring give the same
# title scores that differ by up to 1.6e-4 on SmolLM2-135M (benchmarks/results/search_error.md)
SCORE_TOLERANCE = 1e-3


def checked_case_ids(case_ids: Sequence[str], count: int, seed: int) -> set[str]:
    """A seeded sample of `count` case ids, drawn from the sorted ids so that it does not
    depend on the order of the evaluated cases."""
    ordered = sorted(case_ids)
    return set(random.Random(seed).sample(ordered, min(count, len(ordered))))


def search_cutoffs(beams: int, num_titles: int) -> tuple[int, ...]:
    """The cutoffs a beam list decides: K <= the beam count (and the catalogue size)."""
    return tuple(k for k in SEARCH_CUTOFFS if k <= min(beams, num_titles)) or (1,)


def exact_scores(
    recommender, histories, assistant=None, guidance_scale: float = 1.0
) -> torch.Tensor:
    """[B, T] the score beam search maximises, for every title of `recommender.catalog`."""
    from ..decoding.exhaustive import score_all_titles
    from ..decoding.guidance import assistant_title_log_probs, mix, node_log_mass

    prompts = recommender.prompts(histories)
    responses = recommender.responses
    scores = score_all_titles(recommender.model, prompts, responses, recommender.pad_id).cpu()
    if assistant is not None:
        trie = recommender.trie
        title_log_probs = assistant_title_log_probs(assistant, recommender.catalog, histories)
        mass = node_log_mass(trie, title_log_probs.to(trie.leaf_title.device)).cpu()  # [B, N]
        leaf_title = trie.leaf_title.cpu()
        leaves = (leaf_title >= 0).nonzero().squeeze(1)
        title_node = torch.empty(len(responses), dtype=torch.long)
        title_node[leaf_title[leaves]] = leaves
        # The per-step branch scores summed along a title's path: its leaf's mass - the root's.
        assist = mass[:, title_node] - mass[:, :1]
        scores = mix(scores, assist, guidance_scale)
    lengths = torch.tensor([len(r) for r in responses], dtype=torch.float)
    return scores / lengths.pow(recommender.length_penalty)


def case_check(beam: Sequence[int], exact: torch.Tensor, cutoffs: Sequence[int]) -> dict:
    """One case: `beam` title indices (best first), `exact` [T] scores -> the per-case figures
    and the exact top titles (indices) and scores up to the largest cutoff."""
    order = exact.argsort(descending=True, stable=True)
    values = exact.tolist()
    rankable = int(torch.isfinite(exact).sum())  # excluded titles score -inf
    check = {}
    for k in cutoffs:
        need = min(k, rankable)  # with fewer titles left, the exact top K is all of them
        threshold = values[order[need - 1]] - SCORE_TOLERANCE
        top = beam[:need]
        in_top = sum(values[t] >= threshold for t in beam)
        good = len(top) == need and all(values[t] >= threshold for t in top)
        check[f"differs@{k}"] = not good
        check[f"recall@{k}"] = min(in_top, need) / need
    check["gap"] = values[order[0]] - values[beam[0]]
    check["exact_top"] = order[: min(max(cutoffs), rankable)].tolist()
    check["exact_scores"] = [round(values[t], 6) for t in check["exact_top"]]
    return check


def summarise_checks(checks: list[dict], cutoffs: Sequence[int]) -> dict:
    """Rates over the checked cases: differs@K, mean recall@K, score gap mean and max."""
    n = len(checks)
    summary: dict = {"num_cases": n, "cutoffs": list(cutoffs)}
    for k in cutoffs:
        summary[f"differs@{k}"] = sum(c[f"differs@{k}"] for c in checks) / n
    for k in cutoffs:
        summary[f"recall@{k}"] = sum(c[f"recall@{k}"] for c in checks) / n
    gaps = [c["gap"] for c in checks]
    summary["score_gap_mean"] = sum(gaps) / n
    summary["score_gap_max"] = max(gaps)
    summary["score_tolerance"] = SCORE_TOLERANCE
    return summary
