"""Per-execution supervisor (run in forks of the zygote; stdlib only).

The zygote keeps a small pool of *warm* supervisors. Each one, before any request exists, creates
its cgroups, unshares the namespaces, builds the mount view and forks its child, which enters the
view, drops every privilege, loads seccomp and then blocks reading its request. Nothing of any user
has been seen by then, so nothing can be inherited: the zygote and every warm supervisor are free
of user data, and the child is forked before its own request arrives.

The request comes straight from the host over the execution's own socket, whose fd the zygote only
passes on. From then on the supervisor (trusted, never runs user code) binds the input files,
feeds the child, captures its output with a cap (sending live events when asked), enforces the
deadline, and writes the result and the generated files back over that socket. A one-shot execution
is one cell; a session keeps its child for many cells, saves a snapshot on request, and ends when
the host closes the socket. When the host goes away, the child is killed: nothing outlives it.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import signal
import socket
import time
from types import ModuleType
from typing import Any, NoReturn

START_WAIT_S = 30.0
SAVE_TIMEOUT_S = 120.0
EXIT_WAIT_S = 1.0


class Context:
    """What the zygote prepared once: loaded modules, the seccomp filter, cgroup bases, the config."""

    def __init__(
        self,
        modules: dict[str, ModuleType],
        seccomp_filter: Any,
        bases: dict[str, str],
        config: dict[str, Any],
    ) -> None:
        self.sandbox = modules["sandbox"]
        self.inside = modules["inside"]
        self.wire = modules["wire"]
        self.streams = modules["streams"]
        self.watch = modules["watch"]
        self.child = modules["child"]
        self.seccomp_filter = seccomp_filter
        self.cgroup_bases = bases
        self.config = config
        self.mode: str = config["mode"]


class Warm:
    """A prepared sandbox: namespaces, mount view and a child waiting for its request."""

    def __init__(self, ctx: Context, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.cgroup: Any = None
        self.layers = {layer: False for layer in ctx.sandbox.LAYERS}
        self.pid = 0
        self.child_host_pid = 0
        self.wstatus: int | None = None
        self.error: str | None = None
        self.work = ""
        self.fds: dict[str, int] = {}
        self.pidfd = -1
        self.poller: Any = None
        self.open_fds: set[int] = set()
        self.status: Any = None
        self.shown: set[str] = set()
        self.background: dict[int, bytearray] = {}


def prepare(ctx: Context, name: str, work_dir: str | None) -> Warm:
    """Set up one sandbox up to the point where only the request is missing (never raises)."""
    warm = Warm(ctx, name)
    cfg = ctx.config
    sb = ctx.sandbox
    c = sb._libc
    mode = ctx.mode
    root = cfg["root_dir"]
    try:
        if mode == "strict" and ctx.cgroup_bases:
            warm.cgroup = sb.cgroups.ExecCgroup(
                ctx.cgroup_bases, name, cfg["memory_mb"], cfg["max_processes"]
            )
            warm.layers.update(warm.cgroup.active)
        if mode == "none":
            warm.work = work_dir or ""
            os.makedirs(warm.work, mode=0o700, exist_ok=True)
        else:
            warm.work = os.path.join(root, sb.mounts.WORK_DIR.lstrip("/"))
            flags = c.CLONE_NEWNS | c.CLONE_NEWNET | c.CLONE_NEWIPC | c.CLONE_NEWUTS | c.CLONE_NEWPID
            if mode == "namespaces":
                flags |= c.CLONE_NEWUSER
            outer_uid, outer_gid = os.geteuid(), os.getegid()
            c.unshare(flags)
            if mode == "namespaces":
                sb.identity.write_id_maps(0, outer_uid, outer_gid)
            warm.layers.update(netns=True, mountns=True, pidns=True, ipcns=True, utsns=True)
            warm.layers["userns"] = mode == "namespaces"
            sb.mounts.make_private()
            uid, gid = (cfg["uid"], cfg["gid"]) if mode == "strict" else (0, 0)
            sb.mounts.build_root(root, cfg["readonly_paths"], uid=uid, gid=gid, work_mb=cfg["work_mb"],
                                 tmp_mb=cfg["tmp_mb"], hidden=cfg.get("hidden", []),
                                 stage=cfg["stage_dir"])  # fmt: skip
            socket.sethostname("sandbox")
        pipes = {key: os.pipe() for key in ("out", "err", "st", "req", "life")}
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            for key in ("out", "err", "st"):
                os.close(pipes[key][0])
            for key in ("req", "life"):
                os.close(pipes[key][1])
            ctx.child.main(ctx, warm, pipes["out"][1], pipes["err"][1], pipes["st"][1], pipes["req"][0],
                           pipes["life"][0])  # fmt: skip
        for key in ("out", "err", "st"):
            os.close(pipes[key][1])
        # The lifeline's write end stays open here and is never written: it closes only when we die.
        os.close(pipes["req"][0])
        os.close(pipes["life"][0])
        if warm.cgroup is not None:
            warm.cgroup.close_fds()
        warm.pid = warm.child_host_pid = pid
        warm.fds = {"out": pipes["out"][0], "err": pipes["err"][0], "st": pipes["st"][0],
                    "req": pipes["req"][1], "life": pipes["life"][1]}  # fmt: skip
    except BaseException as exc:
        warm.error = f"{type(exc).__name__}: {exc}"
    return warm


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
    chan = warm.ctx.watch.HostChannel(warm.ctx.wire, chan_fd)
    try:
        start = chan.next_request(START_WAIT_S)
        if start is not None and start.get("op") == "start":
            code = _run(warm, chan, start)
    except warm.ctx.watch.HostGone:
        code = 0
    except BaseException as exc:  # report every failure: the host must never wait for nothing
        import traceback

        traceback.print_exc(limit=5)  # into the zygote's log, for the operator
        with contextlib.suppress(OSError):
            chan.send({"op": "result", "status": "setup_error", "error": f"{type(exc).__name__}: {exc}"})
        code = 1
    _cleanup(warm)
    os._exit(code)


def _receive(ctl: socket.socket) -> int:
    """The execution socket's fd, passed by the zygote with its ``go`` frame (the frame says nothing more)."""
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
        if fds:
            for extra in fds[1:]:
                os.close(extra)
            return fds[0]


