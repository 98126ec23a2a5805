"""Independent references for the decoding tests (not a test module itself): the trie as a dict
of allowed next tokens, a plain-python beam search over it with uncached full forward passes,
and transformers `generate` constrained to the same trie (the D3 reference approach)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from cftrec.decoding.lm import left_pad

# transformers' beam search starts all beams but the first at -1e9 (so that step one does not
# pick W copies of one token), and marks unusable candidates with -1e9 too: a returned sequence
# scored this low is a placeholder, not a found title.
HF_PLACEHOLDER = -1e8


def allowed_next(responses: Sequence[Sequence[int]]) -> dict[tuple, list[int]]:
    """{prefix: sorted tokens that continue it to some response}: the trie as a dict."""
    allowed: dict[tuple, set[int]] = {}
    for ids in responses:
        for depth in range(len(ids)):
            allowed.setdefault(tuple(ids[:depth]), set()).add(int(ids[depth]))
    return {prefix: sorted(tokens) for prefix, tokens in allowed.items()}


@torch.no_grad()
def next_log_probs(model, prompt: Sequence[int], prefixes: Sequence[tuple]) -> torch.Tensor:
    """log P(next token | prompt + prefix) [len(prefixes), V]: one full forward pass, no cache,
    no padding (the prefixes of one step all have the same length)."""
    ids = torch.tensor([list(prompt) + list(p) for p in prefixes])
    return model(input_ids=ids, logits_to_keep=1).logits[:, -1].double().log_softmax(-1)


@torch.no_grad()
def token_log_probs(model, prompt: Sequence[int], response: Sequence[int]) -> list[float]:
    """log P(response[d] | prompt + response[:d]) for every d: one full forward pass, no cache."""
    ids = torch.tensor([list(prompt) + list(response)])
    # logits of the last len(response) + 1 positions only; the first predicts response[0]
    logits = model(input_ids=ids, logits_to_keep=len(response) + 1).logits[0]
    log_probs = logits.double().log_softmax(-1)
    return [log_probs[d, t].item() for d, t in enumerate(response)]


def reference_beam_search(
    model,
    prompt: Sequence[int],
    responses: Sequence[Sequence[int]],
    eos_id: int,
    width: int,
    step_score: Callable[[tuple, int, float], float] | None = None,
) -> list[tuple[int, float]]:
    """Hugging Face's beam search rules (length_penalty 0), as cftrec's beam.py documents them,
    written out plainly. -> [(title index, score)] best first, at most `width`.

    Per step every candidate (beam, allowed token) is scored; the 2W best are taken; those
    that end a title (EOS) and rank among the first W join the finished pool (best W kept); the
    best W others continue. Nothing else is pruned and no early stop is taken: every beam runs
    until its title ends. `step_score(prefix, token, llm log-prob)` replaces the LLM's
    log-prob as the step score (guidance).
    """
    allowed = allowed_next(responses)
    title_of = {tuple(ids): t for t, ids in enumerate(responses)}
    running: list[tuple[tuple, float]] = [((), 0.0)]
    finished: list[tuple[float, int]] = []
    while running:
        log_probs = next_log_probs(model, prompt, [prefix for prefix, _ in running])
        candidates = []
        for row, (prefix, score) in enumerate(running):
            for token in allowed[prefix]:
                llm = log_probs[row, token].item()
                step = llm if step_score is None else step_score(prefix, token, llm)
                candidates.append((score + step, prefix + (token,)))
        candidates.sort(key=lambda c: -c[0])
        top = candidates[: 2 * width]
        for rank, (score, ids) in enumerate(top):
            if ids[-1] == eos_id and rank < width:
                finished.append((score, title_of[ids]))
        finished = sorted(finished, key=lambda f: -f[0])[:width]
        running = [(ids, score) for score, ids in top if ids[-1] != eos_id][:width]
    return [(title, score) for score, title in finished]


@torch.no_grad()
def generate_with_trie(
    model,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    width: int,
    pad_id: int,
    eos_id: int,
) -> list[list[tuple[int, float]]]:
    """transformers `generate` with `prefix_allowed_tokens_fn` over the same trie (left padded
    batch, as benchmarks/bench_decoding.py's D3 reference). -> per prompt [(title, score)],
    best first, placeholders (see HF_PLACEHOLDER) left out.

    early_stopping=False: with length_penalty 0 its heuristic stops a prompt only once no
    running beam scores above the W-th finished title, which cannot change the result (scores
    only fall); early_stopping=True would stop at the first W finished titles, a different rule.
    """
    allowed = allowed_next(responses)
    title_of = {tuple(ids): t for t, ids in enumerate(responses)}
    ids, mask = left_pad(prompts, pad_id)
    width_in = ids.shape[1]

    def prefix_allowed_tokens_fn(batch_id, sequence):
        return allowed.get(tuple(sequence[width_in:].tolist()), [eos_id])

    # One beam is greedy search in transformers (which has no beam scores, and warns about beam
    # options): the same rule, as the best candidate either ends a title or continues alone.
    beam_options = dict(num_return_sequences=width, length_penalty=0.0, early_stopping=False)
    out = model.generate(
        input_ids=ids, attention_mask=mask, num_beams=width, do_sample=False,
        max_new_tokens=max(len(r) for r in responses),
        prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, pad_token_id=pad_id,
        eos_token_id=eos_id, return_dict_in_generate=True, output_scores=width > 1,
        output_logits=width == 1,
        **(beam_options if width > 1 else {}),
    )  # fmt: skip
    if width > 1:
        scores = out.sequences_scores.view(len(prompts), width).tolist()
    else:  # the raw logits of each step: the summed log-probs of the chosen tokens
        steps = torch.stack(out.logits, 1).double().log_softmax(-1)  # [B, S, V]
        chosen = out.sequences[:, width_in:]
        picked = steps.gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        ended = (chosen == eos_id).long().cumsum(1) - (chosen == eos_id).long()  # after EOS
        scores = picked.masked_fill(ended > 0, 0.0).sum(1, keepdim=True).tolist()
    results = []
    for p in range(len(prompts)):
        found = []
        rows = out.sequences[p * width : (p + 1) * width, width_in:].tolist()
        for row, score in zip(rows, scores[p], strict=True):
            if score <= HF_PLACEHOLDER:
                continue
            found.append((title_of[tuple(row[: row.index(eos_id) + 1])], score))
        results.append(found)
    return results


def assert_same_lists(got, expected, context: str, tolerance: float = 1e-4) -> None:
    """Same titles in the same order, scores within `tolerance`."""
    assert [t for t, _ in got] == [t for t, _ in expected], context
    for (_, a), (_, b) in zip(got, expected, strict=True):
        assert abs(a - b) <= tolerance, f"{context}: score {a} vs {b}"
