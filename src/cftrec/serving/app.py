"""The HTTP API (`cftrec serve`): `create_app` wires a loaded run, the micro-batcher, the request
guard and the endpoints together; `serve` runs it with uvicorn.

    POST   /recommend        {"history": [titles or item ids], "k": 10}
                             -> {"recommendations": [{"title", "item_ids", "score"}, ...]}
    POST   /recommend/batch  {"requests": [{"history": [...], "k": 10}, ...]} -> {"results": [...]}
    GET    /items?query=...  title search -> {"items": [{"title", "item_ids"}]}
    POST   /items            {"items": [{"item_id", "title"}, ...]}: new items (LLM runs), at
                             most `max_new_items` (1,000) per request: bulk loads in chunks
    POST   /items/remove     {"item_ids": [...]}: stop recommending items (LLM runs), in chunks
    DELETE /items/{item_id}  stop recommending an item (LLM runs)
    GET    /health           model, data fingerprint, catalogue, uptime, batching and queue
                             (no key needed)
    GET    /docs             OpenAPI documentation

The model is loaded once. Concurrent requests are queued and run together as one
`recommend` call (at most `max_batch_size` histories, waiting at most `max_wait_ms` for a batch
to fill) in a single inference thread, so the event loop keeps accepting requests meanwhile.
Catalogue changes run in that same thread, between two batches, so a batch never sees a
catalogue change halfway and a request sent after a change returned sees it. Histories are
checked (and suggestions for unknown entries found) in worker threads, off the event loop.

Backpressure: at most `max_queue` histories wait for decoding; a request that finds no room
for its histories, or whose histories have not started decoding `queue_timeout_s` after they
arrived, gets 503 with a Retry-After header (seconds until the queue has likely drained) and is
never decoded. One not answered `request_timeout_s` after it arrived gets 504; a batch cannot
be stopped mid-decoding, so it runs to the end and the late request's result is dropped. A
catalogue change that cannot be saved beside the run (disk full, not writable) gets 507 and
changes nothing.
"""

from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..errors import CftrecError
from .batcher import DeadlineExceeded, MicroBatcher, Overloaded
from .guard import API_KEY_ENV, RequestGuard, check_auth
from .routes import CLIENT_CLOSED, MAX_PROBLEMS, ClientGone, api_router
from .schemas import RequestLimits
from .service import RecommendService

# What callers imported from this module before it was split (the CLI, the tests).
__all__ = [
    "API_KEY_ENV",
    "MAX_PROBLEMS",
    "MicroBatcher",
    "check_auth",
    "create_app",
    "serve",
]


