"""Live sessions: one sandboxed process per (user, session id), cells run in arrival order.

A session is a :class:`~.process.SandboxProcess` that keeps its state between cells: every layer of a
one-shot run, nothing shared with other sessions. Cells of one session run one at a time (a FIFO lock),
each holding one of the executor's parallel slots while it runs. A cell past its deadline is interrupted
(the variables survive); one that cannot be interrupted is killed, and the next call starts a fresh
session whose result says ``restarted``.

Room is reserved before anything starts: the per-user and total caps (``max_sessions_per_user``,
``max_sessions``) count live sessions, those starting and those still ending, and a call that finds no
room makes it by evicting idle sessions (least recently used first) or gets a result saying which
sessions to close. Sessions end by idle expiry, eviction, :meth:`SessionManager.close`, ``reset`` or
shutdown; all but ``reset`` *save* first (a snapshot made inside the sandbox, within
``session_save_timeout_s``, in the user's own slot), and every end kills and verifies the process. A
save that runs out of time is dropped; the next call of that session says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .executor import Executor
from .process import ProcessGone, SandboxProcess
from .results import EventCallback, ExecutionResult, FileRef, SessionInfo, SessionState

__all__ = ["MAX_SESSION_ID", "SessionManager", "SnapshotStore"]

log = logging.getLogger("code_interpreter.sessions")

MAX_SESSION_ID = 200
SWEEP_EVERY_S = 30.0


class SnapshotStore(Protocol):
    """Where saved sessions live (``files.snapshots.SnapshotStore`` on MongoDB)."""

    async def save(self, user_id: str, session_id: str, data: bytes, notes: list[str]) -> Any:
        """Store the snapshot (replacing the previous one)."""

    async def load(self, user_id: str, session_id: str) -> bytes | None:
        """The snapshot, None when there is none; raises when it may not be used."""

    async def delete(self, user_id: str, session_id: str) -> bool:
        """Forget the snapshot."""


@dataclass(eq=False)
class HostSession:
    """One session on this host: its process (while live), its queue of cells, its counters."""

    user_id: str
    session_id: str
    process: SandboxProcess | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cells: int = 0
    state: SessionState = "new"
    last_used: float = 0.0
    busy: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(user id, session id)."""
        return (self.user_id, self.session_id)

    @property
    def alive(self) -> bool:
        """Its process is there."""
        return self.process is not None and self.process.alive


