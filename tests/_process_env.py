"""The environment of a `code-interpreter` process started by a test (the CLI, the MCP server)."""

from __future__ import annotations

import os
from pathlib import Path


def process_env(home: Path, mongo_uri: str, db_name: str, runtime_root: Path) -> dict[str, str]:
    """A fresh user's environment: its own home, the session's database server, the shared runtime.

    Nothing of the caller's CODE_INTERPRETER_*, OPENAI_* or MONGODB_URI settings leaks in.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CODE_INTERPRETER_", "OPENAI_", "MONGODB_URI"))
    }
    env.update(
        CODE_INTERPRETER_HOME=str(home),
        CODE_INTERPRETER_RUNTIME_DIR=str(runtime_root),
        CODE_INTERPRETER_DATABASE=db_name,
        MONGODB_URI=mongo_uri,
    )
    return env
