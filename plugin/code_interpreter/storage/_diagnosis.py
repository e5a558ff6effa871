"""Why the embedded server could not start, in words a user can act on (read from its own log)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["last_words", "remedy", "unusable_dir"]

LOG_TAIL_BYTES = 16384
MAX_SAID = 300


def last_words(log_path: Path, start: int) -> str:
    """The last line the server logged since byte ``start`` that is not a traceback's frame: its error."""
    try:
        with open(log_path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(start, end - LOG_TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    # A traceback's frames and source lines are indented; its exception line and log records are not.
    said = [line.strip() for line in text.splitlines() if line.strip() and not line[:1].isspace()]
    said = [line for line in said if not line.startswith(("Traceback", "During handling", "The above"))]
    return said[-1][:MAX_SAID] if said else ""


def remedy(last: str, root: Path) -> str:
    """What to do about a server that exited saying ``last`` (its data under ``root``)."""
    low = last.lower()
    if "permission denied" in low or "read-only file system" in low:
        return (
            f"this process (uid {os.getuid()}) must be able to read and write {root}: set "
            "CODE_INTERPRETER_HOME to a directory it owns, or set MONGODB_URI to use a MongoDB server"
        )
    if "busy" in low or "lock" in low:
        return (
            f"another server seems to hold its data directory {root / 'data'}: stop it, set "
            "CODE_INTERPRETER_HOME to another directory, or set MONGODB_URI to use a MongoDB server"
        )
    if "no space" in low or "disk quota" in low:
        return f"free some disk space under {root}, or set CODE_INTERPRETER_HOME to another disk"
    if "address already in use" in low:
        return "its port was taken meanwhile: try again"
    return "fix what it says, or set MONGODB_URI to use a MongoDB server"


def unusable_dir(root: Path, exc: OSError) -> str:
    """The message for a data directory this process cannot create or write."""
    where = exc.filename or root
    return (
        f"cannot use {root} for the embedded database ({exc.strerror or exc}: {where}); this process "
        f"runs as uid {os.getuid()}: set CODE_INTERPRETER_HOME to a directory it can write (or "
        "XDG_DATA_HOME, when the default under the home directory is not writable), or set MONGODB_URI "
        "to use a MongoDB server"
    )
