"""CFTConfig and CFTTrainer: Hugging Face Trainer with the CFT loss in `compute_loss`.

Per batch (layout in collator.py):
  factual pass         model(x_h + y[:-1]) -> logits of the R response positions  [B, R, V]
  counterfactual pass  shared prefix: model(x_0[:-1]) once [1, P-1] with gradient, its KV cache
                       repeated over the batch, then model(x_0[-1] + y[:-1]) [B, R] -> [B, R, V];
                       or a separate short-padded pass over x_0 + y[:-1]
  loss                 cft_loss(factual, counterfactual, labels) (sft: counterfactual = None)
The shared prefix runs with every row instead where its KV cache cannot be reused (gradient
checkpointing) or has not been tested (FSDP, DeepSpeed): `can_share_prefix_cache`.
Under gradient accumulation and several processes every batch divides by the weight totals of
the whole optimizer step, so the loss and its gradients do not depend on how a step is split.
The validation loss is the recommendation loss only.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments

from ..compat import cache_kwargs, checkpointing, output_cache
from ..errors import CftrecError
from .collator import CFTCollator
from .loss import cft_loss, loss_denominators
from .settings import SETTINGS, check_setting, default_weighting

log = logging.getLogger(__name__)


def _train_setting(name: str):
    """A CFTConfig field with the default and help of the TrainSettings field `name`."""
    source = SETTINGS[name]
    return field(default=source.default, metadata={"help": source.metadata["help"]})


@dataclass
class CFTConfig(TrainingArguments):
    """TrainingArguments plus the CFT fields: defaults, help and checks are TrainSettings'."""

    method: str = _train_setting("method")
    alpha: float = _train_setting("alpha")
    beta: float = _train_setting("beta")
    weighting: str | None = _train_setting("weighting")  # None: the method's default
    weight_rec_loss: bool = _train_setting("weight_rec_loss")
    counterfactual_style: str = _train_setting("counterfactual_style")
    counterfactual_pass: str = _train_setting("counterfactual_pass")
    template: str = _train_setting("template")
    max_history: int = _train_setting("max_history")
    max_prompt_tokens: int | None = _train_setting("max_prompt_tokens")
    remove_unused_columns: bool = False  # the batches carry counterfactual inputs

    def __post_init__(self):
        super().__post_init__()
        for name in CFT_FIELDS:
            check_setting(name, getattr(self, name))
        self.weighting = self.weighting or default_weighting(self.method)


# The fields CFTConfig itself takes from TrainSettings (not TrainingArguments' namesakes, e.g.
# its seed and learning_rate)
CFT_FIELDS = tuple(name for name in inspect.get_annotations(CFTConfig) if name in SETTINGS)


def response_logits(model, input_ids, attention_mask, width: int, cache=None):
    """Logits [B, width, V] of the last `width` input positions (left-padded inputs).

    With `cache` (a KV cache of a shared prefix, already repeated over the batch) the inputs
    continue that prefix: positions and attention cover prefix + inputs.
    """
    past = cache.get_seq_length() if cache is not None else 0
    if past:
        prefix_mask = attention_mask.new_ones((attention_mask.shape[0], past))
        attention_mask = torch.cat([prefix_mask, attention_mask], dim=1)  # [B, past + L]
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)[:, past:]  # [B, L]
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=width,
        **(cache_kwargs(cache) if cache is not None else {"use_cache": False}),
    )
    return output.logits


def shared_prefix_cache(model, prefix_ids, batch_size: int):
    """Run the shared counterfactual prefix [1, P] once (with gradient); KV cache over B rows."""
    output = model(input_ids=prefix_ids, logits_to_keep=1, **cache_kwargs(None))
    cache = output_cache(output)
    if cache is None:
        raise RuntimeError(
            "the model returned no KV cache for the shared counterfactual prefix (gradient "
            "checkpointing turned on outside CFTConfig?): use counterfactual_pass='separate'"
        )
    cache.batch_repeat_interleave(batch_size)  # differentiable copy: [1, H, P, D] -> [B, H, P, D]
    return cache


def counterfactual_logits(model, batch, width: int, share_cache: bool = True):
    """Counterfactual logits [B, width, V] aligned with the batch's labels.

    A shared-prefix batch runs its prefix once and reuses the KV cache, or, with
    `share_cache=False` (`can_share_prefix_cache`), in front of every row: the segment's left
    padding then sits between prefix and segment, masked, with positions that count real
    tokens only (the same logits)."""
    ids, mask = batch["cf_input_ids"], batch["cf_attention_mask"]  # [B, L]
    if "cf_prefix_ids" not in batch:
        return response_logits(model, ids, mask, width)
    if share_cache:
        cache = shared_prefix_cache(model, batch["cf_prefix_ids"], ids.shape[0])
        return response_logits(model, ids, mask, width, cache=cache)
    prefix = batch["cf_prefix_ids"].expand(ids.shape[0], -1)  # [B, P-1]
    ids = torch.cat([prefix, ids], dim=1)
    mask = torch.cat([torch.ones_like(prefix), mask], dim=1)
    return response_logits(model, ids, mask, width)


