"""MicroBatcher semantics with a recording recommend function (the batcher alone; the real
recommenders behind it are covered by test_serving_app.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cftrec.serving.app import MicroBatcher


class Recorder:
    """recommend(histories, k): answers each history with k strings naming it; records calls."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[tuple[list[list[str]], int, str]] = []
        self.fail_on = fail_on

    def __call__(self, histories, k):
        self.calls.append(([list(h) for h in histories], k, threading.current_thread().name))
        if any(self.fail_on in h for h in histories):
            raise ValueError("boom")
        return [[f"{h[0]}#{i}" for i in range(k)] for h in histories]


def test_batches_are_capped_and_each_request_gets_its_own_top_k():
    recorder = Recorder()

    async def scenario():
        batcher = MicroBatcher(recorder, max_batch_size=4, max_wait_ms=50)
        await batcher.start()
        try:
            requests = [([f"h{i}"], 1 + i % 4) for i in range(10)]
            answers = await asyncio.gather(*(batcher.submit(h, k) for h, k in requests))
        finally:
            await batcher.stop()
        return requests, answers, batcher

    requests, answers, batcher = asyncio.run(scenario())
    for (history, k), answer in zip(requests, answers, strict=True):
        assert answer == [f"{history[0]}#{i}" for i in range(k)]
    sizes = [len(histories) for histories, _, _ in recorder.calls]
    assert sizes == [4, 4, 2] and sum(sizes) == 10
    assert [k for _, k, _ in recorder.calls] == [4, 4, 2]  # each call uses its batch's largest k
    assert all(name.startswith("cftrec-inference") for _, _, name in recorder.calls)
    assert (batcher.calls, batcher.requests, batcher.largest_batch) == (3, 10, 4)


def test_a_failing_call_fails_only_its_batch():
    recorder = Recorder(fail_on="bad")

    async def scenario():
        batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_ms=0)
        await batcher.start()
        try:
            with pytest.raises(ValueError, match="boom"):
                await batcher.submit(["bad"], 2)
            return await batcher.submit(["good"], 2)
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()) == ["good#0", "good#1"]


def test_no_wait_and_sequential_requests_run_one_by_one():
    recorder = Recorder()

    async def scenario():
        batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_ms=0)
        await batcher.start()
        try:
            for i in range(3):
                await batcher.submit([f"h{i}"], 1)
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert [len(histories) for histories, _, _ in recorder.calls] == [1, 1, 1]
