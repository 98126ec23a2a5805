"""`cftrec serve`: the HTTP API over a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..decoding.methods import resolve_beams
from .common import BEAMS_HELP, DECODING_HELP, KeepHistory, Threads, app


@app.command("serve")
def serve_command(
    run: Annotated[Path, typer.Option("--run", help="Run directory (llm, sasrec or pop).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require this key in the X-API-Key header (default: env CFTREC_API_KEY; an "
            "empty key is an error).",
            show_default=False,
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="Serve a non-loopback --host without an API key (on purpose)."
        ),
    ] = False,
    body_timeout: Annotated[
        float,
        typer.Option(min=0.001, help="Seconds a client gets to send its request body (else 408)."),
    ] = 30.0,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Most requests decoded together (1 = one at a time).")
    ] = 16,
    max_wait_ms: Annotated[
        float, typer.Option(min=0, help="Longest a request waits for its batch to fill.")
    ] = 5.0,
    max_queue: Annotated[
        int,
        typer.Option(min=1, help="Most histories waiting for decoding; more get 503 at once."),
    ] = 64,
    queue_timeout: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Seconds a request may wait for its decoding to start (else 503 + Retry-After).",
        ),
    ] = 10.0,
    request_timeout: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="Seconds from arrival to answer (else 504); at least --queue-timeout.",
        ),
    ] = 60.0,
    max_k: Annotated[int, typer.Option(min=1, help="Largest k a request may ask for.")] = 50,
    max_history_entries: Annotated[
        int, typer.Option(min=1, help="Longest history a request may send.")
    ] = 100,
    max_body_bytes: Annotated[
        int, typer.Option(min=1, help="Larger request bodies get 413.")
    ] = 65536,
    decoding: Annotated[str, typer.Option(help=DECODING_HELP)] = "beam",
    beams: Annotated[
        int | None,
        typer.Option(
            min=1,
            help=BEAMS_HELP + " Beam search returns at most this many titles.",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[str | None, typer.Option(help="LLM runs: float32/bfloat16/float16.")] = None,
    graceful_timeout: Annotated[
        float, typer.Option(help="Seconds in-flight requests get to finish on SIGTERM.")
    ] = 30.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    keep_history: KeepHistory = False,
    threads: Threads = None,
) -> None:
    """Serve a run over HTTP: POST /recommend, POST /recommend/batch, GET /items, GET /health,
    POST /items and DELETE /items/{item_id} (catalogue changes, LLM runs), docs at /docs.
    Concurrent requests are micro-batched in a bounded queue (503 + Retry-After when full or
    too slow to start, 504 past the request timeout); SIGTERM drains in-flight requests."""
    import os

    from ..serving.app import API_KEY_ENV, serve
    from ..threads import use_threads

    use_threads(threads)
    serve(
        run, host=host, port=port, no_auth=no_auth,
        api_key=api_key if api_key is not None else os.environ.get(API_KEY_ENV),
        graceful_timeout_s=graceful_timeout, log_level=log_level,
        decoding={"method": decoding, "num_beams": resolve_beams(decoding, beams)}, dtype=dtype,
        exclude_history=not keep_history,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_queue=max_queue,
        queue_timeout_s=queue_timeout, request_timeout_s=request_timeout, max_k=max_k,
        max_history_entries=max_history_entries, max_body_bytes=max_body_bytes,
        body_timeout_s=body_timeout,
    )  # fmt: skip
