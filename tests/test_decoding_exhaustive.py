"""Exhaustive scoring, both paths (prompt shared in place, prompt cache copied per title),
against a brute-force full forward pass of prompt + title for every title."""

from __future__ import annotations

import pytest
import torch

from cftrec.decoding import exhaustive, shared_prefix
from cftrec.decoding.exhaustive import score_all_titles
from cftrec.prompts import PromptEncoder
from conftest import make_tiny_llama
from training_fixtures import one_thread  # noqa: F401 (autouse fixture)

# Titles of very different token lengths, two sharing a long prefix, one very short.
TITLES = [
    "Up",
    "Heat (1995)",
    "The alpha story (1990)",
    "The alpha story (1990) part 2",
    "A very long title about many different things, told slowly (2001)",
    "Fargo (1996)",
    "Toy Story (1995)",
]


@pytest.fixture(scope="module")
def model(tokenizer):
    model = make_tiny_llama(tokenizer, seed=5)
    with torch.no_grad():
        model.model.norm.weight.mul_(6.0)  # peaked distributions: scores far apart
    return model


@pytest.fixture(scope="module")
def inputs(tokenizer):
    encoder = PromptEncoder(tokenizer)
    prompts = [
        encoder.factual_ids(["Heat (1995)", "Fargo (1996)"])[0],
        encoder.counterfactual_ids(),  # a shorter prompt
        encoder.factual_ids(TITLES)[0],
    ]
    return prompts, [encoder.response_ids(t) for t in TITLES], tokenizer.pad_token_id


def brute_force(model, prompts, responses, length_penalty=0.0) -> torch.Tensor:
    """[B, T]: one uncached forward pass of prompt + response per pair; the sum of the
    response tokens' log-probs, divided by len(response) ** length_penalty."""
    scores = torch.zeros(len(prompts), len(responses), dtype=torch.float64)
    for b, prompt in enumerate(prompts):
        for t, response in enumerate(responses):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + response])).logits[0]
            log_probs = logits.double().log_softmax(-1)
            total = sum(
                log_probs[len(prompt) - 1 + i, token].item() for i, token in enumerate(response)
            )
            scores[b, t] = total / len(response) ** length_penalty
    return scores


@pytest.fixture(scope="module")
def expected(model, inputs):
    prompts, responses, _ = inputs
    return brute_force(model, prompts, responses)


@pytest.mark.parametrize("share_prompt", [True, False])
@pytest.mark.parametrize("rows_per_pass", [None, 2])
def test_both_paths_equal_brute_force(model, inputs, expected, share_prompt, rows_per_pass):
    prompts, responses, pad_id = inputs
    got = score_all_titles(
        model, prompts, responses, pad_id, rows_per_pass=rows_per_pass, share_prompt=share_prompt
    )
    assert got.shape == expected.shape
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=0)
    assert model.config._attn_implementation != shared_prefix.NAME  # restored afterwards


def test_length_penalty_divides_by_response_length(model, inputs):
    prompts, responses, pad_id = inputs
    expected = brute_force(model, prompts[:1], responses, length_penalty=1.0)
    got = score_all_titles(model, prompts[:1], responses, pad_id, length_penalty=1.0)
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=0)


def test_the_path_follows_supports(model, inputs, monkeypatch):
    """A model shared-prefix attention accepts takes the shared path; share_prompt=False or a
    refused model (supports() false) takes the copied cache."""
    prompts, responses, pad_id = inputs
    calls = []
    for name in ("_shared_prompt_scores", "_copied_cache_scores"):
        original = getattr(exhaustive, name)

        def spy(*args, _original=original, _name=name):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(exhaustive, name, spy)
    score_all_titles(model, prompts[:1], responses, pad_id)
    score_all_titles(model, prompts[:1], responses, pad_id, share_prompt=False)
    monkeypatch.setattr(shared_prefix, "supports", lambda model, cache: False)
    score_all_titles(model, prompts[:1], responses, pad_id)
    assert calls == ["_shared_prompt_scores", "_copied_cache_scores", "_copied_cache_scores"]
