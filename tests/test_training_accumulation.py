"""How a training step is split (gradient accumulation) and whether activations are recomputed
(gradient checkpointing) must not change the loss, the gradients or the trained weights.

Runs on the floor version of transformers too (`make test-floor`): Trainer's own scaling for
gradient accumulation changed between versions."""

from __future__ import annotations

import logging

import pytest
import torch

from cftrec.compat import checkpointing_kwargs
from cftrec.errors import CftrecError
from cftrec.modeling import LoraSettings, add_lora
from cftrec.prompts import PromptEncoder
from cftrec.training.collator import EncodedExample
from cftrec.training.loss import cft_loss
from cftrec.training.trainer import CFTConfig, CFTTrainer, can_share_prefix_cache
from conftest import make_tiny_llama
from training_fixtures import TITLES, one_thread  # noqa: F401 (autouse fixture)

LONG_TITLE = "A Very Long Title: The Sequel, Part II (1999)"


@pytest.fixture(scope="module")
def examples(tokenizer):
    """8 examples whose responses differ in length, so that the token weights of two
    half-batches differ and a per-half-batch mean is not the mean of the whole batch."""
    encoder = PromptEncoder(tokenizer)
    targets = [TITLES[0], LONG_TITLE, TITLES[3], TITLES[4], LONG_TITLE, "Up", TITLES[6], "Up"]
    return [
        EncodedExample(
            encoder.factual_ids(TITLES[i : i + 1 + i % 3])[0],
            encoder.counterfactual_ids(),
            encoder.response_ids(target),
        )
        for i, target in enumerate(targets)
    ]


def _train(tmp_path, tokenizer, examples, batch, accumulation, lora=False, **options):
    """Two optimizer steps (SGD: Adam's normalisation would blow float noise in near-zero
    gradients up to full steps); -> (the training log lines, the trained weights)."""
    model = make_tiny_llama(tokenizer, seed=1)
    if lora:
        model = add_lora(model, LoraSettings(r=4, dropout=0.0))
    model.train()
    args = CFTConfig(
        output_dir=str(tmp_path / f"b{batch}-a{accumulation}"),
        method="cft", alpha=0.3, beta=0.25,
        per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
        max_steps=2, learning_rate=1e-2, optim="sgd", logging_steps=1, save_strategy="no",
        report_to=[], seed=0, use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
        **options,
    )  # fmt: skip
    trainer = CFTTrainer(model=model, args=args, train_dataset=examples)
    trainer.train()
    logs = [line for line in trainer.state.log_history if "loss" in line]
    weights = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return logs, weights


def _assert_same_training(got, want):
    (got_logs, got_weights), (want_logs, want_weights) = got, want
    assert len(got_logs) == len(want_logs) == 2
    for line, reference in zip(got_logs, want_logs, strict=True):
        for key in ("loss", "grad_norm", "rec", "cf"):
            assert line[key] == pytest.approx(reference[key], rel=1e-4, abs=1e-6), key
        assert line["loss"] == pytest.approx(line["rec"] + 0.3 * line["cf"], rel=1e-4)
    assert got_weights.keys() == want_weights.keys()
    for name, weight in got_weights.items():
        torch.testing.assert_close(weight, want_weights[name], rtol=1e-4, atol=1e-6, msg=name)


def _independent_first_step_loss(tokenizer, examples, indices) -> float:
    """The CFT loss of the first step's 4 examples as one batch, every prompt + response run
    alone through the untrained model (no padding, no cache)."""
    model = make_tiny_llama(tokenizer, seed=1)
    batch = [examples[i] for i in indices]
    width = max(len(e.response_ids) for e in batch)
    factual, counter = [], []
    with torch.no_grad():
        for e in batch:
            r = len(e.response_ids)
            for prompt, rows in ((e.prompt_ids, factual), (e.counterfactual_ids, counter)):
                logits = model(input_ids=torch.tensor([prompt + e.response_ids])).logits[0]
                picked = logits[len(prompt) - 1 : len(prompt) - 1 + r]
                rows.append(torch.cat([picked.new_zeros((width - r, picked.shape[1])), picked]))
    labels = torch.full((len(batch), width), -100)
    for b, e in enumerate(batch):
        labels[b, width - len(e.response_ids) :] = torch.tensor(e.response_ids)
    loss = cft_loss(torch.stack(factual), torch.stack(counter), labels, alpha=0.3, beta=0.25)
    return loss.total.item()


def test_accumulation_equals_one_big_batch(tmp_path, tokenizer, examples):
    whole = _train(tmp_path, tokenizer, examples, batch=4, accumulation=1)
    split = _train(tmp_path, tokenizer, examples, batch=2, accumulation=2)
    _assert_same_training(split, whole)
    # ... and the logged loss is the loss of the step's 4 examples, computed independently
    trainer = CFTTrainer(
        model=make_tiny_llama(tokenizer, seed=1),
        args=CFTConfig(
            output_dir=str(tmp_path / "order"),
            per_device_train_batch_size=4,
            seed=0,
            use_cpu=True,
            report_to=[],
        ),  # fmt: skip
        train_dataset=examples,
    )
    first = next(iter(trainer.get_train_dataloader().batch_sampler))  # the same shuffle
    expected = _independent_first_step_loss(tokenizer, examples, first)
    assert whole[0][0]["loss"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_equals_the_shared_prefix_pass(
    tmp_path, tokenizer, examples, lora, caplog
):
    """Checkpointing turns the KV cache off: the shared counterfactual prefix then runs with
    every example (one notice), with the same losses, gradients and weights."""
    shared = _train(tmp_path, tokenizer, examples, 2, 2, lora=lora)
    with caplog.at_level(logging.WARNING, logger="cftrec.training.trainer"):
        checkpointed = _train(
            tmp_path, tokenizer, examples, 2, 2, lora=lora, **checkpointing_kwargs(True)
        )
    _assert_same_training(checkpointed, shared)
    notices = [r for r in caplog.records if "gradient checkpointing" in r.getMessage()]
    assert len(notices) == 1


def test_shared_prefix_cache_only_where_it_works_and_was_tested(tmp_path, caplog):
    """Gradient checkpointing (no KV cache) and FSDP / DeepSpeed (never run with the shared
    prefix): "auto" runs the prefix with every example, with one notice; an explicit
    "shared_prefix" is a clear error."""

    def config(**options):
        return CFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **options)

    assert can_share_prefix_cache(config())
    with caplog.at_level(logging.WARNING, logger="cftrec.training.trainer"):
        assert not can_share_prefix_cache(config(), sharded=True)
        can_share_prefix_cache(
            config(method="sft", counterfactual_pass="shared_prefix"), sharded=True
        )
        assert not can_share_prefix_cache(config(counterfactual_pass="separate"), sharded=True)
    assert ["untested with FSDP and DeepSpeed" in r.getMessage() for r in caplog.records] == [True]
    with pytest.raises(CftrecError, match="shared_prefix: the shared-prefix pass is untested"):
        can_share_prefix_cache(config(counterfactual_pass="shared_prefix"), sharded=True)
    with pytest.raises(CftrecError, match="shared_prefix: gradient checkpointing"):
        can_share_prefix_cache(
            config(counterfactual_pass="shared_prefix", **checkpointing_kwargs(True))
        )
