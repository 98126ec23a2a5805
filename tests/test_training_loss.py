"""cft_loss and token_weights against an independent per-token loop implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cftrec import CFTLoss, cft_loss, token_weights


def _loop_loss(factual, counterfactual, labels, alpha, beta, weighting, weight_rec_loss):
    """Straight from METHOD.md, one token at a time, in float64 Python arithmetic."""
    rec_sum = cf_sum = weight_sum = plain_sum = 0.0
    count = 0
    for b in range(labels.shape[0]):
        positions = [t for t in range(labels.shape[1]) if labels[b, t] != -100]
        for k, t in enumerate(positions):
            if weighting == "none" or len(positions) == 1:
                w = 1.0
            else:
                w = 1 - k * (1 - beta) / (len(positions) - 1)
            y = int(labels[b, t])
            f = [float(v) for v in factual[b, t]]
            e = [
                float(v) - float(c)
                for v, c in zip(factual[b, t], counterfactual[b, t], strict=True)
            ]

            def ce(z, y=y):
                m = max(z)
                return m + math.log(sum(math.exp(v - m) for v in z)) - z[y]

            rec_sum += w * ce(f)
            plain_sum += ce(f)
            cf_sum += w * ce(e)
            weight_sum += w
            count += 1
    rec = rec_sum / weight_sum if weight_rec_loss else plain_sum / count
    cf = cf_sum / weight_sum
    return rec + alpha * cf, rec, cf


def _random_inputs(seed=0, batch=3, length=7, vocab=11):
    generator = torch.Generator().manual_seed(seed)
    factual = torch.randn(batch, length, vocab, generator=generator)
    counterfactual = torch.randn(batch, length, vocab, generator=generator)
    labels = torch.randint(0, vocab, (batch, length), generator=generator)
    labels[0, :2] = -100  # response in the middle
    labels[0, 6] = -100
    labels[1, :6] = -100  # a one-token response
    labels[2, 5:] = -100  # padding at the end
    return factual, counterfactual, labels


@pytest.mark.parametrize("weighting", ["linear", "none"])
@pytest.mark.parametrize("weight_rec_loss", [True, False])
@pytest.mark.parametrize("alpha,beta", [(0.1, 0.25), (0.3, 0.9), (0.0, 0.5)])
def test_cft_loss_matches_per_token_loop(weighting, weight_rec_loss, alpha, beta):
    factual, counterfactual, labels = _random_inputs()
    loss = cft_loss(factual, counterfactual, labels, alpha, beta, weighting, weight_rec_loss)
    assert isinstance(loss, CFTLoss)
    expected = _loop_loss(factual, counterfactual, labels, alpha, beta, weighting, weight_rec_loss)
    for got, want in zip((loss.total, loss.rec, loss.cf), expected, strict=True):
        assert got.item() == pytest.approx(want, rel=1e-5)


def test_token_weights_by_hand():
    labels = torch.tensor([[-100, 5, 6, 7, -100], [-100, -100, -100, 4, -100]])
    expected = torch.tensor([[0, 1.0, 0.625, 0.25, 0], [0, 0, 0, 1.0, 0]])
    torch.testing.assert_close(token_weights(labels, beta=0.25), expected)
    torch.testing.assert_close(token_weights(labels, weighting="none"), (labels != -100).float())
    with pytest.raises(ValueError):
        token_weights(labels, weighting="cubic")


def test_gradients_reach_both_logits():
    factual, counterfactual, labels = _random_inputs(seed=1)
    factual.requires_grad_(True)
    counterfactual.requires_grad_(True)
    cft_loss(factual, counterfactual, labels).total.backward()
    response = labels != -100
    for grad in (factual.grad, counterfactual.grad):
        assert grad[response].abs().sum() > 0
        assert grad[~response].abs().sum() == 0  # nothing flows from non-response positions


def test_alpha_zero_without_weighting_is_plain_cross_entropy():
    factual, counterfactual, labels = _random_inputs(seed=2)
    loss = cft_loss(factual, counterfactual, labels, alpha=0.0, weighting="none")
    plain = F.cross_entropy(factual.reshape(-1, factual.shape[-1]), labels.reshape(-1))
    torch.testing.assert_close(loss.total, plain)
    rec_only = cft_loss(factual, None, labels, weighting="none")
    torch.testing.assert_close(rec_only.total, plain)
    assert rec_only.cf.item() == 0.0
