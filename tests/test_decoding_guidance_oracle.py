"""D3 guidance with an assistant whose title probabilities depend on each user's history,
against a brute-force computation per user written from guidance.py's documented rule:

  the assistant's probability of a trie branch is the summed probability of the titles below it
  (title probabilities renormalised over the catalogue), clamped below at
  MIN_BRANCH_PROBABILITY; taking token t after prefix p scores
      assist = log P(p + t) - log P(p),   step = g * (llm - assist) + assist
  and a title's score is the sum of its steps.

Users in one batch have different favourite titles of different token lengths, so they finish
at different steps and the search keeps going for some users after others are done.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from cftrec.data.dataset import Catalog
from cftrec.decoding.guidance import MIN_BRANCH_PROBABILITY
from cftrec.decoding.recommender import LLMRecommender
from conftest import make_tiny_llama
from decoding_oracles import assert_same_lists, reference_beam_search, token_log_probs
from training_fixtures import one_thread  # noqa: F401 (autouse fixture)

TITLES = [
    "Up",
    "Up II",
    "Heat (1995)",
    "Heat (1996)",
    "Star",
    "Star Wars",
    "Star Trek II",
    "The alpha story (1990)",
    "The alpha story (1991) part 2",
    "The alpha story (1991) part 3",
    "Night Moves (1975)",
    "Night Moves (1976)",
]
HISTORIES = [["i0"], ["i3", "i4"], [], ["i7", "i8", "i2"]]
CLAMPED = math.log(MIN_BRANCH_PROBABILITY)


class HistoryAssistant:
    """A scripted assistant (the interface of the SASRec and popularity baselines: `.catalog`
    and `.title_log_probs(histories)`) whose row depends on the history: its favourite title
    follows the history's last item, the others come in an order drawn from the history, with
    log-probabilities falling by 1.5 per rank; the last title gets probability 0 (-inf), and
    with `tiny` the one before it a probability far below MIN_BRANCH_PROBABILITY. Rows are not
    normalised (guidance renormalises them)."""

    def __init__(self, catalog: Catalog, tiny: bool = False):
        self.catalog = catalog
        self.tiny = tiny

    def favourite(self, history) -> int:
        last = self.catalog.titles.index(self.catalog.title_of[history[-1]]) if history else -1
        return (last + 1 + len(history)) % len(self.catalog.titles)

    def ranking(self, history) -> list[int]:
        best = self.favourite(history)
        others = [t for t in range(len(self.catalog.titles)) if t != best]
        random.Random(" ".join(history)).shuffle(others)
        return [best, *others]

    def row(self, history) -> list[float]:
        order = self.ranking(history)
        row = [0.0] * len(order)
        for rank, title in enumerate(order):
            row[title] = 2.0 - 1.5 * rank
        row[order[-1]] = -math.inf
        if self.tiny:
            row[order[-2]] = -60.0
        return row

    def title_log_probs(self, histories):
        return torch.tensor([self.row(h) for h in histories])


class BruteForce:
    """One user's guided step scores from plain sums over the titles (no trie, no cache)."""

    def __init__(self, model, prompt, responses, assistant_row, scale):
        self.model, self.prompt, self.responses, self.scale = model, prompt, responses, scale
        self.probs = torch.tensor(assistant_row, dtype=torch.float64).softmax(-1).tolist()

    def mass(self, prefix: tuple) -> float:
        below = sum(
            p
            for r, p in zip(self.responses, self.probs, strict=True)
            if tuple(r[: len(prefix)]) == prefix
        )
        return max(below, MIN_BRANCH_PROBABILITY)

    def assist(self, prefix: tuple, token: int) -> float:
        return math.log(self.mass(prefix + (token,))) - math.log(self.mass(prefix))

    def step(self, prefix: tuple, token: int, llm: float) -> float:
        assist = self.assist(prefix, token)
        return self.scale * (llm - assist) + assist

    def title_score(self, title: int) -> float:
        """The guided score of one title: its steps, each from a fresh uncached forward pass."""
        ids = self.responses[title]
        llm = token_log_probs(self.model, self.prompt, ids)
        return sum(self.step(tuple(ids[:d]), t, llm[d]) for d, t in enumerate(ids))


@pytest.fixture(scope="module")
def recommender(tokenizer):
    model = make_tiny_llama(tokenizer, seed=5)
    with torch.no_grad():
        model.model.norm.weight.mul_(4.0)  # peaked, yet the assistant still matters
    catalog = Catalog([f"i{i}" for i in range(len(TITLES))], TITLES)
    return LLMRecommender(model, tokenizer, catalog)


