"""run.json: what `cftrec train` and `cftrec baseline` write into every run folder.

Every run directory has `run.json` with at least:
  kind              "llm" | "sasrec" | "pop"
  data_fingerprint  fingerprint of the dataset it was trained on
  data_path         where that dataset was (informational)
(an LLM run also `prompt`, its prompt encoder settings, and `lora`, with `base_model` when set)
and `items.parquet`, a copy of the catalogue, so a run can recommend without the dataset.
Loading a run as a recommender is `cftrec.runs.load_recommender`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..data.dataset import ITEMS_FILE, Catalog, Dataset
from ..errors import CftrecError
from ..files import file_digest, read_json, read_parquet, write_json
from .registry import RUN_KINDS

RUN_FILE = "run.json"


def write_run_info(run_dir: str | Path, info: dict[str, Any], dataset: Dataset) -> None:
    """Write run.json and the catalogue copy into a (temporary) run directory."""
    run_dir = Path(run_dir)
    if info.get("kind") not in RUN_KINDS:
        raise ValueError(f"run kind must be one of {tuple(RUN_KINDS)}")
    info = {**info, "data_fingerprint": dataset.fingerprint, "data_path": str(dataset.path)}
    shutil.copyfile(dataset.path / ITEMS_FILE, run_dir / ITEMS_FILE)
    write_json(run_dir / RUN_FILE, info)


def run_json_digest(run_dir: str | Path) -> str:
    """SHA-256 of a run's run.json: a run retrained into the same folder differs."""
    return file_digest(Path(run_dir) / RUN_FILE)


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """run.json of a run directory, checked: a CftrecError names the file and the problem."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise CftrecError(f"{run_dir}: not a cftrec run directory (missing {RUN_FILE})")
    info = read_json(path, expect=dict)
    kind = info.get("kind")
    if kind not in RUN_KINDS:
        raise CftrecError(f"{path}: unknown run kind {kind!r}; expected one of {tuple(RUN_KINDS)}")
    missing = [k for k in ("data_fingerprint", *RUN_KINDS[kind].required_keys) if k not in info]
    if kind == "llm" and info.get("lora") and "base_model" not in info:
        missing.append("base_model")
    if missing:
        raise CftrecError(f"{path}: missing key(s) {', '.join(missing)}")
    if kind == "llm" and not isinstance(info["prompt"], dict):
        raise CftrecError(f"{path}: 'prompt' must be an object of prompt settings")
    return info


def load_run_catalog(run_dir: str | Path) -> Catalog:
    items = read_parquet(Path(run_dir) / ITEMS_FILE, columns=("item_id", "title"))
    return Catalog(items["item_id"].astype(str).tolist(), items["title"].astype(str).tolist())
