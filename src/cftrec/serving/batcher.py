"""Micro-batching: concurrent requests answered together by one `recommend` call, in a single
inference thread, so the event loop keeps accepting requests meanwhile. The queue is bounded
and every request has a time limit (backpressure), so an overloaded server answers at once
instead of letting requests wait behind the queue."""

from __future__ import annotations

import asyncio
import collections
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import CftrecError
from ..recommendation import Recommendation


class Overloaded(Exception):
    """Turned away by backpressure (HTTP 503 with Retry-After): the queue was full, or the
    request waited longer than the queue timeout before its batch started."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(Exception):
    """No answer within the request timeout (HTTP 504)."""


@dataclass
class _Pending:
    history: list[str]
    k: int
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)
    timer: asyncio.TimerHandle | None = None  # queue timeout while queued, then the deadline


class MicroBatcher:
    """Groups concurrent requests into one call of `recommend(histories, k)`.

    A batch is sent when it holds `max_batch_size` requests or when its oldest request has
    waited `max_wait_ms`; while one batch runs in the inference thread, the next one fills up,
    so batches grow with load. Each request gets the top `k` of a call made with the batch's
    largest k (a top-k list is a prefix of a longer one). A request whose client went away
    (its future cancelled) is left out of its batch. `run_exclusive` runs other work (catalogue
    changes) in the inference thread, between two batches.

    Backpressure, counted in histories (one per /recommend, each of a /recommend/batch):
    at most `max_queue` wait; more are refused at once (Overloaded). One that has not started
    decoding `queue_timeout_s` after it arrived leaves the queue (Overloaded). One not answered
    `request_timeout_s` after it arrived fails (DeadlineExceeded): a batch cannot be stopped
    mid-decoding, so it runs to the end and the late request's result is dropped (the others
    in the batch get theirs).
    """

    def __init__(
        self,
        recommend,
        max_batch_size: int = 16,
        max_wait_ms: float = 5.0,
        max_queue: int = 64,
        queue_timeout_s: float = 10.0,
        request_timeout_s: float = 60.0,
    ):
        if max_batch_size < 1 or max_wait_ms < 0:
            raise CftrecError("max batch size must be at least 1 and max wait at least 0 ms")
        if max_queue < 1 or queue_timeout_s <= 0:
            raise CftrecError("the max queue must be at least 1 and the queue timeout positive")
        if request_timeout_s < queue_timeout_s:
            raise CftrecError(
                "the request timeout must be at least the queue timeout (it covers the wait)"
            )
        self._recommend = recommend
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.request_timeout_s = request_timeout_s
        self.calls = 0  # recommend calls made
        self.requests = 0  # histories answered through them
        self.largest_batch = 0
        self.skipped = 0  # requests whose client left before their batch ran
        self.rejected = 0  # refused: the queue was full
        self.expired = 0  # left the queue: not started within the queue timeout
        self.overdue = 0  # not answered within the request timeout
        self.last_batch_s: float | None = None  # how long the last recommend call took
        self._pending: collections.deque[_Pending] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def queued(self) -> int:
        """Requests waiting for their batch whose client is still there (readable from any
        thread: it counts over a copy of the queue)."""
        return sum(not entry.future.done() for entry in tuple(self._pending))

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained (a refused client's Retry-After): the
        batches ahead times the last batch's duration (before any: the queue timeout)."""
        if self.last_batch_s is None:
            return max(1, math.ceil(self.queue_timeout_s))
        batches_ahead = self.queued // self.max_batch_size + 1
        return max(1, math.ceil(batches_ahead * self.last_batch_s))

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
            entry.timer.cancel()
            if not entry.future.done():
                entry.future.set_exception(RuntimeError("server shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, history: list[str], k: int) -> list[Recommendation]:
        return (await self.submit_many([(history, k)]))[0]

    async def submit_many(
        self, requests: list[tuple[list[str], int]]
    ) -> list[list[Recommendation]]:
        """Top-k for each (history, k): all queued together, or none (Overloaded) when the
        queue has no room for them all."""
        self._require_running()
        if self.queued + len(requests) > self.max_queue:
            self.rejected += len(requests)
            raise Overloaded(
                f"server busy: the queue is full ({self.max_queue} requests); retry later",
                self.retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        entries = [_Pending(history, k, loop.create_future()) for history, k in requests]
        for entry in entries:
            entry.timer = loop.call_later(self.queue_timeout_s, self._expire, entry)
            self._pending.append(entry)
        self._arrived.set()
        futures = [entry.future for entry in entries]
        try:
            return list(await asyncio.gather(*futures))
        finally:
            for future in futures:  # one failed or the client left: the rest is not decoded
                future.cancel()

    async def run_exclusive(self, function, *args):
        """`function(*args)` in the inference thread, after the batch running now (if any)
        and before the next one."""
        self._require_running()
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _require_running(self) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("micro-batcher is not running")

    def _expire(self, entry: _Pending) -> None:
        """The queue timeout of a request still queued: it leaves the queue, answered 503."""
        if entry.future.done():  # its client left: its batch skips it
            return
        self._pending.remove(entry)
        self.expired += 1
        entry.future.set_exception(
            Overloaded(
                f"server busy: not started within the queue timeout ({self.queue_timeout_s:g} "
                "s); retry later",
                self.retry_after_s(),
            )
        )

    def _overdue(self, entry: _Pending) -> None:
        """The deadline of a request whose batch is still decoding: it fails now (504)."""
        if entry.future.done():
            return
        self.overdue += 1
        entry.future.set_exception(
            DeadlineExceeded(
                f"no answer within the request timeout ({self.request_timeout_s:g} s): its "
                "batch was still decoding"
            )
        )

    async def _run_forever(self) -> None:
        while True:
            await self._arrived.wait()
            if not self._pending:  # its requests left the queue before a batch formed
                self._arrived.clear()
                continue
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
        loop = asyncio.get_running_loop()
        for entry in batch:  # started: the queue timeout no longer applies, the deadline does
            entry.timer.cancel()
            remaining = entry.arrived + self.request_timeout_s - time.monotonic()
            entry.timer = loop.call_later(remaining, self._overdue, entry)
        live = [entry for entry in batch if not entry.future.done()]  # client gone: skip
        self.skipped += len(batch) - len(live)
        try:
            if live:
                await self._decode(live)
        finally:
            for entry in batch:
                entry.timer.cancel()

    async def _decode(self, live: list[_Pending]) -> None:
        k = max(entry.k for entry in live)
        histories = [entry.history for entry in live]
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            results = await loop.run_in_executor(self._executor, self._recommend, histories, k)
        except Exception as error:  # one failed call fails its batch, not the server
            for entry in live:
                if not entry.future.done():
                    entry.future.set_exception(error)
            return
        self.last_batch_s = time.monotonic() - started
        self.calls += 1
        self.largest_batch = max(self.largest_batch, len(live))
        for entry, recommendations in zip(live, results, strict=True):
            if not entry.future.done():  # not past its deadline
                entry.future.set_result(recommendations[: entry.k])
                self.requests += 1
