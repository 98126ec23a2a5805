"""The endpoints. They reach the loaded run and the micro-batcher through FastAPI dependencies
(`Service`, `Batcher`: the app's state), and every one but /health needs the API key."""

# No `from __future__ import annotations`: FastAPI reads the request models (built per server by
# `request_models`) from the endpoints' signatures, so they must be real classes there.

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from ..data.catalog_changes import CatalogChangeUnsupported
from ..data.dataset import resolve_history
from ..errors import CftrecError
from .batcher import MicroBatcher
from .guard import require_key
from .journal import CatalogueBusy
from .schemas import (
    BatchResponse,
    CatalogueChange,
    ItemsResponse,
    NewItemOut,
    RecommendResponse,
    RequestLimits,
    request_models,
)
from .service import CatalogueNotSaved, RecommendService

MAX_PROBLEMS = 10  # unknown entries reported (with suggestions) per request: bounded work
CLIENT_CLOSED = 499  # nginx's status for "client closed the request" (never seen by it)


def _service(request: Request) -> RecommendService:
    return request.app.state.service


def _batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher


Service = Annotated[RecommendService, Depends(_service)]
Batcher = Annotated[MicroBatcher, Depends(_batcher)]


class ClientGone(Exception):
    """The client disconnected before its answer was ready (answered CLIENT_CLOSED)."""


async def _until_disconnected(request: Request, work):
    """Await `work`; if the client disconnects first, cancel it (a request still queued in the
    micro-batcher is then skipped, not decoded) and raise ClientGone."""
    task = asyncio.ensure_future(work)

    async def client_gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # this request itself is cancelled (shutdown timeout)
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    raise ClientGone


def _resolve(
    service: RecommendService, histories: list[tuple[list[str], tuple]]
) -> list[list[str]]:
    """Item ids for each (history, location) of one request, or 422 naming its unknown
    entries (the first MAX_PROBLEMS) with the closest catalogue titles. Runs in a worker
    thread: suggestions never hold up the event loop."""
    with service.lock:  # the catalogue does not change while one request is checked
        return _resolve_locked(service, histories)


def _resolve_locked(
    service: RecommendService, histories: list[tuple[list[str], tuple]]
) -> list[list[str]]:
    catalog = service.catalog
    problems = []
    for history, where in histories:
        for position, entry in enumerate(history):
            if len(problems) == MAX_PROBLEMS:
                break
            try:
                resolve_history(catalog, [entry])
            except CftrecError as error:
                ambiguous = entry in catalog
                problems.append(
                    {
                        "type": "ambiguous_item" if ambiguous else "unknown_item",
                        "loc": [*where, position],
                        "msg": str(error),
                        "input": entry,
                        "suggestions": [] if ambiguous else service.close_titles(entry),
                    }
                )
    if problems:
        raise HTTPException(422, problems)
    return [resolve_history(catalog, history)[-service.max_history :] for history, _ in histories]


def _response(recommendations) -> RecommendResponse:
    return RecommendResponse(recommendations=[r.to_dict() for r in recommendations])


async def _change_catalogue(batcher: MicroBatcher, function, *args):
    """A catalogue change, in the inference thread between two batches: 409 when the run
    cannot take it (an ID-based baseline, or another process writes its catalogue), 422 when the input is bad, 507 when it cannot be
    saved beside the run (disk full, not writable: nothing changed)."""
    try:
        return await batcher.run_exclusive(function, *args)
    except (CatalogChangeUnsupported, CatalogueBusy) as error:
        raise HTTPException(409, str(error)) from None
    except CatalogueNotSaved as error:
        raise HTTPException(507, str(error)) from None
    except CftrecError as error:
        raise HTTPException(
            422, [{"type": "invalid_items", "loc": ["body", "items"], "msg": str(error)}]
        ) from None


def _catalogue(service: RecommendService) -> dict[str, Any]:
    return {
        "items": len(service.catalog),
        "titles": len(service.catalog.titles),
        "trained_items": len(service.base_catalog),
        "added": len(service.added),
        "removed": len(service.removed),
        "overlay": str(service.overlay_path) if service.store.exists else None,
    }


