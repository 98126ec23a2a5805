"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018) in PyTorch.

model.py        the torch module, its settings (SASRecConfig) and its inputs
training.py     the training loop, validation, early stopping; `cftrec baseline sasrec`'s run
recommender.py  SASRecRecommender: a run loaded back, `recommend`, `title_log_probs`

Training and scoring compute on a fixed number of CPU threads (model.THREADS), so results do
not depend on the machine's thread count.
"""

from .model import SASRec, SASRecConfig, length_batches
from .recommender import SASRecRecommender
from .training import (
    FitResult,
    evaluate_titles,
    fit_sasrec,
    title_ranks,
    train_sasrec,
    training_windows,
    write_sasrec_run,
)

__all__ = [
    "FitResult",
    "SASRec",
    "SASRecConfig",
    "SASRecRecommender",
    "evaluate_titles",
    "fit_sasrec",
    "length_batches",
    "title_ranks",
    "train_sasrec",
    "training_windows",
    "write_sasrec_run",
]
