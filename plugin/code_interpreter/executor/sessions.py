"""Live sessions: one long-lived sandboxed process per (user, session id), cells run in arrival order.

A session is an execution whose supervisor keeps its child after the first cell. It takes a warm
supervisor like any execution, so it has every layer of a one-shot run and shares nothing with other
sessions; its cells go over its own socket. Cells of one session run one at a time (a FIFO lock), each
holding one of the executor's parallel slots while it runs. A cell past its deadline is interrupted
(the variables survive); one that cannot be interrupted is killed, and the next call starts a fresh
session whose result says ``restarted``.

Sessions end by idle expiry, least-recently-used eviction (``max_sessions``, ``max_sessions_per_user``),
:meth:`SessionManager.close` or shutdown: each is then *saved* (a snapshot made inside its sandbox,
stored by the :class:`SnapshotStore` under the user) and its process stopped. The next call with
the same user and session id, on this host or any other sharing the database, restores it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import SandboxCrashed
from ..settings import Settings
from ._channel import ExecChannel
from ._executor import Executor
from ._results import EventCallback, ExecutionResult, FileRef, failure

__all__ = ["MAX_SESSION_ID", "SessionManager", "SnapshotStore"]

log = logging.getLogger("code_interpreter.sessions")

MAX_SESSION_ID = 200
SAVE_WAIT_S = 150.0
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
class Session:
    """One live session on this host."""

    user_id: str
    session_id: str
    channel: ExecChannel | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    cells: int = 0
    state: str = "new"
    last_used: float = 0.0
    created: float = 0.0
    names: dict[str, str] = field(default_factory=dict)
    busy: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """(user id, session id)."""
        return (self.user_id, self.session_id)

    @property
    def alive(self) -> bool:
        """The process is there (a channel that has not ended)."""
        return self.channel is not None


class SessionManager:
    """The live sessions of one executor (``interp.sessions``)."""

    def __init__(
        self,
        settings: Settings,
        store: SnapshotStore | None,
        executor: Callable[[], Awaitable[Executor]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Sessions under ``settings``, saved to ``store``; ``executor`` gives the (started) executor."""
        self.settings = settings
        self.store = store
        self._get_executor = executor
        self.clock = clock
        self._sessions: dict[tuple[str, str], Session] = {}
        self._restarted: dict[tuple[str, str], float] = {}  # died since their last cell: the next says so
        self._sweeper: asyncio.Task[None] | None = None

    # -- cells ---------------------------------------------------------------------------------------------
    async def run_cell(
        self,
        user_id: str,
        session_id: str,
        code: str,
        files: list[FileRef],
        timeout: float | None,  # noqa: ASYNC109 - the public contract: a per-call wall-clock limit
        on_event: EventCallback | None = None,
    ) -> ExecutionResult:
        """Run one cell in the user's session, starting (or restoring) it first when it is not live."""
        effective, note = self.settings.clamp_timeout(timeout)
        notes = [note] if note else []
        ex = await self._get_executor()
        refusal = ex.code_refusal(code)
        if refusal:
            return failure(refusal, ex.mode, notes)
        key = (str(user_id), str(session_id))
        while True:
            session = self._sessions.get(key)
            if session is None:
                session = Session(key[0], key[1], created=self.clock(), last_used=self.clock())
                self._sessions[key] = session
                self._ensure_sweeper()
            async with session.lock:
                current = self._sessions.get(key)
                if current is not None and current is not session:
                    continue  # ended while we waited, and a newer one took its place: queue there
                self._sessions[key] = session
                session.busy = True
                try:
                    return await self._cell(ex, session, code, files, effective, notes, on_event)
                finally:
                    session.busy = False
                    session.last_used = self.clock()

    async def _cell(
        self,
        ex: Executor,
        session: Session,
        code: str,
        files: list[FileRef],
        limit: float,
        notes: list[str],
        on_event: EventCallback | None,
    ) -> ExecutionResult:
        inputs = ex.inputs(files, session.names)
        if not session.alive:
            await self._make_room(session)  # before taking a slot: saving others can take a while
        frame: dict[str, Any] = {
            "code": code,
            "timeout": limit,
            "files": inputs,
            "stream": on_event is not None,
        }
        async with ex.slot(session.user_id):
            started = time.perf_counter()
            snapshot = b""
            if not session.alive:
                snapshot, state, restore_notes = await self._snapshot_for(session)
                notes = [*notes, *restore_notes]
                try:
                    session.channel = await ex.open_channel()
                except SandboxCrashed as exc:
                    return failure(f"Sandbox crashed: {exc}", ex.mode, notes, time.perf_counter() - started)
                session.state, session.cells = state, 0
                frame.update(op="start", kind="session", restore=len(snapshot),
                             max_snapshot=self.settings.max_snapshot_mb * 2**20)  # fmt: skip
            else:
                frame["op"] = "cell"
                session.state = "live"
            channel = session.channel
            assert channel is not None
            try:
                await channel.send(frame, snapshot)
                result, header = await ex.await_result(
                    channel, ex.outcome(limit, notes), on_event, started, session=True
                )
            except SandboxCrashed as exc:
                await ex.kill_and_verify(channel)
                result, header = failure(f"Sandbox crashed: {exc}", ex.mode, notes), {"alive": False}
            except asyncio.CancelledError:
                # The caller gave up mid-cell. The cell must stop, and its result must be read here,
                # before the next caller gets the session (or it would read this cell's result).
                await _finish(self._abandon(ex, session, channel, limit))
                raise
        session.cells += 1
        info = {"id": session.session_id, "state": session.state, "cell": session.cells}
        if not header.get("alive"):
            await self._end(session, save=False)
            self._restarted[session.key] = self.clock()
            info["ended"] = True
        return _with_session(result, info)

    async def _abandon(self, ex: Executor, session: Session, channel: ExecChannel, limit: float) -> None:
        """Interrupt a cell nobody waits for and read its result; end the session if it does not stop."""
        try:
            await channel.send({"op": "interrupt"})
            _result, header = await ex.await_result(channel, ex.outcome(limit, []), None, time.perf_counter(),
                                                    session=True)  # fmt: skip
        except Exception:
            header = {"alive": False}
        if not header.get("alive"):
            await ex.kill_and_verify(channel)
            await self._end(session, save=False)
            self._restarted[session.key] = self.clock()

    async def _snapshot_for(self, session: Session) -> tuple[bytes, str, list[str]]:
        """(snapshot bytes, state, notes) for a session about to start."""
        if self._restarted.pop(session.key, None) is not None:
            return (
                b"",
                "restarted",
                [
                    "the session's previous process was stopped (it ran past its timeout or crashed): its "
                    "variables are gone, this is a fresh session"
                ],
            )
        if self.store is None:
            return b"", "new", []
        try:
            data = await self.store.load(session.user_id, session.session_id)
        except Exception as exc:
            log.warning("saved session %s of user %s refused: %s", session.session_id, session.user_id, exc)
            return b"", "new", [f"the saved session could not be used ({exc}); this is a fresh session"]
        return (data, "restored", []) if data else (b"", "new", [])

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def _make_room(self, starting: Session) -> None:
        """Before a session starts: save and stop the least recently used idle ones over the caps."""
        live = [s for s in self._sessions.values() if s.alive and s is not starting]
        mine = [s for s in live if s.user_id == starting.user_id]
        for pool, cap in ((mine, self.settings.max_sessions_per_user), (live, self.settings.max_sessions)):
            idle = sorted((s for s in pool if not s.busy), key=lambda s: s.last_used)
            excess = len(pool) + 1 - cap
            for victim in idle[: max(0, excess)]:
                log.info(
                    "evicting session %s of user %s (least recently used)", victim.session_id, victim.user_id
                )
                await self._save_and_stop(victim)

    async def _save_and_stop(self, session: Session) -> list[str]:
        async with session.lock:
            return await self._end(session, save=True)

    async def _end(self, session: Session, *, save: bool) -> list[str]:
        """Stop the session's process (saving it first when asked); notes on what was saved."""
        channel, session.channel = session.channel, None
        self._sessions.pop(session.key, None)
        notes: list[str] = []
        if channel is None:
            return notes
        try:
            if save and self.store is not None:
                notes = await self._save(session, channel)
            with contextlib.suppress(SandboxCrashed):
                await channel.send({"op": "close"})
        finally:
            ex = await self._get_executor()
            await ex.close_channel(channel)
        return notes

    async def _save(self, session: Session, channel: ExecChannel) -> list[str]:
        assert self.store is not None
        cap = self.settings.max_snapshot_mb * 2**20
        try:
            await channel.send({"op": "save", "cap": cap})
            async with asyncio.timeout(SAVE_WAIT_S):
                while True:
                    frame, blobs = await channel.receive()
                    if frame.get("op") == "snapshot":
                        break
            notes = [str(n) for n in frame.get("notes", [])]
            if blobs and blobs[0]:
                await self.store.save(session.user_id, session.session_id, blobs[0], notes)
            return notes
        except Exception as exc:  # a session that cannot be saved is still stopped
            log.warning(
                "session %s of user %s could not be saved: %s", session.session_id, session.user_id, exc
            )
            return [f"not saved: {exc}"]

    async def expire_idle(self) -> int:
        """Save and stop every session idle longer than ``session_idle_minutes``; returns how many."""
        limit = self.settings.session_idle_minutes * 60.0
        now = self.clock()
        idle = [s for s in self._sessions.values() if s.alive and not s.busy and now - s.last_used >= limit]
        for session in idle:
            await self._save_and_stop(session)
        for key, when in list(self._restarted.items()):
            if now - when >= limit:
                del self._restarted[key]  # nobody came back: nothing left to say
        return len(idle)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="code-interpreter-session-sweeper")

    async def _sweep_loop(self) -> None:
        every = min(SWEEP_EVERY_S, max(1.0, self.settings.session_idle_minutes * 60.0 / 4))
        while self._sessions or self._restarted:
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
            if user_id is not None and s.user_id != str(user_id):
                continue
            sup = s.channel.supervisor_pid if s.channel is not None else None
            child = s.channel.child_pid if s.channel is not None else None
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
            async with session.lock:
                had = session.alive
                await self._end(session, save=False)
        self._restarted.pop(key, None)
        if self.store is not None:
            had = await self.store.delete(key[0], key[1]) or had
        return had

    async def close(self, user_id: int | str, session_id: str) -> bool:
        """Save the session, then stop its process; False when it was not live here."""
        session = self._sessions.get((str(user_id), str(session_id)))
        if session is None or not session.alive:
            return False
        await self._save_and_stop(session)
        return True

    async def close_all(self) -> None:
        """Shutdown: save and stop every live session."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for session in list(self._sessions.values()):
            await self._save_and_stop(session)

    def status(self) -> dict[str, Any]:
        """Live sessions on this host, for ``CodeInterpreter.status()``."""
        now = self.clock()
        return {
            "live": len(self._sessions),
            "max_sessions": self.settings.max_sessions,
            "max_sessions_per_user": self.settings.max_sessions_per_user,
            "idle_minutes": self.settings.session_idle_minutes,
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


def _with_session(result: ExecutionResult, info: dict[str, Any]) -> ExecutionResult:
    notes = list(result.notes)
    if info.pop("ended", False) and result.error and "session" not in result.error:
        notes.append("the session's process was stopped: the next call starts a fresh session")
    return dataclasses.replace(result, session=info, notes=tuple(notes))


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


async def _finish(work: Awaitable[None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled again meanwhile (it is bounded in time)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
