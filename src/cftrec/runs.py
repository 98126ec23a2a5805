"""Run directories: what `cftrec train` and `cftrec baseline` write, and how to load them.

Every run directory has `run.json` with at least:
  kind              "llm" | "sasrec" | "pop"
  data_fingerprint  fingerprint of the dataset it was trained on
  data_path         where that dataset was (informational)
and `items.parquet`, a copy of the catalogue, so a run can recommend without the dataset.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from .data.dataset import ITEMS_FILE, Catalog, Dataset
from .errors import CftrecError
from .io import read_json, write_json

RUN_FILE = "run.json"
RUN_KINDS = ("llm", "sasrec", "pop")


def write_run_info(run_dir: str | Path, info: dict[str, Any], dataset: Dataset) -> None:
    """Write run.json and the catalogue copy into a (temporary) run directory."""
    run_dir = Path(run_dir)
    if info.get("kind") not in RUN_KINDS:
        raise ValueError(f"run kind must be one of {RUN_KINDS}")
    info = {**info, "data_fingerprint": dataset.fingerprint, "data_path": str(dataset.path)}
    shutil.copyfile(dataset.path / ITEMS_FILE, run_dir / ITEMS_FILE)
    write_json(run_dir / RUN_FILE, info)


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise CftrecError(f"{run_dir}: not a cftrec run directory (missing {RUN_FILE})")
    info = read_json(path)
    if info.get("kind") not in RUN_KINDS:
        raise CftrecError(f"{path}: unknown run kind {info.get('kind')!r}")
    return info


def load_run_catalog(run_dir: str | Path) -> Catalog:
    import pandas as pd

    items = pd.read_parquet(Path(run_dir) / ITEMS_FILE)
    return Catalog(items["item_id"].tolist(), items["title"].tolist())


def load_recommender(run_dir: str | Path, **options):
    """Load any run as an object with `.catalog` and
    `.recommend(histories: list[list[item_id]], k=10, **options) -> list[list[Recommendation]]`.
    """
    kind = read_run_info(run_dir)["kind"]
    if kind == "llm":
        from .decoding.recommender import Recommender

        return Recommender.from_run(run_dir, **options)
    if kind == "sasrec":
        from .baselines.sasrec import SASRecRecommender

        return SASRecRecommender.from_run(run_dir, **options)
    from .baselines.popularity import PopularityRecommender

    return PopularityRecommender.from_run(run_dir, **options)
