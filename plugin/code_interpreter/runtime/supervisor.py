"""Per-execution supervisor (run in forks of the zygote; stdlib only).

The zygote keeps a small pool of *warm* supervisors. Each one, before any request exists, creates its
cgroups, unshares the namespaces, builds the mount view and forks its child, which enters the view,
drops every privilege, loads seccomp and then blocks reading its request. Nothing of any user has been
seen by then, so nothing can be inherited: the zygote and every warm supervisor are free of user data,
and the child is forked before its own request arrives.

The request comes straight from the host over the execution's own socket, whose fd the zygote only
passes on. From then on the supervisor (trusted, never runs user code) binds the input files, feeds the
child, captures its output with a cap (sending live events when asked), enforces the deadline, and
writes the result and the generated files back. One-shot and session are the same path: ``start``
(keep_state off or on), then cells; one-shot ends after its cell, a session after ``close``.

What the child can touch is bounded: it reads requests from a socket whose sending direction is shut
down on its side (no reopening through /proc either: a socket cannot be), every write to it has a
deadline, the status pipe takes only the frame the supervisor waits for, and the supervisor's own
memory is capped (RLIMIT_AS) at what its bounded buffers need. It dies with the zygote (parent-death
signal), the child with it; every way it ends kills the child, waits for it and removes its cgroups.

It also answers the child's system calls that the seccomp allowlist does not hold (EPERM, counted for
the result's note): the filter's listener is polled in every loop in which the supervisor waits
(``sandbox.notify``; a supervisor in its own PID namespace cannot start a thread for it).
"""

from __future__ import annotations

import array
import contextlib
import os
import resource
import select
import signal
import socket
import time
import traceback
from typing import NoReturn

from . import child, sandbox
from .meter import Meter
from .protocol import (
    MAX_FRAME,
    MIB,
    PROTOCOL_VERSION,
    WARM_TO_SUPERVISOR,
    Frame,
    Op,
    ProtocolError,
    Stalled,
    check_version,
    decode,
    encode,
    send,
)
from .sandbox import _libc as c
from .sandbox.cgroups import ExecCgroup
from .streams import StatusReader, read_into
from .warm import Context, Warm
from .watch import INTERRUPT_GRACE_S, Cell, HostChannel, HostGone, kill_child, serve_filter, watch_cell

START_WAIT_S = 30.0
EXIT_WAIT_S = 1.0
#: The child must take a request within this long (it blocks reading them; a cell's code is small).
CHILD_WRITE_S = 10.0
#: Room the supervisor's own memory has above what it held when it forked its child.
MEMORY_SLACK = 96 * MIB


def prepare(ctx: Context, name: str, work_dir: str | None) -> Warm:
    """Set up one sandbox up to the point where only the request is missing (never raises)."""
    warm = Warm(ctx, name, {layer: False for layer in sandbox.LAYERS})
    cfg = ctx.config
    try:
        if ctx.mode == "strict" and ctx.cgroup_bases:
            warm.cgroup = ExecCgroup(ctx.cgroup_bases, name, cfg.memory_mb, cfg.max_processes)
            warm.layers.update(warm.cgroup.active)
        if ctx.mode == "none":
            warm.work = work_dir or ""
            os.makedirs(warm.work, mode=0o700, exist_ok=True)
        else:
            warm.work = os.path.join(cfg.root_dir, sandbox.mounts.WORK_DIR.lstrip("/"))
            _isolate(warm)
        _fork_child(warm)
        _arm(warm)
        # Bounded from here on: every buffer the supervisor keeps has a size bound; this is the backstop.
        limit = sandbox.limits.current_vm_mb() * MIB + 2 * MAX_FRAME + cfg.max_generated_bytes
        limit += cfg.max_snapshot_bytes + MEMORY_SLACK
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except BaseException as exc:
        warm.error = f"{type(exc).__name__}: {exc}"
    return warm


def _isolate(warm: Warm) -> None:
    """New namespaces and the mount view (the child enters it)."""
    cfg = warm.ctx.config
    flags = c.CLONE_NEWNS | c.CLONE_NEWNET | c.CLONE_NEWIPC | c.CLONE_NEWUTS | c.CLONE_NEWPID
    namespaces = warm.ctx.mode == "namespaces"
    if namespaces:
        flags |= c.CLONE_NEWUSER
    outer_uid, outer_gid = os.geteuid(), os.getegid()
    c.unshare(flags)
    if namespaces:
        sandbox.identity.write_id_maps(0, outer_uid, outer_gid)
    sandbox.network.loopback_up()  # the new namespace's own lo: 127.0.0.1 inside, nothing outside
    warm.layers.update(netns=True, mountns=True, pidns=True, ipcns=True, utsns=True, userns=namespaces)
    sandbox.mounts.make_private()
    uid, gid = (cfg.uid, cfg.gid) if warm.ctx.mode == "strict" else (0, 0)
    sandbox.mounts.build_root(cfg.root_dir, cfg.readonly_paths, uid=uid, gid=gid, work_bytes=cfg.work_bytes,
                              tmp_bytes=cfg.work_bytes, hidden=cfg.hidden, stage=cfg.stage_dir)  # fmt: skip
    socket.sethostname("sandbox")


