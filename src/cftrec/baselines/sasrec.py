"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) in PyTorch.

Model: item embeddings (scaled by sqrt(d)) + learned positions, causal pre-layer-norm
transformer blocks (self-attention + point-wise feed-forward, dropout, residuals), a final layer
norm; the output at position t scores every catalogue item by a dot product with the shared item
embeddings and predicts item t+1.

Choices worth knowing:
- Positions count from the first visible item, and sequences are right-padded. With causal
  attention, the output at position t then depends on items 0..t only, whatever follows or
  however the batch is padded (tested), and a history of length n at inference reads exactly
  like the first n items of a training window.
- Training windows: each user's train interactions in order, cut from the end into windows of
  `max_length` predictions, so long histories are used in full (the reference keeps only the
  last window per user).
- Loss: full-softmax cross-entropy over all items at every position (default), or the original
  binary cross-entropy with one uniformly sampled negative per position (`loss="bce"`).
- Scoring: a full softmax over items. Rankings use the best item of each distinct title (as the
  LLM evaluation works on titles); `title_log_probs` sums item probabilities per title (what D3
  guidance mixes in). History items are NOT excluded from the ranking, as for the LLM methods:
  the test target can be a repeat (re-purchases, shared titles), and excluding them would give
  the baseline information the LLM decoders do not use.
