"""Training SASRec on a dataset's train interactions, and `cftrec baseline sasrec`'s run folder.

- Training windows: each user's train interactions in order, cut from the end into windows of
  `max_length` predictions, so long histories are used in full (the reference keeps only the
  last window per user).
- Loss: full-softmax cross-entropy over all items at every position (default), or the original
  binary cross-entropy with one uniformly sampled negative per position (`loss="bce"`).
- Early stopping on validation NDCG@10 (title level, by the evaluation's metrics,
  cftrec.evaluation.metrics); the best epoch's weights are kept.
- Training computes on a fixed number of CPU threads (`model.THREADS`): the same seed gives the
  same weights whatever the machine's thread count.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ...data.dataset import Dataset
from ...errors import CftrecError
from ...evaluation.metrics import mean_metrics
from ...files import atomic_directory, check_output, write_json
from ...runs.info import write_run_info
from .model import SASRec, SASRecConfig, fixed_threads, length_batches, pad, torch_device
from .recommender import CONFIG_FILE, WEIGHTS_FILE, SASRecRecommender

METRICS_FILE = "metrics.jsonl"
COMMAND = "baseline sasrec"  # what the output marker names
BUCKET_BATCHES = 50  # batches whose windows are sorted by length together


def title_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target under a stable descending sort (ties: lower index first):
    `cftrec.evaluation.metrics.target_rank` of the target in the full ranked list, without
    building the list. scores [B, T], targets [B] -> [B]."""
    target_scores = scores.gather(1, targets[:, None])  # [B, 1]
    before = torch.arange(scores.shape[1], device=scores.device)[None, :] < targets[:, None]
    return ((scores > target_scores) | ((scores == target_scores) & before)).sum(1) + 1


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
        ranks += title_ranks(scores, targets).tolist()
    return mean_metrics(ranks, (k,))


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
    inputs = pad([w[:-1] for w in window_batch], device)  # [B, L]
    targets = pad([w[1:] for w in window_batch], device)  # [B, L], 0 = no target
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
    recommender: SASRecRecommender  # the best epoch's model, as trained
    metrics: list[dict]  # one line per epoch
    best_epoch: int
    best_valid: dict[str, float]
    seconds: float
    stopped_early: bool


@fixed_threads()
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
    if max_history is not None and max_history < 1:
        raise CftrecError("max_history must be at least 1")
    config.validate()  # before any work, so bad options fail fast
    torch_device(device)
    check_output(out, COMMAND, (data,), overwrite)
    dataset = Dataset.load(data)
    result = fit_sasrec(dataset, config, device, max_history, log)
    return write_sasrec_run(out, data, dataset, result, overwrite)


def write_sasrec_run(
    out: str | Path, data: str | Path, dataset: Dataset, result: FitResult, overwrite: bool = False
) -> dict:
    """Write the run directory of a trained SASRec (atomically; `data`: the dataset folder, as
    the output marker names it). Returns run.json."""
    from safetensors.torch import save_file

    model = result.recommender.model
    config = model.config
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
