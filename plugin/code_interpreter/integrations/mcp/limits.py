"""Bounds on what an MCP client can make the server hold: pending tool calls and request bodies.

A tool call holds its arguments (up to ``max_code_bytes`` of code) from the moment it arrives until
its cell has run, and the calls of one code session run one after another: without a bound, a
client that sends faster than its cells run makes the server hold every waiting call (80 calls of
1.9 MB grew it by 555 MB). So:

- :class:`PendingCalls` counts the calls running or waiting, per MCP session and per user (every
  token and every session of that user together); a call beyond ``mcp_max_pending_per_session`` or
  ``mcp_max_pending_per_user`` gets an error result at once, saying to wait for the calls already
  sent. A call whose request was cancelled still counts until its cell ends (it still runs).
- :class:`BoundedBodies` answers an HTTP request whose body is over :func:`max_body_bytes` with 413
  and a JSON-RPC error, before the SDK reads it into memory.
"""

from __future__ import annotations

import json
from collections import Counter

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BODY_OVERHEAD_BYTES", "DRAIN_BYTES", "BoundedBodies", "PendingCalls", "max_body_bytes"]

BODY_OVERHEAD_BYTES = 64 * 2**10
"""Room in a request body for the JSON-RPC envelope and the other arguments, beside the code."""
DRAIN_BYTES = 64 * 2**20
"""An oversized body is read and dropped (never kept) up to this many bytes, so the client reads the
413 instead of a reset connection; past that the connection is closed."""


def max_body_bytes(max_code_bytes: int) -> int:
    """The largest request body served: the code at its limit, JSON-escaped (at most doubled), plus room."""
    return 2 * max_code_bytes + BODY_OVERHEAD_BYTES


class PendingCalls:
    """Tool calls running or waiting, per (user, MCP session) and per user; refuses beyond the bounds."""

    def __init__(self, per_session: int, per_user: int) -> None:
        """Allow ``per_session`` calls of one MCP session and ``per_user`` of one user at once."""
        self.per_session = per_session
        self.per_user = per_user
        self._sessions: Counter[tuple[str, str]] = Counter()
        self._users: Counter[str] = Counter()

    def acquire(self, user: str, session: str | None) -> str | None:
        """Count one more call; None when it may run, else why not (the text of an error result)."""
        if session is not None and self._sessions[(user, session)] >= self.per_session:
            return (
                f"Error: {self.per_session} calls of this connection are already running or waiting "
                f"(the limit). Wait for their results, then call execute_python_code again; calls of one "
                "session run one after another, so sending more at once does not make them faster."
            )
        if self._users[user] >= self.per_user:
            return (
                f"Error: {self.per_user} of your calls are already running or waiting, across your "
                "connections (the limit). Wait for their results, then call execute_python_code again."
            )
        self._users[user] += 1
        if session is not None:
            self._sessions[(user, session)] += 1
        return None

    def release(self, user: str, session: str | None) -> None:
        """One call counted by :meth:`acquire` has ended."""
        self._users[user] -= 1
        if self._users[user] <= 0:
            del self._users[user]
        if session is not None:
            key = (user, session)
            self._sessions[key] -= 1
            if self._sessions[key] <= 0:
                del self._sessions[key]

    def pending(self, user: str, session: str | None = None) -> int:
        """Calls of ``user`` (of one of their sessions, when given) running or waiting now."""
        return self._users[user] if session is None else self._sessions[(user, session)]


class BoundedBodies:
    """ASGI wrapper: a POST body over ``limit`` bytes gets 413 and a JSON-RPC error; others pass on whole.

    The body is read here (up to the limit) and handed to the app as one message, so a body sent in
    chunks or without ``Content-Length`` is bounded as well.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        """Serve ``app``, refusing bodies over ``limit`` bytes."""
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(receive, send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._refuse(receive, send, size, more=bool(message.get("more_body")))
                return
            chunks.append(body)
            if not message.get("more_body"):
                break
        whole: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
        chunks.clear()

        async def replay() -> Message:
            return whole.pop() if whole else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, receive: Receive, send: Send, size: int, *, more: bool = True) -> None:
        drained = size if not more else 0
        # The rest is read and dropped: a client still sending would miss the answer on a reset connection.
        while more and drained <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            more = bool(message.get("more_body"))
        text = (
            f"the request body is over {self.limit:,} bytes (this one: {size:,}), the most this server "
            "reads; send shorter code: keep data in files (load_file) instead of in the code"
        )
        body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": text}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if more:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
