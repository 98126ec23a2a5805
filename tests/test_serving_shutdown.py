"""`cftrec serve` as a real process: API key from CFTREC_API_KEY; SIGTERM lets an in-flight
request finish."""

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


@pytest.mark.slow
def test_sigterm_finishes_in_flight_request(tmp_path):
    run = make_pop_run(tmp_path, make_dataset(tmp_path))
    port = free_port()
    # A long batching wait keeps the request in flight while SIGTERM arrives.
    command = [
        sys.executable, "-m", "cftrec", "serve", "--run", str(run), "--port", str(port),
        "--max-wait-ms", "1500", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "CFTREC_API_KEY": "from-env"}  # the key may come from the environment
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)

        body = {"history": ["Heat (1995)"], "k": 2}
        assert httpx.post(f"{url}/recommend", json=body).status_code == 401
        result = {}

        def ask():
            started = time.monotonic()
            result["response"] = httpx.post(
                f"{url}/recommend", json=body, headers={"X-API-Key": "from-env"}, timeout=30
            )
            result["seconds"] = time.monotonic() - started

        client = threading.Thread(target=ask)
        client.start()
        time.sleep(0.5)  # the request is now waiting in the micro-batcher
        server.send_signal(signal.SIGTERM)
        client.join(timeout=30)
        # uvicorn re-raises the signal once it has shut down cleanly (exit status -SIGTERM)
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
        response = result["response"]
        assert response.status_code == 200
        assert len(response.json()["recommendations"]) == 2
        assert result["seconds"] >= 1.0  # it really was in flight when the signal came
        with pytest.raises(httpx.TransportError):  # and the server is gone afterwards
            httpx.get(f"{url}/health", timeout=1)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
