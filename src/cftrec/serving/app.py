"""The HTTP API (`cftrec serve`): FastAPI app factory, micro-batcher, API-key auth, runner.

    POST   /recommend        {"history": [titles or item ids], "k": 10}
                             -> {"recommendations": [{"title", "item_ids", "score"}, ...]}
    POST   /recommend/batch  {"requests": [{"history": [...], "k": 10}, ...]} -> {"results": [...]}
    GET    /items?query=...  title search -> {"items": [{"title", "item_ids"}]}
    POST   /items            {"items": [{"item_id", "title"}, ...]}: new items (LLM runs)
    DELETE /items/{item_id}  stop recommending an item (LLM runs)
    GET    /health           model, data fingerprint, catalogue, uptime, batching (no key needed)
    GET    /docs             OpenAPI documentation

The model is loaded once. Concurrent requests are queued and run together as one
`recommend` call (at most `max_batch_size` histories, waiting at most `max_wait_ms` for a batch
to fill) in a single inference thread, so the event loop keeps accepting requests meanwhile.
Catalogue changes run in that same thread, between two batches, so a batch never sees a
catalogue change halfway and a request sent after a change returned sees it. Histories are
checked (and suggestions for unknown entries found) in worker threads, off the event loop.
"""

# No `from __future__ import annotations`: FastAPI must see the request models built inside
# `create_app` (their bounds come from the server's options) as real classes.

import asyncio
import collections
import hmac
import ipaddress
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..data.catalog_changes import CatalogChangeUnsupported
from ..data.dataset import resolve_history
from ..errors import CftrecError
from ..recommendation import Recommendation
from .service import RecommendService

API_KEY_HEADER = "X-API-Key"
API_KEY_ENV = "CFTREC_API_KEY"
MAX_PROBLEMS = 10  # unknown entries reported (with suggestions) per request: bounded work
CLIENT_CLOSED = 499  # nginx's status for "client closed the request" (never seen by it)
log = logging.getLogger("cftrec.serving")