def guided(recommender, assistant, scale: float, width: int):
    """-> per user [(title index, score)], best first (the histories' titles kept)."""
    decoded = recommender.decode(
        HISTORIES, k=width, num_beams=width, method="beam", assistant=assistant,
        guidance_scale=scale,
    )  # fmt: skip
    titles = recommender.catalog.titles
    return [[(titles.index(r.title), r.score) for r in recs] for recs in decoded.recommendations]


def test_users_have_their_own_favourites_of_different_lengths(recommender):
    """The batch the tests below use: each user's assistant row differs, and so does its best
    title, in token length too (with narrow beams the users finish at different steps: a user
    whose rows are dropped early shifts the others, which the tests below must survive)."""
    assistant = HistoryAssistant(recommender.catalog)
    favourites = [assistant.favourite(h) for h in HISTORIES]
    assert len(set(favourites)) == len(HISTORIES)
    assert len({len(recommender.responses[f]) for f in favourites}) == len(HISTORIES)
    rows = [tuple(assistant.row(h)) for h in HISTORIES]
    assert len(set(rows)) == len(HISTORIES)
    # with the assistant alone (g = 0) each user's best title is its favourite
    assert [row[0][0] for row in guided(recommender, assistant, 0.0, 3)] == favourites


@pytest.mark.parametrize("scale", [0.0, 0.3, 0.7, 1.5, 3.0])
@pytest.mark.parametrize("width", [3, len(TITLES)])
def test_guided_lists_equal_a_brute_force_per_user(recommender, scale, width):
    """Narrow beams: the plain reference search with brute-force step scores gives the same
    lists; every returned score is the brute-force sum of its title's steps. Beams covering
    the catalogue: every title, ranked by that sum."""
    # (at g = 0 a tiny title would tie with the zero-probability one: both sit at the clamp)
    assistant = HistoryAssistant(recommender.catalog, tiny=scale > 0)
    prompts = recommender.prompts(HISTORIES)
    results = guided(recommender, assistant, scale, width)
    for b, got in enumerate(results):
        brute = BruteForce(
            recommender.model, prompts[b], recommender.responses, assistant.row(HISTORIES[b]), scale
        )
        context = f"g={scale}, {width} beams, user {b}"
        for title, score in got:
            assert score == pytest.approx(brute.title_score(title), abs=2e-4), context
        reference = reference_beam_search(
            recommender.model,
            prompts[b],
            recommender.responses,
            recommender.eos_id,
            width,
            brute.step,
        )
        assert_same_lists(got, reference, context, tolerance=2e-4)
        if width == len(TITLES):
            everything = sorted(range(len(TITLES)), key=lambda t: -brute.title_score(t))
            assert [t for t, _ in got] == everything, context


def test_narrow_guided_beams_prune(recommender):
    """Guards the test above: 3 guided beams miss titles of the exact guided top 3."""
    assistant = HistoryAssistant(recommender.catalog, tiny=True)
    narrow = guided(recommender, assistant, 0.3, 3)
    wide = guided(recommender, assistant, 0.3, len(TITLES))
    assert any(
        [t for t, _ in n] != [t for t, _ in w[:3]] for n, w in zip(narrow, wide, strict=True)
    )


def test_scale_zero_ranks_by_the_assistant_alone(recommender):
    """g = 0 with beams covering the catalogue: the assistant's own ranking, with its
    renormalised log-probabilities as scores; the zero-probability title last, at the clamp."""
    assistant = HistoryAssistant(recommender.catalog)
    results = guided(recommender, assistant, 0.0, len(TITLES))
    for history, got in zip(HISTORIES, results, strict=True):
        row = torch.tensor(assistant.row(history))
        own = row.argsort(descending=True).tolist()
        assert [t for t, _ in got] == own
        expected = row.double().log_softmax(-1).clamp_min(CLAMPED).tolist()
        for title, score in got:
            assert score == pytest.approx(expected[title], abs=1e-4)
        assert got[-1][1] == pytest.approx(CLAMPED, abs=1e-4) and row[got[-1][0]] == -math.inf


def test_scale_zero_runs_no_model(recommender, monkeypatch):
    """At g = 0 the search needs no forward pass, and its narrow-beam lists are the plain
    reference search's with the assistant's step scores alone."""
    assistant = HistoryAssistant(recommender.catalog)
    prompts = recommender.prompts(HISTORIES)

    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran at guidance scale 0")

    references = [
        reference_beam_search(
            recommender.model,
            prompts[b],
            recommender.responses,
            recommender.eos_id,
            3,
            BruteForce(
                recommender.model,
                prompts[b],
                recommender.responses,
                assistant.row(HISTORIES[b]),
                0.0,
            ).step,
        )  # fmt: skip
        for b in range(len(HISTORIES))
    ]
    monkeypatch.setattr(recommender.model, "forward", no_forward)
    for b, got in enumerate(guided(recommender, assistant, 0.0, 3)):
        assert_same_lists(got, references[b], f"user {b}", tolerance=2e-4)


