"""Exact decoding against brute force: every title of small random catalogues scored one by one.

The oracle ranks all titles by their teacher-forced log-likelihood (exhaustive scoring, itself
checked against plain uncached forward passes below and in test_decoding_search.py), mixed with
the assistant's log-probability under guidance, and takes the top k. Exact decoding must return
the same titles in the same order with the same scores, for peaked and flat models, users whose
searches end at different steps, any k, with and without guidance and excluded titles.
"""

from __future__ import annotations

import random

import pytest
import torch

from cftrec.data.dataset import Catalog
from cftrec.decoding import exact
from cftrec.decoding.exact import ExactStats, bound_beams, exact_top_k
from cftrec.decoding.guidance import MIN_BRANCH_PROBABILITY
from cftrec.decoding.recommender import LLMRecommender
from cftrec.errors import CftrecError
from conftest import make_tiny_llama
from training_fixtures import one_thread  # noqa: F401 (autouse fixture)

WORDS = ["red", "blue", "green", "night", "day", "river", "story", "king", "war", "love", "x"]


def random_titles(seed: int, count: int) -> list[str]:
    """Titles of 1-5 words from a small vocabulary: many shared prefixes, different lengths."""
    rng = random.Random(seed)
    titles: set[str] = set()
    while len(titles) < count:
        words = rng.choices(WORDS, k=rng.randint(1, 5))
        titles.add(" ".join(words).capitalize() + f" ({rng.choice([1990, 2001])})")
    return sorted(titles)


def make_model(tokenizer, seed: int, sharpness: float):
    model = make_tiny_llama(tokenizer, seed=seed)
    with torch.no_grad():
        model.model.norm.weight.mul_(sharpness)  # > 1: peaked next-token distributions
    return model


class HistoryAssistant:
    """A text-free assistant whose title distribution depends on each user's history."""

    def __init__(self, catalog: Catalog, seed: int, zero_titles: int = 0):
        self.catalog = catalog
        self.seed = seed
        self.zero_titles = zero_titles

    def title_log_probs(self, histories):
        rows = []
        for history in histories:
            generator = torch.Generator().manual_seed(self.seed * 1000 + len(history))
            logits = torch.randn(len(self.catalog.titles), generator=generator) * 3
            for item_id in history:  # a history's own titles get most of the mass
                logits[self.catalog.index_of_title[self.catalog.title_of[item_id]]] += 4
            log_probs = logits.log_softmax(-1)
            log_probs[: self.zero_titles] = float("-inf")  # titles it gives probability 0
            rows.append(log_probs)
        return torch.stack(rows)


def brute_force(recommender, histories, k, assistant=None, scale=1.0, excluded=None):
    """Top-k (title index, score) per history from the score of every title."""
    llm = recommender.title_scores(histories).double()  # [B, T]
    scores = llm
    if assistant is not None:
        # D3's per-token mix telescopes over a title's path: g * llm + (1 - g) * log P(title),
        # with the zero-probability clamp of guidance.py on P(title); excluded titles have
        # left the assistant's catalogue too.
        log_probs = assistant.title_log_probs(histories).double()
        for row, titles in enumerate(excluded or []):
            log_probs[row, titles] = float("-inf")
        probs = log_probs.softmax(-1)
        assist = probs.clamp_min(MIN_BRANCH_PROBABILITY).log()
        scores = scale * llm + (1 - scale) * assist
    if excluded is not None:
        for row, titles in enumerate(excluded):
            scores[row, titles] = float("-inf")
    top = scores.topk(k, dim=1)
    return top.indices.tolist(), top.values.tolist()


def check_same(got_titles, got_scores, want_titles, want_scores):
    for row, (titles, scores) in enumerate(zip(got_titles, got_scores, strict=True)):
        assert titles == want_titles[row], f"user {row}"
        assert scores == pytest.approx(want_scores[row], abs=1e-4), f"user {row}"


HISTORIES = [[], ["t0"], ["t1", "t2", "t3"], ["t4", "t5", "t6", "t7", "t8", "t9", "t10"]]


