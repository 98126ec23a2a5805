"""The run kinds, in one place: what `run.json` of each kind must hold, how messages name it,
and which recommender loads it. A new kind (a new baseline) is one entry here.

Recommenders live above this package (decoding, baselines), so an entry names its class by
module path and it is imported on use: loading a popularity run never imports torch models.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path


@dataclass(frozen=True)
class RunKind:
    name: str  # run.json's "kind"
    label: str  # how messages name it
    required_keys: tuple[str, ...]  # run.json keys beyond the common ones
    recommender: str  # "module:Class" implementing cftrec.runs.protocol.Recommender

    def recommender_class(self) -> type:
        module, name = self.recommender.split(":")
        return getattr(import_module(module), name)


RUN_KINDS: dict[str, RunKind] = {
    kind.name: kind
    for kind in (
        RunKind("llm", "LLM", ("prompt", "lora"), "cftrec.decoding.recommender:LLMRecommender"),
        RunKind("sasrec", "SASRec", (), "cftrec.baselines.sasrec:SASRecRecommender"),
        RunKind("pop", "popularity", (), "cftrec.baselines.popularity:PopularityRecommender"),
    )
}


def load_recommender(run_dir: str | Path, **options):
    """Load any run as a `cftrec.runs.protocol.Recommender`. `options` are the kind's own
    (an option a kind does not take is refused with a CftrecError naming it)."""
    from .info import read_run_info

    kind = RUN_KINDS[read_run_info(run_dir)["kind"]]
    return kind.recommender_class().from_run(run_dir, **options)
