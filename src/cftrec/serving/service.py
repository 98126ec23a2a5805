"""A loaded run ready to answer requests: shared by `cftrec recommend` and the HTTP server.

    service = RecommendService.load("runs/cft", method="beam", num_beams=10)
    item_ids = service.resolve(["Toy Story (1995)", "Heat (1995)"])
    service.recommend([item_ids], k=10)
    service.add_items([("b42", "Heat 2 (2026)")])   # LLM runs: recommendable at once

Catalogue changes made through a service are journaled beside the run (serving/journal.py: an
overlay of items added and ids removed relative to the run's `items.parquet`, which is never
modified, plus an append-only journal of the changes since) and a service loaded later replays
them. A change costs time proportional to its size: it is checked, journaled (on disk before
the call returns), then applied in place. One that cannot be saved (disk full, folder not
writable) raises CatalogueNotSaved and changes nothing.

Kept free of FastAPI so that the CLI's `recommend` starts without importing the web stack.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.catalog_changes import CatalogChangeUnsupported, new_items
from ..data.dataset import DEFAULT_MAX_HISTORY, Catalog, close_titles, resolve_history
from ..decoding.methods import DecodingMethod, decoding_method, resolve_beams
from ..errors import CftrecError
from ..recommendation import Recommendation
from ..runs.info import read_run_info
from ..runs.registry import RUN_KINDS, load_recommender
from .journal import JOURNAL_FILE, OVERLAY_FILE, CatalogueNotSaved, CatalogueStore

__all__ = ["JOURNAL_FILE", "OVERLAY_FILE", "CatalogueNotSaved", "RecommendService"]


class RecommendService:
    """A recommender plus what the run says about it (kind, history window, decoding).

    `decoding` holds the LLM decoding options (method, num_beams); other run kinds ignore them.
    A history's own titles are left out of its recommendations unless `exclude_history=False`
    (domains with repeat purchases).
    Histories longer than the run's `max_history` keep their most recent items, as in training.
    The catalogue as trained is `base_catalog`; `catalog` is the one served (with changes).
    Changes are made in place: another thread reading the catalogue holds `lock`.
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
        self._base: Catalog | None = None  # a copy of the trained catalogue, from the first change
        self.info = info
        self.run_dir = Path(run_dir)
        self.kind: str = info["kind"]
        self.max_history = int(info.get("max_history") or DEFAULT_MAX_HISTORY)
        self.decoding = decoding if self.kind == "llm" else {}
        # A CftrecError when unknown; "beam" is what LLMRecommender.recommend decodes by default.
        self.decoding_method: DecodingMethod | None = (
            decoding_method(decoding.get("method", "beam")) if self.kind == "llm" else None
        )
        self.store = CatalogueStore(self.run_dir)
        self.lock = threading.RLock()
        # The served catalogue relative to the trained one: items added (a retitled item is
        # removed, then added) and item ids removed, in the order of the changes.
        self.added: dict[str, str] = {}
        self.removed: dict[str, None] = {}

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        dtype: str | None = None,
        exclude_history: bool = True,
        hold_catalogue: bool = False,
        **decoding,
    ) -> RecommendService:
        """Load any run and replay its catalogue changes, if any; `dtype`
        (float32/bfloat16/float16) applies to LLM runs only. `hold_catalogue`: become the run's
        one catalogue writer first (a server), else on the first saved change."""
        info = read_run_info(run_dir)
        options = {"dtype": dtype} if info["kind"] == "llm" and dtype else {}
        recommender = load_recommender(run_dir, **options)
        service = cls(recommender, info, run_dir, exclude_history, **decoding)
        if hold_catalogue and service.kind == "llm":
            service.store.hold()
        service._replay()
        return service

    @property
    def base_catalog(self) -> Catalog:
        """The catalogue as trained (the served one changes in place)."""
        return self._base if self._base is not None else self.recommender.catalog

    def _keep_base(self) -> None:
        if self._base is None:
            catalog = self.recommender.catalog
            self._base = Catalog(catalog.item_ids, catalog.titles_for(catalog.item_ids))

    @property
    def catalog(self) -> Catalog:
        """The catalogue served now (changed in place: other threads read it under `lock`)."""
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
        with self.lock:
            return self._resolve(entries, item_ids_only)

    def _resolve(self, entries: Sequence[str], item_ids_only: bool) -> list[str]:
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
        with self.lock:
            return self._search(query, limit)

    def _search(self, query: str, limit: int) -> list[dict[str, Any]]:
        catalog = self.catalog
        needle = query.strip().lower()
        if not needle:
            return []
        matches = catalog.title_matches
        found = sorted((title for key, title in matches.live() if needle in key), key=len)[:limit]
        if len(found) < limit:
            fuzzy = matches.find(needle, limit, cutoff=0.6)
            found += [title for title in fuzzy if title not in found][: limit - len(found)]
        return [{"title": t, "item_ids": list(catalog.items_of_title[t])} for t in found]

    def close_titles(self, entry: str, n: int = 3) -> list[str]:
        """Suggestions for an unknown entry (the API's 422 detail, the same as the CLI's)."""
        with self.lock:
            return close_titles(self.catalog, entry, n)

    # ---------------------------------------------------------------- catalogue changes
    @property
    def overlay_path(self) -> Path:
        return self.store.overlay_path

    @property
    def overlay(self) -> dict[str, list]:
        """The served catalogue relative to the trained one, as the overlay file holds it."""
        added = [{"item_id": i, "title": t} for i, t in self.added.items()]
        return {"added": added, "removed": list(self.removed)}

    def add_items(
        self, items: Mapping[str, str] | Iterable[tuple[str, str]], persist: bool = True
    ) -> list[tuple[str, str]]:
        """Add items ({item_id: title} or pairs; validated, titles cleaned) and, with
        `persist`, journal them. Returns the (item id, title) pairs added."""
        self._require_live()
        added = new_items(items)
        with self.lock:
            fresh = self.recommender.check_new_items(added)
            if persist:
                self.store.append({"add": [list(pair) for pair in added]})
            self._keep_base()
            self.recommender.apply_new_items(added, fresh)
            base = self.base_catalog.title_of
            for item_id, title in added:
                if base.get(item_id) == title:  # a removed item back as it was trained
                    del self.removed[item_id]
                else:
                    self.added[item_id] = title
        self._compact_if_due(persist)
        return added

    def remove_items(self, item_ids: Iterable[str], persist: bool = True) -> None:
        """Stop recommending these items and, with `persist`, journal the change."""
        self._require_live()
        with self.lock:
            gone = self.catalog.check_removal(item_ids)
            if persist:
                self.store.append({"remove": gone})
            self._keep_base()
            self.recommender.remove_items(gone)
            for item_id in gone:
                self.added.pop(item_id, None)
                if item_id in self.base_catalog:
                    self.removed[item_id] = None
        self._compact_if_due(persist)

    def _compact_if_due(self, persist: bool) -> None:
        if persist and self.store.due():
            with self.lock:
                self.store.compact(self.overlay)

    def close(self) -> None:
        """Fold the journal into the overlay (a clean shutdown) and stop being the writer."""
        try:
            if self.store.lock_handle is not None or self.store.journal_path.exists():
                with self.lock:
                    self.store.compact(self.overlay)
        except CftrecError:  # another process writes this catalogue: leave its files alone
            pass
        finally:
            self.store.release()

    def _require_live(self) -> None:
        if self.kind != "llm":
            raise CatalogChangeUnsupported(RUN_KINDS[self.kind].label)

    def _replay(self) -> None:
        """Start from the overlay saved beside the run and the journal's changes since."""
        overlay, entries = self.store.read()
        added = [
            (entry.get("item_id"), entry.get("title")) if isinstance(entry, dict) else ()
            for entry in overlay["added"]
        ]
        changes = [
            (self.overlay_path, "remove", overlay["removed"], "removed item"),
            (self.overlay_path, "add", added, "added item"),
        ]
        for where, entry in entries:
            kind = "add" if "add" in entry else "remove"
            changes.append((where, kind, entry[kind], "item"))
        for where, kind, values, what in changes:
            if not values:
                continue
            try:
                if kind == "add":
                    pairs = [tuple(p) if isinstance(p, list | tuple) else () for p in values]
                    named = new_items(pairs, where=lambda i, what=what: f"{what} {i + 1}")
                    self.add_items(named, persist=False)
                elif all(isinstance(item_id, str) for item_id in values):
                    self.remove_items(values, persist=False)
                else:
                    raise CftrecError("removed item ids must be strings")
            except CftrecError as error:
                raise CftrecError(f"{where}: {error}") from None