@pytest.mark.parametrize(
    ("seed", "sharpness", "count", "k", "bound_width"),
    [(0, 1.0, 40, 1, 1), (1, 1.0, 40, 10, 10), (2, 8.0, 60, 5, None), (3, 8.0, 60, 10, 10),
     (4, 3.0, 25, 25, None)],
)  # fmt: skip
def test_exact_equals_brute_force(tokenizer, seed, sharpness, count, k, bound_width):
    """With the bound's own beam count (as wide as these catalogues: the bound is exact) and
    with K beams (a loose bound the walk must raise itself)."""
    titles = random_titles(seed, count)
    catalog = Catalog([f"t{i}" for i in range(count)], titles)
    recommender = LLMRecommender(make_model(tokenizer, seed, sharpness), tokenizer, catalog)
    prompts = recommender.prompts(HISTORIES)
    stats = ExactStats()
    got_titles, got_scores = exact_top_k(
        recommender.model, prompts, recommender.trie, k, recommender.pad_id, stats=stats,
        bound_width=bound_width,
    )  # fmt: skip
    want_titles, want_scores = brute_force(recommender, HISTORIES, k)
    check_same(got_titles.tolist(), got_scores.tolist(), want_titles, want_scores)
    assert stats.prefixes > 0


def test_walk_feeds_exactly_the_prefixes_that_could_still_win(tokenizer):
    """Exactness alone would also hold for a search that prunes nothing. Given the true k-th
    best score as its bound, the walk must feed the model exactly the open prefixes scoring at
    least that bound: every prefix score computed here by plain forward passes."""
    from cftrec.decoding.exact import BOUND_SLACK, _walk

    titles = random_titles(11, 30)
    catalog = Catalog([f"t{i}" for i in range(30)], titles)
    recommender = LLMRecommender(make_model(tokenizer, 11, 3.0), tokenizer, catalog)
    prompt = recommender.prompts([["t1", "t2"]])[0]
    prefix_scores, title_scores = {}, []
    for response in recommender.responses:
        with torch.no_grad():
            logits = recommender.model(input_ids=torch.tensor([prompt + response])).logits[0]
        log_probs = logits.float().log_softmax(-1)
        total = 0.0
        for i, token in enumerate(response):
            total += float(log_probs[len(prompt) - 1 + i, token])
            prefix_scores[tuple(response[: i + 1])] = total
        title_scores.append(total)
    ends = {tuple(r) for r in recommender.responses}
    for k in (1, 4):
        kth = sorted(title_scores, reverse=True)[k - 1]
        above = [p for p, score in prefix_scores.items() if p not in ends and score >= kth]
        stats = ExactStats()
        titles_found, _ = _walk(
            recommender.model, [prompt], recommender.trie, k, recommender.pad_id, None, 1.0,
            torch.zeros((1, 30), dtype=torch.bool), torch.tensor([kth - BOUND_SLACK]), True, stats,
        )  # fmt: skip
        assert stats.prefixes == len(above)
        assert len(above) < len(prefix_scores) - len(ends)  # the bound did prune
        assert sorted(titles_found[0].tolist()) == sorted(
            sorted(range(30), key=lambda t: -title_scores[t])[:k]
        )

        # With no bound given, the walk raises its own: after feeding depth d, the k-th best of
        # the titles of at most d tokens. A prefix of depth d is kept iff it scores at least that.
        def bound_after(depth, k=k):
            done = sorted((s for r, s in zip(recommender.responses, title_scores, strict=True)
                           if len(r) <= depth), reverse=True)  # fmt: skip
            return done[k - 1] if len(done) >= k else float("-inf")

        kept = [p for p, score in prefix_scores.items()
                if p not in ends and score >= bound_after(len(p))]  # fmt: skip
        stats = ExactStats()
        _walk(
            recommender.model, [prompt], recommender.trie, k, recommender.pad_id, None, 1.0,
            torch.zeros((1, 30), dtype=torch.bool), torch.tensor([float("-inf")]), True, stats,
        )  # fmt: skip
        assert stats.prefixes == len(kept)


