"""Constrained beam search, exhaustive scoring and guidance against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from cftrec.data.dataset import Catalog
from cftrec.decoding.recommender import LLMRecommender
from cftrec.errors import CftrecError
from conftest import make_tiny_llama
from training_fixtures import one_thread  # noqa: F401 (autouse fixture)

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
    return LLMRecommender(sharp_model, tokenizer, catalog, batch_size=4)


HISTORIES = [["i1", "i2", "i3"], [], ["i5"], ["i7", "i8", "i9", "i10", "i11", "i12"], ["dup"]]


def direct_log_likelihood(model, prompt: list[int], response: list[int]) -> float:
    """Teacher-forced log P(response | prompt) from one plain forward pass (no cache, no pad)."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        log_probs = model(input_ids=ids).logits[0].float().log_softmax(-1)
    positions = range(len(prompt) - 1, len(prompt) + len(response) - 1)
    return sum(log_probs[p, t].item() for p, t in zip(positions, response, strict=True))


def test_few_beams_give_valid_distinct_titles_with_exact_scores(recommender):
    scores = recommender.title_scores(HISTORIES)
    results = recommender.recommend(HISTORIES, k=3, num_beams=3, exclude_history=False)
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
    exhaustive = recommender.recommend(HISTORIES, k=3, method="exhaustive", exclude_history=False)
    beam = recommender.recommend(HISTORIES, k=3, num_beams=3, exclude_history=False)
    assert n > 3
    assert any(
        [r.title for r in ex] != [r.title for r in bm]
        for ex, bm in zip(exhaustive, beam, strict=True)
    )


def test_duplicate_titles_map_to_all_item_ids(recommender):
    n = len(recommender.catalog.titles)
    for method in ("beam", "exhaustive"):
        recs = recommender.recommend(
            [["i1"]], k=n, num_beams=n, method=method, exclude_history=False
        )[0]
        shared = next(r for r in recs if r.title == TITLES[3])
        assert set(shared.item_ids) == {"i3", "dup"}
        assert len(recs) == n == len(TITLES)


@pytest.mark.parametrize("method", ["beam", "exhaustive", "grounding"])
def test_batching_and_padding_do_not_change_results(recommender, method):
    batched = recommender.recommend(
        HISTORIES, k=5, num_beams=4, method=method, batch_size=5, exclude_history=False
    )
    for history, expected in zip(HISTORIES, batched, strict=True):
        alone = recommender.recommend(
            [history], k=5, num_beams=4, method=method, batch_size=1, exclude_history=False
        )[0]
        assert [r.title for r in alone] == [r.title for r in expected]
        for a, b in zip(alone, expected, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-4)


def test_cold_start_uses_the_counterfactual_prompt(recommender, sharp_model):
    prompt = recommender.encoder.counterfactual_ids()
    assert recommender.prompts([[]])[0] == prompt
    best = recommender.recommend([[]], k=1, num_beams=len(TITLES), exclude_history=False)[0][0]
    expected = max(direct_log_likelihood(sharp_model, prompt, r) for r in recommender.responses)
    assert best.score == pytest.approx(expected, abs=1e-4)


def test_unknown_history_item_is_one_clear_error(recommender):
    # the Python API takes item ids only (titles are resolved by the CLI and HTTP layers)
    with pytest.raises(CftrecError, match="unknown item id 'The alpha story \\(1990\\)'"):
        recommender.recommend([["The alpha story (1990)"]], exclude_history=False)
    with pytest.raises(CftrecError, match="unknown decoding method"):
        recommender.recommend([["i1"]], method="sampling", exclude_history=False)


def test_plain_title_list_becomes_a_catalog(sharp_model, tokenizer):
    rec = LLMRecommender(sharp_model, tokenizer, ["Up", "Heat (1995)"])
    recs = rec.recommend([["Up"]], k=2, num_beams=2, exclude_history=False)[0]
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
        HISTORIES[:3],
        k=n,
        num_beams=n,
        assistant=assistant,
        guidance_scale=scale,
        exclude_history=False,
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
        recommender.recommend([["i1"]], assistant=other, exclude_history=False)


