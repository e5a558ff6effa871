"""The supervisor's side of one cell: feed the child, watch it, enforce the deadline, build the result.

Loaded by file path in the zygote (stdlib only). :class:`HostChannel` is the supervisor's end of the
execution socket: results are written blocking, live-output events through a bounded outbox that
never blocks the watch loop (a host that stops reading loses events, never the deadline).
:func:`watch_cell` polls the child's exit, its stdout/stderr/status pipes and the host's socket,
sends ``event`` frames for live output when asked, and at the deadline kills the child (one-shot)
or interrupts it first (a session keeps its variables when the interrupt works).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from typing import Any

DRAIN_S = 1.0
INTERRUPT_GRACE_S = 2.0
OUTBOX_CAP = 1 * 2**20


class HostGone(Exception):
    """The host closed the execution socket: nobody waits for a result any more."""


class HostChannel:
    """The supervisor's end of the execution socket (non-blocking, with an outbox for events)."""

    def __init__(self, wire: Any, fd: int) -> None:
        self.wire = wire
        self.fd = fd
        self.frames = wire.FrameBuffer()
        self.outbox = bytearray()
        self.closed = False
        self.dropped_events = 0
        os.set_blocking(fd, False)

    def event(self, message: dict[str, Any]) -> None:
        """Queue a live event; dropped (and counted) when the host is not reading them."""
        if self.closed:
            return
        if len(self.outbox) > OUTBOX_CAP:
            self.dropped_events += 1
            return
        self.outbox += self.wire.encode(message)
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

    def send(self, message: dict[str, Any], blobs: list[bytes] | tuple[bytes, ...] = ()) -> None:
        """Write the outbox, a frame and its bytes, blocking (OSError when the host is gone)."""
        os.set_blocking(self.fd, True)
        try:
            self.wire.write_all(self.fd, bytes(self.outbox))
            self.outbox.clear()
            self.wire.send(self.fd, message, blobs)
        finally:
            os.set_blocking(self.fd, False)

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
            self.frames.feed_raw(data)

    def next_request(self, timeout: float | None) -> dict[str, Any] | None:
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

    def __init__(self, warm: Any, timeout: float, stream: bool, interruptible: bool) -> None:
        cfg = warm.ctx.config
        streams = warm.ctx.streams
        cap = cfg["max_output_bytes"]
        self.outs = {warm.fds["out"]: streams.Capped(cap), warm.fds["err"]: streams.Capped(cap)}
        self.names = {warm.fds["out"]: "stdout", warm.fds["err"]: "stderr"}
        self.live = {fd: streams.LiveText(cap) for fd in self.outs} if stream else None
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.timeout = timeout
        self.interruptible = interruptible
        self.interrupted = False
        self.timed_out = False


def watch_cell(warm: Any, chan: HostChannel, cell: Cell) -> tuple[dict[str, Any], list[bytes]]:
    """Watch the child until its ``done`` report, its exit or the deadline; return (result frame, blobs).

    Raises HostGone when the host closes the socket (the caller kills the child).
    """
    status = warm.status
    exited = False
    done: tuple[str, dict[str, Any], list[bytes]] | None = None
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
        for fd, _ev in warm.poller.poll(max(1, int((cell.deadline - now) * 1000) + 1)):
            if fd == warm.pidfd:
                exited = True
            elif fd == chan.fd:
                chan.flush()
                chan.read()
                if chan.closed:
                    raise HostGone
                if _interrupt_asked(chan):
                    cell.deadline = time.monotonic()  # the host gave up on this cell: stop it now
            else:
                _read(warm, cell, chan, fd)
        while status.items and done is None:
            item = status.items.popleft()
            if item[0] == "done":
                done = item
    if done is None and not cell.timed_out:
        # No report yet: the child died, or forged a report. Kill it, then read every pipe to EOF (a
        # one-shot child may exit right after writing its report), and the exit status says the rest.
        with contextlib.suppress(ProcessLookupError):
            os.kill(warm.pid, signal.SIGKILL)
        _reap(warm)
        for fd in (warm.pidfd, chan.fd):
            with contextlib.suppress(KeyError, ValueError):
                warm.poller.unregister(fd)
        drain_until = time.monotonic() + DRAIN_S
        while warm.open_fds and time.monotonic() < drain_until:
            for fd, _ev in warm.poller.poll(100):
                if fd in warm.open_fds:
                    _read(warm, cell, chan, fd)
        while status.items and done is None and status.error is None:
            item = status.items.popleft()
            done = item if item[0] == "done" else None
        alive = False
    else:
        alive = done is not None and not exited
        if not alive:
            # Out of time: pid 1 of the namespace dies, and every process of the execution with it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(warm.pid, signal.SIGKILL)
        # What is in the pipes now is all the output that matters; a namespace's teardown (a fork
        # bomb's hundreds of ms) happens after the result is sent.
        _drain_now(warm, cell, chan)
    elapsed = time.monotonic() - cell.started
    return _header(warm, cell, done, alive, elapsed), (done[2] if done is not None else [])


def _interrupt_asked(chan: HostChannel) -> bool:
    """Whether the host sent ``interrupt`` mid-cell (the only frame it sends while a cell runs)."""
    asked = False
    while (frame := chan.frames.next_frame()) is not None:
        asked = asked or frame.get("op") == "interrupt"
    return asked


def _read(warm: Any, cell: Cell, chan: HostChannel, fd: int) -> None:
    data = warm.ctx.streams.read_into(fd, warm.poller, warm.open_fds)
    if not data:
        return
    if fd in cell.outs:
        cell.outs[fd].add(data)
        if cell.live is not None:
            text = cell.live[fd].text(data)
            if text:
                chan.event({"op": "event", "stream": cell.names[fd], "text": text})
    else:
        warm.status.feed(data)


def _drain_now(warm: Any, cell: Cell, chan: HostChannel) -> None:
    for fd in list(cell.outs):
        if fd not in warm.open_fds:
            continue
        os.set_blocking(fd, False)
        try:
            while fd in warm.open_fds:
                try:
                    _read(warm, cell, chan, fd)
                except BlockingIOError:
                    break
        finally:
            if fd in warm.open_fds:
                os.set_blocking(fd, True)


def _reap(warm: Any) -> None:
    if warm.pid and warm.wstatus is None:
        try:
            _, warm.wstatus = os.waitpid(warm.pid, 0)
        except ChildProcessError:
            warm.wstatus = 0


def _header(
    warm: Any, cell: Cell, done: tuple[str, dict[str, Any], list[bytes]] | None, alive: bool, elapsed: float
) -> dict[str, Any]:
    out_fd, err_fd = warm.fds["out"], warm.fds["err"]
    status = warm.status
    layers = dict(warm.layers)
    layers.update((status.ready or {}).get("layers", {}))
    header: dict[str, Any] = {
        "op": "result",
        "status": "ok",
        "elapsed": elapsed,
        "stdout": cell.outs[out_fd].text(),
        "stderr": cell.outs[err_fd].text(),
        "stdout_dropped": cell.outs[out_fd].dropped,
        "stderr_dropped": cell.outs[err_fd].dropped,
        "layers": layers,
        "notes": [],
        "files": [],
        "alive": alive,
        "child_pid": warm.child_host_pid,
    }
    if done is not None:
        msg = done[1]
        rc = msg.get("rc")
        header["exit_code"] = rc if isinstance(rc, int) and not isinstance(rc, bool) else 1
        header["notes"] = (
            [str(n)[:500] for n in msg.get("notes", [])][:10] if isinstance(msg.get("notes"), list) else []
        )
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
