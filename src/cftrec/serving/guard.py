"""What stands in front of the endpoints: `RequestGuard` (body size and time limits, requests
cut off by shutdown) and API-key authentication (`require_key`, `check_auth`)."""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from typing import Annotated

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from ..errors import CftrecError

API_KEY_HEADER = "X-API-Key"
API_KEY_ENV = "CFTREC_API_KEY"
log = logging.getLogger("cftrec.serving")


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

    `paths`: {path: (byte limit, what the 413 adds)} for paths with their own limit (bulk
    bodies). `clock` (seconds) measures the body timeout; tests pass a fake one.
    """

    def __init__(
        self,
        app,
        max_bytes: int,
        body_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        paths: dict[str, tuple[int, str]] | None = None,
    ):
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s
        self.clock = clock
        self.paths = paths or {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, hint = self.paths.get(scope["path"], (self.max_bytes, ""))
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._too_large(send, limit, hint)
        chunks, size = [], 0
        deadline = self.clock() + self.body_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - self.clock())
            except TimeoutError:
                return await _json_response(
                    send, 408, f"request body not received within {self.body_timeout_s:g} s"
                )
            if message["type"] != "http.request":  # client disconnected
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await self._too_large(send, limit, hint)
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

    async def _too_large(self, send, limit: int, hint: str) -> None:
        await _json_response(send, 413, f"request body larger than {limit} bytes{hint}")


_api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


def require_key(request: Request, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """FastAPI dependency: 401 unless the request carries the app's key (`state.api_key`;
    None: no auth)."""
    expected = request.app.state.api_key
    if expected is None:
        return
    if key is None or not hmac.compare_digest(key.encode(), expected.encode()):
        raise HTTPException(401, "missing or wrong API key (send it in the X-API-Key header)")


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
