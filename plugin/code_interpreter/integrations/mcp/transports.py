"""Serving the MCP server: over stdio (one client per process) and over streamable HTTP.

**Sessions.** A code session belongs to one MCP connection. Over stdio the process serves one
client, so all its calls share one session (a new process is a new session, unless the operator
names one to continue). Over HTTP a connection is an MCP session (``Mcp-Session-Id``, the handshake
era, protocol 2025-11-25 and before): its calls share a code session, which is saved and stopped
when the client ends the MCP session (``DELETE``). A 2026-07-28 client over HTTP has no connection
at all — the protocol made every request stand alone — so its calls start fresh, and the tool
description it lists says so.

**Users.** Over stdio, and over HTTP without tokens (loopback only), one configured user. With a
:class:`~.auth.TokenTable`, every HTTP request needs ``Authorization: Bearer <token>`` (401
otherwise) and the token's user is the caller; the SDK also binds each MCP session to the token's
user, so another user cannot join it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast

import anyio
import uvicorn
from mcp.server import ServerRequestContext
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INVALID_REQUEST
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import AnyHttpUrl
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import CodeInterpreterError
from .auth import StaticTokenVerifier, TokenTable
from .limits import BoundedBodies, max_body_bytes
from .server import Caller, Identify, build_server

if TYPE_CHECKING:
    from ...interpreter import CodeInterpreter

__all__ = ["DEFAULT_PATH", "http_app", "http_identity", "serve_http", "serve_stdio"]

log = logging.getLogger(__name__)

DEFAULT_PATH = "/mcp"
"""Where the streamable-HTTP endpoint is served."""
SHUTDOWN_GRACE_S = 5
"""Seconds the HTTP server waits for open requests and streams when it stops."""
MAX_LINE_BYTES = 64 * 2**20
"""Longest JSON-RPC message read from stdin; a longer one ends the connection."""


def http_session_key(mcp_session_id: str) -> str:
    """The code session id of an MCP session."""
    return f"mcp-{mcp_session_id}"


@contextlib.asynccontextmanager
async def _warm(interp: CodeInterpreter) -> AsyncIterator[None]:
    """Start the sandbox in the background (the first call is then fast); never fatal here."""

    async def warm() -> None:
        try:
            await interp.executor()
        except Exception as exc:  # the calls will report it as their result
            log.warning("the sandbox could not be started yet: %s", exc)

    task = asyncio.create_task(warm(), name="mcp-warm-sandbox")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Lines:
    """The lines of stdin, read by the event loop, with an end the server can call.

    The SDK's stdio transport ends only when stdin does, and reads it in a worker thread blocked in
    read() (cf. python-sdk issue #3551): a host's SIGTERM with stdin still open would never end the
    process. Here a stop ends the lines (:meth:`end`), and nothing is left blocked.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def end(self) -> None:
        """End the lines here, as if the client closed stdin: the server then stops the usual way."""
        self._reader.feed_eof()

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        try:
            line = await self._reader.readline()
        except ValueError:  # over the limit: this client is broken
            log.error("a message on stdin is longer than %d bytes; closing the connection", MAX_LINE_BYTES)
            raise StopAsyncIteration from None
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", "replace")


@contextlib.asynccontextmanager
async def _stdin() -> AsyncIterator[_Lines | None]:
    """stdin as :class:`_Lines` (fd 0 then reads EOF for children); None when it is not a pipe or terminal."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_LINE_BYTES)
    # Two copies of fd 0: the event loop reads (and closes, at EOF) one; the other puts fd 0 back.
    try:
        saved = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:  # no stdin at all: the SDK's reader reports it
        saved = -1
    transport = None
    if saved >= 0:
        pipe = os.fdopen(fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3), "rb", buffering=0)
        try:
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        except (ValueError, OSError):  # a regular file: the SDK's own reader (its EOF comes anyway)
            pipe.close()
            os.close(saved)
    if transport is None:
        yield None
        return
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # children read EOF, never the protocol stream
    os.close(null)
    try:
        yield _Lines(reader)
    finally:
        transport.close()
        os.set_blocking(saved, True)  # the loop set O_NONBLOCK, which a terminal shares with the shell
        os.dup2(saved, 0)
        os.close(saved)


async def serve_stdio(
    interp: CodeInterpreter,
    user_id: str,
    *,
    session_id: str | None = None,
    stop: asyncio.Event | None = None,
) -> str:
    """Serve one MCP client on stdin/stdout until it closes stdin (or ``stop`` is set).

    Args:
        interp: the CodeInterpreter to run code on.
        user_id: whose files and sessions the client uses.
        session_id: continue this code session (restored if saved); default: a new one.
        stop: set it to end serving.

    Returns:
        The code session id used; the session is saved and stopped before returning.
    """
    sid = session_id or f"mcp-stdio-{uuid.uuid4().hex}"
    server = build_server(interp, lambda ctx: Caller(user_id, sid))
    try:
        # stdio_server points fd 1 at stderr while serving: nothing stray reaches the protocol stream.
        async with (
            _stdin() as lines,
            stdio_server(stdin=cast(Any, lines)) as (read, write),
            _warm(interp),
            anyio.create_task_group() as tg,
        ):
            if stop is not None and lines is not None:

                async def watch() -> None:
                    await stop.wait()
                    lines.end()  # the SDK's transport stops only when its input ends

                tg.start_soon(watch)
            await server.run(read, write, server.create_initialization_options())
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await interp.sessions.close(user_id, sid)
    return sid


def http_identity(user_id: str | None) -> Identify:
    """Callers over HTTP: the token's user (``user_id`` None) or ``user_id``; the MCP session, if any."""

    def identify(ctx: ServerRequestContext[Any, Any]) -> Caller:
        request = ctx.request
        if request is None or not hasattr(request, "headers"):
            raise MCPError(INVALID_REQUEST, "this server answers MCP over HTTP only")
        uid = user_id
        if uid is None:
            token = getattr(request.scope.get("user"), "access_token", None)
            if not isinstance(token, AccessToken) or not token.subject:
                raise MCPError(INVALID_REQUEST, "not authenticated: send Authorization: Bearer <token>")
            uid = token.subject
        session = None
        if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            # Only the handshake era has sessions; the SDK has checked this id exists and is this user's.
            mcp_session = request.headers.get(MCP_SESSION_ID_HEADER)
            session = http_session_key(mcp_session) if mcp_session else None
        return Caller(uid, session)

    return identify


class _EndSessions:
    """ASGI wrapper: when a client ends its MCP session (DELETE), save and stop its code session first.

    Before the SDK answers, so that the answer means "saved". Safe whatever the SDK then decides: the
    code session is looked up under the requester's own user, so no one can end another user's.
    """

    def __init__(
        self, app: ASGIApp, interp: CodeInterpreter, user_of: Callable[[Headers], str | None]
    ) -> None:
        self.app = app
        self.interp = interp
        self.user_of = user_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "DELETE":
            headers = Headers(scope=scope)
            mcp_session, user = headers.get(MCP_SESSION_ID_HEADER), self.user_of(headers)
            if mcp_session and user:
                try:
                    await self.interp.sessions.close(user, http_session_key(mcp_session))
                except Exception:
                    log.exception("saving the code session of MCP session %s failed", mcp_session[:64])
        await self.app(scope, receive, send)


def _bearer_user(tokens: TokenTable) -> Callable[[Headers], str | None]:
    def user_of(headers: Headers) -> str | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return tokens.user_for(token.strip()) if scheme.lower() == "bearer" else None

    return user_of


def http_app(
    interp: CodeInterpreter,
    *,
    user_id: str | None = None,
    tokens: TokenTable | None = None,
    host: str = "127.0.0.1",
    path: str = DEFAULT_PATH,
    issuer_url: str = "http://127.0.0.1",
) -> ASGIApp:
    """The ASGI app serving MCP over streamable HTTP (its lifespan runs the SDK's session manager).

    Args:
        interp: the CodeInterpreter to run code on.
        user_id: the one user when there are no ``tokens``.
        tokens: bearer tokens → users; every request then needs one (401 otherwise).
        host: the address served, for the SDK's DNS-rebinding protection on loopback.
        path: the endpoint path.
        issuer_url: who issues the tokens (this server: the static table has no other issuer).
    """
    if tokens is None and not user_id:
        raise ValueError("pass tokens, or the user_id every request runs as")
    server = build_server(interp, http_identity(None if tokens is not None else user_id))
    limit = max_body_bytes(interp.settings.max_code_bytes)
    if tokens is None:
        app = server.streamable_http_app(streamable_http_path=path, host=host)
        one_user = str(user_id)
        return BoundedBodies(_EndSessions(app, interp, lambda headers: one_user), limit)
    app = server.streamable_http_app(
        streamable_http_path=path,
        host=host,
        auth=AuthSettings(issuer_url=AnyHttpUrl(issuer_url), resource_server_url=None),
        token_verifier=StaticTokenVerifier(tokens),
    )
    return BoundedBodies(_EndSessions(app, interp, _bearer_user(tokens)), limit)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the caller stops it (it re-raises signals on exit,
    which would end the process before the interpreter saves its sessions)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


async def serve_http(
    interp: CodeInterpreter,
    sock: socket.socket,
    *,
    user_id: str | None = None,
    tokens: TokenTable | None = None,
    path: str = DEFAULT_PATH,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve MCP over streamable HTTP on a bound, listening socket until ``stop`` is set.

    Open requests get :data:`SHUTDOWN_GRACE_S` seconds to finish; code sessions still live are saved
    when ``interp`` closes.
    """
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    app = http_app(
        interp, user_id=user_id, tokens=tokens, host=host, path=path, issuer_url=f"http://{shown}:{port}"
    )
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", timeout_graceful_shutdown=SHUTDOWN_GRACE_S, access_log=False
    )
    server = _Uvicorn(config)

    async def watch() -> None:
        if stop is not None:
            await stop.wait()
            server.should_exit = True

    async with _warm(interp):
        watcher = asyncio.create_task(watch(), name="mcp-http-stop")
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
    if not server.started:
        raise CodeInterpreterError("the HTTP server did not start (its error is logged above)")
