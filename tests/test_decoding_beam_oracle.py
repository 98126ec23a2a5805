"""Narrow constrained beam search (W < titles, so beams are pruned) against two oracles:

- transformers `generate(num_beams=W, prefix_allowed_tokens_fn=...)` over the same trie, the
  D3 reference approach (benchmarks/bench_decoding.py): same titles, same order, same scores.
  generate's rules are cftrec's (2W candidates, EOS counts only within the first W, best W
  finished kept; W = 1 is greedy search) with two differences that change no result, so the
  comparison is direct: its placeholder beams, scored near -1e9, are left out (cftrec returns
  fewer than W titles there), and it runs pruned beams on (early_stopping=False) where cftrec
  drops them (scores only fall with length_penalty 0, so they cannot enter the top W).
- a plain-python beam search written from those rules (decoding_oracles.reference_beam_search:
  uncached full forward passes, the trie as a dict, no pruning, no early stop), which also
  shows that the two rules agree with each other.

Catalogues are random: titles sharing prefixes, of different token lengths, some whose EOS
competes with a longer title at the same node. Models are tiny random Llamas with peaked
next-token distributions, so that narrow beams miss titles the exhaustive ranking has (checked).
Users come in batches with prompts of different lengths (left padding).
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from cftrec.data.dataset import Catalog
from cftrec.decoding.beam import constrained_beam_search
from cftrec.decoding.recommender import LLMRecommender
from cftrec.decoding.trie import TitleTrie
from conftest import make_tiny_llama
from decoding_oracles import assert_same_lists, generate_with_trie, reference_beam_search
from training_fixtures import one_thread  # noqa: F401 (autouse fixture)

WIDTHS = (1, 3, 5)
STEMS = ["Star", "Star Trek", "Night", "Heat", "The alpha story", "The alpha", "Up"]
SUFFIXES = ["", " II", " (1995)", " (1996)", " Wars", " Moves (1975)", '" 2', " and more"]
# prompts of 56 to ~110 tokens: the counterfactual prompt and histories of 1 to 3 items
HISTORIES = [["i1"], [], ["i2", "i3", "i4"], ["i5", "i6"]]


def sharp_llama(tokenizer, seed: int):
    """A tiny random Llama with peaked next-token distributions (so that pruning matters)."""
    model = make_tiny_llama(tokenizer, seed=seed)
    with torch.no_grad():
        model.model.norm.weight.mul_(8.0)
    return model


def random_catalog(seed: int, size: int = 12) -> Catalog:
    """Titles sharing prefixes, 4 to 12 tokens long; "Up" and 'Up" 2' put EOS and a longer
    title's next token under the same trie node."""
    rng = random.Random(seed)
    forced = ["Up", 'Up" 2']
    titles = rng.sample([s + x for s in STEMS for x in SUFFIXES if s + x not in forced], size)
    titles += forced
    rng.shuffle(titles)
    return Catalog([f"i{i}" for i in range(len(titles))], titles)


def eos_competes(trie: TitleTrie, response: list[int]) -> bool:
    """Whether the EOS that ends `response` shares its trie node with another token."""
    return int(trie.child_count[trie.walk(response[:-1])]) > 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_narrow_beams_equal_generate_and_a_plain_reference(tokenizer, seed):
    model = sharp_llama(tokenizer, seed)
    recommender = LLMRecommender(model, tokenizer, random_catalog(seed))
    titles, responses = recommender.catalog.titles, recommender.responses
    assert len({len(r) for r in responses}) >= 4  # titles of different token lengths
    prompts = recommender.prompts(HISTORIES)
    assert len({len(p) for p in prompts}) >= 3  # left padding
    # `decode` keeps the histories' own titles in the lists (`recommend` leaves them out)
    exhaustive = recommender.decode(HISTORIES, k=max(WIDTHS), method="exhaustive").recommendations
    pruned = 0
    for width in WIDTHS:
        results = recommender.decode(HISTORIES, k=width, num_beams=width, method="beam")
        hf = generate_with_trie(
            model, prompts, responses, width, recommender.pad_id, recommender.eos_id
        )
        for b, recs in enumerate(results.recommendations):
            got = [(titles.index(r.title), r.score) for r in recs]
            context = f"seed {seed}, {width} beams, user {b}"
            assert_same_lists(got, hf[b], f"{context} vs generate")
            reference = reference_beam_search(
                model, prompts[b], responses, recommender.eos_id, width
            )
            assert_same_lists(got, reference, f"{context} vs the plain reference")
            pruned += [r.title for r in recs] != [r.title for r in exhaustive[b][:width]]
    # the narrow searches miss titles of the exact top W: not an exhaustive search in disguise
    assert pruned >= 3


def random_token_trie(seed: int, eos_id: int) -> list[list[int]]:
    """Up to 24 distinct responses of 1 to 6 tokens (+ EOS) over 4 token ids: a dense trie in
    which many nodes both end a title and continue to longer ones."""
    rng = random.Random(seed)
    pool = rng.sample(range(300, 5000), 4)
    responses = {tuple(rng.choice(pool) for _ in range(rng.randint(1, 6))) for _ in range(24)}
    return [list(r) + [eos_id] for r in sorted(responses)]


