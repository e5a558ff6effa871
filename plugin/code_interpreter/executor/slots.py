"""Parallel slots: how many executions run at once on this host, in all and per user (async)."""

from __future__ import annotations

import asyncio
import inspect
import logging

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

    def hold(self, user_id: str) -> _Held:
        """Hold one of the slots (and one of the user's) for the body of ``async with slots.hold(user):``."""
        return _Held(self, user_id)

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


class _Held:
    """One slot held (a class, not a generator: every cell enters one)."""

    __slots__ = ("_sem", "_slots", "_user_id")

    def __init__(self, slots: Slots, user_id: str) -> None:
        self._slots = slots
        self._user_id = user_id
        self._sem: asyncio.Semaphore | None = None

    async def __aenter__(self) -> None:
        slots, user_id = self._slots, self._user_id
        user_sem = slots._user(user_id)
        slots.queued += 1
        try:
            await user_sem.acquire()
            try:
                await slots._all.acquire()
            except BaseException:
                user_sem.release()
                raise
        except BaseException:
            slots._release_user(user_id)
            raise
        finally:
            slots.queued -= 1
        self._sem = user_sem
        slots.running += 1

    async def __aexit__(self, *exc: object) -> None:
        slots = self._slots
        slots.running -= 1
        slots._all.release()
        assert self._sem is not None
        self._sem.release()
        slots._release_user(self._user_id)


async def emit(on_event: EventCallback, event: ExecutionEvent) -> None:
    """Give ``event`` to the host's callback; a failing callback is logged, never fatal to the execution."""
    try:
        result = on_event(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("the on_event callback failed for a %s event", event.kind)
