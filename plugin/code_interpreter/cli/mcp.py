"""``code-interpreter mcp``: serve ``execute_python_code`` and the user's files to MCP hosts.

Over stdio by default (the host starts the command; one user, one code session per process), or
streamable HTTP with ``--http`` (127.0.0.1 unless ``--host``; any other address needs bearer
tokens: ``--tokens FILE`` or ``CODE_INTERPRETER_MCP_TOKENS``). SIGINT and SIGTERM stop it cleanly:
live sessions are saved before it exits. Needs the ``mcp`` extra; without it the command exits 2
saying how to install it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CodeInterpreterError, ConfigurationError
from ..request import MAX_SESSION_ID
from ..settings import Settings
from .commands import DEFAULT_USER, PROG
from .util import StderrProgress, UsageProblem

if TYPE_CHECKING:
    from ..integrations.mcp import TokenTable

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "add_parser", "cmd_mcp"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# The package is installed from a clone (it is not on the index): name the extra's own requirement too.
INSTALL_HINT = "pip install '.[mcp]' in the clone, or pip install 'mcp>=2.3,<3'"


def add_parser(sub: Any) -> None:
    """Add the ``mcp`` subcommand to the main parser's subparsers."""
    m = sub.add_parser(
        "mcp",
        help="serve execute_python_code and your files over MCP (stdio; --http for streamable HTTP)",
        description=f"An MCP server: stdio for a host that starts it, or --http. Needs {INSTALL_HINT}.",
    )
    # SUPPRESS: a --user-id given before the command (the global option) is kept when none is given here.
    m.add_argument(
        "--user-id",
        default=argparse.SUPPRESS,
        metavar="USER",
        help=f"whose files and sessions the calls use (default {DEFAULT_USER!r}, the user of `files`; "
        "also accepted before the command); with tokens, each token's user instead",
    )
    m.add_argument(
        "--session-id",
        default=None,
        help="stdio: continue this code session, restored if saved (default: a new one per start)",
    )
    m.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    m.add_argument("--host", default=None, help=f"--http: address to bind ({DEFAULT_HOST})")
    m.add_argument("--port", type=int, default=None, help=f"--http: port, 0 for a free one ({DEFAULT_PORT})")
    m.add_argument(
        "--tokens",
        type=Path,
        default=None,
        metavar="FILE",
        help="--http: bearer tokens, lines '<token> <user id>' or a JSON object; required off loopback "
        "(or set CODE_INTERPRETER_MCP_TOKENS)",
    )


def _require_sdk() -> None:
    try:
        import mcp  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UsageProblem(f"the mcp command needs the MCP SDK, an optional extra: {INSTALL_HINT}") from None


def _tokens(args: argparse.Namespace) -> TokenTable | None:
    from ..integrations.mcp import TOKENS_ENV, TokenTable

    try:
        if args.tokens is not None:
            return TokenTable.from_file(args.tokens)
        env = os.environ.get(TOKENS_ENV, "").strip()
        return TokenTable.from_text(env, f"${TOKENS_ENV}", commas=True) if env else None
    except ConfigurationError as exc:
        raise UsageProblem(str(exc)) from None


def _check(args: argparse.Namespace) -> None:
    if not args.http:
        given = [o for o, v in (("--host", args.host), ("--port", args.port), ("--tokens", args.tokens)) if v]
        if given:
            raise UsageProblem(f"{', '.join(given)} apply to --http only; add --http, or leave them out")
    elif args.session_id is not None:
        raise UsageProblem(
            "--session-id applies to stdio only: over HTTP each MCP session is its own code session"
        )
    if args.session_id is not None and not (0 < len(args.session_id) <= MAX_SESSION_ID):
        raise UsageProblem(f"--session-id must be 1 to {MAX_SESSION_ID} characters")
    if args.port is not None and not 0 <= args.port <= 65535:
        raise UsageProblem(f"--port must be between 0 and 65535, got {args.port}")


def _listen(host: str, port: int) -> socket.socket:
    """A bound, listening socket, so that the address is known (port 0) and errors come before serving."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageProblem(f"cannot use --host {host}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise CodeInterpreterError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``: serving ends, running cells finish, sessions are saved, then exit.

    A second signal exits at once: cells still running are stopped with the process, unsaved.
    """
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal() -> None:
        if stop.is_set():
            _say("stopped at once; sessions still running were not saved")
            os._exit(1)
        stop.set()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


async def cmd_mcp(args: argparse.Namespace, settings: Settings, progress: StderrProgress) -> int:
    """Serve MCP over stdio (default) or streamable HTTP until the client leaves or a signal arrives."""
    _require_sdk()
    from ..integrations.mcp import TOKENS_ENV, is_loopback, serve_http, serve_stdio
    from ..interpreter import CodeInterpreter

    _check(args)
    user = str(getattr(args, "user_id", DEFAULT_USER))
    tokens = _tokens(args) if args.http else None
    sock = None
    if args.http:
        host = args.host or DEFAULT_HOST
        if tokens is None and not is_loopback(host):
            raise UsageProblem(
                f"--host {host} is reachable from other machines: pass --tokens FILE (lines '<token> "
                f"<user id>') or set {TOKENS_ENV}, or serve on {DEFAULT_HOST}"
            )
        sock = _listen(host, DEFAULT_PORT if args.port is None else args.port)
    stop = asyncio.Event()
    try:
        with _stop_on_signals(stop):
            async with CodeInterpreter(settings, progress=progress) as interp:
                if sock is None:
                    _say(f"MCP server on stdio for user {user!r}")
                    await serve_stdio(interp, user, session_id=args.session_id, stop=stop)
                else:
                    bound, port = sock.getsockname()[:2]
                    shown = f"[{bound}]" if ":" in bound else bound
                    who = f"bearer tokens of {len(tokens.users)} user(s)" if tokens else f"user {user!r}"
                    _say(f"MCP server on http://{shown}:{port}/mcp for {who}")
                    await serve_http(interp, sock, user_id=user, tokens=tokens, stop=stop)
    finally:
        if sock is not None:
            sock.close()
    _say("MCP server stopped; live sessions saved")
    return 0
