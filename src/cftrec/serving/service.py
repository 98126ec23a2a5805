"""A loaded run ready to answer requests: shared by `cftrec recommend` and the HTTP server.

    service = RecommendService.load("runs/cft", method="beam", num_beams=10)
    item_ids = service.resolve(["Toy Story (1995)", "Heat (1995)"])
    service.recommend([item_ids], k=10)

Kept free of FastAPI so that the CLI's `recommend` starts without importing the web stack.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.dataset import DEFAULT_MAX_HISTORY, Catalog, close_titles, resolve_history
from ..errors import CftrecError
from ..recommendation import Recommendation
from ..runs import load_recommender, read_run_info

DECODING_METHODS = ("beam", "exhaustive", "grounding")


class RecommendService:
    """A recommender plus what the run says about it (kind, history window, decoding).

    `decoding` holds the LLM decoding options (method, num_beams); other run kinds ignore them.
    Histories longer than the run's `max_history` keep their most recent items, as in training.
    """

    def __init__(self, recommender, info: dict[str, Any], run_dir: str | Path, **decoding):
        self.recommender = recommender
        self.catalog: Catalog = recommender.catalog
        self.info = info
        self.run_dir = Path(run_dir)
        self.kind: str = info["kind"]
        self.max_history = int(info.get("max_history") or DEFAULT_MAX_HISTORY)
        if self.kind == "llm" and decoding.get("method", "beam") not in DECODING_METHODS:
            raise CftrecError(
                f"unknown decoding method '{decoding['method']}'; "
                f"use one of {', '.join(DECODING_METHODS)}"
            )
        self.decoding = decoding if self.kind == "llm" else {}
        self.loaded_at = time.time()

    @classmethod
    def load(cls, run_dir: str | Path, dtype: str | None = None, **decoding) -> RecommendService:
        """Load any run; `dtype` (float32/bfloat16/float16) applies to LLM runs only."""
        info = read_run_info(run_dir)
        options = {"dtype": dtype} if info["kind"] == "llm" and dtype else {}
        return cls(load_recommender(run_dir, **options), info, run_dir, **decoding)

    @property
    def model_name(self) -> str:
        """What /health and the CLI call the model: the base model of an LLM run, else the kind."""
        return str(self.info.get("base_model") or self.kind)

    @property
    def k_limit(self) -> int | None:
        """Beam search returns at most `num_beams` titles: the largest k it can honour."""
        if self.kind == "llm" and self.decoding.get("method", "beam") in ("beam", "grounding"):
            return int(self.decoding.get("num_beams", 10))
        return None

    def resolve(self, entries: Sequence[str], item_ids_only: bool = False) -> list[str]:
        """Typed titles or item ids -> item ids (CftrecError with close titles when unknown),
        cut to the run's history window (most recent items kept)."""
        if item_ids_only:
            for entry in entries:
                if entry not in self.catalog:
                    close = difflib.get_close_matches(entry, self.catalog.item_ids, n=3)
                    hint = f"; close ids: {', '.join(close)}" if close else ""
                    raise CftrecError(f"unknown item id {entry!r}{hint}")
            item_ids = list(entries)
        else:
            item_ids = resolve_history(self.catalog, list(entries))
        return item_ids[-self.max_history :] if item_ids else []

    def recommend(self, histories: list[list[str]], k: int) -> list[list[Recommendation]]:
        """Top-k per history of item ids (already resolved)."""
        return self.recommender.recommend(histories, k=k, **self.decoding)

    def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Catalogue titles matching `query`: case-insensitive substring matches first (shortest
        title first), then close fuzzy matches; each with its item ids."""
        needle = query.strip().lower()
        if not needle:
            return []
        found = sorted((t for t in self.catalog.titles if needle in t.lower()), key=len)[:limit]
        if len(found) < limit:
            lowered = {t.lower(): t for t in self.catalog.titles}
            fuzzy = difflib.get_close_matches(needle, list(lowered), n=limit, cutoff=0.6)
            found += [lowered[t] for t in fuzzy if lowered[t] not in found][: limit - len(found)]
        return [{"title": t, "item_ids": list(self.catalog.items_of_title[t])} for t in found]

    def close_titles(self, entry: str, n: int = 3) -> list[str]:
        """Suggestions for an unknown entry (the API's 422 detail, the same as the CLI's)."""
        return close_titles(self.catalog, entry, n)