def test_shared_prompt_attention_equals_per_beam_cache(recommender, sharp_model):
    """The shared-prefix attention path gives the plain per-beam-cache results."""
    from cftrec.decoding import shared_prefix
    from cftrec.decoding.beam import constrained_beam_search
    from cftrec.decoding.lm import prefill

    prompts = recommender.prompts(HISTORIES)
    assert shared_prefix.plain_attention(sharp_model)
    with shared_prefix.attention(sharp_model):
        _, cache, _, _ = prefill(sharp_model, prompts, recommender.pad_id)
        assert shared_prefix.supports(sharp_model, cache)
    args = (sharp_model, prompts, recommender.trie, 6, recommender.pad_id)
    shared_titles, shared_scores = constrained_beam_search(*args, share_prompt=True)
    plain_titles, plain_scores = constrained_beam_search(*args, share_prompt=False)
    assert torch.equal(shared_titles, plain_titles)
    assert torch.allclose(shared_scores, plain_scores, atol=1e-4)
    assert sharp_model.config._attn_implementation != shared_prefix.NAME  # restored


# ---------------------------------------------------------------- against no-cache references
# These run on the floor version of transformers too (`make test-floor`): a cache passed under
# the wrong keyword is silently ignored there, which only a comparison with uncached forward
# passes shows.


def direct_scores(model, prompts, responses) -> list[list[float]]:
    """[B][T] log P(title | prompt), one full forward pass per (prompt, title), no cache."""
    return [[direct_log_likelihood(model, p, r) for r in responses] for p in prompts]


def assert_full_ranking(recs, expected: list[float], titles: list[str], tolerance=1e-4):
    """`recs` ranks every title, best first, with the exact scores `expected` [T]."""
    assert sorted(r.title for r in recs) == sorted(titles)
    got = [expected[titles.index(r.title)] for r in recs]
    for r, want in zip(recs, got, strict=True):
        assert r.score == pytest.approx(want, abs=tolerance)
    assert all(a >= b - tolerance for a, b in zip(got[:-1], got[1:], strict=True))  # best first


def test_every_method_equals_uncached_forward_passes(recommender, sharp_model):
    from cftrec.decoding.beam import constrained_beam_search

    titles = recommender.catalog.titles
    n = len(titles)
    prompts = recommender.prompts(HISTORIES)
    expected = direct_scores(sharp_model, prompts, recommender.responses)
    for method in ("exhaustive", "beam"):
        results = recommender.recommend(
            HISTORIES, k=n, num_beams=n, method=method, exclude_history=False
        )
        for recs, row in zip(results, expected, strict=True):
            assert_full_ranking(recs, row, titles)
    # beam search with the per-beam cache (no shared prompt): same titles, exact scores
    picked, scores = constrained_beam_search(
        sharp_model, prompts, recommender.trie, 4, recommender.pad_id, share_prompt=False
    )
    for b, row in enumerate(expected):
        for t, score in zip(picked[b].tolist(), scores[b].tolist(), strict=True):
            assert score == pytest.approx(row[t], abs=1e-4)


def _plain_embedding(model, ids: list[int], pad_id: int) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids or [pad_id]]), output_hidden_states=True)
    return out.hidden_states[-1][0, -1].float()