@pytest.mark.parametrize("scale", [0.0, 0.5])
def test_zero_and_tiny_probability_titles_count_as_the_clamp(recommender, scale):
    """A title the assistant gives probability 0 (-inf) or far below MIN_BRANCH_PROBABILITY
    keeps a finite score: its assistant part is log(MIN_BRANCH_PROBABILITY), so it is ranked as
    g * llm + (1 - g) * log(MIN_BRANCH_PROBABILITY) says (at g = 0 the two tie at the end)."""
    assistant = HistoryAssistant(recommender.catalog, tiny=True)
    prompts = recommender.prompts(HISTORIES)
    results = guided(recommender, assistant, scale, len(TITLES))
    for b, (history, got) in enumerate(zip(HISTORIES, results, strict=True)):
        row = assistant.row(history)
        clamped = {t for t, value in enumerate(row) if value < -50}
        assert len(clamped) == 2  # one -inf, one tiny
        # g = 1 leaves the LLM's own log-likelihood
        llm = BruteForce(recommender.model, prompts[b], recommender.responses, row, 1.0)
        scores = dict(got)
        for t in clamped:
            assert math.isfinite(scores[t])
            expected = scale * llm.title_score(t) + (1 - scale) * CLAMPED
            assert scores[t] == pytest.approx(expected, abs=2e-4)
        assert [s for _, s in got] == sorted(scores.values(), reverse=True)
        if scale == 0:
            assert {t for t, _ in got[-2:]} == clamped


class FixedRowAssistant:
    def __init__(self, catalog: Catalog, row: list[float]):
        self.catalog, self.row = catalog, row

    def title_log_probs(self, histories):
        return torch.tensor([self.row] * len(histories))


def test_scales_above_one_keep_beams_that_fell_below_a_finished_title(tokenizer):
    """Above g = 1 a step can score above 0 (the LLM sure of a token the assistant rules out),
    so a beam below the best finished title can still overtake it: cftrec runs every beam to
    its end then. Built so that it happens with one beam: 'Up' finishes first (its EOS
    outscores the ' ' that continues to 'Up" 2'), then 'Up" 2', which the assistant gives
    probability 0 while the LLM is sure of its tokens, climbs above it."""
    titles = ["Up", 'Up" 2', 'Up" 3', "Heat (1995)"]
    catalog = Catalog([f"i{i}" for i in range(len(titles))], titles)
    model = make_tiny_llama(tokenizer, seed=0)
    recommender = LLMRecommender(model, tokenizer, catalog)
    quote, up, _, space, two, _, eos = recommender.responses[1]
    assert recommender.responses[1] == [quote, up, quote, space, two, quote, eos]
    head = torch.nn.Linear(model.config.hidden_size, len(tokenizer), bias=True)
    with torch.no_grad():  # the model's own logits, plus a context-free preference
        head.weight = model.lm_head.weight
        head.bias.zero_()
        head.bias[[quote, up, two]] = 15.0
        head.bias[eos] = 5.0
    model.lm_head = head
    row = [0.0, -math.inf, -2.0, -1.0]
    histories, scale = [["i3"], []], 5.0
    decoded = recommender.decode(
        histories, k=1, num_beams=1, method="beam",
        assistant=FixedRowAssistant(catalog, row), guidance_scale=scale,
    )  # fmt: skip
    for prompt, recs in zip(recommender.prompts(histories), decoded.recommendations, strict=True):
        brute = BruteForce(model, prompt, recommender.responses, row, scale)
        up_score, long_score = brute.title_score(0), brute.title_score(1)
        ids = recommender.responses[1]
        llm = token_log_probs(model, prompt, ids)
        # after ' ' the 'Up" 2' beam scores below the finished 'Up' ...
        below = sum(brute.step(tuple(ids[:d]), ids[d], llm[d]) for d in range(4))
        assert below < up_score < long_score  # ... and ends above it
        # (g = 5 multiplies the float32 error of the LLM's log-probs)
        assert [(r.title, pytest.approx(r.score, abs=2e-3)) for r in recs] == [
            ('Up" 2', long_score)
        ]
        reference = reference_beam_search(model, prompt, recommender.responses, eos, 1, brute.step)
        assert [t for t, _ in reference] == [1]
