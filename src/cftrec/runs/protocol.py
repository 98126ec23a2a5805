"""What every recommender is, whatever its kind (LLM, SASRec, popularity): the contract that
evaluation, serving, diagnostics and guidance rely on (as RecBole's AbstractRecommender).

Options a kind does not take (LLM decoding options given to SASRec, say) are refused with a
CftrecError that names them, never silently ignored: `refuse_options` says it one way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ..data.dataset import Catalog
from ..errors import CftrecError
from ..recommendation import Recommendation


@runtime_checkable
class Recommender(Protocol):
    """A loaded run that ranks the catalogue's titles for histories of item ids."""

    catalog: Catalog

    @classmethod
    def from_run(cls, run_dir: str | Path, **options: Any) -> Recommender:
        """Load a run folder of this kind."""
        ...

    def recommend(
        self, histories: list[list[str]], k: int = 10, **options: Any
    ) -> list[list[Recommendation]]:
        """The top-k titles for every history (item ids, oldest first), best first."""
        ...


@runtime_checkable
class Assistant(Protocol):
    """A recommender that can guide LLM decoding (D3): a log-probability for every title."""

    catalog: Catalog

    def title_log_probs(self, histories: list[list[str]]):
        """[B, T] log-probabilities in `catalog.titles` order (-inf: probability 0)."""
        ...


def refuse_options(kind_label: str, options: dict[str, Any]) -> None:
    """One line naming the options a run kind does not take (None values count as unset)."""
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        names = ", ".join(given)
        raise CftrecError(f"{kind_label} runs do not take the option(s) {names} (LLM runs only)")
