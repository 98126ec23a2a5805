"""What every recommender returns, whatever its kind (LLM, SASRec, popularity)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recommendation:
    """One recommended catalogue title, with every item id that carries it, and its score
    (a log-probability for LLM decoders; higher is better within one list)."""

    title: str
    item_ids: tuple[str, ...]
    score: float

    def to_dict(self) -> dict:
        data = asdict(self)
        data["item_ids"] = list(self.item_ids)
        return data
