"""The ``code-interpreter`` command line (entry point ``code_interpreter.cli:main``).

- :mod:`.main` — the parser and the entry point;
- :mod:`.commands` — demo, run, files, cleanup, status, tokens; :mod:`.usage` — the usage table;
- :mod:`.chat` — the agent loop in a terminal; :mod:`.util` — progress bar, messages, file helpers;
- :mod:`.mcp` — the MCP server command (the server itself is ``integrations.mcp``).
"""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