def test_bound_comes_from_a_wider_search_and_never_exceeds_the_kth_best(tokenizer, monkeypatch):
    """The walk's bound is the K-th best title of a beam search of bound_beams(K) beams that
    skips the excluded titles (a K-beam search misses titles above its own K-th best, and its
    bound fed the walk several times more prefixes), and it never exceeds the true K-th best
    score, which would prune a title of the top K."""
    from cftrec.decoding import beam

    count = 120
    catalog = Catalog([f"t{i}" for i in range(count)], random_titles(21, count))
    recommender = LLMRecommender(make_model(tokenizer, 21, 2.0), tokenizer, catalog)
    prompts = recommender.prompts(HISTORIES)
    every_score = recommender.title_scores(HISTORIES).double()  # [users, titles]
    widths, skipped, bounds = [], [], []

    def search_spy(*args, **kwargs):
        widths.append(args[3])
        skipped.append(kwargs["excluded"])
        return beam.constrained_beam_search(*args, **kwargs)

    def bound_spy(*args):
        bounds.append(lower_bound(*args))
        return bounds[-1]

    lower_bound = exact._lower_bound
    monkeypatch.setattr(exact, "constrained_beam_search", search_spy)
    monkeypatch.setattr(exact, "_lower_bound", bound_spy)
    for k, excluded in ((10, 0), (30, 2)):
        best = every_score.topk(excluded, dim=1).indices.tolist()  # each user's best titles
        widths.clear(), skipped.clear(), bounds.clear()
        got_titles, got_scores = exact_top_k(
            recommender.model, prompts, recommender.trie, k, recommender.pad_id, excluded=best
        )
        assert widths == [max(50, 2 * k)] and bound_beams(k) == max(50, 2 * k)
        assert [list(row) for row in skipped[0]] == best
        want_titles, want_scores = brute_force(recommender, HISTORIES, k, excluded=best)
        check_same(got_titles.tolist(), got_scores.tolist(), want_titles, want_scores)
        true_kth = torch.tensor(want_scores)[:, -1]
        assert (bounds[0].double() <= true_kth + 1e-4).all(), (bounds[0], true_kth)


@pytest.mark.parametrize(("scale", "exclude"), [(0.0, False), (0.3, False), (1.0, False),
                                               (0.3, True), (1.0, True)])  # fmt: skip
def test_exact_with_guidance_equals_brute_force(tokenizer, scale, exclude):
    """`exclude`: the history's titles are left out, of the assistant's catalogue too."""
    titles = random_titles(6, 40)
    catalog = Catalog([f"t{i}" for i in range(40)], titles)
    recommender = LLMRecommender(make_model(tokenizer, 6, 3.0), tokenizer, catalog)
    assistant = HistoryAssistant(catalog, seed=6, zero_titles=5)
    got = recommender.recommend(HISTORIES, k=8, method="exact", assistant=assistant,
                                guidance_scale=scale, exclude_history=exclude)  # fmt: skip
    excluded = [[catalog.index_of_title[catalog.title_of[i]] for i in h] for h in HISTORIES]
    want_titles, want_scores = brute_force(
        recommender, HISTORIES, 8, assistant, scale, excluded if exclude else None
    )
    check_same(
        [[catalog.index_of_title[r.title] for r in row] for row in got],
        [[r.score for r in row] for row in got],
        want_titles,
        want_scores,
    )


def test_scale_zero_returns_the_assistants_ranking(tokenizer):
    titles = random_titles(7, 30)
    catalog = Catalog([f"t{i}" for i in range(30)], titles)
    recommender = LLMRecommender(make_model(tokenizer, 7, 1.0), tokenizer, catalog)
    assistant = HistoryAssistant(catalog, seed=7)
    got = recommender.recommend(HISTORIES, k=6, method="exact", assistant=assistant,
                                guidance_scale=0.0, exclude_history=False)  # fmt: skip
    own = assistant.title_log_probs(HISTORIES).topk(6, dim=1).indices.tolist()
    assert [[catalog.index_of_title[r.title] for r in row] for row in got] == own


def test_scale_zero_reads_the_assistants_ranking_without_the_model(tokenizer):
    """At scale 0 the model plays no part: the exact list is the assistant's ranking (history
    titles left out, the list still full), read off without a forward pass, also after the
    catalogue changed in place."""
    titles = random_titles(9, 30)
    catalog = Catalog([f"t{i}" for i in range(30)], titles)
    recommender = LLMRecommender(make_model(tokenizer, 9, 1.0), tokenizer, catalog)
    recommender.add_items({"n0": "A New Film (2031)", "n1": "Another (2032)"})
    recommender.remove_items(["t3", "t17"])
    assistant = HistoryAssistant(recommender.catalog, seed=9, zero_titles=4)

    def no_forward(*args, **kwargs):
        raise AssertionError("the model ran at guidance scale 0")

    recommender.model.forward = no_forward
    histories = [[], ["t0"], ["t1", "t2", "n0"]]
    got = recommender.recommend(histories, k=7, method="exact", assistant=assistant,
                                guidance_scale=0.0)  # fmt: skip
    catalog = recommender.catalog
    log_probs = assistant.title_log_probs(histories).double()
    owns = [[catalog.index_of_title[t] for t in catalog.titles_for(h)] for h in histories]
    for row, own in enumerate(owns):  # as if the history had left the catalogue
        log_probs[row, own] = float("-inf")
    scores = log_probs.softmax(-1).clamp_min(MIN_BRANCH_PROBABILITY).log()
    for row, own in enumerate(owns):
        scores[row, own] = float("-inf")
    top = scores.topk(7, dim=1)
    check_same(
        [[catalog.index_of_title[r.title] for r in row] for row in got],
        [[r.score for r in row] for row in got],
        top.indices.tolist(),
        top.values.tolist(),
    )


