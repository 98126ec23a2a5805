"""Hostile input to the HTTP service: bad text and numbers, long catalogue titles, stalled
uploads, clients that leave, and unsafe authentication settings."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time

import httpx
import pandas as pd
import pytest

from cftrec.baselines.popularity import train_popularity
from cftrec.cli import main
from cftrec.data.dataset import write_dataset
from cftrec.errors import CftrecError
from cftrec.serving.app import check_auth, create_app, serve
from cftrec.serving.guard import RequestGuard
from cftrec.serving.service import RecommendService
from serving_fixtures import free_port, make_dataset, make_pop_run, running_server, wait_until

LONG_TITLE = "The Long Title: " + "a very long subtitle, " * 30 + "(2026)"  # 677 characters


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    return make_pop_run(root, make_dataset(root))


@pytest.fixture(scope="module")
def server(pop_run):
    with running_server(create_app(RecommendService.load(pop_run))) as url:
        yield url


def _post(url: str, raw: str, path: str = "/recommend") -> httpx.Response:
    return httpx.post(
        f"{url}{path}", content=raw.encode(), headers={"content-type": "application/json"}
    )


@pytest.mark.parametrize(
    "raw",
    [
        '{"history": ["\\ud800"]}',
        '{"history": ["Heat (1995)\\udfff"], "k": 2}',
        '{"requests": [{"history": ["\\ud800"]}]}',
    ],
)
def test_lone_surrogates_are_422_not_500(server, raw):
    path = "/recommend/batch" if "requests" in raw else "/recommend"
    response = _post(server, raw, path)
    assert response.status_code == 422, response.text
    assert "unicode" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("k", ["true", "false", "2.0", '"2"', "null"])
def test_k_must_be_a_real_integer(server, k):
    response = _post(server, f'{{"history": ["Heat (1995)"], "k": {k}}}')
    assert response.status_code == 422, (k, response.text)
    assert _post(server, '{"history": ["Heat (1995)"], "k": 2}').status_code == 200


def test_history_entries_must_be_strings(server):
    assert _post(server, '{"history": [1, 2]}').status_code == 422
    assert _post(server, '{"history": [true]}').status_code == 422


def test_every_catalogue_title_is_accepted_however_long(tmp_path):
    titles = ["Heat (1995)", LONG_TITLE, "Fargo (1996)"]
    items = pd.DataFrame({"item_id": ["0", "1", "2"], "title": titles})
    rows = [(f"u{u}", str((u + p) % 3), p, "train" if p < 2 else "test") for u in range(4)
            for p in range(3)]  # fmt: skip
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "split"])
    data = write_dataset(tmp_path / "data", items, interactions, {"source": "synthetic"})
    train_popularity(data, tmp_path / "pop")
    app = create_app(RecommendService.load(tmp_path / "pop"))
    with running_server(app) as url:
        ok = httpx.post(f"{url}/recommend", json={"history": [LONG_TITLE, "Heat (1995)"], "k": 3})
        assert ok.status_code == 200, ok.text
        found = httpx.get(f"{url}/items", params={"query": LONG_TITLE})
        assert found.json()["items"][0]["title"] == LONG_TITLE
        too_long = httpx.post(
            f"{url}/recommend", json={"history": ["x" * (2 * len(LONG_TITLE) + 1)]}
        )
        assert too_long.status_code == 422


def _post_head(body: bytes) -> bytes:
    return (
        b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )


def _raw_request(port: int, head: bytes, trickle: bytes = b"", every_s: float = 0.1) -> bytes:
    """Send `head`, then `trickle` one byte every `every_s`; return the first response bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head)

        def drip():
            for byte in trickle:
                time.sleep(every_s)
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    return

        threading.Thread(target=drip, daemon=True).start()
        return sock.recv(65536)


def test_stalled_and_trickled_uploads_get_408(pop_run):
    """A body that came in full would be answered 200: a 408 says it was cut off. (When the
    deadline falls is checked on a fake clock below.)"""
    port = free_port()
    app = create_app(RecommendService.load(pop_run), body_timeout_s=0.5)
    with running_server(app, port=port):
        body = b'{"history": ["Heat (1995)"], "k": 2}'
        head = _post_head(body)
        stalled = _raw_request(port, head + body[:10])
        assert stalled.startswith(b"HTTP/1.1 408"), stalled
        # each byte well within the timeout, the whole body not (3.7 s)
        trickled = _raw_request(port, head, trickle=body, every_s=0.1)
        assert trickled.startswith(b"HTTP/1.1 408"), trickled
        whole = _raw_request(port, head + body)
        assert whole.startswith(b"HTTP/1.1 200"), whole


