"""A trained SASRec over a catalogue, loaded from its run folder: rankings and title
probabilities.

Scoring is a full softmax over items. Rankings use the best item of each distinct title (as the
LLM evaluation works on titles); `title_log_probs` sums item probabilities per title (what D3
guidance mixes in). History items are NOT excluded from the ranking, as for the LLM methods: the
test target can be a repeat (re-purchases, shared titles), and excluding them would give the
baseline information the LLM decoders do not use. Scoring computes on SASRec's fixed CPU thread
count (`model.THREADS`), as training does: the same scores whatever the caller's thread count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import torch

from ...data.dataset import Catalog
from ...errors import CftrecError
from ...files import read_json
from ...recommendation import Recommendation
from ...runs.info import load_run_catalog, read_run_info
from ...runs.protocol import refuse_options
from .model import SASRec, SASRecConfig, fixed_threads, length_batches, pad, torch_device

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
KIND_LABEL = "SASRec"  # how messages name the run kind (as cftrec.runs.registry)


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
        **options,
    ) -> SASRecRecommender:
        """Load a `cftrec baseline sasrec` run. Any other option (an LLM decoding option) is a
        CftrecError naming it."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        refuse_options(KIND_LABEL, options)
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
    @fixed_threads()
    def item_log_probs(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """Full softmax over the catalogue items: [B, num_items], column i = catalog.item_ids[i]."""
        indexed = self._indices(histories)
        result = torch.empty(len(indexed), self.model.num_items, device=self.device)
        for rows in length_batches(indexed, self.batch_size):
            chunk = [indexed[row] for row in rows]
            hidden = self.model(pad(chunk, self.device))  # [b, L, d]
            last = torch.tensor([len(s) - 1 for s in chunk], device=self.device)
            final = hidden[torch.arange(len(chunk), device=self.device), last]  # [b, d]
            result[torch.tensor(rows, device=self.device)] = (
                self.model.item_logits(final).float().log_softmax(-1)
            )
        return result

    @fixed_threads()
    def title_scores(self, histories: Sequence[Sequence[str]]) -> torch.Tensor:
        """Ranking scores [B, T]: log-probability of the best item of each title."""
        item_scores = self.item_log_probs(histories)
        scores = item_scores.new_full((len(histories), len(self.catalog.titles)), -math.inf)
        index = self.item_title.expand_as(item_scores)
        return scores.scatter_reduce(1, index, item_scores, reduce="amax")

    @fixed_threads()
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
        from ...data.catalog_changes import CatalogChangeUnsupported

        raise CatalogChangeUnsupported("SASRec")

    def recommend(
        self, histories: list[list[str]], k: int = 10, exclude_history: bool = True, **options
    ) -> list[list[Recommendation]]:
        """The k best distinct titles per history (best first; ties in catalogue title order),
        leaving out the history's own titles unless `exclude_history=False`. Any other option
        (an LLM decoding option) is a CftrecError naming it."""
        refuse_options(KIND_LABEL, options)
        scores = self.title_scores(histories).cpu()
        if exclude_history:
            index = self.catalog.index_of_title
            for row, history in enumerate(histories):
                scores[row, [index[t] for t in self.catalog.titles_for(history)]] = -math.inf
        order = scores.sort(dim=1, descending=True, stable=True).indices[:, :k]
        titles, items_of = self.catalog.titles, self.catalog.items_of_title
        return [
            [
                Recommendation(titles[t], tuple(items_of[titles[t]]), float(row_scores[t]))
                for t in row.tolist()
                if row_scores[t] > -math.inf  # an excluded title (a small catalogue ran out)
            ]
            for row, row_scores in zip(order, scores, strict=True)
        ]
