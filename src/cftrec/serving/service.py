"""A loaded run ready to answer requests: shared by `cftrec recommend` and the HTTP server.

    service = RecommendService.load("runs/cft", method="beam", num_beams=10)
    item_ids = service.resolve(["Toy Story (1995)", "Heat (1995)"])
    service.recommend([item_ids], k=10)
    service.add_items([("b42", "Heat 2 (2026)")])   # LLM runs: recommendable at once

Catalogue changes made through a service are saved as an overlay beside the run
(`catalog_overlay.json`: items added and item ids removed, relative to the run's
`items.parquet`, which is never modified), and a service loaded later starts from it. A change
that cannot be saved (disk full, folder not writable) is undone and raises CatalogueNotSaved.

Kept free of FastAPI so that the CLI's `recommend` starts without importing the web stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.catalog_changes import CatalogChangeUnsupported, new_items, with_items, without_items
from ..data.dataset import DEFAULT_MAX_HISTORY, Catalog, close_titles, resolve_history
from ..decoding.methods import DecodingMethod, decoding_method, resolve_beams
from ..errors import CftrecError, first_line
from ..files import DiskFull, read_json, write_json
from ..recommendation import Recommendation
from ..runs.info import read_run_info
from ..runs.registry import RUN_KINDS, load_recommender

OVERLAY_FILE = "catalog_overlay.json"


class CatalogueNotSaved(CftrecError):
    """A catalogue change whose overlay could not be written: nothing changed (HTTP 507)."""


class RecommendService:
    """A recommender plus what the run says about it (kind, history window, decoding).

    `decoding` holds the LLM decoding options (method, num_beams); other run kinds ignore them.
    A history's own titles are left out of its recommendations unless `exclude_history=False`
    (domains with repeat purchases).
    Histories longer than the run's `max_history` keep their most recent items, as in training.
    The catalogue as trained is `base_catalog`; `catalog` is the one served (with changes).
    """

    def __init__(
        self,
        recommender,
        info: dict[str, Any],
        run_dir: str | Path,
        exclude_history: bool = True,
        **decoding,
    ):
        self.recommender = recommender
        self.exclude_history = exclude_history
        self.base_catalog: Catalog = recommender.catalog
        self.info = info
        self.run_dir = Path(run_dir)
        self.kind: str = info["kind"]
        self.max_history = int(info.get("max_history") or DEFAULT_MAX_HISTORY)
        self.decoding = decoding if self.kind == "llm" else {}
        # A CftrecError when unknown; "beam" is what LLMRecommender.recommend decodes by default.
        self.decoding_method: DecodingMethod | None = (
            decoding_method(decoding.get("method", "beam")) if self.kind == "llm" else None
        )
        self.overlay: dict[str, list] = {"added": [], "removed": []}

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        dtype: str | None = None,
        exclude_history: bool = True,
        **decoding,
    ) -> RecommendService:
        """Load any run and its catalogue overlay, if any; `dtype` (float32/bfloat16/float16)
        applies to LLM runs only."""
        info = read_run_info(run_dir)
        options = {"dtype": dtype} if info["kind"] == "llm" and dtype else {}
        recommender = load_recommender(run_dir, **options)
        service = cls(recommender, info, run_dir, exclude_history, **decoding)
        service._apply_overlay()
        return service

    @property
    def catalog(self) -> Catalog:
        """The catalogue served now (a new object after every change: read it once per use)."""
        return self.recommender.catalog

    @property
    def model_name(self) -> str:
        """What /health and the CLI call the model: the base model of an LLM run, else the kind."""
        return str(self.info.get("base_model") or self.kind)

    @property
    def k_limit(self) -> int | None:
        """The largest k the decoding can honour: a method with beams returns at most
        `num_beams` titles (None: any k)."""
        method = self.decoding_method
        if method is None or method.default_beams is None:
            return None
        return resolve_beams(method.name, self.decoding.get("num_beams"))

    def resolve(self, entries: Sequence[str], item_ids_only: bool = False) -> list[str]:
        """Typed titles or item ids -> item ids (CftrecError with close titles when unknown),
        cut to the run's history window (most recent items kept)."""
        catalog = self.catalog
        if item_ids_only:
            for entry in entries:
                if entry not in catalog:
                    close = catalog.item_id_matches.find(entry, 3, cutoff=0.6)
                    hint = f"; close ids: {', '.join(close)}" if close else ""
                    raise CftrecError(f"unknown item id {entry!r}{hint}")
            item_ids = list(entries)
        else:
            item_ids = resolve_history(catalog, list(entries))
        return item_ids[-self.max_history :] if item_ids else []

    def recommend(self, histories: list[list[str]], k: int) -> list[list[Recommendation]]:
        """Top-k per history of item ids (already resolved). An item removed from the
        catalogue after its request was resolved is left out of that history."""
        catalog = self.catalog
        histories = [[item_id for item_id in h if item_id in catalog] for h in histories]
        return self.recommender.recommend(
            histories, k=k, exclude_history=self.exclude_history, **self.decoding
        )

    def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Catalogue titles matching `query`: case-insensitive substring matches first (shortest
        title first), then close fuzzy matches; each with its item ids."""
        catalog = self.catalog
        needle = query.strip().lower()
        if not needle:
            return []
        matches = catalog.title_matches
        found = sorted(
            (
                title
                for key, title in zip(matches.keys, matches.originals, strict=True)
                if needle in key
            ),
            key=len,
        )[:limit]
        if len(found) < limit:
            fuzzy = matches.find(needle, limit, cutoff=0.6)
            found += [title for title in fuzzy if title not in found][: limit - len(found)]
        return [{"title": t, "item_ids": list(catalog.items_of_title[t])} for t in found]

    def close_titles(self, entry: str, n: int = 3) -> list[str]:
        """Suggestions for an unknown entry (the API's 422 detail, the same as the CLI's)."""
        return close_titles(self.catalog, entry, n)

    # ---------------------------------------------------------------- catalogue changes
    @property
    def overlay_path(self) -> Path:
        return self.run_dir / OVERLAY_FILE

    def add_items(
        self, items: Mapping[str, str] | Iterable[tuple[str, str]], persist: bool = True
    ) -> list[tuple[str, str]]:
        """Add items ({item_id: title} or pairs; validated, titles cleaned) and, with
        `persist`, save the overlay. Returns the (item id, title) pairs added."""
        self._require_live()
        added = new_items(items)
        self._change(with_items(self.catalog, added), persist)
        return added

    def remove_items(self, item_ids: Iterable[str], persist: bool = True) -> None:
        """Stop recommending these items and, with `persist`, save the overlay."""
        self._require_live()
        self._change(without_items(self.catalog, item_ids), persist)

    def _overlay_now(self) -> dict[str, list]:
        """The served catalogue relative to the trained one (`overlay`): items added (a
        retitled item is removed, then added) and item ids removed."""
        base, current = self.base_catalog, self.catalog
        removed = [
            i for i in base.item_ids if i not in current or current.title_of[i] != base.title_of[i]
        ]
        added = [
            {"item_id": i, "title": current.title_of[i]}
            for i in current.item_ids
            if i not in base or base.title_of[i] != current.title_of[i]
        ]
        return {"added": added, "removed": removed}

    def _require_live(self) -> None:
        if self.kind != "llm":
            raise CatalogChangeUnsupported(RUN_KINDS[self.kind].label)

    def _change(self, catalog: Catalog, persist: bool) -> None:
        """Serve `catalog`; with `persist`, save the overlay or change nothing."""
        self._require_live()
        before, overlay = self.catalog, self.overlay
        self.recommender.set_catalog(catalog)
        self.overlay = self._overlay_now()
        if not persist:
            return
        try:
            write_json(self.overlay_path, self.overlay)
        except (OSError, DiskFull) as error:
            self.recommender.set_catalog(before)
            self.overlay = overlay
            reason = (
                "no space left on device"
                if isinstance(error, DiskFull)
                else error.strerror or first_line(error)
            )
            raise CatalogueNotSaved(
                f"{self.overlay_path}: cannot save the catalogue change ({reason}); nothing changed"
            ) from None

    def _apply_overlay(self) -> None:
        """Start from the overlay saved beside the run, if there is one."""
        path = self.overlay_path
        if not path.exists():
            return
        overlay = read_json(path, expect=dict)
        added, removed = overlay.get("added", []), overlay.get("removed", [])
        if not isinstance(added, list) or not isinstance(removed, list):
            raise CftrecError(f"{path}: 'added' and 'removed' must be lists")
        if not added and not removed:
            return
        try:
            catalog = without_items(self.catalog, removed) if removed else self.catalog
            if added:
                pairs = [
                    (entry.get("item_id"), entry.get("title")) if isinstance(entry, dict) else ()
                    for entry in added
                ]
                catalog = with_items(
                    catalog, new_items(pairs, where=lambda i: f"added item {i + 1}")
                )
            self._change(catalog, persist=False)
        except CftrecError as error:
            raise CftrecError(f"{path}: {error}") from None
