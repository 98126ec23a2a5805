"""The cheap counterfactual pass (shared prefix KV cache) equals the plain two-pass loss."""

from __future__ import annotations

import pytest
import torch

from cftrec.modeling import LoraSettings, add_lora
from cftrec.prompts import PromptEncoder
from cftrec.training.collator import CFTCollator, EncodedExample
from cftrec.training.loss import cft_loss
from cftrec.training.trainer import CFTConfig, batch_loss
from conftest import make_tiny_llama
from training_fixtures import one_thread  # noqa: F401 (autouse fixture)

HISTORIES = [
    (["Toy Story (1995)", "Heat (1995)", "Casino (1995)"], "Fargo (1996)"),
    (["Babe (1995)"], "Contact (1997)"),
    (["Scream (1996)", "Titanic (1997)"], "A Very Long Title: The Sequel, Part II (1999)"),
]


def _examples(tokenizer, style="remove"):
    encoder = PromptEncoder(tokenizer, counterfactual_style=style)
    return [
        EncodedExample(
            encoder.factual_ids(history)[0], encoder.counterfactual_ids(), encoder.response_ids(t)
        )
        for history, t in HISTORIES
    ]


def _one_by_one_loss(model, examples, alpha, beta):
    """Independent: each prompt + response alone (no padding, no cache), logits sliced by hand."""
    width = max(len(e.response_ids) for e in examples)
    factual, counter = [], []
    for e in examples:
        r = len(e.response_ids)
        rows = []
        for prompt in (e.prompt_ids, e.counterfactual_ids):
            ids = torch.tensor([prompt + e.response_ids])
            logits = model(input_ids=ids).logits[0]  # [L, V]
            # position len(prompt) - 1 + j predicts response token j
            picked = logits[len(prompt) - 1 : len(prompt) - 1 + r]  # [r, V]
            pad = picked.new_zeros((width - r, picked.shape[1]))
            rows.append(torch.cat([pad, picked]))
        factual.append(rows[0])
        counter.append(rows[1])
    labels = torch.full((len(examples), width), -100)
    for b, e in enumerate(examples):
        labels[b, width - len(e.response_ids) :] = torch.tensor(e.response_ids)
    return cft_loss(torch.stack(factual), torch.stack(counter), labels, alpha=alpha, beta=beta)


def _loss_and_grads(model, compute):
    model.zero_grad()
    loss = compute()
    loss.total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss, grads


@pytest.mark.parametrize("lora", [False, True])
def test_shared_prefix_equals_plain_two_pass(tokenizer, lora):
    model = make_tiny_llama(tokenizer, seed=1)
    if lora:
        model = add_lora(model, LoraSettings(r=4, dropout=0.0))
        with torch.no_grad():  # LoRA B starts at zero; make the adapter path non-trivial
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.1)
    model.train()  # the tiny Llama has no dropout: train mode is deterministic
    examples = _examples(tokenizer)
    args = CFTConfig(output_dir="unused", method="cft", alpha=0.3, beta=0.25, report_to=[])
    reference, reference_grads = _loss_and_grads(
        model, lambda: _one_by_one_loss(model, examples, 0.3, 0.25)
    )
    assert len(reference_grads) > 0
    # ("shared_prefix", False): the shared layout with the prefix run in front of every row
    # (no KV cache: gradient checkpointing, FSDP, DeepSpeed)
    for mode, share_cache in (
        ("shared_prefix", True), ("shared_prefix", False), ("separate", True), ("padded", True)
    ):  # fmt: skip
        batch = CFTCollator(tokenizer.pad_token_id, True, mode)(examples)
        assert ("cf_prefix_ids" in batch) == (mode == "shared_prefix")
        if mode != "padded":  # never padded to the factual length
            assert batch["cf_input_ids"].shape[1] < batch["input_ids"].shape[1]
        loss, grads = _loss_and_grads(
            model, lambda b=batch, s=share_cache: batch_loss(model, b, args, share_cache=s)
        )
        for got, want in zip(
            (loss.total, loss.rec, loss.cf),
            (reference.total, reference.rec, reference.cf),
            strict=True,
        ):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert grads.keys() == reference_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], rtol=1e-3, atol=1e-5, msg=name)


def test_shared_prefix_segment_is_short(tokenizer):
    batch = CFTCollator(tokenizer.pad_token_id)(_examples(tokenizer))
    width = max(len(e.response_ids) for e in _examples(tokenizer))
    assert batch["cf_input_ids"].shape[1] == width  # last prompt token + response without EOS
    assert batch["labels"].shape == (3, width)


def test_differing_counterfactual_prompts_use_the_plain_path(tokenizer):
    examples = _examples(tokenizer)
    other = _examples(tokenizer, style="placeholder")[0]
    mixed = [examples[0], other]
    assert "cf_prefix_ids" not in CFTCollator(tokenizer.pad_token_id)(mixed)
    with pytest.raises(ValueError):
        CFTCollator(tokenizer.pad_token_id, True, "shared_prefix")(mixed)
