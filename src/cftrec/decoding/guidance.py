"""D3 guidance: mix a text-free assistant's title probabilities into constrained decoding.

The assistant gives log P(title) for every distinct title. The probability of a trie branch is
the summed probability of the titles below it, so the assistant's score for taking token t
from node p to child c is log P(c) - log P(p). Per step the two scores are mixed as
    score = g * (llm - assist) + assist          (g = 1: the plain LLM)
"""

from __future__ import annotations

import torch

from ..errors import CftrecError
from .trie import TitleTrie

# Branches whose assistant mass is below this share of the total count as this share: keeps
# the mix finite for titles the assistant gives zero probability (e.g. never-seen items).
MIN_BRANCH_PROBABILITY = 1e-12


def node_log_mass(trie: TitleTrie, title_log_probs: torch.Tensor) -> torch.Tensor:
    """log of the assistant probability summed over the titles below every node.

    title_log_probs [B, T] (catalogue title order) -> [B, N] (trie node order). Each title's
    probability sits on its leaf, and every level of the trie, deepest first, adds its mass
    to its parents: O(B N), whatever changes the trie went through.
    """
    probs = title_log_probs.double().softmax(-1)  # renormalised over the catalogue titles
    leaf_title = trie.leaf_title.to(probs.device)
    mass = torch.zeros((probs.shape[0], len(leaf_title)), dtype=probs.dtype, device=probs.device)
    leaves = (leaf_title >= 0).nonzero().squeeze(1)
    mass[:, leaves] = probs[:, leaf_title[leaves]]
    for nodes, parents in trie.levels():
        nodes = torch.from_numpy(nodes).to(probs.device)
        mass.index_add_(1, torch.from_numpy(parents).to(probs.device), mass[:, nodes])
    return mass.clamp_min(MIN_BRANCH_PROBABILITY).log().float()


def without_titles(title_log_probs: torch.Tensor, excluded) -> torch.Tensor:
    """title_log_probs [B, T] with the titles `excluded[b]` (indices) at -inf: the assistant
    over the catalogue without them (a row that would lose every title stays as it is)."""
    masked = title_log_probs.clone()
    for row, titles in enumerate(excluded):
        if titles and len(set(titles)) < masked.shape[1]:
            masked[row, list(titles)] = float("-inf")
    return masked


def branch_log_probs(
    log_mass: torch.Tensor, parents: torch.Tensor, children: torch.Tensor
) -> torch.Tensor:
    """Assistant log P(child | parent) = log P(child) - log P(parent).

    log_mass [B, N]; parents [B, W] node ids; children [B, W, D] node ids -> [B, W, D].
    """
    batch = log_mass.shape[0]
    child_mass = log_mass.gather(1, children.reshape(batch, -1)).view(children.shape)
    parent_mass = log_mass.gather(1, parents)
    return child_mass - parent_mass.unsqueeze(-1)


def mix(llm: torch.Tensor, assist: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """score = g * (llm - assist) + assist."""
    return guidance_scale * (llm - assist) + assist


def assistant_title_log_probs(assistant, catalog, histories) -> torch.Tensor:
    """The assistant's log P(title) [B, T], checked to be over the same catalogue titles."""
    if list(assistant.catalog.titles) != list(catalog.titles):
        raise CftrecError(
            "the assistant's catalogue differs from the LLM's (different titles or order); "
            "train both on the same dataset"
        )
    scores = torch.as_tensor(assistant.title_log_probs(histories))
    if scores.shape != (len(histories), len(catalog.titles)):
        raise CftrecError(
            f"the assistant returned title scores of shape {tuple(scores.shape)}, "
            f"expected {(len(histories), len(catalog.titles))}"
        )
    return scores