@dataclass
class _Pending:
    history: list[str]
    k: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Groups concurrent requests into one call of `recommend(histories, k)`.

    A batch is sent when it holds `max_batch_size` requests or when its oldest request has
    waited `max_wait_ms`; while one batch runs in the inference thread, the next one fills up,
    so batches grow with load. Each request gets the top `k` of a call made with the batch's
    largest k (a top-k list is a prefix of a longer one). A request whose client went away
    (its future cancelled) is left out of its batch. `run_exclusive` runs other work (catalogue
    changes) in the inference thread, between two batches.
    """

    def __init__(self, recommend, max_batch_size: int = 16, max_wait_ms: float = 5.0):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise CftrecError("max batch size must be at least 1 and max wait at least 0 ms")
        self._recommend = recommend
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.calls = 0  # recommend calls made
        self.requests = 0  # histories answered through them
        self.largest_batch = 0
        self.skipped = 0  # requests whose client left before their batch ran
        self._pending: collections.deque[_Pending] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="cftrec-inference")
        self._task = asyncio.create_task(self._run_forever())

    async def stop(self) -> None:
        """Called once the server has stopped taking requests and the in-flight ones have been
        answered; anything still queued (a shutdown that timed out) fails. A batch still
        running finishes in its thread without holding up the event loop."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._pending:
            entry = self._pending.popleft()
            if not entry.future.done():
                entry.future.set_exception(RuntimeError("server shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, history: list[str], k: int) -> list[Recommendation]:
        if self._task is None or self._task.done():
            raise RuntimeError("micro-batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(history, k, future))
        self._arrived.set()
        return await future

    async def run_exclusive(self, function, *args):
        """`function(*args)` in the inference thread, after the batch running now (if any)
        and before the next one."""
        if self._task is None or self._task.done():
            raise RuntimeError("micro-batcher is not running")
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _run_forever(self) -> None:
        while True:
            await self._arrived.wait()
            # Wait for the batch to fill, but never past the oldest request's deadline.
            deadline = self._pending[0].arrived + self.max_wait_s
            while len(self._pending) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            size = min(self.max_batch_size, len(self._pending))
            batch = [self._pending.popleft() for _ in range(size)]
            if not self._pending:
                self._arrived.clear()
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        live = [entry for entry in batch if not entry.future.done()]  # client gone: skip
        self.skipped += len(batch) - len(live)
        if not live:
            return
        k = max(entry.k for entry in live)
        histories = [entry.history for entry in live]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._recommend, histories, k)
        except Exception as error:  # one failed call fails its batch, not the server
            for entry in live:
                if not entry.future.done():
                    entry.future.set_exception(error)
            return
        self.calls += 1
        self.requests += len(live)
        self.largest_batch = max(self.largest_batch, len(live))
        for entry, recommendations in zip(live, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(recommendations[: entry.k])


async def _json_response(send, status: int, detail: str) -> None:
    """A complete JSON error response that closes the connection."""
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestGuard:
    """ASGI middleware in front of the app, for what happens below FastAPI:

    - a request body over `max_bytes` gets 413 before the app reads it (checked on the declared
      Content-Length and on the bytes actually received);
    - a body not received in full within `body_timeout_s` (a stalled or trickled upload) gets
      408, so a slow client cannot hold a connection for ever;
    - a request cancelled before it was answered (in-flight when the graceful-shutdown timeout
      ran out) gets 503 and one log line, not a 500 and a traceback.
    """

    def __init__(self, app, max_bytes: int, body_timeout_s: float):
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        chunks, size = [], 0
        deadline = time.monotonic() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - time.monotonic())
            except TimeoutError:
                return await _json_response(
                    send, 408, f"request body not received within {self.body_timeout_s:g} s"
                )
            if message["type"] != "http.request":  # client disconnected
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tracked_send)
        except asyncio.CancelledError:  # only the server cancels a request: shutting down
            log.warning(
                "%s %s cut off by the graceful-shutdown timeout: answered 503",
                scope["method"],
                scope["path"],
            )
            if not started:
                await _json_response(send, 503, "server shutting down; retry")

    async def _too_large(self, send) -> None:
        await _json_response(send, 413, f"request body larger than {self.max_bytes} bytes")


class SafeJSONResponse(JSONResponse):
    """JSON that can always be sent: text that UTF-8 cannot encode (a lone surrogate that a
    client sent and an error message echoes) is written as a \\u escape."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, separators=(",", ":")).encode()


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


class _ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _until_disconnected(request: Request, work):
    """Await `work`; if the client disconnects first, cancel it (a request still queued in the
    micro-batcher is then skipped, not decoded) and raise _ClientGone."""
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
    raise _ClientGone


def create_app(
    service: RecommendService,
    *,
    api_key: str | None = None,
    max_batch_size: int = 16,
    max_wait_ms: float = 5.0,
    max_history_entries: int = 100,
    max_k: int = 50,
    max_batch_requests: int = 64,
    max_new_items: int = 1000,
    max_body_bytes: int = 65536,
    body_timeout_s: float = 30.0,
):
    """The FastAPI app over a loaded run. `api_key=None` disables auth (an empty key is an
    error). The returned app is wrapped in `RequestGuard`; the FastAPI object is `app.api`
    (its `state.batcher` holds the micro-batcher and its counters)."""
    if api_key is not None and not api_key.strip():
        raise CftrecError("the API key is empty: give a real key, or none")
    if body_timeout_s <= 0:
        raise CftrecError("the body timeout must be positive")
    k_limit = min(max_k, service.k_limit or max_k)
    batcher = MicroBatcher(service.recommend, max_batch_size, max_wait_ms)
    started = time.monotonic()
    # Every catalogue title and item id must fit, also as a raw source spelled it (HTML
    # entities are longer than the characters they stand for): twice the longest, at least 500.
    catalog = service.catalog
    longest = max(len(text) for text in [*catalog.titles, *catalog.item_ids])
    max_entry_chars = max(500, 2 * longest)

    # (pydantic refuses text with lone surrogates; SafeJSONResponse can echo it in the 422)
    entry_text = Annotated[str, StringConstraints(min_length=1, max_length=max_entry_chars)]
    strict = ConfigDict(extra="forbid", strict=True)

    class RecommendRequest(BaseModel):
        model_config = strict
        history: list[entry_text] = Field(
            max_length=max_history_entries,
            description="Catalogue titles or item ids, oldest first ([] = cold start). Only "
            f"the last {service.max_history} are used (the run's history window).",
        )
        k: int = Field(min(10, k_limit), ge=1, le=k_limit, description="How many titles.")

    class BatchRequest(BaseModel):
        model_config = strict
        requests: list[RecommendRequest] = Field(min_length=1, max_length=max_batch_requests)

    class NewItem(BaseModel):
        model_config = strict
        item_id: entry_text
        title: entry_text

    class AddItemsRequest(BaseModel):
        model_config = strict
        items: list[NewItem] = Field(min_length=1, max_length=max_new_items)

    @asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    api = FastAPI(
        title="cftrec",
        summary="Next-item recommendations from a cftrec run.",
        version=_version(),
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    api.state.batcher = batcher
    api.state.service = service

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_request, error: RequestValidationError) -> SafeJSONResponse:
        return SafeJSONResponse({"detail": jsonable_encoder(error.errors())}, status_code=422)

    @api.exception_handler(_ClientGone)
    async def client_gone(_request, _error) -> Response:
        return Response(status_code=CLIENT_CLOSED)

    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def require_key(key: Annotated[str | None, Security(header)]) -> None:
        if api_key is None:
            return
        if key is None or not hmac.compare_digest(key.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key (send it in the X-API-Key header)")

    authorized = [Depends(require_key)]

    def resolve(histories: list[tuple[list[str], tuple]]) -> list[list[str]]:
        """Item ids for each (history, location) of one request, or 422 naming its unknown
        entries (the first MAX_PROBLEMS) with the closest catalogue titles. Runs in a worker
        thread: suggestions never hold up the event loop."""
        catalog = service.catalog  # one snapshot for the whole request
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
        return [
            resolve_history(catalog, history)[-service.max_history :] for history, _ in histories
        ]

    async def answer(item_ids: list[str], k: int) -> RecommendResponse:
        recommendations = await batcher.submit(item_ids, k)
        return RecommendResponse(recommendations=[r.to_dict() for r in recommendations])

    @api.post("/recommend", response_model=RecommendResponse, dependencies=authorized)
    async def recommend(body: RecommendRequest, request: Request) -> RecommendResponse:
        """Top-k catalogue titles for one history."""
        (item_ids,) = await asyncio.to_thread(resolve, [(body.history, ("body", "history"))])
        return await _until_disconnected(request, answer(item_ids, body.k))

    @api.post("/recommend/batch", response_model=BatchResponse, dependencies=authorized)
    async def recommend_batch(body: BatchRequest, request: Request) -> BatchResponse:
        """Several histories at once (each validated; they join the same micro-batches)."""
        where = [
            (r.history, ("body", "requests", i, "history")) for i, r in enumerate(body.requests)
        ]
        resolved = await asyncio.to_thread(resolve, where)
        results = asyncio.gather(
            *(answer(ids, r.k) for ids, r in zip(resolved, body.requests, strict=True))
        )
        return BatchResponse(results=list(await _until_disconnected(request, results)))

    @api.get("/items", response_model=ItemsResponse, dependencies=authorized)
    async def items(
        query: Annotated[
            str, Query(min_length=1, max_length=max_entry_chars, description="Title text.")
        ],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> ItemsResponse:
        """Catalogue titles containing `query` (case-insensitive), then close matches."""
        return ItemsResponse(items=await asyncio.to_thread(service.search, query, limit))

    async def change_catalogue(function, *args):
        """A catalogue change, in the inference thread between two batches: 409 when the run
        cannot take it (an ID-based baseline), 422 when the input is bad."""
        try:
            return await batcher.run_exclusive(function, *args)
        except CatalogChangeUnsupported as error:
            raise HTTPException(409, str(error)) from None
        except CftrecError as error:
            raise HTTPException(
                422, [{"type": "invalid_items", "loc": ["body", "items"], "msg": str(error)}]
            ) from None

    @api.post("/items", response_model=CatalogueChange, dependencies=authorized)
    async def add_items(body: AddItemsRequest) -> CatalogueChange:
        """Add items (LLM runs: recommendable from the next request on, no retraining). Titles
        are cleaned like a prepared dataset's; 422 for an empty title or an item id given twice
        or already in the catalogue; 409 for a baseline run, which cannot rank unseen items."""
        pairs = [(item.item_id, item.title) for item in body.items]
        added = await change_catalogue(service.add_items, pairs)
        return CatalogueChange(
            added=[NewItemOut(item_id=i, title=t) for i, t in added], catalogue=catalogue()
        )

    @api.delete("/items/{item_id:path}", response_model=CatalogueChange, dependencies=authorized)
    async def remove_item(
        item_id: Annotated[str, Path(min_length=1, max_length=max_entry_chars)],
    ) -> CatalogueChange:
        """Stop recommending an item (LLM runs): no response sent after this one returns lists
        it. 404 for an unknown item id."""

        def remove() -> None:
            if item_id not in service.catalog:
                raise LookupError(item_id)
            service.remove_items([item_id])

        try:
            await change_catalogue(remove)
        except LookupError:
            raise HTTPException(404, f"unknown item id {item_id!r}") from None
        return CatalogueChange(removed=[item_id], catalogue=catalogue())

    def catalogue() -> dict[str, Any]:
        overlay = service.overlay
        return {
            "items": len(service.catalog),
            "titles": len(service.catalog.titles),
            "trained_items": len(service.base_catalog),
            "added": len(overlay["added"]),
            "removed": len(overlay["removed"]),
            "overlay": str(service.overlay_path) if service.overlay_path.exists() else None,
        }

    @api.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and what is being served."""
        return {
            "status": "ok",
            "model": service.model_name,
            "kind": service.kind,
            "method": service.info.get("method"),
            "run": str(service.run_dir),
            "data_fingerprint": service.info.get("data_fingerprint"),
            "titles": len(service.catalog.titles),
            "catalogue": catalogue(),
            "decoding": service.decoding,
            "uptime_s": round(time.monotonic() - started, 3),
            "batching": {
                "max_batch_size": batcher.max_batch_size,
                "max_wait_ms": batcher.max_wait_s * 1000,
                "recommend_calls": batcher.calls,
                "requests": batcher.requests,
                "largest_batch": batcher.largest_batch,
                "skipped_disconnected": batcher.skipped,
            },
        }

    app = RequestGuard(api, max_body_bytes, body_timeout_s)
    app.api = api
    return app


def _version() -> str:
    from .. import __version__

    return __version__


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_auth(host: str, api_key: str | None, no_auth: bool) -> str | None:
    """Refuse unsafe authentication settings before anything loads: an empty key, a key
    together with `no_auth`, or a non-loopback `host` without a key unless `no_auth` says so.
    Returns the warning to print for an open non-loopback server (else None)."""
    if api_key is not None and not api_key.strip():
        raise CftrecError(
            f"the API key is empty (--api-key or {API_KEY_ENV}): give a key, or unset it"
        )
    if api_key is not None and no_auth:
        raise CftrecError(f"--no-auth contradicts the API key given (--api-key or {API_KEY_ENV})")
    if api_key is None and not _is_loopback(host):
        if not no_auth:
            raise CftrecError(
                f"serving on {host} (not loopback) needs an API key (--api-key or "
                f"{API_KEY_ENV}); pass --no-auth to serve it open on purpose"
            )
        return (
            f"warning: serving on {host} without an API key (--no-auth): anyone who can reach "
            "this port can use the API and change the catalogue"
        )
    return None


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
            run_dir, dtype=dtype, **{"batch_size": batch_size, **(decoding or {})}
        )
    app = create_app(service, api_key=api_key, **app_options)
    if warning:
        console.print(f"[bold red]{warning}[/]")
    changes = service.overlay
    console.print(
        f"serving [bold]{run_dir}[/] ({service.kind}, {service.model_name}, "
        f"{len(service.catalog.titles)} titles; overlay +{len(changes['added'])} "
        f"-{len(changes['removed'])} items) on http://{host}:{port}  docs: /docs  "
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