def test_excluded_titles_are_skipped_and_the_list_stays_full(tokenizer):
    titles = random_titles(8, 40)
    catalog = Catalog([f"t{i}" for i in range(40)], titles)
    recommender = LLMRecommender(make_model(tokenizer, 8, 8.0), tokenizer, catalog)
    prompts = recommender.prompts(HISTORIES)
    # exclude each user's own best titles, so the search must find others
    best, _ = brute_force(recommender, HISTORIES, 3)
    excluded = [row[: 1 + i % 3] for i, row in enumerate(best)]
    got_titles, got_scores = exact_top_k(
        recommender.model, prompts, recommender.trie, 5, recommender.pad_id, excluded=excluded
    )
    want_titles, want_scores = brute_force(recommender, HISTORIES, 5, excluded=excluded)
    check_same(got_titles.tolist(), got_scores.tolist(), want_titles, want_scores)


@pytest.mark.parametrize("method", ["exact", "beam", "exhaustive"])
def test_recommend_leaves_out_the_history_by_default(tokenizer, method):
    """What comes next: by default a history's own titles are not recommended, and the list
    still holds k titles (beam and exact search skip them while they search)."""
    titles = random_titles(12, 30)
    catalog = Catalog([f"t{i}" for i in range(30)], titles)
    recommender = LLMRecommender(make_model(tokenizer, 12, 3.0), tokenizer, catalog)
    num_beams = 30 if method == "beam" else None  # covering beams: the exact ranking
    got = recommender.recommend(HISTORIES, k=5, method=method, num_beams=num_beams)
    history_titles = [{catalog.title_of[i] for i in history} for history in HISTORIES]
    excluded = [sorted(catalog.index_of_title[t] for t in gone) for gone in history_titles]
    want_titles, _ = brute_force(recommender, HISTORIES, 5, excluded=excluded)
    assert [[catalog.index_of_title[r.title] for r in row] for row in got] == want_titles
    kept = recommender.recommend(HISTORIES, k=5, method=method, num_beams=num_beams,
                                 exclude_history=False)  # fmt: skip
    assert [[catalog.index_of_title[r.title] for r in row] for row in kept] == brute_force(
        recommender, HISTORIES, 5
    )[0]


def test_exhaustive_oracle_matches_plain_forward_passes(tokenizer):
    """The oracle itself: one title's score from a plain uncached forward pass."""
    titles = random_titles(9, 10)
    catalog = Catalog([f"t{i}" for i in range(10)], titles)
    recommender = LLMRecommender(make_model(tokenizer, 9, 3.0), tokenizer, catalog)
    prompt = recommender.prompts([["t1"]])[0]
    scores = recommender.title_scores([["t1"]])[0]
    for index in (0, 4, 9):
        response = recommender.responses[index]
        ids = torch.tensor([prompt + response])
        with torch.no_grad():
            log_probs = recommender.model(input_ids=ids).logits[0].float().log_softmax(-1)
        direct = sum(
            float(log_probs[len(prompt) - 1 + i, token]) for i, token in enumerate(response)
        )
        assert float(scores[index]) == pytest.approx(direct, abs=1e-4)


def test_exact_refuses_options_that_break_the_bound(tokenizer):
    titles = random_titles(10, 10)
    catalog = Catalog([f"t{i}" for i in range(10)], titles)
    model = make_model(tokenizer, 10, 1.0)
    penalised = LLMRecommender(model, tokenizer, catalog, length_penalty=1.0)
    with pytest.raises(CftrecError, match="length-penalty"):
        penalised.recommend([[]], k=3, method="exact")
    plain = LLMRecommender(model, tokenizer, catalog)
    assistant = HistoryAssistant(catalog, seed=1)
    with pytest.raises(CftrecError, match="guidance-scale"):
        plain.recommend([[]], k=3, method="exact", assistant=assistant, guidance_scale=1.5)
