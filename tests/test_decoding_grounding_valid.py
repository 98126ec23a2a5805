"""BIGRec grounding's `valid` flag (a generation that is exactly a catalogue title) on
generations that are known in advance: the tiny model's next-token scores are scripted by a
logits processor added to its `generate`, so that each prompt's best continuation is a given
response (a catalogue title, one token off one, one token short of one, one too long)."""

from __future__ import annotations

import pytest
from transformers import LogitsProcessor, LogitsProcessorList

from cftrec.data.dataset import Catalog
from cftrec.decoding.recommender import LLMRecommender
from conftest import make_tiny_llama
from training_fixtures import one_thread  # noqa: F401 (autouse fixture)

TITLES = ["Heat (1995)", "Casino (1995)", "Toy Story (1995)", "Fargo (1996)", "Babe (1995)"]


class ScriptedResponses(LogitsProcessor):
    """Adds a large bonus to the next token of the scripted response of each row's prompt
    (the model's own scores stay underneath, so other beams are still ranked by the model)."""

    def __init__(self, scripts: dict[tuple, list[int]], prompt_width: int, pad_id: int, eos_id):
        self.scripts, self.width, self.pad_id, self.eos_id = scripts, prompt_width, pad_id, eos_id

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        step = input_ids.shape[1] - self.width
        for row, ids in enumerate(input_ids.tolist()):
            prompt = ids[: self.width]
            while prompt and prompt[0] == self.pad_id:  # left padding
                prompt = prompt[1:]
            response = self.scripts[tuple(prompt)]
            scores[row, response[step] if step < len(response) else self.eos_id] += 100.0
        return scores


def script(model, scripts: dict[tuple, list[int]], pad_id: int, eos_id: int) -> None:
    """Make `model.generate` (as grounding calls it) produce `scripts[prompt]` greedily."""
    original = model.generate

    def generate(**kwargs):
        processor = ScriptedResponses(scripts, kwargs["input_ids"].shape[1], pad_id, eos_id)
        return original(**kwargs, logits_processor=LogitsProcessorList([processor]))

    model.generate = generate


@pytest.fixture(scope="module")
def scripted(tokenizer):
    """-> (recommender, {history: expected generated text, expected valid flag})."""
    catalog = Catalog([f"i{i}" for i in range(len(TITLES))], TITLES)
    recommender = LLMRecommender(make_tiny_llama(tokenizer, seed=2), tokenizer, catalog)
    encoder = recommender.encoder
    exact = encoder.response_ids("Fargo (1996)")
    off_by_one = encoder.response_ids("Fargo (1997)")
    # one token off: same length, exactly one token differs
    assert len(off_by_one) == len(exact)
    assert sum(a != b for a, b in zip(exact, off_by_one, strict=True)) == 1
    short = exact[:-2] + exact[-1:]  # '"Fargo (1996' + EOS: the closing ')"' left out
    assert tokenizer.decode(short[:-1]) == '"Fargo (1996'
    extra = exact[:-1] + tokenizer.encode(" II", add_special_tokens=False) + exact[-1:]
    assert len(extra) == len(exact) + 1
    cases = {
        ("i0",): (exact, '"Fargo (1996)"', True),
        ("i1",): (off_by_one, '"Fargo (1997)"', False),
        ("i2", "i4"): (short, '"Fargo (1996', False),
        ("i4",): (extra, '"Fargo (1996)" II', False),
        ("i3",): (encoder.response_ids("Babe (1995)"), '"Babe (1995)"', True),
    }
    histories = [list(h) for h in cases]
    prompts = recommender.prompts(histories)
    scripts = {tuple(p): case[0] for p, case in zip(prompts, cases.values(), strict=True)}
    script(recommender.model, scripts, recommender.pad_id, recommender.eos_id)
    return recommender, histories, [case[1:] for case in cases.values()]


@pytest.mark.parametrize("beams", [1, 3])
def test_a_generation_that_is_a_title_is_valid_and_a_near_miss_is_not(scripted, beams):
    recommender, histories, expected = scripted
    decoded = recommender.decode(histories, k=3, num_beams=beams, method="grounding")
    known = set(recommender.catalog.titles)
    for (text, valid), generations, recs in zip(
        expected, decoded.generations, decoded.recommendations, strict=True
    ):
        assert len(generations) == beams
        assert generations[0] == (text, valid)  # the scripted (best) beam
        for other, flag in generations:  # the model's own beams: valid iff a quoted title
            quoted = other.startswith('"') and other.endswith('"') and len(other) >= 2
            assert flag == (quoted and other[1:-1] in known), other
        if valid:  # a generation equal to a title embeds exactly as that title: ranked first
            assert recs[0].title == text[1:-1]