def token_trie_case(tokenizer, seed: int):
    """(sharp model, responses, their trie, 3 prompts of 5 to 17 random tokens) for `seed`."""
    model = sharp_llama(tokenizer, seed)
    responses = random_token_trie(seed, tokenizer.eos_token_id)
    rng = random.Random(seed)
    prompts = [[rng.randrange(300, 5000) for _ in range(n)] for n in (5, 17, 9)]
    return model, responses, TitleTrie(responses), prompts


@pytest.mark.parametrize("seed", [5, 6, 8])
def test_token_level_search_equals_generate_where_eos_competes(tokenizer, seed):
    """constrained_beam_search on a random token trie, both cache paths (shared prompt and
    per-beam cache), against generate and the plain reference."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model, responses, trie, prompts = token_trie_case(tokenizer, seed)
    competing = 0
    for width in WIDTHS:
        hf = generate_with_trie(model, prompts, responses, width, pad, eos)
        for share in (True, False):
            picked, scores = constrained_beam_search(
                model, prompts, trie, width, pad, share_prompt=share
            )
            for b in range(len(prompts)):
                got = [
                    (t, s)
                    for t, s in zip(picked[b].tolist(), scores[b].tolist(), strict=True)
                    if t >= 0
                ]
                context = f"seed {seed}, {width} beams, prompt {b}, shared prompt {share}"
                assert_same_lists(got, hf[b], f"{context} vs generate")
                competing += sum(eos_competes(trie, responses[t]) for t, _ in got)
        for b, prompt in enumerate(prompts):
            reference = reference_beam_search(model, prompt, responses, eos, width)
            assert_same_lists(hf[b], reference, f"seed {seed}, {width} beams: generate vs plain")
    assert competing > 0  # titles found at nodes where EOS and longer titles compete


def test_more_beams_than_titles_find_every_title_once(tokenizer):
    """W above the number of titles: every title once, the rest of the W places empty (-1,
    -inf), where generate fills them with placeholders."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model = sharp_llama(tokenizer, 5)
    responses = random_token_trie(5, eos)[:4]
    prompts = [[301, 302, 303], [404] * 11]
    width = 6
    hf = generate_with_trie(model, prompts, responses, width, pad, eos)
    picked, scores = constrained_beam_search(model, prompts, TitleTrie(responses), width, pad)
    for b in range(len(prompts)):
        assert sorted(picked[b, :4].tolist()) == [0, 1, 2, 3]
        assert picked[b, 4:].tolist() == [-1, -1] and scores[b, 4:].tolist() == [-math.inf] * 2
        got = list(zip(picked[b, :4].tolist(), scores[b, :4].tolist(), strict=True))
        assert_same_lists(got, hf[b], f"prompt {b} vs generate")
        reference = reference_beam_search(model, prompts[b], responses, eos, width)
        assert_same_lists(got, reference, f"prompt {b} vs the plain reference")


@pytest.mark.parametrize(("seed", "scale"), [(5, None), (6, None), (8, 0.5), (6, 0.0)])
def test_excluded_titles_are_skipped_as_if_they_had_left_the_trie(tokenizer, seed, scale):
    """A search that skips each user's excluded titles returns, for every user of the batch,
    what the plain search returns on a trie built without that user's titles (and, guided,
    with the assistant's probabilities over the titles left): W titles, none excluded. The
    excluded titles are each user's first titles of the plain search, so it must look
    elsewhere; `scale` None: no guidance; 0: the assistant alone, without the model."""
    from cftrec.decoding.guidance import node_log_mass, without_titles

    pad = tokenizer.pad_token_id
    model, responses, trie, prompts = token_trie_case(tokenizer, seed)
    width = 3
    guided = {}
    log_probs = None
    if scale is not None:
        noise = torch.Generator().manual_seed(seed)
        log_probs = (3 * torch.randn(len(prompts), len(responses), generator=noise)).log_softmax(1)
        guided = {"assistant_log_mass": node_log_mass(trie, log_probs), "guidance_scale": scale}
    plain, _ = constrained_beam_search(model, prompts, trie, width, pad, **guided)
    excluded = [plain[b, : 1 + b].tolist() for b in range(len(prompts))]
    if scale is not None:
        mass = node_log_mass(trie, without_titles(log_probs, excluded))
        guided = {"assistant_log_mass": mass, "guidance_scale": scale}
    for share in (True, False):
        picked, scores = constrained_beam_search(
            model, prompts, trie, width, pad, share_prompt=share, excluded=excluded, **guided
        )
        for b, prompt in enumerate(prompts):
            kept = [t for t in range(len(responses)) if t not in excluded[b]]
            reduced = TitleTrie([responses[t] for t in kept])
            alone = {}
            if scale is not None:
                alone = {"assistant_log_mass": node_log_mass(reduced, log_probs[b : b + 1, kept]),
                         "guidance_scale": scale}  # fmt: skip
            want_titles, want_scores = constrained_beam_search(
                model, [prompt], reduced, width, pad, **alone
            )
            want = [(kept[t], s) for t, s in zip(want_titles[0].tolist(), want_scores[0].tolist(),
                                                 strict=True)]  # fmt: skip
            got = list(zip(picked[b].tolist(), scores[b].tolist(), strict=True))
            assert len(got) == width and not set(picked[b].tolist()) & set(excluded[b])
            assert_same_lists(got, want, f"seed {seed}, prompt {b}, shared prompt {share}")