def _fork_child(warm: Warm) -> None:
    pipes = {key: os.pipe() for key in ("out", "err", "st", "life")}
    # The child hands its seccomp listener over on this socket, then closes its end (sandbox.notify).
    notify_ours, notify_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # Requests go over a socket the child can only read: its sending direction is shut down, and unlike
    # a pipe it cannot be reopened for writing through /proc/self/fd (the child owns its inodes in a
    # user namespace).
    req_ours, req_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    req_theirs.shutdown(socket.SHUT_WR)
    req_ours.shutdown(socket.SHUT_RD)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        for key in ("out", "err", "st"):
            os.close(pipes[key][0])
        os.close(pipes["life"][1])
        req_ours.close()
        notify_ours.close()
        child.main(warm, pipes["out"][1], pipes["err"][1], pipes["st"][1], req_theirs.detach(),
                   pipes["life"][0], notify_theirs.detach())  # fmt: skip
    for key in ("out", "err", "st"):
        os.close(pipes[key][1])
    # The lifeline's write end stays open here and is never written: it closes only when we die.
    os.close(pipes["life"][0])
    req_theirs.close()
    notify_theirs.close()
    program = warm.ctx.seccomp_filter
    if program is not None and warm.ctx.mode != "none":
        warm.listener = sandbox.notify.Listener(notify_ours, program.names, census=program.census)
    else:
        notify_ours.close()
    if warm.cgroup is not None:
        warm.cgroup.close_fds()
    warm.pid = pid
    warm.fds = {"out": pipes["out"][0], "err": pipes["err"][0], "st": pipes["st"][0],
                "req": req_ours.detach(), "life": pipes["life"][1]}  # fmt: skip
    os.set_blocking(warm.fds["req"], False)


def _arm(warm: Warm) -> None:
    """What watching the child needs and no request changes — its pidfd, the meter's open counters, the
    poller of its pipes (and of the seccomp hand-over), the status reader — made while the sandbox is warm,
    so the execution's first request does not wait for it."""
    cfg = warm.ctx.config
    warm.pidfd = os.pidfd_open(warm.pid)
    warm.meter = Meter(warm.pid, warm.cgroup)
    warm.poller = select.poll()
    for fd in (warm.pidfd, warm.fds["out"], warm.fds["err"], warm.fds["st"]):
        warm.poller.register(fd, select.POLLIN)
    if warm.listener is not None:  # served wherever the supervisor waits; its hand-over too
        warm.poller.register(warm.listener.polled(), select.POLLIN)
    warm.open_fds = {warm.fds["out"], warm.fds["err"], warm.fds["st"]}
    warm.status = StatusReader(cfg.max_generated_files, cfg.max_generated_bytes, cfg.max_snapshot_bytes)


def serve(warm: Warm, ctl: socket.socket) -> NoReturn:
    """Wait for an execution socket from the zygote, run what the host asks over it; never returns."""
    try:
        chan_fd = _receive(ctl)
    except BaseException:
        # The zygote went away before handing us an execution: nothing to report, just clean up.
        _cleanup(warm)
        os._exit(0)
    ctl.close()
    code = 0
    chan = HostChannel(chan_fd)
    try:
        start = chan.next_request(START_WAIT_S)
        if start is not None and start["op"] == Op.START:
            check_version(start)
            warm.report_layers = bool(start.get("layers"))
            _run(warm, chan, bool(start["keep_state"]))
    except HostGone:
        code = 0
    except BaseException as exc:  # report every failure: the host must never wait for nothing
        traceback.print_exc(limit=5)  # into the zygote's log, for the operator
        with contextlib.suppress(HostGone):
            chan.send(Op.RESULT, status="setup_error", error=f"{type(exc).__name__}: {exc}"[:2000],
                      alive=False, files=[], notes=[])  # fmt: skip
        code = 1
    _cleanup(warm)
    os._exit(code)


