"""`cftrec serve` as a real process: API key from CFTREC_API_KEY; SIGTERM lets an in-flight
request finish, and one cut off by the graceful-shutdown timeout gets 503 and one log line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from serving_fixtures import free_port, make_dataset, make_pop_run


def _start(run, port: int, *options: str, api_key: str | None = None) -> subprocess.Popen:
    """`cftrec serve` in a process, once /health answers."""
    command = [
        sys.executable, "-m", "cftrec", "serve", "--run", str(run), "--port", str(port),
        "--log-level", "warning", *options,
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if key != "CFTREC_API_KEY"}
    if api_key is not None:
        env["CFTREC_API_KEY"] = api_key
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, server.stdout.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.1)


def _wait_until_queued(url: str) -> None:
    """Until /health shows a request waiting in the micro-batcher (an observable, not a sleep)."""
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/health", timeout=5).json()["batching"]["queue_depth"] < 1:
        assert time.monotonic() < deadline, "the request never reached the micro-batcher"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_finishes_in_flight_request(tmp_path):
    run = make_pop_run(tmp_path, make_dataset(tmp_path))
    port = free_port()
    # A long batching wait keeps the request in flight while SIGTERM arrives; the key may come
    # from the environment.
    server = _start(run, port, "--max-wait-ms", "5000", api_key="from-env")
    try:
        url = f"http://127.0.0.1:{port}"
        body = {"history": ["Heat (1995)"], "k": 2}
        assert httpx.post(f"{url}/recommend", json=body).status_code == 401
        result = {}

        def ask():
            result["response"] = httpx.post(
                f"{url}/recommend", json=body, headers={"X-API-Key": "from-env"}, timeout=30
            )

        client = threading.Thread(target=ask)
        client.start()
        _wait_until_queued(url)  # in flight when the signal comes
        server.send_signal(signal.SIGTERM)
        client.join(timeout=30)
        # uvicorn re-raises the signal once it has shut down cleanly (exit status -SIGTERM)
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        response = result["response"]
        assert response.status_code == 200
        assert len(response.json()["recommendations"]) == 2
        with pytest.raises(httpx.TransportError):  # and the server is gone afterwards
            httpx.get(f"{url}/health", timeout=1)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


@pytest.mark.slow
def test_requests_cut_off_by_the_shutdown_timeout_get_503_and_one_log_line(tmp_path):
    run = make_pop_run(tmp_path, make_dataset(tmp_path))
    port = free_port()
    # The request waits 20 s for its batch to fill; the server gives it 0.5 s after SIGTERM.
    server = _start(run, port, "--max-wait-ms", "20000", "--graceful-timeout", "0.5")
    try:
        result = {}

        def ask():
            body = {"history": ["Heat (1995)"], "k": 2}
            result["response"] = httpx.post(
                f"http://127.0.0.1:{port}/recommend", json=body, timeout=30
            )

        client = threading.Thread(target=ask)
        client.start()
        _wait_until_queued(f"http://127.0.0.1:{port}")
        server.send_signal(signal.SIGTERM)
        client.join(timeout=30)
        server.wait(timeout=30)
        log = server.stdout.read()
        assert result["response"].status_code == 503
        # cut off by the 0.5 s graceful timeout: a request answered after its 20 s batching
        # wait would have got 200
        assert "shutting down" in result["response"].json()["detail"]
        assert "Traceback" not in log and "Exception in ASGI application" not in log
        cut_off = [line for line in log.splitlines() if "graceful-shutdown timeout" in line]
        assert cut_off == ["POST /recommend cut off by the graceful-shutdown timeout: answered 503"]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
