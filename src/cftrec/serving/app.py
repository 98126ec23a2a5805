"""The HTTP API (`cftrec serve`): FastAPI app factory, micro-batcher, API-key auth, runner.

    POST /recommend        {"history": [titles or item ids], "k": 10}
                           -> {"recommendations": [{"title", "item_ids", "score"}, ...]}
    POST /recommend/batch  {"requests": [{"history": [...], "k": 10}, ...]} -> {"results": [...]}
    GET  /items?query=...  title search -> {"items": [{"title", "item_ids"}]}
    GET  /health           model, data fingerprint, uptime, batching counters (no key needed)
    GET  /docs             OpenAPI documentation

The model is loaded once. Concurrent requests are queued and run together as one
`recommend` call (at most `max_batch_size` histories, waiting at most `max_wait_ms` for a batch
to fill) in a single worker thread, so the event loop keeps accepting requests meanwhile.
"""

# No `from __future__ import annotations`: FastAPI must see the request models built inside
# `create_app` (their bounds come from the server's options) as real classes.

import asyncio
import collections
import hmac
import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..errors import CftrecError
from ..recommendation import Recommendation
from .service import RecommendService

API_KEY_HEADER = "X-API-Key"
API_KEY_ENV = "CFTREC_API_KEY"


@dataclass
class _Pending:
    history: list[str]
    k: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """Groups concurrent requests into one call of `recommend(histories, k)`.

    A batch is sent when it holds `max_batch_size` requests or when its oldest request has
    waited `max_wait_ms`; while one batch runs in the worker thread, the next one fills up, so
    batches grow with load. Each request gets the top `k` of a call made with the batch's
    largest k (a top-k list is a prefix of a longer one).
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
        answered; anything still queued (a shutdown that timed out) fails."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._pending:
            entry = self._pending.popleft()
            if not entry.future.done():
                entry.future.set_exception(RuntimeError("server shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, history: list[str], k: int) -> list[Recommendation]:
        if self._task is None or self._task.done():
            raise RuntimeError("micro-batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(history, k, future))
        self._arrived.set()
        return await future

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
        batch = [entry for entry in batch if not entry.future.done()]  # client gone: skip
        if not batch:
            return
        k = max(entry.k for entry in batch)
        histories = [entry.history for entry in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._recommend, histories, k)
        except Exception as error:  # one failed call fails its batch, not the server
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
            return
        self.calls += 1
        self.requests += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for entry, recommendations in zip(batch, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(recommendations[: entry.k])


class BodySizeLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before the app reads it
    (checked on the declared Content-Length and on the bytes actually received)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client disconnected
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._reject(send)
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

        return await self.app(scope, replay, send)

    async def _reject(self, send) -> None:
        payload = json.dumps(
            {"detail": f"request body larger than {self.max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


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


def create_app(
    service: RecommendService,
    *,
    api_key: str | None = None,
    max_batch_size: int = 16,
    max_wait_ms: float = 5.0,
    max_history_entries: int = 100,
    max_k: int = 50,
    max_batch_requests: int = 64,
    max_body_bytes: int = 65536,
):
    """The FastAPI app over a loaded run. `api_key=None` disables auth. The returned app is
    wrapped in the body-size middleware; the FastAPI object is `app.api` (its
    `state.batcher` holds the micro-batcher and its counters)."""
    k_limit = min(max_k, service.k_limit or max_k)
    batcher = MicroBatcher(service.recommend, max_batch_size, max_wait_ms)
    started = time.monotonic()

    entry_text = Annotated[str, StringConstraints(min_length=1, max_length=500)]

    class RecommendRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        history: list[entry_text] = Field(
            max_length=max_history_entries,
            description="Catalogue titles or item ids, oldest first ([] = cold start). Only "
            f"the last {service.max_history} are used (the run's history window).",
        )
        k: int = Field(min(10, k_limit), ge=1, le=k_limit, description="How many titles.")

    class BatchRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        requests: list[RecommendRequest] = Field(min_length=1, max_length=max_batch_requests)

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
    )
    api.state.batcher = batcher
    api.state.service = service

    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

    def require_key(key: Annotated[str | None, Security(header)]) -> None:
        if api_key is None:
            return
        if key is None or not hmac.compare_digest(key.encode(), api_key.encode()):
            raise HTTPException(401, "missing or wrong API key (send it in the X-API-Key header)")

    authorized = [Depends(require_key)]

    def resolve(history: list[str], where: tuple) -> list[str]:
        """Item ids for one request's history, or 422 naming each unknown entry with the
        closest catalogue titles."""
        problems = []
        for position, entry in enumerate(history):
            try:
                service.resolve([entry])
            except CftrecError as error:
                problems.append(
                    {
                        "type": "unknown_item",
                        "loc": [*where, position],
                        "msg": str(error),
                        "input": entry,
                        "suggestions": service.close_titles(entry),
                    }
                )
        if problems:
            raise HTTPException(422, problems)
        return service.resolve(history)

    async def answer(item_ids: list[str], k: int) -> RecommendResponse:
        recommendations = await batcher.submit(item_ids, k)
        return RecommendResponse(recommendations=[r.to_dict() for r in recommendations])

    @api.post("/recommend", response_model=RecommendResponse, dependencies=authorized)
    async def recommend(request: RecommendRequest) -> RecommendResponse:
        """Top-k catalogue titles for one history."""
        return await answer(resolve(request.history, ("body", "history")), request.k)

    @api.post("/recommend/batch", response_model=BatchResponse, dependencies=authorized)
    async def recommend_batch(request: BatchRequest) -> BatchResponse:
        """Several histories at once (each validated; they join the same micro-batches)."""
        resolved = [
            resolve(r.history, ("body", "requests", i, "history"))
            for i, r in enumerate(request.requests)
        ]
        results = await asyncio.gather(
            *(answer(ids, r.k) for ids, r in zip(resolved, request.requests, strict=True))
        )
        return BatchResponse(results=list(results))

    @api.get("/items", response_model=ItemsResponse, dependencies=authorized)
    async def items(
        query: Annotated[str, Query(min_length=1, max_length=200, description="Title text.")],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> ItemsResponse:
        """Catalogue titles containing `query` (case-insensitive), then close matches."""
        return ItemsResponse(items=service.search(query, limit))

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
            "decoding": service.decoding,
            "uptime_s": round(time.monotonic() - started, 3),
            "batching": {
                "max_batch_size": batcher.max_batch_size,
                "max_wait_ms": batcher.max_wait_s * 1000,
                "recommend_calls": batcher.calls,
                "requests": batcher.requests,
                "largest_batch": batcher.largest_batch,
            },
        }

    app = BodySizeLimit(api, max_body_bytes)
    app.api = api
    return app


def _version() -> str:
    from .. import __version__

    return __version__


def serve(
    run_dir,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    graceful_timeout_s: float = 30.0,
    log_level: str = "info",
    decoding: dict[str, Any] | None = None,
    dtype: str | None = None,
    **app_options,
) -> None:
    """Load the run once and serve it until SIGINT/SIGTERM. On SIGTERM uvicorn stops accepting
    connections and lets in-flight requests finish (up to `graceful_timeout_s`), then the
    micro-batcher is stopped."""
    import uvicorn
    from rich.console import Console

    console = Console(stderr=True)
    with console.status(f"loading {run_dir}"):
        # An LLM decodes each micro-batch as one batch (the Recommender's default is 8).
        batch_size = app_options.get("max_batch_size", 16)
        service = RecommendService.load(
            run_dir, dtype=dtype, **{"batch_size": batch_size, **(decoding or {})}
        )
    app = create_app(service, api_key=api_key, **app_options)
    console.print(
        f"serving [bold]{run_dir}[/] ({service.kind}, {service.model_name}, "
        f"{len(service.catalog.titles)} titles) on http://{host}:{port}  docs: /docs  "
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
