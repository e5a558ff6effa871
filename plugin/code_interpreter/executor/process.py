"""One sandboxed process on the host's side: the one run path for one-shot calls and session cells alike.

A :class:`SandboxProcess` is one supervisor and its sandboxed child, taken from the zygote's warm pool.
It owns everything about them: the parallel slot while a cell (or a save) runs, the execution socket,
the deadline, and the kill. A one-shot call is a process of one cell (``keep_state=False``); a session
keeps its process for many cells. Every way a process ends — its cell timed out, it crashed, it was
closed, reset or evicted, the host shuts down — goes through :meth:`SandboxProcess.close`, which asks
politely, waits a bounded time, then kills and verifies that every process of it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import select
import signal
import time
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

from ..errors import FileNotFound, SandboxCrashed, SandboxError
from ..files.names import safe_filename
from ..runtime.protocol import PROTOCOL_VERSION, Op, ProtocolError, check_version
from ..runtime.sandbox.mounts import INPUTS_DIR
from .channel import ExecChannel
from .report import Outcome, from_report
from .results import EventCallback, ExecutionEvent, ExecutionResult, FileRef
from .slots import Slots, emit

__all__ = ["KILL_VERIFY_S", "ProcessGone", "SandboxProcess", "unique_name", "wait_exited"]

log = logging.getLogger("code_interpreter.executor")

RESULT_GRACE_S = 5.0  # the supervisor enforces the timeout; the host waits this much longer at most
INTERRUPT_GRACE_S = 2.0  # a session's cell gets this long to stop at KeyboardInterrupt
KILL_VERIFY_S = 2.0  # after a kill, every process of the execution must be gone within this
CLOSE_WAIT_S = 2.0  # a supervisor asked to close gets this long to exit on its own
START_WAIT_S = 30.0
#: A first cell with a snapshot up to this size is sent right behind ``start``, before its answer.
PIPELINED_RESTORE = 64 * 1024
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class ProcessHost(Protocol):
    """What a process needs from the service that starts it (the :class:`~.executor.Executor`)."""

    settings: Any
    mode: str
    slots: Slots

    async def connect(self, process: SandboxProcess) -> ExecChannel:
        """A new execution socket to a warm supervisor."""

    def disconnect(self, process: SandboxProcess, channel: ExecChannel) -> None:
        """The process ended."""


class ProcessGone(SandboxCrashed):
    """The process was found dead before the cell was given to it: the cell never ran."""


class SandboxProcess:
    """One supervisor + sandboxed child: its slot, channel, deadline and kill (see the module doc)."""

    def __init__(self, executor: ProcessHost, user_id: str, *, keep_state: bool) -> None:
        self.executor = executor
        self.user_id = user_id
        self.keep_state = keep_state
        self.names: dict[str, str] = {}
        """File id → its name in the work dir, for the inputs shown so far."""
        self.channel: ExecChannel | None = None
        self._pidfds: list[int] = []  # supervisor, child: they name these processes even after pid reuse
        self._stopped = False  # closed after it started: it is never started again (its state is gone)
        self.cells = 0

    @property
    def alive(self) -> bool:
        """The process is there (started, not closed, its supervisor has not exited)."""
        return self.channel is not None and not self._exited()

    @property
    def open(self) -> bool:
        """Started and not closed (no system call: what a cell's end knows; :attr:`alive` also asks the
        kernel whether the supervisor is still there)."""
        return self.channel is not None

    @property
    def pids(self) -> tuple[int | None, int | None]:
        """(supervisor pid, sandboxed child pid) on the host, while started."""
        if self.channel is None:
            return None, None
        return self.channel.supervisor_pid, self.channel.child_pid

    def _exited(self) -> bool:
        return bool(self._pidfds) and bool(select.select(self._pidfds[:1], [], [], 0)[0])

    # -- cells ---------------------------------------------------------------------------------------
    async def run(
        self,
        code: str,
        timeout: float,  # noqa: ASYNC109 - the cell's own deadline, enforced by the supervisor
        files: Sequence[FileRef] = (),
        *,
        notes: Sequence[str] = (),
        on_event: EventCallback | None = None,
        restore: bytes = b"",
    ) -> ExecutionResult:
        """Run one cell (starting the process first when it is not yet); the result of the code.

        Raises ProcessGone when a started process was found dead before the cell reached it (nothing
        ran: the caller may start afresh). Any other end is a result; a process that did not survive its
        cell is closed (killed and verified) before this returns; a one-shot process is left to its owner
        to close (it is exiting on its own by then).
        """
        inputs = self._inputs(files)
        outcome = Outcome(self.executor.mode, timeout, self.executor.settings.max_timeout,
                          self.executor.settings.max_output_bytes, self.executor.settings.memory_limit_mb,
                          list(notes))  # fmt: skip
        async with self.executor.slots.hold(self.user_id):
            started = time.perf_counter()
            try:
                fresh = self.channel is None
                if fresh:
                    if self._stopped:  # closed between cells (a save ran out of time): not silently anew
                        raise ProcessGone("the session's process was stopped")
                    await self._start()
                elif self._exited():
                    await self.close(polite=False)
                    raise ProcessGone("the session's process had ended")
                assert self.channel is not None
                # A fresh process gets its first cell right behind ``start`` (one round trip, not two),
                # unless a large snapshot comes with it: a sandbox that failed its setup never reads it.
                ahead = fresh and len(restore) <= PIPELINED_RESTORE
                if fresh and not ahead:
                    await self._started()
                await self.channel.send(Op.CELL, restore, code=code, timeout=timeout, files=inputs,
                                        stream=on_event is not None, restore=len(restore))  # fmt: skip
                if ahead:
                    await self._started()
                result, alive = await self._await_result(outcome, on_event, started)
            except ProcessGone:
                raise
            except SandboxCrashed as exc:
                await self.close(polite=False)
                error = f"Sandbox crashed: {exc}"
                elapsed = time.perf_counter() - started
                return ExecutionResult.failed(
                    error, isolation=self.executor.mode, notes=outcome.notes, elapsed=elapsed,
                    error_type="SandboxCrashed",
                )  # fmt: skip
            except asyncio.CancelledError:
                # The caller gave up mid-cell. The cell must stop and its result be read here, before the
                # next caller gets the process (or it would read this cell's result).
                await _finish(self._abandon(timeout))
                raise
        self.cells += 1
        if not alive and self.keep_state:
            await self.close(polite=False)  # a one-shot process is closed by its owner
        return result

    async def _start(self) -> None:
        self.channel = await self.executor.connect(self)
        await self.channel.send(Op.START, version=PROTOCOL_VERSION, keep_state=self.keep_state)

    async def _started(self) -> None:
        """The supervisor's answer to ``start`` (the first cell is already on its way behind it)."""
        assert self.channel is not None
        async with asyncio.timeout(START_WAIT_S):
            frame, _ = await self.channel.receive()
        if frame["op"] != Op.STARTED:
            raise SandboxCrashed(f"the sandbox answered {frame['op'].value!r} to start")
        try:
            check_version(frame)
        except ProtocolError as exc:
            raise SandboxError(str(exc)) from None
        for pid in (frame["supervisor_pid"], frame["child_pid"]):
            with contextlib.suppress(OSError):
                self._pidfds.append(os.pidfd_open(pid))

    async def _await_result(
        self, outcome: Outcome, on_event: EventCallback | None, started: float
    ) -> tuple[ExecutionResult, bool]:
        """Read until the cell's ``result``; live events go to ``on_event`` on the way."""
        assert self.channel is not None
        wait = outcome.timeout + RESULT_GRACE_S + (INTERRUPT_GRACE_S if self.keep_state else 0.0)
        try:
            async with asyncio.timeout(wait):
                while True:
                    frame, blobs = await self.channel.receive()
                    if frame["op"] == Op.EVENT and on_event is not None:
                        event = ExecutionEvent(
                            "stderr" if frame["stream"] == "stderr" else "stdout", frame["text"]
                        )
                        await emit(on_event, event)
                    elif frame["op"] == Op.RESULT:
                        frame["session"] = self.keep_state
                        elapsed = time.perf_counter() - started
                        return from_report(frame, blobs, outcome, elapsed), bool(frame["alive"])
                    elif frame["op"] == Op.ENDED:
                        # It ended between cells (it exited, or broke the protocol): the cell never ran.
                        await self.close(polite=False)
                        raise ProcessGone(frame["reason"])
        except TimeoutError:
            await self.close(polite=False)
            error = f"Sandbox did not report within {wait:.0f} s and was killed; run the code again"
            failed = ExecutionResult.failed(
                error,
                isolation=outcome.mode,
                notes=outcome.notes,
                elapsed=time.perf_counter() - started,
                error_type="SandboxTimeout",
            )
            return failed, False

    async def _abandon(self, limit: float) -> None:
        """Interrupt a cell nobody waits for and read its result; close the process if it does not stop."""
        alive = False
        if self.channel is not None:
            with contextlib.suppress(Exception):
                await self.channel.send(Op.INTERRUPT)
                outcome = Outcome(self.executor.mode, limit, limit, 0, 0)
                _result, alive = await self._await_result(outcome, None, time.perf_counter())
        if not alive:
            await self.close(polite=False)

    # -- saving ----------------------------------------------------------------------------------------
    async def save(self, cap: int, *, checkpoint: bool = False) -> tuple[bytes, list[str]]:
        """A snapshot of a session's state made inside its sandbox, within the save deadline.

        Runs in the user's own slot. A ``checkpoint`` that runs out of time is interrupted (the session
        goes on, unsaved: the snapshot is empty and the notes say why); any other save that runs out of
        time, or one that does not stop or breaks the protocol, ends the process.
        """
        if self.channel is None or self._exited():
            return b"", ["not saved: the session's process is gone"]
        deadline = self.executor.settings.session_save_timeout_s + RESULT_GRACE_S + INTERRUPT_GRACE_S
        async with self.executor.slots.hold(self.user_id):
            try:
                await self.channel.send(Op.SAVE, cap=cap, checkpoint=checkpoint)
                async with asyncio.timeout(deadline):
                    while True:
                        frame, blobs = await self.channel.receive()
                        if frame["op"] == Op.SNAPSHOT:
                            notes = [str(n) for n in frame["notes"]]
                            if frame.get("alive") is False:
                                await self.close(polite=False)
                            return (blobs[0] if blobs else b""), notes
                        if frame["op"] == Op.ENDED:
                            break
            except (SandboxCrashed, TimeoutError) as exc:
                log.warning("a session of user %s could not be saved: %s", self.user_id, exc)
        await self.close(polite=False)
        return b"", [f"not saved: the session's process did not answer within {deadline:.0f} s"]

    # -- the end ------------------------------------------------------------------------------------
    async def close(self, *, polite: bool = True) -> bool:
        """End the process: ask it to exit (``polite``), then kill and verify; True when all is gone.

        Idempotent. Nothing it does waits on the sandbox longer than :data:`CLOSE_WAIT_S` plus
        :data:`KILL_VERIFY_S`.
        """
        channel, self.channel = self.channel, None
        if channel is None:
            return True
        self._stopped = True
        pidfds, self._pidfds = self._pidfds, []
        try:
            if polite and pidfds and not await wait_exited(pidfds[:1], 0):
                with contextlib.suppress(SandboxCrashed):
                    await channel.send(Op.CLOSE)
                await wait_exited(pidfds[:1], CLOSE_WAIT_S)
            for fd in pidfds:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            gone = await wait_exited(pidfds, KILL_VERIFY_S)
            if not gone:
                log.error("processes %s of a killed execution were still alive after %.0f s",
                          self.pids, KILL_VERIFY_S)  # fmt: skip
            return gone
        finally:
            self.executor.disconnect(self, channel)
            await channel.aclose()
            for fd in pidfds:
                os.close(fd)

    # -- inputs -------------------------------------------------------------------------------------
    def _inputs(self, files: Sequence[FileRef]) -> list[dict[str, str]]:
        """The supervisor's view of ``files``: host path, path inside, and a unique name in the work dir."""
        mode = self.executor.mode
        out: list[dict[str, str]] = []
        seen: set[str] = set()
        for ref in files:
            if ref.file_id in seen:
                continue
            seen.add(ref.file_id)
            try:
                st = os.stat(ref.path)
            except OSError:
                raise FileNotFound(
                    f"file {ref.file_id} is not available on this host; upload it again"
                ) from None
            if mode == "strict" and not st.st_mode & 0o004:
                raise SandboxError(
                    f"the local copy of file {ref.file_id} is not world-readable; the sandbox uid cannot "
                    "read it — create cached copies with mode 0644"
                )
            safe_id = _SAFE.sub("_", ref.file_id)[:80] or "file"
            name = (
                _SAFE.sub("_", os.path.basename(ref.filename.replace("\x00", ""))).lstrip(".")[:120] or "data"
            )
            inside = str(ref.path) if mode == "none" else f"{INPUTS_DIR}/{safe_id}/{name}"
            if ref.file_id not in self.names:
                self.names[ref.file_id] = unique_name(ref.filename, set(self.names.values()))
            out.append({"file_id": ref.file_id, "host_path": str(ref.path), "path": inside,
                        "filename": ref.filename, "type": ref.file_type,
                        "name": self.names[ref.file_id]})  # fmt: skip
        return out


