"""The supervisor's side of one cell: feed the child, watch it, enforce the deadline, build the result.

:class:`HostChannel` is the supervisor's end of the execution socket. Nothing on it blocks without a
deadline: results are written with one (:data:`HOST_WRITE_S`), live-output events go through a bounded
outbox that never holds up the watch loop (a host that stops reading loses events, never the
deadline). :func:`watch_cell` polls the child's exit, its stdout/stderr/status pipes and the host's
socket, sends ``event`` frames for live output when asked, and at the deadline kills the child
(one-shot) or interrupts it first (a session keeps its variables when the interrupt works).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from typing import Any

from .protocol import EXECUTION_TO_SUPERVISOR, MIB, Frame, FrameBuffer, Op, encode, write_all
from .streams import Capped, LiveText, read_into
from .warm import Warm

DRAIN_S = 1.0
INTERRUPT_GRACE_S = 2.0
OUTBOX_CAP = 1 * MIB
#: A host that takes no bytes for this long is treated as gone (it reads every frame as it comes).
HOST_WRITE_S = 30.0


class HostGone(Exception):
    """The host closed the execution socket (or stopped reading it): nobody waits for a result any more."""


class HostChannel:
    """The supervisor's end of the execution socket (non-blocking, with a bounded outbox for events)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.frames = FrameBuffer(EXECUTION_TO_SUPERVISOR)
        self.outbox = bytearray()
        self.closed = False
        self.dropped_events = 0
        os.set_blocking(fd, False)

    def event(self, stream: str, text: str) -> None:
        """Queue a live event; dropped (and counted, reported with the result) when the host lags."""
        if self.closed:
            return
        if len(self.outbox) > OUTBOX_CAP:
            self.dropped_events += 1
            return
        self.outbox += encode(Op.EVENT, stream=stream, text=text)
        self.flush()

    def flush(self) -> None:
        """Write what the socket takes now."""
        while self.outbox and not self.closed:
            try:
                n = os.write(self.fd, self.outbox)
            except BlockingIOError:
                return
            except OSError:
                self.closed = True
                return
            del self.outbox[:n]

    def send(self, op: Op, blobs: list[bytes] | tuple[bytes, ...] = (), **fields: Any) -> None:
        """The outbox, then one frame and its bytes, within :data:`HOST_WRITE_S` (HostGone otherwise)."""
        deadline = time.monotonic() + HOST_WRITE_S
        try:
            if self.outbox:
                write_all(self.fd, bytes(self.outbox), deadline)
                self.outbox.clear()
            write_all(self.fd, encode(op, **fields), deadline)
            for blob in blobs:
                write_all(self.fd, blob, deadline)
        except OSError as exc:  # Stalled, or the host is gone
            self.closed = True
            raise HostGone(str(exc)) from None

    def read(self) -> None:
        """Read what has arrived into the frame buffer; EOF marks the channel closed."""
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            self.frames.feed(data)

    def next_request(self, timeout: float | None) -> Frame | None:
        """Wait for the next frame (None at EOF or after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            frame = self.frames.next_frame()
            if frame is not None:
                return frame
            if self.closed:
                return None
            wait = None if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not poller.poll(wait) and deadline is not None and time.monotonic() >= deadline:
                return None
            self.read()

    def read_bytes(self, size: int, timeout: float) -> bytes:
        """``size`` raw bytes that follow a frame (a snapshot); EOFError when they do not all come."""
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while (data := self.frames.take(size)) is None:
            if self.closed or time.monotonic() > deadline:
                raise EOFError("the host did not send the whole snapshot")
            poller.poll(100)
            self.read()
        return data


class Cell:
    """The output, status and deadline of one running cell."""

    def __init__(self, warm: Warm, timeout: float, stream: bool, interruptible: bool) -> None:
        cap = warm.ctx.config.max_output_bytes
        self.outs = {warm.fds["out"]: Capped(cap), warm.fds["err"]: Capped(cap)}
        self.names = {warm.fds["out"]: "stdout", warm.fds["err"]: "stderr"}
        self.live = {fd: LiveText(cap) for fd in self.outs} if stream else None
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.timeout = timeout
        self.interruptible = interruptible
        self.interrupted = False
        self.timed_out = False


def watch_cell(warm: Warm, chan: HostChannel, cell: Cell) -> tuple[Frame, list[bytes]]:
    """Watch the child until its ``done`` report, its exit or the deadline; return (result fields, blobs).

    Raises HostGone when the host closes the socket (the caller kills the child).
    """
    status = warm.status
    exited = False
    done: tuple[Op, Frame, list[bytes]] | None = None
    open_fds = warm.open_fds  # the child's stdout/stderr/status pipes still open (one set, updated in place)
    # Only a procfs meter samples while the cell runs; a cgroup's counters hold the peak themselves.
    sampling = warm.meter if warm.meter is not None and warm.meter.samples else None
    while done is None and not exited and status.error is None:
        now = time.monotonic()
        if now >= cell.deadline:
            if cell.interruptible and not cell.interrupted:
                # A session keeps its state if the code stops at KeyboardInterrupt within the grace time.
                cell.interrupted = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(warm.pid, signal.SIGINT)
                cell.deadline = now + INTERRUPT_GRACE_S
                continue
            cell.timed_out = True
            break
        warm.poller.modify(chan.fd, select.POLLIN | (select.POLLOUT if chan.outbox else 0))
        wait = cell.deadline - now
        if sampling is not None:
            wait = min(wait, sampling.sample_if_due(now))
        for fd, event in warm.poller.poll(max(1, int(wait * 1000) + 1)):
            if fd == warm.pidfd:
                exited = True
            elif fd in open_fds:  # the child's pipes first: they speak in every cell
                _read(warm, cell, chan, fd)
            elif serve_filter(warm, warm.poller, fd, event):
                pass
            elif fd == chan.fd:
                chan.flush()
                chan.read()
                if chan.closed:
                    raise HostGone("the host closed the execution socket")
                if _interrupt_asked(chan):
                    cell.deadline = time.monotonic()  # the host gave up on this cell: stop it now
            else:
                _read(warm, cell, chan, fd)
        if status.items:
            done = status.items.popleft()
    # Measured before anything is killed: a killed process's CPU time is lost with it outside cgroups.
    usage = warm.meter.end() if warm.meter is not None else None
    if done is None and not cell.timed_out:
        # No report yet: the child died, or garbled its report. Kill it, then read every pipe to EOF (a
        # one-shot child may exit right after writing its report), and the exit status says the rest.
        kill_child(warm)
        for fd in (warm.pidfd, chan.fd, warm.listener.polled() if warm.listener is not None else -1):
            with contextlib.suppress(KeyError, ValueError):
                warm.poller.unregister(fd)
        drain_until = time.monotonic() + DRAIN_S
        while warm.open_fds and time.monotonic() < drain_until:
            for fd, _ev in warm.poller.poll(100):
                if fd in warm.open_fds:
                    _read(warm, cell, chan, fd)
        if status.items and status.error is None:
            done = status.items.popleft()
        alive = False
    else:
        # A one-shot child waits after its report (to be measured alive); it is done now.
        alive = done is not None and not exited and cell.interruptible
        if not alive:
            # Out of time: pid 1 of the namespace dies, and every process of the execution with it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(warm.pid, signal.SIGKILL)
        # What is in the pipes now is all the output that matters; a namespace's teardown (a fork
        # bomb's hundreds of ms) happens after the result is sent.
        _drain_now(warm, cell, chan)
    header = _header(warm, cell, chan, done, alive)
    if usage is not None:
        header["usage"] = usage
    return header, (done[2] if done is not None else [])


def serve_filter(warm: Warm, poller: select.poll, fd: int, event: int) -> bool:
    """Whether ``fd`` is the seccomp listener's (see :meth:`~.sandbox.notify.Listener.polled`), served.

    The hand-over socket readable: take the listener and poll it instead. The listener readable: answer
    the child's next call outside the allowlist; stop polling it once no process uses the filter.
    """
    listener = warm.listener
    if listener is None or fd < 0 or fd != listener.polled():
        return False
    pollers = [warm.poller] if poller is warm.poller else [warm.poller, poller]  # (a save polls its own)
    if listener.sock is None and listener.answer(event):
        return True
    for each in pollers:  # the hand-over came, or the listener is no longer used
        with contextlib.suppress(KeyError, ValueError):
            each.unregister(fd)
    if listener.sock is not None and listener.take_over() >= 0:
        for each in pollers:
            each.register(listener.fd, select.POLLIN)
    return True


def kill_child(warm: Warm) -> None:
    """SIGKILL the child (pid 1 of its namespace: every process of the execution dies) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(warm.pid, signal.SIGKILL)
    if warm.pid and warm.wstatus is None:
        try:
            _, warm.wstatus = os.waitpid(warm.pid, 0)
        except ChildProcessError:
            warm.wstatus = 0


