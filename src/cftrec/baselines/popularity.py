"""Most-popular baseline: every user gets the catalogue titles ranked by train interactions.

Ties are broken by title (alphabetical), the list is the same for everyone and history items are
not excluded (as for the LLM methods). Scores are the train interaction counts of the titles.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..data.dataset import Catalog, Dataset
from ..errors import CftrecError
from ..files import atomic_directory, check_output, read_json, write_json
from ..recommendation import Recommendation
from ..runs.info import load_run_catalog, read_run_info, write_run_info
from ..runs.protocol import refuse_options

COUNTS_FILE = "popularity.json"
COMMAND = "baseline pop"  # what the output marker names
KIND_LABEL = "popularity"  # how messages name the run kind (as cftrec.runs.registry)


class PopularityRecommender:
    """Title popularity from train counts. `counts` maps title -> train interactions; titles of
    the catalogue missing from it count 0."""

    def __init__(self, catalog: Catalog, counts: dict[str, int]):
        unknown = set(counts) - set(catalog.items_of_title)
        if unknown:
            raise CftrecError(
                f"popularity counts name titles not in the catalogue: {sorted(unknown)[:3]}"
            )
        self.catalog = catalog
        self.counts = {title: int(counts.get(title, 0)) for title in catalog.titles}
        self.ranking = sorted(catalog.titles, key=lambda title: (-self.counts[title], title))

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> PopularityRecommender:
        return cls(dataset.catalog, dataset.train_popularity())

    @classmethod
    def from_run(cls, run_dir: str | Path, **options) -> PopularityRecommender:
        """Load a `cftrec baseline pop` run. It takes no options: any (an LLM decoding option)
        is a CftrecError naming it."""
        refuse_options(KIND_LABEL, options)
        if read_run_info(run_dir)["kind"] != "pop":
            raise CftrecError(f"{run_dir}: not a popularity run")
        path = Path(run_dir) / COUNTS_FILE
        counts = read_json(path, expect=dict)
        if not all(type(count) is int and count >= 0 for count in counts.values()):
            raise CftrecError(f"{path}: counts must be non-negative integers")
        try:
            return cls(load_run_catalog(run_dir), counts)
        except CftrecError as error:
            raise CftrecError(f"{path}: {error}") from None

    def recommend(
        self, histories: list[list[str]], k: int = 10, exclude_history: bool = True, **options
    ) -> list[list[Recommendation]]:
        """The k most popular titles for every history, leaving out the history's own titles
        unless `exclude_history=False`. Any other option (an LLM decoding option) is a
        CftrecError naming it."""
        refuse_options(KIND_LABEL, options)
        lists = []
        for history in histories:
            gone = set(self.catalog.titles_for(history)) if exclude_history else set()
            top = [title for title in self.ranking[: k + len(gone)] if title not in gone][:k]
            lists.append([
                Recommendation(t, tuple(self.catalog.items_of_title[t]), float(self.counts[t]))
                for t in top
            ])  # fmt: skip
        return lists

    def add_items(self, items) -> None:
        """Refused: a title never counted in training has no popularity to rank it by."""
        from ..data.catalog_changes import CatalogChangeUnsupported

        raise CatalogChangeUnsupported("popularity")

    def title_log_probs(self, histories: list[list[str]]) -> torch.Tensor:
        """log(train count / total train count) per title, [B, T] in `catalog.titles` order.
        Titles never seen in train get -inf (probability 0)."""
        total = sum(self.counts.values())
        if total == 0:
            raise CftrecError("no train interactions: popularity is undefined")
        row = torch.tensor(
            [math.log(c / total) if c else -math.inf for c in self.counts.values()],
            dtype=torch.float32,
        )
        return row.expand(len(histories), -1).clone()


def train_popularity(
    data: str | Path, out: str | Path, max_history: int = 10, overwrite: bool = False
) -> dict:
    """`cftrec baseline pop`: count train interactions per title and write the run directory
    (`overwrite`: see cftrec.io.check_output)."""
    if max_history < 1:
        raise CftrecError("max_history must be at least 1")
    check_output(out, COMMAND, (data,), overwrite)
    dataset = Dataset.load(data)
    recommender = PopularityRecommender.from_dataset(dataset)
    info = {
        "kind": "pop",
        "max_history": max_history,
        "train_interactions": sum(recommender.counts.values()),
        "titles": len(recommender.catalog.titles),
        "top_titles": recommender.ranking[:5],
    }
    with atomic_directory(out, COMMAND, (data,), overwrite) as tmp:
        write_json(tmp / COUNTS_FILE, recommender.counts)
        write_run_info(tmp, info, dataset)
    return info
