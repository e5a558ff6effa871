"""Live sessions: one sandboxed process per (user, session id), on one host at a time, cells in arrival order.

A session is a :class:`~.process.SandboxProcess` that keeps its state between cells. Its cells run one
at a time (a FIFO lock), each holding one of the executor's parallel slots. A cell past its deadline is
interrupted (the variables survive); one that cannot be interrupted is killed, and the next call starts
a fresh session whose result says ``restarted``.

Across hosts (:mod:`.ownership`): a session is live on one host at a time, which holds its lease in the
database. A cell that reaches another host has the session handed over through the database (the owner
finishes its running cell, saves, releases; this host restores and runs) — the result says so and what it
cost. A host that stops answering loses its sessions when their leases run out; the next host restores
the last snapshot and says after which cell it was made and that later cells were lost. Checkpoints bound
that loss: after a cell, once the session has been quiet for ``session_checkpoint_s``, it is saved in the
background when its snapshot is small enough (``session_checkpoint_max_bytes``).

Room is reserved before anything starts: the per-user and total caps (``max_sessions_per_user``,
``max_sessions``) count live sessions, those starting and those still ending, and a call that finds no
room makes it by evicting idle sessions (least recently used first) or gets a result saying which
sessions to close. Sessions end by idle expiry, eviction, :meth:`SessionManager.close`, ``reset``, a
hand-off or shutdown; all but ``reset`` *save* first (a snapshot made inside the sandbox, within
``session_save_timeout_s``, in the user's own slot, fenced by the lease), and every end kills and verifies
the process. A save that runs out of time is dropped; the next call of that session says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..errors import CodeInterpreterError, LeaseLost, SessionError
from ..files.session_store import SessionStore
from .checkpoints import checkpoint_when_quiet
from .executor import Executor
from .ownership import Ownership, Taken
from .process import ProcessGone, SandboxProcess
from .results import EventCallback, ExecutionResult, FileRef, SessionInfo, SessionState
from .room import HostSession, private_mb, victims_for

__all__ = ["SessionManager"]

log = logging.getLogger("code_interpreter.sessions")

SWEEP_EVERY_S = 30.0


class SessionManager:
    """The live sessions of one host (``interp.sessions``)."""

    def __init__(
        self,
        settings: Any,
        store: SessionStore | None,
        executor: Callable[[], Awaitable[Executor]],
        clock: Callable[[], float] = time.monotonic,
        *,
        host: str | None = None,
    ) -> None:
        """Sessions under ``settings``, saved to (and owned through) ``store``; ``executor`` gives the
        started executor. Without a store, sessions live on this host only and are never saved."""
        self.settings = settings
        self.owner = Ownership(store, host=host, on_handoff=self._handed_off, on_lost=self._lost)
        self._get_executor = executor
        self.clock = clock
        self._sessions: dict[tuple[str, str], HostSession] = {}
        self._ending: dict[HostSession, asyncio.Task[list[str]]] = {}
        self._pending_notes: dict[tuple[str, str], tuple[float, str]] = {}  # said by the session's next cell
        self._sweeper: asyncio.Task[None] | None = None
        self.on_saved: Callable[[str, str, int], Awaitable[None]] | None = None
        """Called with (user id, session id, bytes added to the store) after a snapshot replaced the last one
        (the usage ledger's hook: a snapshot no bigger than the one it replaced adds nothing)."""

    @property
    def store(self) -> SessionStore | None:
        """Where sessions are saved and owned (None: on this host only, never saved)."""
        return self.owner.store

    @store.setter
    def store(self, store: SessionStore | None) -> None:
        self.owner.store = store

    @property
    def host(self) -> str:
        """This host's id in the sessions' leases."""
        return self.owner.host

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
        """Run one cell in the user's session, starting (or restoring, or taking over) it first."""
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
                except SessionError as exc:  # another host holds it (busy), or took it (lost)
                    await self._forget(session, restarted=False)
                    return ExecutionResult.failed(exc, isolation=ex.mode, notes=notes)
                finally:
                    session.busy = False
                    session.last_used = self.clock()
                    # A cell that ended its process closed it; one that died since: the next cell finds out.
                    if session.process is not None and not session.process.open:
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
        taken: Taken | None = None
        for attempt in (1, 2):
            snapshot = b""
            if session.process is not None:
                try:
                    await self.owner.confirm(session.key, session.cells)
                    session.state = "live"
                except LeaseLost:  # taken over while idle here: this copy is stale
                    await self._close_stale(session)
            if session.process is None:
                await self._ended(session.key)
                taken = await self.owner.take(session.user_id, session.session_id, limit + self._save_s)
                snapshot, state, cells, extra = await self._snapshot_for(session, taken)
                session.process = ex.process(session.user_id, keep_state=True)
                session.state, session.cells, session.snapshot_bytes = state, cells, len(snapshot)
                notes = [*notes, *extra]
            try:
                result = await session.process.run(
                    code, limit, files, notes=notes, on_event=on_event, restore=snapshot
                )
            except ProcessGone as exc:
                # It died between cells (nothing of this cell ran): start afresh, once.
                session.process = None
                # A note already waiting (why it was stopped: a save that ran out of time) says more.
                self._pending_notes.setdefault(session.key, (self.clock(), _restarted_note(str(exc))))
                if attempt == 2:
                    raise
                continue
            return await self._finish_cell(session, result, taken)
        raise AssertionError("unreachable")

    async def _finish_cell(
        self, session: HostSession, result: ExecutionResult, taken: Taken | None
    ) -> ExecutionResult:
        """Count the cell, make sure this host still owned the session while it ran, schedule a checkpoint."""
        session.cells += 1
        try:
            await self.owner.confirm(session.key, session.cells)
        except LeaseLost as exc:
            # Stalled past its lease while the cell ran: another host may own the session now. This
            # copy's state is not the session's any more: its effects are not acknowledged.
            await self._close_stale(session)
            return ExecutionResult.failed(
                f"the session was taken over by another host while this cell ran ({exc}): its effects "
                "are lost; call again to continue the session there",
                isolation=result.isolation, notes=result.notes, elapsed=result.execution_time,
                error_type="LeaseLost",
            )  # fmt: skip
        info = SessionInfo(session.session_id, session.state, session.cells,
                           handoff=taken.handoff if taken is not None else None)  # fmt: skip
        result = result.with_session(info)
        alive = session.process is not None and session.process.open
        if not alive and result.error and "session" not in result.error:
            result = result.with_notes(
                "the session's process was stopped: the next call starts a fresh session"
            )
        elif alive:
            session.dirty = True
            self._schedule_checkpoint(session)
        return result

    async def _snapshot_for(
        self, session: HostSession, taken: Taken
    ) -> tuple[bytes, SessionState, int, list[str]]:
        """(snapshot bytes, state, cell counter, notes) for a session about to start."""
        notes = [taken.note] if taken.note else []
        pending = self._pending_notes.pop(session.key, None)
        if pending is not None:
            return b"", "restarted", 0, [*notes, pending[1]]
        if self.store is None:
            return b"", "new", 0, notes
        try:
            data = await self.store.load(session.user_id, session.session_id)
        except CodeInterpreterError as exc:
            log.warning("saved session %s of user %s refused: %s", session.session_id, session.user_id, exc)
            return (
                b"",
                "new",
                0,
                [*notes, f"the saved session could not be used ({exc}); this is a fresh session"],
            )
        if not data:
            return b"", "new", 0, notes
        cells = taken.lease.saved_after_cell or taken.lease.cells or 0
        return data, "restored", cells, notes

    async def _ended(self, key: tuple[str, str]) -> None:
        """Wait until an earlier copy of ``key`` on this host has finished ending (its save and release):
        taking the lease again before that would fence its save out and restore an older snapshot."""
        for other, task in list(self._ending.items()):
            if other.key == key:
                with contextlib.suppress(Exception):
                    await asyncio.shield(task)

    @property
    def _save_s(self) -> float:
        return float(self.settings.session_save_timeout_s)

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
            victims, refusal = victims_for(
                key[0], list(self._sessions.values()), list(self._ending), self.settings
            )
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
        """Wait for the running cell, save when asked (fenced by the lease), release, close (kill, verify)."""
        notes: list[str] = []
        _cancel_unless_current(session.checkpointer)
        async with session.lock:
            process, session.process = session.process, None
            try:
                if process is not None and save and self.store is not None and process.alive:
                    notes = await self._save(session, process)
            finally:
                if process is not None:
                    await process.close()
                # The next take (here or on any host) says what its last save could not keep.
                await self.owner.release(session.key, session.cells, session.unsaved if save else None)
        return notes

    async def _save(
        self, session: HostSession, process: SandboxProcess, *, checkpoint: bool = False
    ) -> list[str]:
        """Snapshot the session inside its sandbox and store it, fenced by this host's lease."""
        data, notes = await process.save(self.settings.max_snapshot_bytes, checkpoint=checkpoint)
        if not data:
            session.unsaved = "; ".join(notes) or "no snapshot"
            session.snapshot_bytes = sys.maxsize  # no more checkpoints: each would wait out the deadline
            return notes
        try:
            await self.owner.save(session.key, data, notes, session.cells)
        except LeaseLost as exc:  # another host owns it now: its state is there, this copy is stale
            log.info("session %s of user %s was not saved: %s", session.session_id, session.user_id, exc)
            return [f"not saved: {exc}"]
        except CodeInterpreterError as exc:  # refused (quota, cap) or the store is away: still stopped
            log.warning(
                "session %s of user %s could not be stored: %s", session.session_id, session.user_id, exc
            )
            session.unsaved = f"not saved: {exc}"
            return [f"not saved: {exc}"]
        session.dirty = False
        session.unsaved = None
        added = max(0, len(data) - session.snapshot_bytes)  # it replaced the last one (or a checkpoint)
        session.snapshot_bytes = len(data)
        if self.on_saved is not None and added:
            await self.on_saved(session.user_id, session.session_id, added)
        return notes

    async def _forget(self, session: HostSession, *, restarted: bool) -> None:
        """A session whose process died (or that another host holds): close what is left, give it up."""
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        _cancel_unless_current(session.checkpointer)
        process, session.process = session.process, None
        if process is not None:
            await process.close(polite=False)
        await self.owner.release(session.key, session.cells)
        if restarted and session.key not in self._pending_notes:
            self._pending_notes[session.key] = (self.clock(), _restarted_note())

    async def _close_stale(self, session: HostSession) -> None:
        """This host lost the session's lease: its copy is not the session any more. Stop it, unsaved."""
        self.owner.forget(session.key)
        _cancel_unless_current(session.checkpointer)
        process, session.process = session.process, None
        if process is not None:
            await process.close(polite=False)

    async def _handed_off(self, key: tuple[str, str]) -> None:
        """Another host asked for ``key``: end it here (after its running cell; saved, then released)."""
        session = self._sessions.get(key)
        if session is not None:
            self._end_in_background(session, save=True)
        elif not any(s.key == key for s in self._ending):
            await self.owner.release(key, 0)

    async def _lost(self, key: tuple[str, str], exc: LeaseLost) -> None:
        """This host's lease on ``key`` was taken (it stalled) or reset: stop the stale copy."""
        log.warning("session %s of user %s is no longer this host's: %s", key[1], key[0], exc)
        session = self._sessions.get(key)
        if session is None or session.busy:
            return  # a running cell finds out itself when it ends, and says so in its result
        async with session.lock:
            if self._sessions.get(key) is session:
                del self._sessions[key]
                await self._close_stale(session)

    # -- checkpoints -------------------------------------------------------------------------------------
    def _schedule_checkpoint(self, session: HostSession) -> None:
        if self.store is None or self.settings.session_checkpoint_s is None:
            return
        if session.checkpointer is None or session.checkpointer.done():
            is_live = lambda: self._sessions.get(session.key) is session  # noqa: E731
            work = checkpoint_when_quiet(session, self._save, self.settings, self.clock, is_live)
            session.checkpointer = asyncio.create_task(work, name="session-checkpoint")

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
        """The sessions of ``user_id``: live here, live on another host, or saved; by id.

        Each has ``id``, ``user_id``, ``state`` (``live`` or ``saved``), ``host`` (where it is live; None
        when saved), ``cells`` (its cell counter) and, when it has a snapshot, ``size`` and ``saved_at``.
        Sessions live here add ``idle_seconds``, ``busy``, ``memory_mb`` (the private memory of its child
        and supervisor) and ``pids``. Without ``user_id``: the sessions live on this host.
        """
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        if user_id is not None and self.store is not None:
            for saved in await self.store.list_saved(user_id):
                at = saved.saved_at.isoformat() if saved.saved_at else None
                rows[(saved.user_id, saved.session_id)] = {
                    "id": saved.session_id, "user_id": saved.user_id, "state": saved.state,
                    "host": saved.owner, "cells": saved.cells, "size": saved.size, "saved_at": at,
                }  # fmt: skip
        now = self.clock()
        for s in list(self._sessions.values()):
            if (user_id is not None and s.user_id != str(user_id)) or s.process is None:
                continue
            sup, child = s.process.pids
            mem = await asyncio.to_thread(private_mb, child, sup)
            row = rows.setdefault(
                s.key, {"id": s.session_id, "user_id": s.user_id, "size": None, "saved_at": None}
            )
            row.update(state="live", host=self.host, cells=s.cells, idle_seconds=round(now - s.last_used, 1),
                       busy=s.busy, memory_mb=mem, pids={"supervisor": sup, "child": child})  # fmt: skip
        return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1]))]

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
        await self.owner.close()

    def status(self) -> dict[str, Any]:
        """Live sessions on this host, for ``CodeInterpreter.status()``."""
        now = self.clock()
        return {
            "host": self.host,
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


def _cancel_unless_current(task: asyncio.Task[Any] | None) -> None:
    if task is not None and not task.done() and task is not asyncio.current_task():
        task.cancel()


def _restarted_note(reason: str = "") -> str:
    why = f" ({reason})" if reason else " (it ran past its timeout or crashed)"
    return f"the session's previous process was stopped{why}: its variables are gone, this is a fresh session"
