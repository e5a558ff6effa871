"""An MCP server on the official ``mcp`` SDK: ``code-interpreter mcp`` (stdio) or ``--http``.

Needs the optional extra: ``pip install '.[mcp]'`` in the clone (or ``pip install 'mcp>=2.3,<3'``);
nothing else in the package imports this one.

- :mod:`.server` — the tool (the canonical schema, through the dispatcher) and the files as resources;
- :mod:`.progress` — a cell's live output as progress notifications;
- :mod:`.transports` — stdio and streamable HTTP, and which code session a connection uses;
- :mod:`.auth` — bearer tokens mapped to user ids, for HTTP beyond loopback.
"""

from __future__ import annotations

from .auth import TOKENS_ENV, StaticTokenVerifier, TokenTable, is_loopback
from .server import FILE_URI_TEMPLATE, Caller, build_server, file_uri
from .transports import DEFAULT_PATH, http_app, serve_http, serve_stdio

__all__ = [
    "DEFAULT_PATH",
    "FILE_URI_TEMPLATE",
    "TOKENS_ENV",
    "Caller",
    "StaticTokenVerifier",
    "TokenTable",
    "build_server",
    "file_uri",
    "http_app",
    "is_loopback",
    "serve_http",
    "serve_stdio",
]
