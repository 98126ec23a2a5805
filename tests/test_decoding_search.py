"""Constrained beam search, exhaustive scoring and guidance against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from cftrec.data.dataset import Catalog
from cftrec.decoding.recommender import Recommender
from cftrec.errors import CftrecError
from conftest import make_tiny_llama

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "chi",
    "psi",
    "omega",
    "red",
    "green",
    "blue",
]
TITLES = [f"The {w} story ({1990 + i % 7})" for i, w in enumerate(WORDS)] + [
    "The alpha story (1990) part 2",  # shares a long prefix with another title
    "Up",
]


@pytest.fixture(scope="module")
def sharp_model(tokenizer):
    """A tiny random Llama with peaked next-token distributions (so pruning matters)."""
    model = make_tiny_llama(tokenizer, seed=3)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    return model


@pytest.fixture(scope="module")
def catalog():
    # Item "dup" shares the title of item "i3": one distinct title, two item ids.
    ids = [f"i{i}" for i in range(len(TITLES))] + ["dup"]
    return Catalog(ids, TITLES + [TITLES[3]])


@pytest.fixture(scope="module")
def recommender(sharp_model, tokenizer, catalog):
    return Recommender(sharp_model, tokenizer, catalog, batch_size=4)


HISTORIES = [["i1", "i2", "i3"], [], ["i5"], ["i7", "i8", "i9", "i10", "i11", "i12"], ["dup"]]


def direct_log_likelihood(model, prompt: list[int], response: list[int]) -> float:
    """Teacher-forced log P(response | prompt) from one plain forward pass (no cache, no pad)."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        log_probs = model(input_ids=ids).logits[0].float().log_softmax(-1)
    positions = range(len(prompt) - 1, len(prompt) + len(response) - 1)
    return sum(log_probs[p, t].item() for p, t in zip(positions, response, strict=True))


def test_exhaustive_scores_equal_direct_forward(recommender, sharp_model):
    scores = recommender.title_scores(HISTORIES[:2])
    prompts = recommender.prompts(HISTORIES[:2])
    for b in range(2):
        for t in (0, 3, 26, len(recommender.catalog.titles) - 1):
            expected = direct_log_likelihood(sharp_model, prompts[b], recommender.responses[t])
            assert scores[b, t].item() == pytest.approx(expected, abs=1e-4)


def test_beam_with_enough_beams_is_the_exhaustive_ranking(recommender):
    n = len(recommender.catalog.titles)
    exhaustive = recommender.recommend(HISTORIES, k=n, method="exhaustive")
    beam = recommender.recommend(HISTORIES, k=n, num_beams=n, method="beam")
    for ex, bm in zip(exhaustive, beam, strict=True):
        assert len(bm) == n
        assert [r.title for r in bm] == [r.title for r in ex]
        for a, b in zip(ex, bm, strict=True):
            assert b.score == pytest.approx(a.score, abs=1e-4)


def test_few_beams_give_valid_distinct_titles_with_exact_scores(recommender):
    scores = recommender.title_scores(HISTORIES)
    results = recommender.recommend(HISTORIES, k=3, num_beams=3)
    for b, recs in enumerate(results):
        titles = [r.title for r in recs]
        assert len(titles) == 3 and len(set(titles)) == 3
        assert all(t in recommender.catalog.index_of_title for t in titles)
        values = [r.score for r in recs]
        assert values == sorted(values, reverse=True)
        for r in recs:  # each score is that title's exact log-likelihood
            exact = scores[b, recommender.catalog.index_of_title[r.title]].item()
            assert r.score == pytest.approx(exact, abs=1e-4)


def test_pruning_happens_with_few_beams(recommender):
    """Guards the tests above: with 3 beams the sharp model's search misses some exact top-3
    titles, so equality with enough beams is not trivially true."""
    n = len(recommender.catalog.titles)
    exhaustive = recommender.recommend(HISTORIES, k=3, method="exhaustive")
    beam = recommender.recommend(HISTORIES, k=3, num_beams=3)
    assert n > 3
    assert any(
        [r.title for r in ex] != [r.title for r in bm]
        for ex, bm in zip(exhaustive, beam, strict=True)
    )


def test_duplicate_titles_map_to_all_item_ids(recommender):
    n = len(recommender.catalog.titles)
    for method in ("beam", "exhaustive"):
        recs = recommender.recommend([["i1"]], k=n, num_beams=n, method=method)[0]
        shared = next(r for r in recs if r.title == TITLES[3])
        assert set(shared.item_ids) == {"i3", "dup"}
        assert len(recs) == n == len(TITLES)


@pytest.mark.parametrize("method", ["beam", "exhaustive", "grounding"])
def test_batching_and_padding_do_not_change_results(recommender, method):
    batched = recommender.recommend(HISTORIES, k=5, num_beams=4, method=method, batch_size=5)
    for history, expected in zip(HISTORIES, batched, strict=True):
        alone = recommender.recommend([history], k=5, num_beams=4, method=method, batch_size=1)[0]
        assert [r.title for r in alone] == [r.title for r in expected]
        for a, b in zip(alone, expected, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-4)


