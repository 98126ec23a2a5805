"""The shared prompt head (decoding/prompt_head.py) and single-title tails (decoding/tails.py)
against the plain paths and against uncached forward passes.

Every history below is non-empty, so every prompt starts with the head and the head path is
really taken (checked); the histories have different lengths, so prompts are padded."""

from __future__ import annotations

import pytest
import torch

from cftrec.decoding import shared_prefix
from cftrec.decoding.beam import constrained_beam_search
from cftrec.decoding.lm import prefill
from cftrec.decoding.prompt_head import PromptHead
from cftrec.decoding.recommender import LLMRecommender
from cftrec.decoding.tails import chain_below
from cftrec.prompts import PromptEncoder
from conftest import make_tiny_llama
from decoding_oracles import next_log_probs
from test_decoding_beam_oracle import random_catalog, sharp_llama
from test_decoding_guidance_oracle import HistoryAssistant
from training_fixtures import one_thread  # noqa: F401 (autouse fixture)

HISTORIES = [["i1"], ["i2", "i3", "i4"], ["i5", "i6"], ["i0", "i7", "i8", "i9", "i10"]]


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_the_head_is_what_every_prompt_starts_with(tokenizer, template):
    encoder = PromptEncoder(tokenizer, template)
    head = encoder.head_ids()
    text = encoder.template.factual_prompt(["<first title>"])
    before_title = text[: text.index("<first title>")]
    assert len(head) > 20  # the preamble and instruction, not a token or two
    # it ends in the history's introduction, before the first title
    assert tokenizer.decode(head, skip_special_tokens=True).rstrip()[-30:] in before_title
    for titles in (["Up"], ['"Quoted" (1995)', "x"], [" leading space"], ["(500) Days"], ["Ü"]):
        ids, _ = encoder.factual_ids(titles)
        assert ids[: len(head)] == head, titles
        assert len(ids) > len(head)


def test_prefill_on_the_head_equals_uncached_forward_passes(tokenizer):
    model = make_tiny_llama(tokenizer, seed=3)
    recommender = LLMRecommender(model, tokenizer, random_catalog(3))
    prompts = recommender.prompts(HISTORIES)
    head = recommender.prompt_head
    assert head.applies(prompts) and len({len(p) for p in prompts}) > 1
    log_probs, _, mask, lengths = prefill(model, prompts, recommender.pad_id, head)
    assert lengths.tolist() == [len(p) for p in prompts]
    assert mask.shape[1] == max(map(len, prompts))
    for row, prompt in enumerate(prompts):  # each prompt alone, whole, no cache
        want = next_log_probs(model, prompt, [()])[0].float()
        assert torch.allclose(log_probs[row], want, atol=1e-4)


def test_the_head_is_computed_once_per_model(tokenizer):
    model = make_tiny_llama(tokenizer, seed=4)
    recommender = LLMRecommender(model, tokenizer, random_catalog(4))
    for method in ("beam", "exact", "exhaustive"):
        recommender.recommend(HISTORIES, k=3, num_beams=3, method=method)
    assert recommender.prompt_head.computed == 1
    model.to(torch.float64)  # another dtype: its own keys/values
    recommender.recommend(HISTORIES[:1], k=2, num_beams=2)
    assert recommender.prompt_head.computed == 2


@pytest.mark.parametrize("seed", [0, 1])
def test_every_method_gives_the_same_lists_with_the_head(tokenizer, seed):
    model = sharp_llama(tokenizer, seed)
    catalog = random_catalog(seed)
    with_head = LLMRecommender(model, tokenizer, catalog)
    plain = LLMRecommender(model, tokenizer, catalog, share_head=False)
    assistant = HistoryAssistant(catalog)
    runs = [
        dict(method="beam", num_beams=3),
        dict(method="beam", num_beams=3, assistant=assistant, guidance_scale=0.5),
        dict(method="exact"),
        dict(method="exact", assistant=assistant, guidance_scale=0.3),
        dict(method="exhaustive"),
    ]
    for options in runs:
        got = with_head.recommend(HISTORIES, k=4, exclude_history=False, **options)
        want = plain.recommend(HISTORIES, k=4, exclude_history=False, **options)
        for mine, theirs in zip(got, want, strict=True):
            assert [r.title for r in mine] == [r.title for r in theirs], options
            assert [r.score for r in mine] == pytest.approx([r.score for r in theirs], abs=1e-4)


