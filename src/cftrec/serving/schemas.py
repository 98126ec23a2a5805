"""The JSON bodies of the HTTP API as pydantic models.

Responses are fixed. Request bodies are bounded by the server's options and its catalogue, so
`request_models(limits)` builds them for one server.
"""

# No `from __future__ import annotations`: the request models are built inside a function, and
# pydantic must see their field types as real objects.

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class RecommendationOut(BaseModel):
    title: str
    item_ids: list[str]
    score: float


class RecommendResponse(BaseModel):
    recommendations: list[RecommendationOut]


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


class ItemOut(BaseModel):
    title: str
    item_ids: list[str]


class ItemsResponse(BaseModel):
    items: list[ItemOut]


class NewItemOut(BaseModel):
    item_id: str
    title: str = Field(description="The title as stored (cleaned like a prepared dataset's).")


class CatalogueChange(BaseModel):
    added: list[NewItemOut] = []
    removed: list[str] = []
    catalogue: dict[str, Any]


@dataclass(frozen=True)
class RequestLimits:
    """What one server accepts in a request."""

    max_entry_chars: int  # a history entry, item id or title
    max_history_entries: int
    k_limit: int
    max_batch_requests: int
    max_new_items: int
    history_window: int  # the run's max_history: only the last this many entries are used


@dataclass(frozen=True)
class RequestModels:
    recommend: type[BaseModel]
    batch: type[BaseModel]
    add_items: type[BaseModel]
    remove_items: type[BaseModel]


def request_models(limits: RequestLimits) -> RequestModels:
    """The request bodies bounded by `limits` (strict: no extra keys, no type coercion)."""
    # (pydantic refuses text with lone surrogates; SafeJSONResponse can echo it in the 422)
    entry_text = Annotated[str, StringConstraints(min_length=1, max_length=limits.max_entry_chars)]
    strict = ConfigDict(extra="forbid", strict=True)

    class RecommendRequest(BaseModel):
        model_config = strict
        history: list[entry_text] = Field(
            max_length=limits.max_history_entries,
            description="Catalogue titles or item ids, oldest first ([] = cold start). Only "
            f"the last {limits.history_window} are used (the run's history window).",
        )
        k: int = Field(
            min(10, limits.k_limit), ge=1, le=limits.k_limit, description="How many titles."
        )

    class BatchRequest(BaseModel):
        model_config = strict
        requests: list[RecommendRequest] = Field(min_length=1, max_length=limits.max_batch_requests)

    class NewItem(BaseModel):
        model_config = strict
        item_id: entry_text
        title: entry_text

    class AddItemsRequest(BaseModel):
        model_config = strict
        items: list[NewItem] = Field(min_length=1, max_length=limits.max_new_items)

    class RemoveItemsRequest(BaseModel):
        model_config = strict
        item_ids: list[entry_text] = Field(min_length=1, max_length=limits.max_new_items)

    return RequestModels(RecommendRequest, BatchRequest, AddItemsRequest, RemoveItemsRequest)
