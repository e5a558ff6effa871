"""Which stored files an MCP tool call mounts: those its code names, then the user's newest few.

Mounting every stored file into every call made a user's own files lock them out: past ~511 files
the sandbox's inputs ran out of inodes and every call failed, and MCP calls that each write a few
files got there in a day. A call needs the files it uses; over MCP the model sees the user's files
as resources (``resources/list``) and names the ones it wants, by name (``pd.read_csv('sales.csv')``)
or by id (``load_file('<file_id>')``). So a call mounts

1. every stored file whose id or name appears in its code (a plain substring test: a false match
   only mounts one file more), at most :data:`MAX_NAMED`;
2. then the :data:`RECENT` newest files, so ``os.listdir('.')`` and "the file I just uploaded" work
   without naming anything.

A session keeps what earlier cells mounted. However many files a user stores, a call mounts at most
``MAX_NAMED + RECENT``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_NAMED", "RECENT", "Mounts", "choose_mounts"]

MAX_NAMED = 200
"""Most files one call mounts because its code names them."""
RECENT = 16
"""The newest files mounted beside the named ones."""
_OFF_LOOP_CHARS = 64 * 2**10  # longer code: the substring tests run in a worker thread


@dataclass(frozen=True, slots=True)
class Mounts:
    """The files one call mounts."""

    file_ids: frozenset[str]
    """The ids to mount."""
    unmounted: tuple[str, ...] = ()
    """Names of files the code named beyond :data:`MAX_NAMED` (not mounted)."""

    @property
    def note(self) -> str | None:
        """What the model should be told about files left out, or None."""
        if not self.unmounted:
            return None
        shown = ", ".join(repr(n) for n in self.unmounted[:5])
        more = f" and {len(self.unmounted) - 5} more" if len(self.unmounted) > 5 else ""
        return (
            f"your code names more than {MAX_NAMED} stored files; {shown}{more} were not mounted: "
            "work on them in several calls"
        )


def _choose(files: Sequence[dict[str, Any]], code: str) -> Mounts:
    named: list[str] = []
    unmounted: list[str] = []
    for f in files:  # newest first, as list_user_files returns them
        fid, name = str(f.get("file_id") or ""), str(f.get("filename") or "")
        if not fid or not (fid in code or (name and name in code)):
            continue
        if len(named) < MAX_NAMED:
            named.append(fid)
        else:
            unmounted.append(name or fid)
    chosen = set(named)
    for f in files[:RECENT]:
        if f.get("file_id"):
            chosen.add(str(f["file_id"]))
    return Mounts(frozenset(chosen), tuple(unmounted))


async def choose_mounts(files: Sequence[dict[str, Any]], code: Any) -> Mounts:
    """The files (``list_user_files`` dicts, newest first) a call with ``code`` mounts."""
    text = code if isinstance(code, str) else ""
    if len(text) > _OFF_LOOP_CHARS and len(files) > RECENT:
        return await asyncio.to_thread(_choose, files, text)
    return _choose(files, text)