def _interrupt_asked(chan: HostChannel) -> bool:
    """Whether the host sent ``interrupt`` mid-cell (the only frame it may send while a cell runs)."""
    asked = False
    while (frame := chan.frames.next_frame()) is not None:
        if frame["op"] != Op.INTERRUPT:
            raise HostGone(f"the host sent {frame['op'].value!r} while a cell ran")
        asked = True
    return asked


def _read(warm: Warm, cell: Cell, chan: HostChannel, fd: int) -> None:
    data = read_into(fd, warm.poller, warm.open_fds)
    if not data:
        return
    if fd in cell.outs:
        cell.outs[fd].add(data)
        if cell.live is not None:
            text = cell.live[fd].text(data)
            if text:
                chan.event(cell.names[fd], text)
    else:
        warm.status.feed(data)


def _drain_now(warm: Warm, cell: Cell, chan: HostChannel) -> None:
    """Read what the output pipes hold now: one ``poll`` and no read when they are empty (the common case:
    the watch loop read them as they spoke), never a wait. Bounded by :data:`DRAIN_S` against a writer
    that outruns the reads (a session's background thread)."""
    pipes = select.poll()
    outs = [fd for fd in cell.outs if fd in warm.open_fds]
    for fd in outs:
        pipes.register(fd, select.POLLIN)
    until = time.monotonic() + DRAIN_S
    while outs and time.monotonic() < until:
        ready = pipes.poll(0)
        if not ready:
            return
        for fd, _event in ready:
            _read(warm, cell, chan, fd)  # it has data, or is at its end (then closed and forgotten)
            if fd not in warm.open_fds:
                pipes.unregister(fd)
                outs.remove(fd)