def _receive(ctl: socket.socket) -> int:
    """The execution socket's fd, passed by the zygote with its ``go`` frame."""
    fds: list[int] = []
    while True:
        data, anc, _flags, _addr = ctl.recvmsg(65536, socket.CMSG_SPACE(4 * 4))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
                fds.extend(got)
        if not data:
            raise EOFError("the zygote closed the control socket")
        decode(data[4:], WARM_TO_SUPERVISOR)
        if fds:
            for extra in fds[1:]:
                os.close(extra)
            return fds[0]


def _run(warm: Warm, chan: HostChannel, keep_state: bool) -> None:
    chan.send(Op.STARTED, version=PROTOCOL_VERSION, supervisor_pid=os.getpid(), child_pid=warm.pid)
    if warm.error is not None:
        chan.send(Op.RESULT, status="setup_error", error=warm.error, alive=False, files=[], notes=[])
        return
    warm.poller.register(chan.fd, select.POLLIN)  # the rest was armed while warm (_arm)
    while True:
        request = _idle(warm, chan)
        if request is None or request["op"] == Op.CLOSE:
            _stop_child(warm, polite=request is not None)
            return
        if request["op"] == Op.SAVE:
            if not _save(warm, chan, request["cap"], checkpoint=bool(request.get("checkpoint"))):
                return
        elif request["op"] == Op.CELL:
            header, blobs = _cell(warm, chan, request, keep_state)
            chan.send(Op.RESULT, blobs, **header)
            if not keep_state or not header["alive"]:
                return
        if warm.meter is not None:
            warm.meter.reset()  # for the next cell, while the host reads this one's result
        # an ``interrupt`` that arrives after its cell ended has nothing left to stop


def _cell(warm: Warm, chan: HostChannel, req: Frame, keep_state: bool) -> tuple[Frame, list[bytes]]:
    ctx = warm.ctx
    files = [f for f in req["files"] if isinstance(f, dict)]
    new = [f for f in files if f["path"] not in warm.shown] if ctx.mode != "none" else []
    if new:
        sandbox.mounts.add_inputs(ctx.config.root_dir, ctx.config.stage_dir,
                                  [(f["host_path"], f["path"]) for f in new])  # fmt: skip
        warm.shown.update(f["path"] for f in new)
    restore = int(req.get("restore") or 0)
    snapshot = chan.read_bytes(restore, START_WAIT_S) if restore else b""
    cell = Cell(warm, float(req["timeout"]), bool(req.get("stream")), interruptible=keep_state)
    for fd, pending in warm.background.items():
        cell.outs[fd].add(bytes(pending))
    warm.background = {}
    warm.status.expect(Op.DONE)
    keys = ("file_id", "path", "filename", "type", "name")
    fields = {"code": req["code"], "timeout": req["timeout"], "keep_state": keep_state,
              "restore": len(snapshot), "files": [{k: f[k] for k in keys} for f in files]}  # fmt: skip
    if warm.meter is not None:
        warm.meter.begin()  # what the cell uses is counted from here (runtime/meter.py)
    try:
        send(warm.fds["req"], Op.CELL, [snapshot] if snapshot else [], time.monotonic() + CHILD_WRITE_S,
             **fields)  # fmt: skip
    except Stalled:
        kill_child(warm)  # it stopped reading its requests: nothing it does is waited for
    except OSError:
        pass  # the child died in setup: its status pipe and exit status say why
    header, blobs = watch_cell(warm, chan, cell)
    _syscalls(warm, header, req["code"])
    return header, blobs


def _syscalls(warm: Warm, header: Frame, code: str) -> None:
    """The calls the seccomp filter refused in this cell, for the result's note (and the census log)."""
    listener = warm.listener
    if listener is None:
        return
    log = warm.ctx.config.seccomp_log
    if log:
        label = next((line.strip() for line in code.splitlines() if line.strip()), "")[:120]
        counts = listener.record(log, label, warm.ctx.mode)
    else:
        counts = listener.take()
    header["blocked"] = {} if listener.census else counts  # census mode refuses nothing


def _idle(warm: Warm, chan: HostChannel) -> Frame | None:
    """Between cells: wait for the host's next request; the child must stay silent on its status pipe.

    Output it prints meanwhile (a background thread) is kept, capped, for the next cell. A status frame,
    or the child's exit, ends the session: ``ended`` tells the host why.
    """
    cap = warm.ctx.config.max_output_bytes
    while True:
        frame = chan.frames.next_frame()
        if frame is not None:
            return frame
        if chan.closed:
            return None
        for fd, event in warm.poller.poll():
            if fd == chan.fd:
                chan.read()
            elif serve_filter(warm, warm.poller, fd, event):
                pass
            elif fd == warm.pidfd:
                chan.send(Op.ENDED, reason="the session's process exited")
                return None
            else:
                data = read_into(fd, warm.poller, warm.open_fds)
                if fd == warm.fds["st"]:
                    warm.status.feed(data)
                    if warm.status.error is not None:
                        chan.send(Op.ENDED, reason=warm.status.error)
                        return None
                elif data:
                    kept = warm.background.setdefault(fd, bytearray())
                    kept += data[: max(0, cap - len(kept))]


