"""CFTConfig and CFTTrainer: Hugging Face Trainer with the CFT loss in `compute_loss`.

Per batch (layout in collator.py):
  factual pass         model(x_h + y[:-1]) -> logits of the R response positions  [B, R, V]
  counterfactual pass  shared prefix: model(x_0[:-1]) once [1, P-1] with gradient, its KV cache
                       repeated over the batch, then model(x_0[-1] + y[:-1]) [B, R] -> [B, R, V];
                       or a separate short-padded pass over x_0 + y[:-1]
  loss                 cft_loss(factual, counterfactual, labels) (sft: counterfactual = None)
The validation loss is the recommendation loss only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments
from transformers.modeling_outputs import CausalLMOutputWithPast

from .collator import COUNTERFACTUAL_PASSES, CFTCollator
from .loss import WEIGHTINGS, cft_loss

METHODS = ("sft", "cft")
# transformers >= 5.x renamed `past_key_values` to `cache` (input and output).
CACHE_KWARG = (
    "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
)


@dataclass
class CFTConfig(TrainingArguments):
    """TrainingArguments plus the CFT fields."""

    method: str = field(default="cft", metadata={"help": "sft (BIGRec) or cft"})
    alpha: float = field(default=0.1, metadata={"help": "weight of the counterfactual loss"})
    beta: float = field(default=0.25, metadata={"help": "token weight of the last response token"})
    weighting: str = field(default="linear", metadata={"help": "token weighting: linear or none"})
    weight_rec_loss: bool = field(
        default=True, metadata={"help": "apply the token weights to the recommendation loss too"}
    )
    counterfactual_style: str = field(
        default="remove", metadata={"help": "remove the history block, or a placeholder"}
    )
    counterfactual_pass: str = field(
        default="auto",
        metadata={"help": "auto|shared_prefix|separate|padded (padded: the reference's cost)"},
    )
    template: str = field(default="alpaca", metadata={"help": "prompt template: alpaca or chat"})
    max_history: int = field(default=10, metadata={"help": "history items per prompt"})
    max_prompt_tokens: int | None = field(
        default=None, metadata={"help": "drop the oldest history items above this many tokens"}
    )
    remove_unused_columns: bool = False  # the batches carry counterfactual inputs

    def __post_init__(self):
        super().__post_init__()
        for name, value, allowed in (
            ("method", self.method, METHODS),
            ("weighting", self.weighting, WEIGHTINGS),
            ("counterfactual_pass", self.counterfactual_pass, COUNTERFACTUAL_PASSES),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


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
    kwargs = {CACHE_KWARG: cache, "use_cache": cache is not None} if cache is not None else {}
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=width,
        **kwargs,
    )
    return output.logits


def shared_prefix_cache(model, prefix_ids, batch_size: int):
    """Run the shared counterfactual prefix [1, P] once (with gradient); KV cache over B rows."""
    output = model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1)
    cache = getattr(output, CACHE_KWARG)
    cache.batch_repeat_interleave(batch_size)  # differentiable copy: [1, H, P, D] -> [B, H, P, D]
    return cache


def counterfactual_logits(model, batch, width: int):
    """Counterfactual logits [B, width, V] aligned with the batch's labels."""
    cache = None
    if "cf_prefix_ids" in batch:
        cache = shared_prefix_cache(model, batch["cf_prefix_ids"], batch["cf_input_ids"].shape[0])
    return response_logits(
        model, batch["cf_input_ids"], batch["cf_attention_mask"], width, cache=cache
    )


def batch_loss(model, batch, args: CFTConfig, counterfactual: bool = True):
    """The CFT (or sft) loss of one collated batch: a CFTLoss."""
    labels = batch["labels"]  # [B, R]
    factual = response_logits(model, batch["input_ids"], batch["attention_mask"], labels.shape[1])
    counter = None
    if counterfactual and args.method == "cft":
        counter = counterfactual_logits(model, batch, labels.shape[1])
    return cft_loss(
        factual,
        counter,
        labels,
        alpha=args.alpha,
        beta=args.beta,
        weighting=args.weighting,
        weight_rec_loss=args.weight_rec_loss,
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
        # Our loss is a per-batch mean: let Trainer divide it by the accumulation steps.
        self.loss_is_scaled_for_ga = False
        self._parts: dict[str, list[float]] = {"rec": [], "cf": []}
        self.tokens_seen = 0
        self.train_seconds = 0.0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = batch_loss(model, inputs, self.args, counterfactual=model.training)
        if model.training:
            self._parts["rec"].append(loss.rec.detach().item())
            self._parts["cf"].append(loss.cf.detach().item())
            self.tokens_seen += batch_tokens(inputs, self.args.method)
        return (loss.total, None) if return_outputs else loss.total

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Validation: the recommendation loss only."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = batch_loss(model, inputs, self.args, counterfactual=False)
        return loss.total.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._parts["rec"]:
            for name, values in self._parts.items():
                logs[name] = round(sum(values) / len(values), 6)
                values.clear()
        super().log(logs, start_time)

    def train(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return super().train(*args, **kwargs)
        finally:
            self.train_seconds += time.perf_counter() - start