- Early stopping on validation NDCG@10 (title level, the evaluation's definition); the best
  epoch's weights are kept.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..data.dataset import Catalog, Dataset
from ..errors import CftrecError
from ..files import atomic_directory, check_output, read_json, write_json
from ..recommendation import Recommendation
from ..runs.info import load_run_catalog, read_run_info, write_run_info

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
COMMAND = "baseline sasrec"  # what the output marker names
LOSSES = ("ce", "bce")
BUCKET_BATCHES = 50  # batches whose windows are sorted by length together


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


def _pad(sequences: Sequence[Sequence[int]], device) -> torch.Tensor:
    """Right-pad index sequences with 0 -> [B, max len]."""
    width = max(len(s) for s in sequences)
    return torch.tensor([[*s, *[0] * (width - len(s))] for s in sequences], device=device)


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


def length_batches(sequences: Sequence[Sequence], batch_size: int) -> list[list[int]]:
    """Indices of `sequences` in batches of similar length (little padding), longest first."""
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


class SASRecRecommender:
    """A trained SASRec over a catalogue: `recommend`, `title_log_probs`, `title_scores`."""

    def __init__(
        self,
        model: SASRec,
        catalog: Catalog,
        max_history: int | None = None,
        batch_size: int = 256,
        device: str | torch.device = "cpu",
    ):
        if model.num_items != len(catalog):
            raise CftrecError(f"SASRec model has {model.num_items} items, catalogue {len(catalog)}")
        self.model = model.to(device).eval()
        self.catalog = catalog
        self.device = torch.device(device)
        self.max_history = min(max_history or model.config.max_length, model.config.max_length)
        self.batch_size = batch_size
        self.index_of_item = {item: i + 1 for i, item in enumerate(catalog.item_ids)}
        # title index of every item column [num_items]
        self.item_title = torch.tensor(
            [catalog.index_of_title[catalog.title_of[item]] for item in catalog.item_ids],
            device=self.device,
        )

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        device: str | None = None,
        batch_size: int = 256,
        **decoding_options,
    ) -> SASRecRecommender:
        """Load a `cftrec baseline sasrec` run. LLM decoding options do not apply and are
        ignored, so every run kind can be loaded the same way."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        run_dir = Path(run_dir)
        info = read_run_info(run_dir)
        if info["kind"] != "sasrec":
            raise CftrecError(f"{run_dir}: not a SASRec run")
        device = torch_device(device)
        catalog = load_run_catalog(run_dir)
        config_path, weights_path = run_dir / CONFIG_FILE, run_dir / WEIGHTS_FILE
        stored = read_json(config_path, expect=dict)
        try:
            config = SASRecConfig(**{f.name: stored[f.name] for f in fields(SASRecConfig)})
            config.validate()
            if stored["num_items"] != len(catalog):
                raise CftrecError(f"num_items {stored['num_items']!r}, catalogue {len(catalog)}")
        except KeyError as error:
            raise CftrecError(f"{config_path}: missing key {error.args[0]!r}") from None
        except (CftrecError, TypeError, ValueError) as error:
            raise CftrecError(f"{config_path}: bad SASRec config ({error})") from None
        model = SASRec(len(catalog), config)
        try:
            model.load_state_dict(load_file(weights_path))
        except (OSError, SafetensorError, RuntimeError) as error:
            problem = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CftrecError(
                f"{weights_path}: not SASRec weights matching {CONFIG_FILE} ({problem})"
            ) from None
        return cls(model, catalog, info.get("max_history"), batch_size, device)

    def _indices(self, histories: Sequence[Sequence[str]]) -> list[list[int]]:
        indexed = []
        for history in histories:
            if not history:
                raise CftrecError("SASRec needs at least one history item")
            try:
                ids = [self.index_of_item[item] for item in history]
            except KeyError as error:
                raise CftrecError(
                    f"unknown item id {error.args[0]!r}: not in the catalogue"
                ) from None
            indexed.append(ids[-self.max_history :])
        return indexed

    @torch.no_grad()
    def item_log_probs(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """Full softmax over the catalogue items: [B, num_items], column i = catalog.item_ids[i]."""
        indexed = self._indices(histories)
        result = torch.empty(len(indexed), self.model.num_items, device=self.device)
        for rows in length_batches(indexed, self.batch_size):
            chunk = [indexed[row] for row in rows]
            hidden = self.model(_pad(chunk, self.device))  # [b, L, d]
            last = torch.tensor([len(s) - 1 for s in chunk], device=self.device)
            final = hidden[torch.arange(len(chunk), device=self.device), last]  # [b, d]
            result[torch.tensor(rows, device=self.device)] = (
                self.model.item_logits(final).float().log_softmax(-1)
            )
        return result

    def title_scores(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """Ranking scores [B, T]: log-probability of the best item of each title."""
        item_scores = self.item_log_probs(histories)
        scores = item_scores.new_full((len(histories), len(self.catalog.titles)), -math.inf)
        index = self.item_title.expand_as(item_scores)
        return scores.scatter_reduce(1, index, item_scores, reduce="amax")

    def title_log_probs(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """log of the item probabilities summed per title: [B, T] in `catalog.titles` order."""
        item_scores = self.item_log_probs(histories).double()
        index = self.item_title.expand_as(item_scores)
        shape = (len(histories), len(self.catalog.titles))
        # log-sum-exp per title, shifted by each title's max for stability
        peak = item_scores.new_full(shape, -math.inf).scatter_reduce(1, index, item_scores, "amax")
        summed = torch.zeros_like(peak).scatter_add(
            1, index, (item_scores - peak.gather(1, index)).exp()
        )
        return (summed.log() + peak).float()

    def add_items(self, items) -> None:
        """Refused: SASRec scores items by embeddings learnt in training; a new item has none."""
        from ..data.catalog_changes import CatalogChangeUnsupported

        raise CatalogChangeUnsupported("SASRec")

    def recommend(
        self, histories: list[list[str]], k: int = 10, **decoding_options
    ) -> list[list[Recommendation]]:
        """The k best distinct titles per history (best first; ties in catalogue title order)."""
        scores = self.title_scores(histories).cpu()
        order = scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
        titles, items_of = self.catalog.titles, self.catalog.items_of_title
        return [
            [
                Recommendation(titles[t], tuple(items_of[titles[t]]), float(row_scores[t]))
                for t in row.tolist()
            ]
            for row, row_scores in zip(order, scores, strict=True)
        ]


def title_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target title under a stable descending sort (ties: lower index first).
    scores [B, T], targets [B] -> [B]."""
    target_scores = scores.gather(1, targets[:, None])  # [B, 1]
    before = torch.arange(scores.shape[1], device=scores.device)[None, :] < targets[:, None]
    return ((scores > target_scores) | ((scores == target_scores) & before)).sum(1)


