"""The SASRec torch module, its settings and what turns item sequences into its inputs.

Model: item embeddings (scaled by sqrt(d)) + learned positions, causal pre-layer-norm
transformer blocks (self-attention + point-wise feed-forward, dropout, residuals), a final layer
norm; the output at position t scores every catalogue item by a dot product with the shared item
embeddings and predicts item t+1.

Positions count from the first visible item, and sequences are right-padded. With causal
attention, the output at position t then depends on items 0..t only, whatever follows or however
the batch is padded (tested), and a history of length n at inference reads exactly like the
first n items of a training window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import CftrecError

LOSSES = ("ce", "bce")
# SASRec computes on one CPU thread: how torch splits a float sum between threads changes its
# rounding, so any other count would make the weights and scores depend on the machine's cores.
# The models are small; one thread costs little (see `fixed_threads`).
THREADS = 1


@dataclass
class SASRecConfig:
    hidden_size: int = 64
    num_blocks: int = 2
    num_heads: int = 1
    dropout: float = 0.2
    max_length: int = 50  # most recent items the model reads
    loss: str = "ce"  # "ce": full softmax; "bce": one sampled negative per position
    epochs: int = 50
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 5  # epochs without a better validation NDCG@10 before stopping
    max_eval_samples: int | None = 5000  # validation cases per epoch (seeded subset); None = all
    seed: int = 42

    def validate(self) -> None:
        positive = ("hidden_size", "num_blocks", "num_heads", "max_length", "epochs", "batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise CftrecError(f"SASRec {name} must be at least 1")
        if self.hidden_size % self.num_heads:
            raise CftrecError("SASRec hidden_size must be divisible by num_heads")
        if not 0 <= self.dropout < 1:
            raise CftrecError("SASRec dropout must be in [0, 1)")
        if self.loss not in LOSSES:
            raise CftrecError(f"unknown SASRec loss {self.loss!r}; use one of {', '.join(LOSSES)}")
        if not self.learning_rate > 0 or self.patience < 1:
            raise CftrecError("SASRec learning_rate must be > 0 and patience >= 1")
        if not self.weight_decay >= 0:
            raise CftrecError("SASRec weight_decay must be at least 0")
        if self.max_eval_samples is not None and self.max_eval_samples < 1:
            raise CftrecError("SASRec max_eval_samples must be at least 1")


class SASRecBlock(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        d = config.hidden_size
        self.attention_norm = nn.LayerNorm(d)
        self.attention = nn.MultiheadAttention(
            d, config.num_heads, dropout=config.dropout, batch_first=True
        )
        self.feed_forward_norm = nn.LayerNorm(d)
        self.feed_forward = nn.Sequential(
            nn.Linear(d, d), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(d, d)
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        # x [B, L, d]; causal_mask [L, L], True where attention is forbidden (the future)
        normed = self.attention_norm(x)
        attended, _ = self.attention(
            normed, normed, normed, attn_mask=causal_mask, need_weights=False
        )
        x = x + self.dropout(attended)
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


class SASRec(nn.Module):
    """Items are indexed 1..num_items (catalogue item order); 0 is padding."""

    def __init__(self, num_items: int, config: SASRecConfig):
        super().__init__()
        self.num_items = num_items
        self.config = config
        d = config.hidden_size
        self.item_embedding = nn.Embedding(num_items + 1, d, padding_idx=0)
        self.position_embedding = nn.Embedding(config.max_length, d)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(SASRecBlock(config) for _ in range(config.num_blocks))
        self.final_norm = nn.LayerNorm(d)
        for name, parameter in self.named_parameters():  # as the reference: Xavier for matrices
            if parameter.dim() > 1 and "norm" not in name:
                nn.init.xavier_normal_(parameter)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """items [B, L] right-padded with 0 (L <= max_length) -> hidden states [B, L, d]."""
        length = items.shape[1]
        positions = torch.arange(length, device=items.device)
        x = self.item_embedding(items) * math.sqrt(self.config.hidden_size)
        x = self.embedding_dropout(x + self.position_embedding(positions))
        causal_mask = torch.ones(length, length, dtype=torch.bool, device=items.device).triu(1)
        for block in self.blocks:
            x = block(x, causal_mask)
        return self.final_norm(x)

    def item_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., d] -> scores of items 1..num_items [..., num_items] (column i = item i+1)."""
        return hidden @ self.item_embedding.weight[1:].T


def pad(sequences: Sequence[Sequence[int]], device) -> torch.Tensor:
    """Right-pad index sequences with 0 -> [B, max len]."""
    width = max(len(s) for s in sequences)
    return torch.tensor([[*s, *[0] * (width - len(s))] for s in sequences], device=device)


def length_batches(sequences: Sequence[Sequence], batch_size: int) -> list[list[int]]:
    """Indices of `sequences` in batches of similar length (little padding), longest first."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def torch_device(name: str | None) -> torch.device:
    """The torch device for `--device` (None: cuda when available, else cpu); a device torch
    does not know, or one this machine lacks, is a CftrecError."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise CftrecError(f"--device {name!r}: not a torch device (cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CftrecError(f"--device {name}: no CUDA device on this machine")
    if device.type not in ("cpu", "cuda"):
        raise CftrecError(f"--device {name}: SASRec runs on cpu or cuda")
    return device


@contextmanager
def fixed_threads():
    """Run torch on `THREADS` CPU threads inside the block (also as a decorator), then give the
    caller back its own count: the same SASRec results whatever `--threads` or the machine say."""
    callers = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(callers)
