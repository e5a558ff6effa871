"""Pinning a user's files for one call: hard links the sandbox binds, safe from a concurrent cleanup.

The sandbox sees a user file through a read-only bind of a host path. The FileManager's cache copy
(``home/cache/<file_id>/``) may be removed at any moment by ``cleanup_expired_files`` once the file
expires, also while an execution that started with it is queued or running. So each call gets hard
links of its files under ``home/pins/<call>/`` — cleanup never looks there, and a hard link keeps
the bytes even after the cache name is gone — removed when the call ends (a crashed host's leftovers
are swept at the next start). Once bound into a sandbox, a file stays readable there after its pin is
removed: a session needs no pin beyond the cell that first showed the file.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import FileNotFound
from ..files import FileManager
from .results import FileRef

__all__ = ["PINS_DIR", "STALE_PIN_MARGIN_S", "pin_files", "sweep_stale_pins"]

PINS_DIR = "pins"
# Pin dirs older than the longest execution plus this margin belong to no running execution.
STALE_PIN_MARGIN_S = 600.0


async def pin_files(
    files: FileManager, file_ids: Sequence[str], user_id: int | str, pin_dir: Path
) -> list[FileRef]:
    """Hard-link each of the user's files under ``pin_dir`` (FileNotFound when one is not theirs)."""
    refs: list[FileRef] = []
    for file_id in file_ids:
        meta = await files.get_file(file_id, user_id)
        pinned: Path | None = None
        # Two tries: a cleanup may remove the cache copy between materialize and the link.
        for _ in range(2):
            if meta is None:
                break
            path = await files.materialize(file_id, user_id)
            if path is None:
                break
            pinned = await asyncio.to_thread(_pin, path, pin_dir / file_id)
            if pinned is not None:
                break
        if meta is None or pinned is None:
            # The same words whether the id is unknown, expired or another user's: no existence leak.
            raise FileNotFound(
                f"File '{file_id}' was not found, has expired, or is not yours. "
                "Ask the user to upload it again and use the new file id"
            )
        refs.append(
            FileRef(file_id=file_id, path=pinned, filename=meta["filename"], file_type=meta["file_type"])
        )
    return refs


def _pin(path: Path, dest_dir: Path) -> Path | None:
    """Hard-link (or copy, across filesystems) ``path`` into ``dest_dir``; None if ``path`` vanished."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for d in (dest_dir.parent, dest_dir):
        d.chmod(0o755)  # traversable by the sandbox uid (mode "none" reads the host path directly)
    dest = dest_dir / path.name
    try:
        os.link(path, dest)
    except FileNotFoundError:
        return None
    except OSError:  # another filesystem, or hard links not allowed here: a copy pins as well
        try:
            shutil.copyfile(path, dest)
        except FileNotFoundError:
            return None
        dest.chmod(0o444)
    return dest


def sweep_stale_pins(root: Path, older_than_s: float) -> None:
    """Remove pin dirs left by a host that died mid-execution (older than any execution can be)."""
    cutoff = time.time() - older_than_s
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            continue
