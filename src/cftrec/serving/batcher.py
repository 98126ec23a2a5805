"""Micro-batching: concurrent requests answered together by one `recommend` call, in a single
inference thread, so the event loop keeps accepting requests meanwhile."""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import CftrecError
from ..recommendation import Recommendation


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

    @property
    def queued(self) -> int:
        """Requests waiting for their batch whose client is still there (readable from any
        thread: it counts over a copy of the queue)."""
        return sum(not entry.future.done() for entry in tuple(self._pending))

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
        self._require_running()
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(history, k, future))
        self._arrived.set()
        return await future

    async def run_exclusive(self, function, *args):
        """`function(*args)` in the inference thread, after the batch running now (if any)
        and before the next one."""
        self._require_running()
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _require_running(self) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("micro-batcher is not running")

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