def can_share_prefix_cache(args: CFTConfig, sharded: bool = False, notice: bool = True) -> bool:
    """Whether the shared counterfactual prefix may run once and reuse its KV cache.

    Not under gradient checkpointing (the model returns no cache), nor with FSDP or DeepSpeed
    (`sharded`: that combination has not been run). There `counterfactual_pass="auto"` runs the
    prefix with every example instead (the same loss; one warning unless `notice=False`), and
    an explicit "shared_prefix" is an error."""
    obstacle = None
    if checkpointing(args):
        obstacle = "gradient checkpointing turns the KV cache off"
    elif sharded:
        obstacle = "the shared-prefix pass is untested with FSDP and DeepSpeed"
    if obstacle is None:
        return True
    if args.method == "cft" and args.counterfactual_pass == "shared_prefix":
        raise CftrecError(f"--counterfactual-pass shared_prefix: {obstacle}; use auto or separate")
    if args.method == "cft" and args.counterfactual_pass == "auto" and notice:
        log.warning(
            f"{obstacle}: the counterfactual prompt runs with every example instead of once "
            "per batch (same loss, slower)"
        )
    return False


def batch_loss(
    model, batch, args: CFTConfig, counterfactual=True, denominators=None, share_cache=True
):
    """The CFT (or sft) loss of one collated batch: a CFTLoss. `denominators`: see cft_loss;
    `share_cache`: see counterfactual_logits."""
    labels = batch["labels"]  # [B, R]
    factual = response_logits(model, batch["input_ids"], batch["attention_mask"], labels.shape[1])
    counter = None
    if counterfactual and args.method == "cft":
        counter = counterfactual_logits(model, batch, labels.shape[1], share_cache)
    return cft_loss(
        factual,
        counter,
        labels,
        alpha=args.alpha,
        beta=args.beta,
        weighting=args.weighting,
        weight_rec_loss=args.weight_rec_loss,
        denominators=denominators,
    )


def batch_tokens(batch, method: str) -> int:
    """Tokens the model processes for a batch (padding excluded, shared prefix counted once)."""
    tokens = int(batch["attention_mask"].sum())
    if method == "cft" and "cf_input_ids" in batch:
        tokens += int(batch["cf_attention_mask"].sum())
        if "cf_prefix_ids" in batch:
            tokens += batch["cf_prefix_ids"].shape[1]
    return tokens


class CFTTrainer(Trainer):
    """Trainer whose loss is `cft_loss`; logs `rec` and `cf` next to `loss`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.data_collator is None or not isinstance(self.data_collator, CFTCollator):
            pad = self.processing_class.pad_token_id if self.processing_class else 0
            self.data_collator = CFTCollator(
                pad, self.args.method == "cft", self.args.counterfactual_pass
            )
        # compute_loss divides by the whole step's denominators (`_get_num_items_in_batch`):
        # Trainer (5.17 and later) then leaves the loss undivided by the accumulation steps.
        self.model_accepts_loss_kwargs = True
        self._parts = torch.zeros(2, dtype=torch.float64)  # rec, cf summed since the last log
        self._steps = 0  # optimizer steps since the last log
        self.tokens_seen = 0
        self.train_seconds = 0.0
        self.share_prefix_cache = can_share_prefix_cache(
            self.args,
            sharded=self.is_fsdp_enabled or self.is_deepspeed_enabled,
            notice=self.is_world_process_zero(),  # one notice, not one per process
        )

    def _get_num_items_in_batch(self, batch_samples, device):
        """The loss denominators [rec, cf] of one optimizer step: summed over its batches
        (gradient accumulation) and processes. Trainer passes them to compute_loss."""
        if not batch_samples:
            return None
        args = self.args
        totals = sum(
            loss_denominators(b["labels"], args.beta, args.weighting, args.weight_rec_loss)
            for b in batch_samples
        ).to(device)
        self._steps += 1
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        return totals

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = batch_loss(
            model, inputs, self.args, counterfactual=model.training,
            denominators=num_items_in_batch, share_cache=self.share_prefix_cache,
        )  # fmt: skip
        total = loss.total
        if model.training:
            # Data-parallel backends average gradients over processes; the denominators
            # already cover every process.
            scale = self.accelerator.num_processes if num_items_in_batch is not None else 1
            total = total * scale
            parts = torch.stack([loss.rec.detach(), loss.cf.detach()]) * scale
            self._parts += parts.double().cpu()
            self.tokens_seen += batch_tokens(inputs, self.args.method)
        return (total, None) if return_outputs else total

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Validation: the recommendation loss only."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = batch_loss(model, inputs, self.args, counterfactual=False)
        return loss.total.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds `rec` and `cf` to the training-loss lines: per optimizer step, like `loss`."""
        if "loss" in logs and self._steps:
            parts = self._parts / self._steps
            if self.accelerator.num_processes > 1:  # every process logs at the same steps
                parts = self.accelerator.reduce(parts.to(self.args.device), reduction="mean")
            logs["rec"], logs["cf"] = (round(float(v), 6) for v in parts)
            self._parts.zero_()
            self._steps = 0
        super().log(logs, start_time)

    def train(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super().train(*args, **kwargs)
        finally:
            self.train_seconds += time.perf_counter() - start