def _run(warm: Warm, chan: Any, start: dict[str, Any]) -> int:
    ctx = warm.ctx
    cfg = ctx.config
    session = start.get("kind") == "session"
    chan.send({"op": "started", "child_pid": warm.child_host_pid, "supervisor_pid": os.getpid()})
    if warm.error is not None:
        chan.send({"op": "result", "status": "setup_error", "error": warm.error, "alive": False})
        return 1
    warm.pidfd = os.pidfd_open(warm.pid)
    warm.poller = select.poll()
    for fd in (warm.pidfd, warm.fds["out"], warm.fds["err"], warm.fds["st"], chan.fd):
        warm.poller.register(fd, select.POLLIN)
    warm.open_fds = {warm.fds["out"], warm.fds["err"], warm.fds["st"]}
    warm.status = ctx.streams.StatusReader(
        ctx.wire, cfg["max_generated_files"], cfg["max_generated_bytes"], int(start.get("max_snapshot") or 0)
    )
    request: dict[str, Any] | None = start
    while request is not None:
        header, blobs = _cell(warm, chan, request, session)
        chan.send(header, blobs)
        if not session or not header.get("alive"):
            return 0
        request = _idle(warm, chan)
        while request is not None and request.get("op") == "save":
            _save(warm, chan, request)
            request = _idle(warm, chan) if _child_alive(warm) else None
        if request is None or request.get("op") != "cell":
            _stop_child(warm, chan, request)
            return 0
    return 0