class SessionManager:
    """The live sessions of one host (``interp.sessions``)."""

    def __init__(
        self,
        settings: Any,
        store: SnapshotStore | None,
        executor: Callable[[], Awaitable[Executor]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Sessions under ``settings``, saved to ``store``; ``executor`` gives the (started) executor."""
        self.settings = settings
        self.store = store
        self._get_executor = executor
        self.clock = clock
        self._sessions: dict[tuple[str, str], HostSession] = {}
        self._ending: dict[HostSession, asyncio.Task[list[str]]] = {}
        self._pending_notes: dict[tuple[str, str], tuple[float, str]] = {}  # said by the session's next cell
        self._sweeper: asyncio.Task[None] | None = None
        self.on_saved: Callable[[str, str, int], Awaitable[None]] | None = None
        """Called with (user id, session id, bytes) after a snapshot is stored (the usage ledger's hook)."""

    # -- cells ---------------------------------------------------------------------------------------------
    async def run_cell(
        self,
        user_id: str,
        session_id: str,
        code: str,
        files: Sequence[FileRef],
        timeout: float,  # noqa: ASYNC109 - the cell's deadline, already validated by the request
        notes: Sequence[str] = (),
        on_event: EventCallback | None = None,
    ) -> ExecutionResult:
        """Run one cell in the user's session, starting (or restoring) it first when it is not live."""
        ex = await self._get_executor()
        key = (str(user_id), str(session_id))
        while True:
            session = self._sessions.get(key)
            if session is None:
                refusal = await self._reserve(key, timeout)
                if refusal is not None:
                    return ExecutionResult.failed(refusal, isolation=ex.mode, notes=notes,
                                                  error_type="QuotaExceeded")  # fmt: skip
                continue
            async with session.lock:
                if self._sessions.get(key) is not session:
                    continue  # ended while we waited, and a newer one took its place: queue there
                session.busy = True
                try:
                    return await self._cell(ex, session, code, files, timeout, list(notes), on_event)
                finally:
                    session.busy = False
                    session.last_used = self.clock()
                    if session.process is not None and not session.process.alive:
                        await self._forget(session, restarted=True)

    async def _cell(
        self,
        ex: Executor,
        session: HostSession,
        code: str,
        files: Sequence[FileRef],
        limit: float,
        notes: list[str],
        on_event: EventCallback | None,
    ) -> ExecutionResult:
        for attempt in (1, 2):
            snapshot = b""
            if session.process is None:
                snapshot, state, extra = await self._snapshot_for(session)
                session.process = ex.process(session.user_id, keep_state=True)
                session.state, session.cells = state, 0
                notes = [*notes, *extra]
            else:
                session.state = "live"
            try:
                result = await session.process.run(
                    code, limit, files, notes=notes, on_event=on_event, restore=snapshot
                )
            except ProcessGone as exc:
                # It died between cells (nothing of this cell ran): start afresh, once.
                session.process = None
                self._pending_notes[session.key] = (self.clock(), _restarted_note(str(exc)))
                if attempt == 2:
                    raise
                continue
            session.cells += 1
            info = SessionInfo(session.session_id, session.state, session.cells)
            result = result.with_session(info)
            if not session.process.alive and result.error and "session" not in result.error:
                result = result.with_notes("the session's process was stopped: the next call starts a fresh "
                                           "session")  # fmt: skip
            return result
        raise AssertionError("unreachable")

    async def _snapshot_for(self, session: HostSession) -> tuple[bytes, SessionState, list[str]]:
        """(snapshot bytes, state, notes) for a session about to start."""
        pending = self._pending_notes.pop(session.key, None)
        if pending is not None:
            return b"", "restarted", [pending[1]]
        if self.store is None:
            return b"", "new", []
        try:
            data = await self.store.load(session.user_id, session.session_id)
        except Exception as exc:
            log.warning("saved session %s of user %s refused: %s", session.session_id, session.user_id, exc)
            return b"", "new", [f"the saved session could not be used ({exc}); this is a fresh session"]
        return (data, "restored", []) if data else (b"", "new", [])

    # -- room ------------------------------------------------------------------------------------------------
    async def _reserve(self, key: tuple[str, str], wait: float) -> str | None:
        """Reserve room for a new session ``key`` (evicting idle ones); a refusal message when there is none.

        The check and the reservation happen without an await between them, so concurrent calls can
        never pass the caps together; sessions still ending count until their process is gone.
        """
        deadline = self.clock() + wait
        while True:
            if key in self._sessions:
                return None  # another call reserved it meanwhile
            victims, refusal = self._victims(key[0])
            if refusal is not None:
                return refusal
            if not victims:
                self._sessions[key] = HostSession(key[0], key[1], last_used=self.clock())
                self._ensure_sweeper()
                return None
            for victim in victims:
                log.info("evicting session %s of user %s (least recently used)", victim.session_id,
                         victim.user_id)  # fmt: skip
                self._end_in_background(victim, save=True)
            ending = [self._ending[v] for v in victims if v in self._ending]
            left = deadline - self.clock()
            if ending and left > 0:
                await asyncio.wait(ending, timeout=left)
            if self.clock() >= deadline:
                return (
                    "no room for a new session yet: the sessions making room are still saving; "
                    "call again in a few seconds"
                )

    def _victims(self, user_id: str) -> tuple[list[HostSession], str | None]:
        """Idle sessions to evict so one more of ``user_id`` fits, or why not (busy ones fill the caps)."""
        s = self.settings
        live = list(self._sessions.values())
        ending_users = [x.user_id for x in self._ending]
        victims: list[HostSession] = []
        for pool, busy_count, cap, whose in (
            ([x for x in live if x.user_id == user_id], ending_users.count(user_id), s.max_sessions_per_user,
             "you have"),
            (live, len(ending_users), s.max_sessions, "this host has"),
        ):  # fmt: skip
            excess = len(pool) + busy_count + 1 - cap - sum(v in pool for v in victims)
            if excess <= 0:
                continue
            idle = sorted(
                (x for x in pool if not x.busy and x not in victims and x.alive), key=lambda x: x.last_used
            )
            if len(idle) < excess and busy_count + len(pool) - len(idle) >= cap:
                names = ", ".join(sorted(x.session_id for x in pool if x.user_id == user_id)[:5])
                return [], (
                    f"{whose} {len(pool) + busy_count} live sessions, the limit is {cap}, and none is idle: "
                    f"close one first ({names or 'sessions of other users'}), or call again when one is idle"
                )
            victims += idle[:excess]
        return victims, None

    # -- ends ------------------------------------------------------------------------------------------------
    def _end_in_background(self, session: HostSession, *, save: bool) -> asyncio.Task[list[str]]:
        """Start ending ``session`` (it stops counting as live, and counts as ending until it is gone)."""
        existing = self._ending.get(session)
        if existing is not None:
            return existing
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        task = asyncio.create_task(self._end(session, save=save), name=f"end-session-{session.session_id}")
        self._ending[session] = task
        task.add_done_callback(lambda _task: self._ending.pop(session, None))
        return task

    async def _end(self, session: HostSession, *, save: bool) -> list[str]:
        """Wait for the session's running cell, save it when asked, then close its process (kill, verify)."""
        notes: list[str] = []
        async with session.lock:
            process, session.process = session.process, None
            if process is None:
                return notes
            try:
                if save and self.store is not None and process.alive:
                    notes = await self._save(session, process)
            finally:
                await process.close()
        return notes

    async def _save(self, session: HostSession, process: SandboxProcess) -> list[str]:
        assert self.store is not None
        data, notes = await process.save(self.settings.max_snapshot_bytes)
        if not data:
            self._pending_notes[session.key] = (
                self.clock(),
                "the session could not be saved when it last ended "
                f"({'; '.join(notes) or 'no snapshot'}): its variables are gone, this is a fresh session",
            )
            return notes
        try:
            await self.store.save(session.user_id, session.session_id, data, notes)
        except Exception as exc:  # a session that cannot be stored is still stopped
            log.warning(
                "session %s of user %s could not be stored: %s", session.session_id, session.user_id, exc
            )
            notes = [f"not saved: {exc}"]
            self._pending_notes[session.key] = (
                self.clock(),
                f"the session could not be saved when it last ended ({exc}): its variables are gone",
            )
        else:
            if self.on_saved is not None:
                await self.on_saved(session.user_id, session.session_id, len(data))
        return notes

    async def _forget(self, session: HostSession, *, restarted: bool) -> None:
        """A session whose process died: close what is left; its next call starts afresh."""
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        process, session.process = session.process, None
        if process is not None:
            await process.close(polite=False)
        if restarted and session.key not in self._pending_notes:
            self._pending_notes[session.key] = (self.clock(), _restarted_note())

    async def expire_idle(self) -> int:
        """Save and stop every session idle longer than ``session_idle_s``; returns how many."""
        now = self.clock()
        idle = [s for s in self._sessions.values()
                if s.alive and not s.busy and now - s.last_used >= self.settings.session_idle_s]  # fmt: skip
        tasks = [self._end_in_background(s, save=True) for s in idle]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for key, (when, _note) in list(self._pending_notes.items()):
            if now - when >= self.settings.session_idle_s:
                del self._pending_notes[key]  # nobody came back: nothing left to say
        return len(idle)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="code-interpreter-session-sweeper")

    async def _sweep_loop(self) -> None:
        every = min(SWEEP_EVERY_S, max(1.0, self.settings.session_idle_s / 4))
        while self._sessions or self._pending_notes:
            await asyncio.sleep(every)
            try:
                await self.expire_idle()
            except Exception:
                log.exception("expiring idle sessions failed")

    # -- the public face (interp.sessions) -----------------------------------------------------------------
    async def list(self, user_id: int | str | None = None) -> list[dict[str, Any]]:
        """Live sessions on this host (of ``user_id``, or all): id, user, state, cells, idle s, memory MB.

        ``memory_mb`` is what the session holds alone: the private (USS) memory of its sandboxed child and
        of its supervisor; ``pids`` are their host pids.
        """
        now = self.clock()
        out = []
        for s in list(self._sessions.values()):
            if (user_id is not None and s.user_id != str(user_id)) or s.process is None:
                continue
            sup, child = s.process.pids
            mem = await asyncio.to_thread(_private_mb, child, sup)
            out.append({"id": s.session_id, "user_id": s.user_id, "state": s.state, "cells": s.cells,
                        "idle_seconds": round(now - s.last_used, 1), "busy": s.busy, "memory_mb": mem,
                        "pids": {"supervisor": sup, "child": child}})  # fmt: skip
        return out

    async def reset(self, user_id: int | str, session_id: str) -> bool:
        """Forget the session entirely: stop its process (unsaved) and delete its saved snapshot."""
        key = (str(user_id), str(session_id))
        had = False
        session = self._sessions.get(key)
        if session is not None:
            had = session.alive
            await self._end_in_background(session, save=False)
        self._pending_notes.pop(key, None)
        if self.store is not None:
            had = await self.store.delete(key[0], key[1]) or had
        return had

    async def close(self, user_id: int | str, session_id: str) -> bool:
        """Save the session, then stop its process; False when it was not live here."""
        session = self._sessions.get((str(user_id), str(session_id)))
        if session is None or not session.alive:
            return False
        await self._end_in_background(session, save=True)
        return True

    async def close_all(self) -> None:
        """Shutdown: save and stop every live session, all at once (each within its save deadline)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        tasks = [self._end_in_background(s, save=True) for s in list(self._sessions.values())]
        tasks += list(self._ending.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        """Live sessions on this host, for ``CodeInterpreter.status()``."""
        now = self.clock()
        return {
            "live": len(self._sessions),
            "ending": len(self._ending),
            "max_sessions": self.settings.max_sessions,
            "max_sessions_per_user": self.settings.max_sessions_per_user,
            "idle_seconds": self.settings.session_idle_s,
            "sessions": [
                {
                    "id": s.session_id,
                    "user_id": s.user_id,
                    "cells": s.cells,
                    "idle_seconds": round(now - s.last_used, 1),
                }
                for s in self._sessions.values()
            ],
        }


def _restarted_note(reason: str = "") -> str:
    why = f" ({reason})" if reason else " (it ran past its timeout or crashed)"
    return f"the session's previous process was stopped{why}: its variables are gone, this is a fresh session"


def _private_mb(*pids: int | None) -> float | None:
    """Private (unshared) memory of processes in MB, from smaps_rollup (None when one cannot be read)."""
    kb = 0
    for pid in pids:
        if not pid:
            return None
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                kb += sum(
                    int(line.split()[1]) for line in fh if line.startswith(("Private_Clean", "Private_Dirty"))
                )
        except (OSError, ValueError, IndexError):
            return None
    return round(kb / 1024, 1)
