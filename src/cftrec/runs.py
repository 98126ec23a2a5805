"""Any run directory (see cftrec.run_info) loaded as a recommender, whatever its kind."""

from __future__ import annotations

from pathlib import Path

from .baselines.popularity import PopularityRecommender
from .baselines.sasrec import SASRecRecommender
from .decoding.recommender import Recommender
from .run_info import read_run_info

LOADERS = {"llm": Recommender, "sasrec": SASRecRecommender, "pop": PopularityRecommender}


def load_recommender(run_dir: str | Path, **options):
    """Load any run as an object with `.catalog` and
    `.recommend(histories: list[list[item_id]], k=10, **options) -> list[list[Recommendation]]`.
    """
    return LOADERS[read_run_info(run_dir)["kind"]].from_run(run_dir, **options)