class SafeJSONResponse(JSONResponse):
    """JSON that can always be sent: text that UTF-8 cannot encode (a lone surrogate that a
    client sent and an error message echoes) is written as a \\u escape."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":")).encode()


CHUNKED_BODIES = (("body", "items"), ("body", "item_ids"))  # POST /items, /items/remove


def items_chunk_hint(max_items: int) -> str:
    """What a 413 on POST /items or /items/remove adds: the limit, and how to send more."""
    return (
        f"; POST /items and /items/remove take at most {max_items} items per request: send "
        "larger loads in chunks (cftrec catalogue add|remove ... --server URL does)"
    )


async def _invalid_request(request, error: RequestValidationError) -> SafeJSONResponse:
    errors = error.errors()
    for problem in errors:
        if problem["type"] == "too_long" and tuple(problem["loc"]) in CHUNKED_BODIES:
            limit = problem.get("ctx", {}).get("max_length")
            detail = "too many items" + items_chunk_hint(limit).replace("; POST", ": POST", 1)
            return SafeJSONResponse({"detail": detail}, status_code=413)
    return SafeJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


async def _client_gone(_request, _error: ClientGone) -> Response:
    return Response(status_code=CLIENT_CLOSED)


async def _overloaded(_request, error: Overloaded) -> SafeJSONResponse:
    headers = {"Retry-After": str(error.retry_after_s)}
    return SafeJSONResponse({"detail": str(error)}, status_code=503, headers=headers)


async def _deadline_exceeded(_request, error: DeadlineExceeded) -> SafeJSONResponse:
    return SafeJSONResponse({"detail": str(error)}, status_code=504)


def create_app(
    service: RecommendService,
    *,
    api_key: str | None = None,
    max_batch_size: int = 16,
    max_wait_ms: float = 5.0,
    max_queue: int = 64,
    queue_timeout_s: float = 10.0,
    request_timeout_s: float = 60.0,
    max_history_entries: int = 100,
    max_k: int = 50,
    max_batch_requests: int = 64,
    max_new_items: int = 1000,
    max_body_bytes: int = 65536,
    max_items_body_bytes: int = 2 << 20,
    body_timeout_s: float = 30.0,
):
    """The FastAPI app over a loaded run. `api_key=None` disables auth (an empty key is an
    error). The returned app is wrapped in `RequestGuard`; the FastAPI object is `app.api`
    (its `state.batcher` holds the micro-batcher and its counters). A /recommend/batch body
    may hold at most `max_queue` requests (it must fit in the queue). A POST /items body may
    hold `max_new_items` items in `max_items_body_bytes` bytes (413 beyond: send chunks)."""
    if api_key is not None and not api_key.strip():
        raise CftrecError("the API key is empty: give a real key, or none")
    if body_timeout_s <= 0:
        raise CftrecError("the body timeout must be positive")
    batcher = MicroBatcher(
        service.recommend,
        max_batch_size,
        max_wait_ms,
        max_queue,
        queue_timeout_s,
        request_timeout_s,
    )
    # Every catalogue title and item id must fit, also as a raw source spelled it (HTML
    # entities are longer than the characters they stand for): twice the longest, at least 500.
    catalog = service.catalog
    longest = max(len(text) for text in [*catalog.titles, *catalog.item_ids])
    limits = RequestLimits(
        max_entry_chars=max(500, 2 * longest),
        max_history_entries=max_history_entries,
        k_limit=min(max_k, service.k_limit or max_k),
        max_batch_requests=min(max_batch_requests, max_queue),
        max_new_items=max_new_items,
        history_window=service.max_history,
    )

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            service.close()  # the catalogue journal folded into the overlay

    api = FastAPI(
        title="cftrec",
        summary="Next-item recommendations from a cftrec run.",
        version=__version__,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    api.state.service = service
    api.state.batcher = batcher
    api.state.api_key = api_key
    api.state.started = time.monotonic()
    api.add_exception_handler(RequestValidationError, _invalid_request)
    api.add_exception_handler(ClientGone, _client_gone)
    api.add_exception_handler(Overloaded, _overloaded)
    api.add_exception_handler(DeadlineExceeded, _deadline_exceeded)
    api.include_router(api_router(limits))

    items_limit = (max(max_items_body_bytes, max_body_bytes), items_chunk_hint(max_new_items))
    paths = {"/items": items_limit, "/items/remove": items_limit}
    app = RequestGuard(api, max_body_bytes, body_timeout_s, paths=paths)
    app.api = api
    return app


def serve(
    run_dir,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    no_auth: bool = False,
    graceful_timeout_s: float = 30.0,
    log_level: str = "info",
    decoding: dict[str, Any] | None = None,
    dtype: str | None = None,
    exclude_history: bool = True,
    **app_options,
) -> None:
    """Load the run once and serve it until SIGINT/SIGTERM. On SIGTERM uvicorn stops accepting
    connections and lets in-flight requests finish (up to `graceful_timeout_s`; the rest get
    503), then the micro-batcher is stopped."""
    import uvicorn
    from rich.console import Console

    console = Console(stderr=True)
    warning = check_auth(host, api_key, no_auth)
    with console.status(f"loading {run_dir}"):
        # An LLM decodes each micro-batch as one batch (the Recommender's default is 8).
        batch_size = app_options.get("max_batch_size", 16)
        service = RecommendService.load(
            run_dir,
            dtype=dtype,
            exclude_history=exclude_history,
            hold_catalogue=True,
            **{"batch_size": batch_size, **(decoding or {})},
        )
    app = create_app(service, api_key=api_key, **app_options)
    if warning:
        console.print(f"[bold red]{warning}[/]")
    console.print(
        f"serving [bold]{run_dir}[/] ({service.kind}, {service.model_name}, "
        f"{len(service.catalog.titles)} titles; overlay +{len(service.added)} "
        f"-{len(service.removed)} items) on http://{host}:{port}  docs: /docs  "
        f"auth: {'X-API-Key' if api_key else 'off'}"
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=graceful_timeout_s,
        lifespan="on",
    )
    uvicorn.Server(config).run()