def test_grounding_equals_uncached_generation_and_plain_embeddings(recommender, sharp_model):
    """BIGRec grounding rebuilt from generate(use_cache=False) per prompt alone, unpadded
    embeddings and a hand-written round-robin merge."""
    beams, k = 3, 6
    histories = HISTORIES[:3]
    decoded = recommender.decode(histories, k=k, num_beams=beams, method="grounding")
    pad, eos = recommender.pad_id, recommender.eos_id
    titles = torch.stack(
        [_plain_embedding(sharp_model, r[:-1], pad) for r in recommender.responses]
    )
    for b, prompt in enumerate(recommender.prompts(histories)):
        with torch.no_grad():
            out = sharp_model.generate(
                input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                num_beams=beams, num_return_sequences=beams, do_sample=False,
                max_new_tokens=max(len(r) for r in recommender.responses) + 8,
                length_penalty=0.0, early_stopping=False, pad_token_id=pad,
                eos_token_id=eos, use_cache=False,
            )[:, len(prompt) :].tolist()  # fmt: skip
        generated = [row[: row.index(eos)] if eos in row else row for row in out]
        texts = [recommender.tokenizer.decode(g, skip_special_tokens=True) for g in generated]
        assert [text for text, _ in decoded.generations[b]] == texts
        distances = torch.cdist(
            torch.stack([_plain_embedding(sharp_model, g, pad) for g in generated]), titles
        )
        ranked = [row.argsort(stable=True).tolist() for row in distances]
        merged = []
        for rank in range(len(titles)):
            for row in ranked:
                if row[rank] not in merged and len(merged) < k:
                    merged.append(row[rank])
        expected = [recommender.catalog.titles[t] for t in merged]
        assert [r.title for r in decoded.recommendations[b]] == expected


def test_title_embedding_cache_is_per_model_and_dtype(tmp_path, tokenizer, catalog):
    """Embeddings cached for one model (or dtype) are never read for another."""

    def cached(model):
        return LLMRecommender(
            model, tokenizer, catalog, embedding_cache_dir=tmp_path
        ).title_embeddings()

    def fresh(model):
        return LLMRecommender(model, tokenizer, catalog).title_embeddings()

    first, second = make_tiny_llama(tokenizer, seed=1), make_tiny_llama(tokenizer, seed=2)
    torch.testing.assert_close(cached(first), fresh(first))
    assert len(list(tmp_path.glob("title_embeddings-*.safetensors"))) == 1
    torch.testing.assert_close(cached(first), fresh(first))  # read back
    assert len(list(tmp_path.glob("title_embeddings-*.safetensors"))) == 1
    torch.testing.assert_close(cached(second), fresh(second))
    half = make_tiny_llama(tokenizer, seed=1).to(torch.bfloat16)
    torch.testing.assert_close(cached(half), fresh(half))
    assert len(list(tmp_path.glob("title_embeddings-*.safetensors"))) == 3


def _model_with_extra_attention(tokenizer, kind: str):
    """Tiny models whose attention has what shared-prefix attention does not apply."""
    from transformers import AutoConfig, AutoModelForCausalLM

    common = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    full = {"layer_types": ["full_attention"] * 2}
    extra, implementation = {
        # attention sinks on full-attention layers (plain DynamicLayer caches)
        "gpt_oss": ({"head_dim": 8, "num_local_experts": 2, "num_experts_per_tok": 1, **full}, "eager"),
        # soft-capped attention logits on full-attention layers
        "gemma2": ({"head_dim": 8, "attn_logit_softcapping": 0.5, "query_pre_attn_scalar": 8, **full}, "eager"),
        # a sliding window shorter than the prompts
        "mistral": ({"sliding_window": 3}, "sdpa"),
    }[kind]  # fmt: skip
    torch.manual_seed(0)
    config = AutoConfig.for_model(kind, **common, **extra)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=implementation).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "sinks" in name:
                param.normal_(0, 3)  # sinks start at zero; make them matter
    return model


@pytest.mark.parametrize("kind", ["gpt_oss", "gemma2", "mistral"])
def test_extra_attention_features_take_the_plain_path(tokenizer, kind):
    from cftrec.decoding import shared_prefix

    model = _model_with_extra_attention(tokenizer, kind)
    titles = TITLES[:6]
    recommender = LLMRecommender(model, tokenizer, titles)
    histories = [[TITLES[1], TITLES[4]], []]
    expected = direct_scores(model, recommender.prompts(histories), recommender.responses)
    for method in ("beam", "exhaustive"):
        results = recommender.recommend(
            histories, k=6, num_beams=6, method=method, exclude_history=False
        )
        for recs, row in zip(results, expected, strict=True):
            assert_full_ranking(recs, row, titles)
    assert not shared_prefix.plain_attention(model)