def test_cold_start_uses_the_counterfactual_prompt(recommender, sharp_model):
    prompt = recommender.encoder.counterfactual_ids()
    assert recommender.prompts([[]])[0] == prompt
    best = recommender.recommend([[]], k=1, num_beams=len(TITLES))[0][0]
    expected = max(direct_log_likelihood(sharp_model, prompt, r) for r in recommender.responses)
    assert best.score == pytest.approx(expected, abs=1e-4)


def test_unknown_history_item_is_one_clear_error(recommender):
    with pytest.raises(CftrecError, match="did you mean"):
        recommender.recommend([["The alpha stroy (1990)"]])
    with pytest.raises(CftrecError, match="unknown decoding method"):
        recommender.recommend([["i1"]], method="sampling")


def test_plain_title_list_becomes_a_catalog(sharp_model, tokenizer):
    rec = Recommender(sharp_model, tokenizer, ["Up", "Heat (1995)"])
    recs = rec.recommend([["Up"]], k=2, num_beams=2)[0]
    assert {r.title for r in recs} == {"Up", "Heat (1995)"}
    assert all(r.item_ids == (r.title,) for r in recs)


class FixedAssistant:
    """A stand-in assistant with fixed title probabilities (the interface the baselines
    implement: `.catalog` and `.title_log_probs(histories)`)."""

    def __init__(self, catalog, seed=0):
        self.catalog = catalog
        generator = torch.Generator().manual_seed(seed)
        self.logits = torch.randn(len(catalog.titles), generator=generator) * 3

    def title_log_probs(self, histories):
        return self.logits.log_softmax(-1).expand(len(histories), -1).clone()


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_guided_beam_with_enough_beams_ranks_by_the_mixed_total(recommender, scale):
    """Per-step assistant scores telescope to log P_assist(title), so with no pruning the guided
    score of a title is g * llm(title) + (1 - g) * log P_assist(title)."""
    n = len(recommender.catalog.titles)
    assistant = FixedAssistant(recommender.catalog)
    llm = recommender.title_scores(HISTORIES[:3])
    assist = assistant.title_log_probs(HISTORIES[:3])
    expected = scale * llm + (1 - scale) * assist
    results = recommender.recommend(
        HISTORIES[:3], k=n, num_beams=n, assistant=assistant, guidance_scale=scale
    )
    for b, recs in enumerate(results):
        order = expected[b].argsort(descending=True).tolist()
        assert [r.title for r in recs] == [recommender.catalog.titles[t] for t in order]
        for r in recs:
            t = recommender.catalog.index_of_title[r.title]
            assert r.score == pytest.approx(expected[b, t].item(), abs=1e-3)


def test_guidance_one_step_equals_direct_branch_probabilities(recommender):
    """Assistant log P(child | parent) at every trie edge vs sums over titles by prefix."""
    from cftrec.decoding.guidance import branch_log_probs, node_log_mass

    trie = recommender.trie
    assistant = FixedAssistant(recommender.catalog, seed=1)
    probs = assistant.title_log_probs([[]])[0].exp().tolist()
    mass = node_log_mass(trie, assistant.title_log_probs([[]]))
    responses = recommender.responses
    # Every prefix of every response and its node.
    for response in responses[:8]:
        for depth in range(len(response)):
            prefix = response[:depth]
            parent = trie.walk(prefix)
            tokens, children, valid = trie.children(torch.tensor([[parent]]))
            got = branch_log_probs(mass, torch.tensor([[parent]]), children)[0, 0]
            below = sum(p for r, p in zip(responses, probs, strict=True) if r[:depth] == prefix)
            for token, ok, value in zip(tokens[0, 0], valid[0, 0], got, strict=True):
                if not ok:
                    continue
                longer = prefix + [int(token)]
                inside = sum(
                    p for r, p in zip(responses, probs, strict=True) if r[: depth + 1] == longer
                )
                assert value.item() == pytest.approx(math.log(inside / below), abs=1e-4)


def test_assistant_with_another_catalogue_is_refused(recommender):
    other = FixedAssistant(Catalog(["a"], ["Something else"]))
    with pytest.raises(CftrecError, match="catalogue differs"):
        recommender.recommend([["i1"]], assistant=other)


def test_shared_prompt_attention_equals_per_beam_cache(recommender, sharp_model):
    """The shared-prefix attention path gives the plain per-beam-cache results."""
    from cftrec.decoding import shared_prefix
    from cftrec.decoding.beam import constrained_beam_search
    from cftrec.decoding.lm import prefill

    prompts = recommender.prompts(HISTORIES)
    _, cache, _, _ = prefill(sharp_model, prompts, recommender.pad_id)
    assert shared_prefix.supports(sharp_model, cache)
    args = (sharp_model, prompts, recommender.trie, 6, recommender.pad_id)
    shared_titles, shared_scores = constrained_beam_search(*args, share_prompt=True)
    plain_titles, plain_scores = constrained_beam_search(*args, share_prompt=False)
    assert torch.equal(shared_titles, plain_titles)
    assert torch.allclose(shared_scores, plain_scores, atol=1e-4)
    assert sharp_model.config._attn_implementation != shared_prefix.NAME  # restored
