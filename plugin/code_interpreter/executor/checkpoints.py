"""Checkpoints: a live session saved in the background once it has been quiet, so a dead host loses little."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from .room import HostSession

__all__ = ["CHECKPOINT_MAX_DEFER", "checkpoint_when_quiet"]

#: A checkpoint is taken at least this many quiet periods apart even while cells keep coming.
CHECKPOINT_MAX_DEFER = 10


async def checkpoint_when_quiet(
    session: HostSession,
    save: Callable[..., Awaitable[Any]],
    settings: Any,
    clock: Callable[[], float],
    is_live: Callable[[], bool],
) -> None:
    """Save ``session`` once it has been quiet for ``session_checkpoint_s`` after its last cell.

    Bursts coalesce into one save (at least every :data:`CHECKPOINT_MAX_DEFER` quiet periods while cells
    keep coming); a session whose last snapshot was over ``session_checkpoint_max_bytes`` is saved only
    when it ends. The save runs between cells (it holds the session's lock), in the user's own slot,
    within the save deadline; ``is_live`` says whether the session is still this host's live one.
    """
    quiet = float(settings.session_checkpoint_s)
    dirty_since = clock()
    while session.dirty and is_live():
        wait = quiet - (clock() - session.last_used)
        if wait > 0 and clock() - dirty_since < quiet * CHECKPOINT_MAX_DEFER:
            await asyncio.sleep(wait)
            continue
        if session.snapshot_bytes > settings.session_checkpoint_max_bytes:
            return
        async with session.lock:
            process = session.process
            if not is_live() or process is None or not process.alive:
                return
            await save(session, process, checkpoint=True)
        dirty_since = clock()
