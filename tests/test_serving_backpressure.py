"""Backpressure of the server: a bounded decoding queue (full: 503 + Retry-After at once), a wait
limit (not started in time: 503 + Retry-After, never decoded), a per-request deadline (504; the
batch decoding meanwhile runs to its end and the late result is dropped), and /health's queue
depth. No wall-clock thresholds: a gate holds the inference thread until the test releases it,
so every request's fate is decided while it is blocked."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cftrec.errors import CftrecError
from cftrec.serving.app import create_app
from cftrec.serving.batcher import DeadlineExceeded, MicroBatcher, Overloaded
from cftrec.serving.service import RecommendService
from serving_fixtures import make_dataset, make_pop_run, running_server, wait_until


class Gate:
    """A recommend function whose first call holds the inference thread until `release`;
    records the histories of every call."""

    def __init__(self, recommend=None):
        self.recommend = recommend or (lambda histories, k: [[h[0]] * k for h in histories])
        self.busy, self.release = threading.Event(), threading.Event()
        self.decoded: list[list[list[str]]] = []

    def __call__(self, histories, k):
        self.decoded.append([list(h) for h in histories])
        if len(self.decoded) == 1:
            self.busy.set()
            assert self.release.wait(timeout=60)
        return self.recommend(histories, k)


# ------------------------------------------------------------------ the micro-batcher alone


def _run(scenario):
    return asyncio.run(scenario())


def test_a_full_queue_refuses_at_once_all_or_none():
    gate = Gate()

    async def scenario():
        batcher = MicroBatcher(gate, max_batch_size=2, max_wait_ms=0, max_queue=3)
        await batcher.start()
        try:
            decoding = asyncio.ensure_future(batcher.submit(["a"], 1))
            await asyncio.to_thread(gate.busy.wait, 30)
            queued = [asyncio.ensure_future(batcher.submit([h], 1)) for h in "bc"]
            await asyncio.sleep(0)  # they join the queue
            assert batcher.queued == 2
            with pytest.raises(Overloaded, match="queue is full") as refused:
                await batcher.submit_many([(["d"], 1), (["e"], 1)])  # 2 do not fit in 1
            assert refused.value.retry_after_s >= 1
            assert batcher.queued == 2 and batcher.rejected == 2
            gate.release.set()
            return await asyncio.gather(decoding, *queued), await batcher.submit(["f"], 1)
        finally:
            await batcher.stop()

    answers, later = _run(scenario)
    assert answers == [["a"], ["b"], ["c"]] and later == ["f"]
    assert gate.decoded == [[["a"]], [["b"], ["c"]], [["f"]]]  # "d" and "e" never decoded


def test_a_request_not_started_in_time_leaves_the_queue_undecoded():
    gate = Gate()

    async def scenario():
        batcher = MicroBatcher(gate, max_wait_ms=0, queue_timeout_s=0.05)
        await batcher.start()
        try:
            decoding = asyncio.ensure_future(batcher.submit(["a"], 1))
            await asyncio.to_thread(gate.busy.wait, 30)
            with pytest.raises(Overloaded, match="not started within the queue timeout"):
                await batcher.submit(["b"], 1)  # the gate is still closed
            assert (batcher.queued, batcher.expired) == (0, 1)
            gate.release.set()
            return await decoding
        finally:
            await batcher.stop()

    assert _run(scenario) == ["a"]
    assert gate.decoded == [[["a"]]]


def test_past_its_deadline_a_request_fails_and_its_late_result_is_dropped():
    gate = Gate()

    async def scenario():
        batcher = MicroBatcher(gate, max_wait_ms=0, queue_timeout_s=0.05, request_timeout_s=0.1)
        await batcher.start()
        try:
            with pytest.raises(DeadlineExceeded, match="still decoding"):
                await batcher.submit(["a"], 1)  # decoding started, the gate is still closed
            gate.release.set()
            return await batcher.submit(["b"], 1), batcher
        finally:
            await batcher.stop()

    answer, batcher = _run(scenario)
    assert answer == ["b"] and gate.decoded == [[["a"]], [["b"]]]
    assert (batcher.overdue, batcher.calls, batcher.requests) == (1, 2, 1)


def test_limits_are_checked():
    with pytest.raises(CftrecError, match="at least the queue timeout"):
        MicroBatcher(Gate(), queue_timeout_s=10, request_timeout_s=5)
    with pytest.raises(CftrecError, match="max queue"):
        MicroBatcher(Gate(), max_queue=0)


# ------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("backpressure")
    return make_pop_run(root, make_dataset(root))


def _gated_app(pop_run, **limits):
    service = RecommendService.load(pop_run)
    gate = Gate(service.recommend)
    service.recommend = gate  # before create_app: the micro-batcher calls it
    app = create_app(service, max_batch_size=1, max_wait_ms=0, **limits)
    return app, gate, app.api.state.batcher


def test_http_full_queue_is_503_with_retry_after_and_health_shows_the_queue(pop_run):
    app, gate, batcher = _gated_app(pop_run, max_queue=2, queue_timeout_s=60)
    with running_server(app) as url, ThreadPoolExecutor(3) as pool:

        def post(history):
            return pool.submit(
                httpx.post, f"{url}/recommend", json={"history": history}, timeout=60
            )

        first = post(["0"])
        assert gate.busy.wait(timeout=30)
        queued = [post(["1"])]
        wait_until(lambda: batcher.queued == 1, "one request is queued")
        queued.append(post(["2"]))  # after the first is queued: the order is known
        wait_until(lambda: batcher.queued == 2, "two requests are queued")
        batching = httpx.get(f"{url}/health").json()["batching"]
        assert batching["queue_depth"] == 2
        assert (batching["max_queue"], batching["queue_timeout_s"]) == (2, 60)
        assert batching["request_timeout_s"] == 60

        refused = httpx.post(f"{url}/recommend", json={"history": ["3"]})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert "queue is full" in refused.json()["detail"]
        batch = {"requests": [{"history": ["3"]}]}
        assert httpx.post(f"{url}/recommend/batch", json=batch).status_code == 503
        too_many = {"requests": [{"history": ["3"]}] * 3}  # more than the queue holds
        assert httpx.post(f"{url}/recommend/batch", json=too_many).status_code == 422

        gate.release.set()
        assert [f.result().status_code for f in (first, *queued)] == [200, 200, 200]
        batching = httpx.get(f"{url}/health").json()["batching"]
    assert gate.decoded == [[["0"]], [["1"]], [["2"]]]
    assert batching["queue_depth"] == 0 and batching["rejected_queue_full"] == 2


def test_http_wait_limit_is_503_and_the_deadline_504(pop_run):
    app, gate, batcher = _gated_app(pop_run, queue_timeout_s=0.05, request_timeout_s=0.5)
    with running_server(app) as url, ThreadPoolExecutor(1) as pool:
        first = pool.submit(httpx.post, f"{url}/recommend", json={"history": ["0"]}, timeout=60)
        assert gate.busy.wait(timeout=30)
        waited = httpx.post(f"{url}/recommend", json={"history": ["1"]}, timeout=60)
        assert waited.status_code == 503 and waited.headers["Retry-After"] == "1"
        assert "queue timeout (0.05 s)" in waited.json()["detail"]
        late = first.result()  # answered while its batch is still held
        assert late.status_code == 504 and "request timeout (0.5 s)" in late.json()["detail"]
        gate.release.set()
        wait_until(lambda: batcher.calls == 1, "the held batch has finished")
        assert httpx.post(f"{url}/recommend", json={"history": ["2"]}).status_code == 200
        batching = httpx.get(f"{url}/health").json()["batching"]
    assert gate.decoded == [[["0"]], [["2"]]]  # "1" never decoded
    assert (batching["expired_in_queue"], batching["deadline_exceeded"]) == (1, 1)
    assert batching["requests"] == 1  # the late result was dropped


def test_serve_passes_the_limits(pop_run, monkeypatch):
    import uvicorn

    from cftrec.cli import main

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(self.config.app))
    main(["serve", "--run", str(pop_run), "--max-queue", "5", "--queue-timeout", "2",
          "--request-timeout", "7"])  # fmt: skip
    batcher = served[0].api.state.batcher
    assert (batcher.max_queue, batcher.queue_timeout_s, batcher.request_timeout_s) == (5, 2, 7)
