"""Parallel slots: how many executions run at once on this host, in all and per user (async)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator

from .results import EventCallback, ExecutionEvent

__all__ = ["Slots", "emit"]

log = logging.getLogger("code_interpreter.executor")


class Slots:
    """``max_parallel`` slots in all, ``per_user`` of them at most for one user; FIFO within each."""

    def __init__(self, max_parallel: int, per_user: int) -> None:
        self.max_parallel = max_parallel
        self.per_user = per_user
        self._all = asyncio.Semaphore(max_parallel)
        self._users: dict[str, tuple[asyncio.Semaphore, int]] = {}
        self.running = 0
        """Slots held now."""
        self.queued = 0
        """Callers waiting for a slot now."""

    @contextlib.asynccontextmanager
    async def hold(self, user_id: str) -> AsyncIterator[None]:
        """Hold one of the slots (and one of the user's) while the body runs."""
        user_sem = self._user(user_id)
        self.queued += 1
        try:
            await user_sem.acquire()
            try:
                await self._all.acquire()
            except BaseException:
                user_sem.release()
                raise
        except BaseException:
            self._release_user(user_id)
            raise
        finally:
            self.queued -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._all.release()
            user_sem.release()
            self._release_user(user_id)

    def _user(self, user_id: str) -> asyncio.Semaphore:
        sem, refs = self._users.get(user_id, (None, 0))
        if sem is None:
            sem = asyncio.Semaphore(self.per_user)
        self._users[user_id] = (sem, refs + 1)
        return sem

    def _release_user(self, user_id: str) -> None:
        sem, refs = self._users[user_id]
        if refs <= 1:
            del self._users[user_id]
        else:
            self._users[user_id] = (sem, refs - 1)


async def emit(on_event: EventCallback, event: ExecutionEvent) -> None:
    """Give ``event`` to the host's callback; a failing callback is logged, never fatal to the execution."""
    try:
        result = on_event(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("the on_event callback failed for a %s event", event.kind)