def ndcg_hr_at(ranks: torch.Tensor, k: int) -> tuple[float, float]:
    """NDCG@k and HR@k with one relevant title per case, from 0-based ranks."""
    hit = ranks < k
    gain = torch.where(
        hit, 1.0 / torch.log2(ranks.double() + 2), torch.zeros((), dtype=torch.double)
    )
    return gain.mean().item(), hit.double().mean().item()


def evaluate_titles(recommender: SASRecRecommender, samples, k: int = 10) -> dict[str, float]:
    """Full-ranking NDCG@k / HR@k at title level over `samples` (Dataset.samples items)."""
    catalog = recommender.catalog
    ranks = []
    for start in range(0, len(samples), recommender.batch_size):
        chunk = samples[start : start + recommender.batch_size]
        scores = recommender.title_scores([s.history for s in chunk])
        targets = torch.tensor(
            [catalog.index_of_title[catalog.title_of[s.target]] for s in chunk],
            device=scores.device,
        )
        ranks.append(title_ranks(scores, targets).cpu())
    ndcg, hr = ndcg_hr_at(torch.cat(ranks), k)
    return {f"ndcg@{k}": ndcg, f"hr@{k}": hr}


def training_windows(sequences: Sequence[Sequence[int]], max_length: int) -> list[list[int]]:
    """Cut each sequence from its end into windows of at most max_length + 1 items (inputs plus
    next-item targets); consecutive windows overlap by one item so every item after the first
    is a target exactly once."""
    windows = []
    for sequence in sequences:
        end = len(sequence)
        while end >= 2:
            windows.append(list(sequence[max(0, end - max_length - 1) : end]))
            end -= max_length
    return windows


def _batch_loss(model: SASRec, window_batch: list[list[int]], loss: str, device) -> torch.Tensor:
    inputs = _pad([w[:-1] for w in window_batch], device)  # [B, L]
    targets = _pad([w[1:] for w in window_batch], device)  # [B, L], 0 = no target
    hidden = model(inputs)[targets > 0]  # [P, d] real positions only
    positives = targets[targets > 0] - 1  # [P] item columns
    if loss == "ce":
        return F.cross_entropy(model.item_logits(hidden), positives)
    # BCE with one uniform negative per position, resampled away from the positive
    offset = torch.randint(1, model.num_items, positives.shape, device=device)
    negatives = (positives + offset) % model.num_items
    items = model.item_embedding.weight[1:]
    positive_logits = (hidden * items[positives]).sum(-1)
    negative_logits = (hidden * items[negatives]).sum(-1)
    return F.binary_cross_entropy_with_logits(
        positive_logits, torch.ones_like(positive_logits)
    ) + F.binary_cross_entropy_with_logits(negative_logits, torch.zeros_like(negative_logits))


@dataclass
class FitResult:
    recommender: SASRecRecommender
    metrics: list[dict]  # one line per epoch
    best_epoch: int
    best_valid: dict[str, float]
    seconds: float
    stopped_early: bool