def test_a_prompt_without_the_head_is_prefilled_in_full(tokenizer):
    model = make_tiny_llama(tokenizer, seed=5)
    recommender = LLMRecommender(model, tokenizer, random_catalog(5))
    prompts = recommender.prompts([*HISTORIES, []])  # the empty history: another template
    assert not recommender.prompt_head.applies(prompts)
    wrong = PromptHead([recommender.pad_id, *recommender.prompt_head.ids[1:]])
    for head in (recommender.prompt_head, wrong):
        got = prefill(model, prompts, recommender.pad_id, head)[0]
        want = prefill(model, prompts, recommender.pad_id)[0]
        assert torch.equal(got, want)
    assert wrong.computed == 0  # never even run


def test_chain_below_is_the_rest_of_the_title(tokenizer):
    recommender = LLMRecommender(make_tiny_llama(tokenizer), tokenizer, random_catalog(2))
    trie = recommender.trie
    checked = 0
    for title, response in enumerate(recommender.responses):
        for depth in range(len(response)):
            node = trie.walk(response[:depth])
            below = [
                t for t, r in enumerate(recommender.responses) if r[:depth] == response[:depth]
            ]
            single, tokens, lengths, titles = chain_below(trie, torch.tensor([node]), pad_id=-1)
            assert bool(single[0]) == (len(below) == 1)
            if len(below) > 1:
                continue
            assert tokens[0, : int(lengths[0])].tolist() == response[depth:]
            assert int(titles[0]) == title
            checked += 1
    assert checked > len(recommender.responses)  # deeper nodes than the leaves alone


@pytest.mark.parametrize("share_prompt", [True, False])
@pytest.mark.parametrize(
    "options",
    [{}, {"length_penalty": 1.0}, {"guidance_scale": 0.5}, {"guidance_scale": 2.0}],
    ids=["plain", "length-penalty", "guided", "guided-above-1"],
)
def test_tails_in_one_pass_equal_the_stepwise_search(tokenizer, share_prompt, options):
    """Scoring single-title tails at once changes no list and no score (beyond float
    rounding), takes fewer forward passes, and its multi-token shared-prompt attention is
    the plain attention's."""
    from cftrec.decoding.guidance import node_log_mass

    model = sharp_llama(tokenizer, 7)
    catalog = random_catalog(7, size=14)
    recommender = LLMRecommender(model, tokenizer, catalog)
    prompts = recommender.prompts(HISTORIES)
    guided = "guidance_scale" in options
    if guided:
        title_log_probs = torch.tensor([HistoryAssistant(catalog).row(h) for h in HISTORIES])
        options = {**options, "assistant_log_mass": node_log_mass(recommender.trie,
                                                                  title_log_probs)}  # fmt: skip
    calls = []
    original = model.forward

    def counting_forward(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[1])
        return original(*args, **kwargs)

    model.forward = counting_forward
    results = {}
    for tails in (True, False):
        calls.clear()
        results[tails] = constrained_beam_search(
            model, prompts, recommender.trie, 4, recommender.pad_id, share_prompt=share_prompt,
            score_tails=tails, head=recommender.prompt_head, **options,
        )  # fmt: skip
        results[tails] = (*results[tails], len(calls), max(calls[1:]))
    del model.forward
    (titles, scores, passes, widest), (want_titles, want_scores, stepwise, _) = (
        results[True], results[False]
    )  # fmt: skip
    assert torch.equal(titles, want_titles)
    finite = want_scores > float("-inf")
    assert torch.allclose(scores[finite], want_scores[finite], atol=1e-4)
    assert passes <= stepwise and widest > 1  # some tail went through in one pass
    assert shared_prefix.plain_attention(model)