def _header(
    warm: Warm,
    cell: Cell,
    chan: HostChannel,
    done: tuple[Op, Frame, list[bytes]] | None,
    alive: bool,
) -> Frame:
    out_fd, err_fd = warm.fds["out"], warm.fds["err"]
    status = warm.status
    header: Frame = {
        "status": "ok",
        "stdout": cell.outs[out_fd].text(),
        "stderr": cell.outs[err_fd].text(),
        "stdout_dropped": cell.outs[out_fd].dropped,
        "stderr_dropped": cell.outs[err_fd].dropped,
        "notes": [],
        "files": [],
        "alive": alive,
        "dropped_events": chan.dropped_events,
    }
    if warm.report_layers:  # the self-test's one cell; the host reports those layers, never a cell's
        layers = dict(warm.layers)
        layers.update((status.ready or {}).get("layers") or {})
        header["layers"] = layers
    if done is not None:
        msg = done[1]
        header["exit_code"] = msg["rc"]
        header["notes"] = [str(n)[:500] for n in msg.get("notes") or []][:10]
        header["files"] = [
            {"filename": f["filename"], "mime": str(f.get("mime") or "application/octet-stream")[:100],
             "size": f["size"]}
            for f in msg["files"]
        ]  # fmt: skip
        if cell.interrupted:
            header["status"] = "interrupted"
        if not cell.interruptible and warm.cgroup is not None and warm.cgroup.oom_killed():
            header["oom"] = True  # a one-shot process of the execution was killed for memory
        return header
    wstatus = warm.wstatus
    if wstatus is not None and os.WIFEXITED(wstatus):
        header["exit_code"] = os.WEXITSTATUS(wstatus)
    elif wstatus is not None:
        header["signal"] = os.WTERMSIG(wstatus)
        header["exit_code"] = -os.WTERMSIG(wstatus)
    if cell.timed_out:
        header["status"] = "timeout"
    elif status.ready is not None and status.error:
        # After "ready" only the user's process writes there: it forged or garbled the report.
        header["status"] = "bad_report"
        header["error"] = status.error
    elif status.ready is None or status.error:
        header["status"] = "setup_error"
        header["error"] = status.error or "the sandboxed child died during setup"
    if warm.cgroup is not None and warm.cgroup.oom_killed():
        header["oom"] = True
    return header