def fit_sasrec(
    dataset: Dataset,
    config: SASRecConfig,
    device: str | None = None,
    max_history: int | None = None,
    log: Callable[[str], None] | None = None,
) -> FitResult:
    """Train SASRec on the dataset's train interactions with early stopping on validation
    NDCG@10; returns the best epoch's model wrapped as a recommender."""
    from tqdm.auto import tqdm

    config.validate()
    device = torch_device(device)
    catalog = dataset.catalog
    torch.manual_seed(config.seed)
    shuffler = random.Random(config.seed)
    model = SASRec(len(catalog), config).to(device)
    recommender = SASRecRecommender(model, catalog, max_history, config.batch_size, device)

    train_sequences = [
        [
            recommender.index_of_item[item]
            for item, split in zip(items, splits, strict=True)
            if split == "train"
        ]
        for items, _, splits in dataset.user_sequences.values()
    ]
    windows = training_windows(train_sequences, config.max_length)
    if not windows:
        raise CftrecError(
            f"{dataset.path}: no user has two train interactions; SASRec cannot train"
        )
    valid = dataset.samples("valid", recommender.max_history)
    if config.max_eval_samples is not None and len(valid) > config.max_eval_samples:
        valid = random.Random(config.seed).sample(valid, config.max_eval_samples)
    if not valid and log:
        log("no validation samples: training for all epochs, keeping the last one")

    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=config.learning_rate,
        betas=(0.9, 0.98),
        weight_decay=config.weight_decay,
    )
    metrics: list[dict] = []
    best_state, best_epoch, best_valid, stale = None, 0, {"ndcg@10": -1.0}, 0
    started = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc="SASRec", unit="epoch", disable=log is None)
    for epoch in bar:
        model.train()
        # batches of similar-length windows in random order: little padding, still shuffled
        shuffler.shuffle(windows)
        span = BUCKET_BATCHES * config.batch_size
        batches = [
            [windows[start + i] for i in rows]
            for start in range(0, len(windows), span)
            for rows in length_batches(windows[start : start + span], config.batch_size)
        ]
        shuffler.shuffle(batches)
        total = 0.0
        for batch in batches:
            loss = _batch_loss(model, batch, config.loss, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        model.eval()
        line = {
            "epoch": epoch,
            "loss": total / len(batches),
            "seconds": time.perf_counter() - started,
        }
        if valid:
            line.update({f"valid_{k}": v for k, v in evaluate_titles(recommender, valid).items()})
        metrics.append(line)
        score = line.get("valid_ndcg@10", 0.0)
        if not valid or score > best_valid["ndcg@10"]:
            best_state = copy.deepcopy(model.state_dict())
            best_epoch, stale = epoch, 0
            best_valid = {
                k.removeprefix("valid_"): v for k, v in line.items() if k.startswith("valid_")
            }
        else:
            stale += 1
        bar.set_postfix(loss=f"{line['loss']:.4f}", ndcg10=f"{score:.4f}", best=best_epoch)
        if valid and stale >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        recommender,
        metrics,
        best_epoch,
        best_valid,
        time.perf_counter() - started,
        stopped_early=len(metrics) < config.epochs,
    )


def train_sasrec(
    data: str | Path,
    out: str | Path,
    config: SASRecConfig,
    device: str | None = None,
    max_history: int | None = None,
    log: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """`cftrec baseline sasrec`: train and write the run directory (atomically). Returns run.json.
    `overwrite`: see cftrec.io.check_output."""
    from safetensors.torch import save_file

    if max_history is not None and max_history < 1:
        raise CftrecError("max_history must be at least 1")
    config.validate()  # before any work, so bad options fail fast
    torch_device(device)
    check_output(out, COMMAND, (data,), overwrite)
    dataset = Dataset.load(data)
    result = fit_sasrec(dataset, config, device, max_history, log)
    model = result.recommender.model
    info = {
        "kind": "sasrec",
        "max_history": result.recommender.max_history,
        **asdict(config),
        "num_items": model.num_items,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.metrics),
        "stopped_early": result.stopped_early,
        "best_valid": result.best_valid,
        "train_seconds": round(result.seconds, 2),
        "device": str(result.recommender.device),
    }
    with atomic_directory(out, COMMAND, (data,), overwrite) as tmp:
        state = {
            name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
        }
        save_file(state, tmp / WEIGHTS_FILE)
        write_json(tmp / CONFIG_FILE, {**asdict(config), "num_items": model.num_items})
        (tmp / METRICS_FILE).write_text(
            "".join(json.dumps(line) + "\n" for line in result.metrics), encoding="utf-8"
        )
        write_run_info(tmp, info, dataset)
    return info