def _cell(warm: Warm, chan: Any, req: dict[str, Any], session: bool) -> tuple[dict[str, Any], list[bytes]]:
    ctx = warm.ctx
    files = [f for f in req.get("files", []) if isinstance(f, dict)]
    if ctx.mode != "none":
        new = [f for f in files if f["path"] not in warm.shown]
        ctx.sandbox.mounts.add_inputs(ctx.config["root_dir"], ctx.config["stage_dir"],
                                      [(f["host_path"], f["path"]) for f in new])  # fmt: skip
        warm.shown.update(f["path"] for f in new)
    restore = int(req.get("restore") or 0)
    snapshot = chan.read_bytes(restore, START_WAIT_S) if restore else b""
    message = {
        "op": "cell",
        "kind": "session" if session else "oneshot",
        "code": req["code"],
        "timeout": req["timeout"],
        "files": [{k: f[k] for k in ("file_id", "path", "filename", "type", "name")} for f in files],
        "restore": len(snapshot),
    }
    cell = ctx.watch.Cell(warm, float(req["timeout"]), bool(req.get("stream")), interruptible=session)
    for fd, pending in warm.background.items():
        cell.outs[fd].add(bytes(pending))
    warm.background = {}
    try:
        ctx.wire.send(warm.fds["req"], message, [snapshot] if snapshot else [])
    except OSError:
        pass  # the child died in setup: its status pipe and exit status say why
    return ctx.watch.watch_cell(warm, chan, cell)


def _idle(warm: Warm, chan: Any) -> dict[str, Any] | None:
    """Between cells: wait for the host's next request, keeping the child's background output."""
    cap = warm.ctx.config["max_output_bytes"]
    while True:
        frame = chan.frames.next_frame()
        if frame is not None:
            return frame
        if chan.closed:
            return None
        for fd, _ev in warm.poller.poll():
            if fd == chan.fd:
                chan.read()
            elif fd == warm.pidfd:
                with contextlib.suppress(OSError):
                    chan.send({"op": "ended", "reason": "the session's process exited"})
                return None
            else:
                data = warm.ctx.streams.read_into(fd, warm.poller, warm.open_fds)
                if fd == warm.fds["st"]:
                    warm.status.feed(data)
                elif data:
                    kept = warm.background.setdefault(fd, bytearray())
                    kept += data[: max(0, cap - len(kept))]


def _child_alive(warm: Warm) -> bool:
    return not select.select([warm.pidfd], [], [], 0)[0]


def _save(warm: Warm, chan: Any, request: dict[str, Any]) -> None:
    """Ask the child for a snapshot and pass it on; a failure is a snapshot of 0 bytes with a note."""
    ctx = warm.ctx
    status = warm.status
    cap = int(request.get("cap") or 0)
    try:
        ctx.wire.send(warm.fds["req"], {"op": "save", "cap": cap})
    except OSError:
        chan.send({"op": "snapshot", "size": 0, "notes": ["not saved: the session's process is gone"]})
        return
    poller = select.poll()
    for fd in (warm.pidfd, warm.fds["st"], warm.fds["out"], warm.fds["err"]):
        if fd == warm.pidfd or fd in warm.open_fds:
            poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + SAVE_TIMEOUT_S
    while not status.items and status.error is None and time.monotonic() < deadline:
        for fd, _ev in poller.poll(500):
            if fd == warm.pidfd:
                deadline = 0.0
            else:
                data = ctx.streams.read_into(fd, poller, warm.open_fds)
                if fd == warm.fds["st"]:
                    status.feed(data)
    item = status.items.popleft() if status.items else None
    if item is None or item[0] != "snapshot":
        reason = status.error or "the session's process did not answer"
        chan.send({"op": "snapshot", "size": 0, "notes": [f"not saved: {reason}"]})
        return
    _kind, msg, blobs = item
    notes = [str(n)[:500] for n in msg.get("notes", [])][:20] if isinstance(msg.get("notes"), list) else []
    chan.send({"op": "snapshot", "size": len(blobs[0]), "notes": notes}, blobs)


def _stop_child(warm: Warm, chan: Any, request: dict[str, Any] | None) -> None:
    """The session ends: ask the child to exit (it runs its exit hooks), then make sure it is gone."""
    if request is not None and request.get("op") == "close":
        with contextlib.suppress(OSError):
            warm.ctx.wire.send(warm.fds["req"], {"op": "exit"})
        if select.select([warm.pidfd], [], [], EXIT_WAIT_S)[0]:
            return


def _cleanup(warm: Warm) -> None:
    if warm.pid:
        with contextlib.suppress(OSError):
            os.kill(warm.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.waitpid(warm.pid, 0)
        warm.pid = 0
    if warm.cgroup is not None:
        warm.cgroup.remove()
        warm.cgroup = None
    if warm.ctx.mode == "none" and warm.work:
        import shutil

        shutil.rmtree(warm.work, ignore_errors=True)