def unique_name(filename: str, taken: set[str]) -> str:
    """The input's name in the work dir: its own sanitised name, ``name (2).ext`` when that is taken."""
    name = safe_filename(os.path.basename(filename.replace("\\", "/")), default="data")
    if name.startswith("."):
        name = "_" + name[1:]
    stem, ext = os.path.splitext(name)
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{stem} ({n}){ext}", n + 1
    return candidate


async def wait_exited(pidfds: Sequence[int], wait_s: float) -> bool:
    """Whether every process behind ``pidfds`` exits within ``wait_s`` (watched by the event loop)."""
    loop = asyncio.get_running_loop()
    pending = [fd for fd in pidfds if not select.select([fd], [], [], 0)[0]]
    if not pending or wait_s <= 0:
        return not pending
    done: asyncio.Future[None] = loop.create_future()
    left = set(pending)

    def exited(fd: int) -> None:
        loop.remove_reader(fd)
        left.discard(fd)
        if not left and not done.done():
            done.set_result(None)

    for fd in pending:
        loop.add_reader(fd, exited, fd)
    try:
        await asyncio.wait_for(asyncio.shield(done), wait_s)
        return True
    except TimeoutError:
        return False
    finally:
        for fd in left:
            loop.remove_reader(fd)


async def _finish(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled again meanwhile (it is bounded in time)."""
    task = asyncio.ensure_future(work)
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