class FakeClock:
    """Seconds that pass only when the test moves `now`."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("chunks", "status"), [(4, 200), (5, 408)])
def test_the_body_timeout_runs_from_the_first_chunk_to_the_last(chunks, status):
    """On a fake clock, body chunks 0.25 s apart and a 1 s body timeout: a body of 4 chunks
    reaches the app whole; a longer one gets 408 once the deadline passes, its fifth chunk
    never read."""
    clock = FakeClock()
    read = []

    async def receive():
        clock.now += 0.25
        read.append(clock.now)
        return {"type": "http.request", "body": b"x", "more_body": len(read) < chunks}

    async def echo(scope, receive, send):
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    sent = []

    async def send(message):
        sent.append(message)

    guard = RequestGuard(echo, max_bytes=100, body_timeout_s=1.0, clock=clock)
    scope = {"type": "http", "method": "POST", "path": "/recommend", "headers": []}
    asyncio.run(guard(scope, receive, send))
    assert read == [0.25, 0.5, 0.75, 1.0]
    assert sent[0]["status"] == status
    if status == 200:
        assert sent[1]["body"] == b"xxxx"


def test_requests_of_clients_that_left_are_not_decoded(pop_run):
    service = RecommendService.load(pop_run)
    decoded = []
    busy, release = threading.Event(), threading.Event()
    recommend = service.recommend

    def recording(histories, k):
        decoded.append([list(h) for h in histories])
        if ["0"] in histories:  # hold the inference thread while the next client leaves
            busy.set()
            release.wait(timeout=60)
        return recommend(histories, k)

    service.recommend = recording
    app = create_app(service, max_wait_ms=0)
    batcher = app.api.state.batcher
    errors = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append
    port = free_port()
    with running_server(app, port=port) as url:
        logging.getLogger("uvicorn.error").addHandler(handler)  # uvicorn configured it by now
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, f"{url}/recommend", json={"history": ["0"]}, timeout=60)
            assert busy.wait(timeout=30)
            body = b'{"history": ["1"]}'
            with socket.create_connection(("127.0.0.1", port), timeout=15) as leaving:
                leaving.sendall(_post_head(body) + body)
                wait_until(lambda: batcher.queued == 1, "the request is queued")
            wait_until(lambda: batcher.queued == 0, "the server has seen its client leave")
            release.set()
            assert first.result().status_code == 200
        assert httpx.post(f"{url}/recommend", json={"history": ["2"]}).status_code == 200
        batching = httpx.get(f"{url}/health").json()["batching"]
    logging.getLogger("uvicorn.error").removeHandler(handler)
    assert decoded == [[["0"]], [["2"]]]
    assert batching["skipped_disconnected"] == 1 and batching["requests"] == 2
    assert [record.getMessage() for record in errors] == []  # no 500 and traceback for it


@pytest.mark.parametrize(
    ("host", "key", "no_auth", "problem"),
    [
        ("127.0.0.1", "", False, "API key is empty"),
        ("127.0.0.1", "  ", False, "API key is empty"),
        ("0.0.0.0", None, False, "needs an API key"),
        ("example.org", None, False, "needs an API key"),
        ("::", None, False, "needs an API key"),
        ("127.0.0.1", "k", True, "--no-auth contradicts"),
    ],
)
def test_unsafe_auth_settings_are_refused(host, key, no_auth, problem):
    with pytest.raises(CftrecError, match=problem):
        check_auth(host, key, no_auth)


def test_safe_auth_settings():
    assert check_auth("127.0.0.1", None, False) is None
    assert check_auth("localhost", None, False) is None
    assert check_auth("::1", None, False) is None
    assert check_auth("0.0.0.0", "s3cret", False) is None
    assert "without an API key" in check_auth("0.0.0.0", None, True)
    with pytest.raises(CftrecError, match="empty"):
        create_app(None, api_key="")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ([], {"CFTREC_API_KEY": ""}, "API key is empty"),
        (["--api-key", ""], {}, "API key is empty"),
        (["--host", "0.0.0.0"], {}, "needs an API key"),
        (["--host", "0.0.0.0", "--no-auth", "--api-key", "k"], {}, "--no-auth contradicts"),
    ],
)
def test_serve_refuses_unsafe_auth_before_loading(pop_run, monkeypatch, capsys, argv, env, message):
    monkeypatch.delenv("CFTREC_API_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--run", str(pop_run), *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_open_non_loopback_server_prints_a_warning(pop_run, monkeypatch, capsys):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: started.append(self.config.host))
    serve(pop_run, host="0.0.0.0", no_auth=True)
    err = capsys.readouterr().err
    assert started == ["0.0.0.0"]
    assert "warning: serving on 0.0.0.0 without an API key" in err and "auth: off" in err