def _save(warm: Warm, chan: HostChannel, cap: int, *, checkpoint: bool) -> bool:
    """Ask the child for a snapshot and pass it on; False when the session had to end instead.

    The snapshot is made by the user's process (its objects pickle themselves): it gets
    ``save_timeout`` seconds. A ``checkpoint`` (the session goes on after it) is then interrupted
    (``KeyboardInterrupt`` in the pickling: the session goes on, unsaved) and gets
    :data:`~.watch.INTERRUPT_GRACE_S` more. Past that, or on any misbehaviour, the child is killed and a
    snapshot of 0 bytes says why; the session is then over (``alive`` false).
    """
    cfg = warm.ctx.config
    status = warm.status
    status.expect(Op.SNAPSHOT)
    deadline = time.monotonic() + cfg.save_timeout
    try:
        send(warm.fds["req"], Op.SAVE, (), min(deadline, time.monotonic() + CHILD_WRITE_S), cap=cap)
    except OSError:
        status.error = "the session's process did not take the request"
    poller = select.poll()
    listener = warm.listener.polled() if warm.listener is not None else -1
    for fd in (warm.pidfd, *warm.open_fds, *([listener] if listener >= 0 else [])):
        poller.register(fd, select.POLLIN)
    interrupted = False
    while not status.items and status.error is None:
        if time.monotonic() >= deadline:
            if interrupted or not checkpoint:
                break
            interrupted = True  # a slow or stuck __reduce__: stop it, keep the session
            with contextlib.suppress(ProcessLookupError):
                os.kill(warm.pid, signal.SIGINT)
            deadline = time.monotonic() + INTERRUPT_GRACE_S
        for fd, event in poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            if serve_filter(warm, poller, fd, event):
                pass
            elif fd == warm.pidfd:
                status.error = status.error or "the session's process exited"
            elif fd in warm.open_fds:
                data = read_into(fd, poller, warm.open_fds)
                if fd == warm.fds["st"]:
                    status.feed(data)
    item = status.items.popleft() if status.items else None
    if item is None:
        reason = status.error or f"it took longer than {cfg.save_timeout:g} s and did not stop"
        kill_child(warm)
        chan.send(Op.SNAPSHOT, size=0, notes=[f"not saved: {reason}"], alive=False)
        chan.send(Op.ENDED, reason=f"the session was stopped while saving ({reason})")
        return False
    _op, msg, blobs = item
    if warm.listener is not None and cfg.seccomp_log:
        warm.listener.record(cfg.seccomp_log, "(a session's snapshot)", warm.ctx.mode)
    notes = [str(n)[:500] for n in msg["notes"]][:20]
    if interrupted and not blobs[0]:
        notes.append(
            f"not saved: it took longer than {cfg.save_timeout:g} s (interrupted; the session went on)"
        )
    chan.send(Op.SNAPSHOT, blobs, size=len(blobs[0]), notes=notes, alive=True)
    return True


def _stop_child(warm: Warm, *, polite: bool) -> None:
    """The session ends: ask the child to exit (it runs its exit hooks) when the host closed it politely."""
    if polite and warm.pidfd >= 0:
        with contextlib.suppress(OSError):
            os.write(warm.fds["req"], encode(Op.EXIT))
        select.select([warm.pidfd], [], [], EXIT_WAIT_S)


def _cleanup(warm: Warm) -> None:
    """Every end: the child (and every process of the execution) killed and reaped, the cgroups gone."""
    if warm.pid:
        kill_child(warm)
        warm.pid = 0
    if warm.cgroup is not None:
        warm.cgroup.remove()
        warm.cgroup = None
    if warm.ctx.mode == "none" and warm.work:
        import shutil

        shutil.rmtree(warm.work, ignore_errors=True)


def arm_parent_death() -> None:
    """Die with the zygote (and so with the host): the kernel's parent-death signal."""
    c.prctl(c.PR_SET_PDEATHSIG, signal.SIGKILL)


__all__ = ["Context", "ProtocolError", "Warm", "arm_parent_death", "prepare", "serve"]
