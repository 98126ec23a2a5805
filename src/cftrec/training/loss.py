"""The counterfactual fine-tuning (CFT) loss as pure tensor functions.

Inputs are aligned on response positions: logits[b, t] predicts labels[b, t]; labels are -100
where t is not a response token. With w_t the token weights (`token_weights`):

    rec   = sum_t w_t * CE(z_f[t], y_t)          / sum_t w_t      (BIGRec loss)
    cf    = sum_t w_t * CE(z_f[t] - z_c[t], y_t) / sum_t w_t      (fit the label from the effect)
    total = rec + alpha * cf

The sums run over the batch. When one optimizer step is split into several batches (gradient
accumulation, several processes), each batch divides its sums by the denominators of the whole
step (`loss_denominators` summed over its batches): the parts then add up to the loss of the
whole step, however it is split.

The effect of the history on token t is the difference of raw logits e_t = z_f - z_c.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .settings import DEFAULT_ALPHA, DEFAULT_BETA, WEIGHTINGS

IGNORE_INDEX = -100


@dataclass
class CFTLoss:
    """Scalar tensors: `total` (to differentiate), `rec` and `cf` (its parts, for logging)."""

    total: torch.Tensor
    rec: torch.Tensor
    cf: torch.Tensor


def token_weights(labels: torch.Tensor, beta: float = DEFAULT_BETA, weighting: str = "linear"):
    """Per-token weights [B, T], 0 outside the response.

    "linear": 1 at a row's first response token falling linearly to `beta` at its last
    (1 when the row has a single response token); "none": 1 on every response token.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, not {weighting!r}")
    mask = (labels != IGNORE_INDEX).float()  # [B, T]
    if weighting == "none":
        return mask
    index = torch.cumsum(mask, dim=1) - 1  # [B, T] 0-based position within the response
    length = mask.sum(dim=1, keepdim=True)  # [B, 1]
    slope = (1.0 - beta) / (length - 1).clamp(min=1)  # rows of length 1 get weight 1
    return (1.0 - index * slope) * mask


def _loss_weights(labels, beta, weighting, weight_rec_loss) -> tuple[torch.Tensor, torch.Tensor]:
    """Token weights [B, T] of the `rec` and the `cf` sums."""
    weights = token_weights(labels, beta, weighting)
    return (weights if weight_rec_loss else (labels != IGNORE_INDEX).float()), weights


def loss_denominators(
    labels: torch.Tensor,
    beta: float = DEFAULT_BETA,
    weighting: str = "linear",
    weight_rec_loss=True,
) -> torch.Tensor:
    """[2]: what the `rec` and `cf` sums of these labels [B, T] are divided by (float32)."""
    rec_weights, cf_weights = _loss_weights(labels, beta, weighting, weight_rec_loss)
    return torch.stack([rec_weights.sum(), cf_weights.sum()])


def cft_loss(
    factual_logits: torch.Tensor,
    counterfactual_logits: torch.Tensor | None,
    labels: torch.Tensor,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    weighting: str = "linear",
    weight_rec_loss: bool = True,
    denominators: torch.Tensor | None = None,
) -> CFTLoss:
    """CFT loss from factual and counterfactual logits [B, T, V] and labels [B, T].

    `counterfactual_logits=None` gives the recommendation loss alone (cf = 0): the sft method
    and the validation loss. `weight_rec_loss=False` makes `rec` the plain mean cross-entropy.
    `denominators` [2] (rec, cf): those of the whole optimizer step this batch is part of
    (default: this batch's own, `loss_denominators(labels, ...)`).
    """
    rec_weights, cf_weights = _loss_weights(labels, beta, weighting, weight_rec_loss)  # [B, T]
    if denominators is None:
        denominators = torch.stack([rec_weights.sum(), cf_weights.sum()])
    response = labels != IGNORE_INDEX  # [B, T]
    targets = labels[response]  # [N] response tokens only: CE over the vocabulary is costly
    # Cross-entropy in float32 even for bfloat16 models (log-softmax over a large vocabulary).
    factual = factual_logits[response].float()  # [N, V]
    factual_ce = F.cross_entropy(factual, targets, reduction="none")  # [N]
    rec = (rec_weights[response] * factual_ce).sum() / denominators[0]
    if counterfactual_logits is None:
        cf = torch.zeros((), device=rec.device)
        return CFTLoss(total=rec, rec=rec, cf=cf)
    effect = factual - counterfactual_logits[response].float()  # [N, V]
    cf_ce = F.cross_entropy(effect, targets, reduction="none")  # [N]
    cf = (cf_weights[response] * cf_ce).sum() / denominators[1]
    return CFTLoss(total=rec + alpha * cf, rec=rec, cf=cf)