def api_router(limits: RequestLimits) -> APIRouter:
    """The endpoints of a server accepting requests within `limits` (its request models and
    parameter bounds, hence one router per server)."""
    models = request_models(limits)
    entry_chars = limits.max_entry_chars
    authorized = [Depends(require_key)]
    router = APIRouter()

    @router.post("/recommend", response_model=RecommendResponse, dependencies=authorized)
    async def recommend(
        body: models.recommend, request: Request, service: Service, batcher: Batcher
    ) -> RecommendResponse:
        """Top-k catalogue titles for one history."""
        where = [(body.history, ("body", "history"))]
        (item_ids,) = await asyncio.to_thread(_resolve, service, where)
        return _response(await _until_disconnected(request, batcher.submit(item_ids, body.k)))

    @router.post("/recommend/batch", response_model=BatchResponse, dependencies=authorized)
    async def recommend_batch(
        body: models.batch, request: Request, service: Service, batcher: Batcher
    ) -> BatchResponse:
        """Several histories at once (each validated; they join the same micro-batches, and
        the queue, all or none)."""
        where = [
            (r.history, ("body", "requests", i, "history")) for i, r in enumerate(body.requests)
        ]
        resolved = await asyncio.to_thread(_resolve, service, where)
        requests = [(ids, r.k) for ids, r in zip(resolved, body.requests, strict=True)]
        answers = await _until_disconnected(request, batcher.submit_many(requests))
        return BatchResponse(results=[_response(answer) for answer in answers])

    @router.get("/items", response_model=ItemsResponse, dependencies=authorized)
    async def items(
        service: Service,
        query: Annotated[
            str, Query(min_length=1, max_length=entry_chars, description="Title text.")
        ],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> ItemsResponse:
        """Catalogue titles containing `query` (case-insensitive), then close matches."""
        return ItemsResponse(items=await asyncio.to_thread(service.search, query, limit))

    @router.post("/items", response_model=CatalogueChange, dependencies=authorized)
    async def add_items(
        body: models.add_items, service: Service, batcher: Batcher
    ) -> CatalogueChange:
        """Add items (LLM runs: recommendable from the next request on, no retraining). Titles
        are cleaned like a prepared dataset's; 422 for an empty title or an item id given twice
        or already in the catalogue; 409 for a baseline run, which cannot rank unseen items."""
        pairs = [(item.item_id, item.title) for item in body.items]
        added = await _change_catalogue(batcher, service.add_items, pairs)
        return CatalogueChange(
            added=[NewItemOut(item_id=i, title=t) for i, t in added],
            catalogue=_catalogue(service),
        )

    @router.post("/items/remove", response_model=CatalogueChange, dependencies=authorized)
    async def remove_items(
        body: models.remove_items, service: Service, batcher: Batcher
    ) -> CatalogueChange:
        """Stop recommending several items at once (LLM runs): all or none, 422 naming an
        unknown item id."""
        await _change_catalogue(batcher, service.remove_items, body.item_ids)
        return CatalogueChange(removed=list(body.item_ids), catalogue=_catalogue(service))

    @router.delete("/items/{item_id:path}", response_model=CatalogueChange, dependencies=authorized)
    async def remove_item(
        item_id: Annotated[str, Path(min_length=1, max_length=entry_chars)],
        service: Service,
        batcher: Batcher,
    ) -> CatalogueChange:
        """Stop recommending an item (LLM runs): no response sent after this one returns lists
        it. 404 for an unknown item id."""

        def remove() -> None:
            if item_id not in service.catalog:
                raise LookupError(item_id)
            service.remove_items([item_id])

        try:
            await _change_catalogue(batcher, remove)
        except LookupError:
            raise HTTPException(404, f"unknown item id {item_id!r}") from None
        return CatalogueChange(removed=[item_id], catalogue=_catalogue(service))

    @router.get("/health")
    async def health(request: Request, service: Service, batcher: Batcher) -> dict[str, Any]:
        """Liveness and what is being served."""
        return {
            "status": "ok",
            "model": service.model_name,
            "kind": service.kind,
            "method": service.info.get("method"),
            "run": str(service.run_dir),
            "data_fingerprint": service.info.get("data_fingerprint"),
            "titles": len(service.catalog.titles),
            "catalogue": _catalogue(service),
            "decoding": service.decoding,
            "exclude_history": service.exclude_history,
            "uptime_s": round(time.monotonic() - request.app.state.started, 3),
            "batching": {
                "max_batch_size": batcher.max_batch_size,
                "max_wait_ms": batcher.max_wait_s * 1000,
                "recommend_calls": batcher.calls,
                "requests": batcher.requests,
                "largest_batch": batcher.largest_batch,
                "skipped_disconnected": batcher.skipped,
                "queue_depth": batcher.queued,
                "max_queue": batcher.max_queue,
                "queue_timeout_s": batcher.queue_timeout_s,
                "request_timeout_s": batcher.request_timeout_s,
                "rejected_queue_full": batcher.rejected,
                "expired_in_queue": batcher.expired,
                "deadline_exceeded": batcher.overdue,
            },
        }

    return router
