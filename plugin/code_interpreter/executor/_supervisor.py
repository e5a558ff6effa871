"""Per-execution supervisor and sandboxed child (run in forks of the zygote; stdlib only).

The zygote keeps a small pool of *warm* supervisors. Each one, before any request exists, creates
its cgroups, unshares the namespaces, builds the mount view and forks its child, which enters the
view, drops every privilege, loads seccomp and then blocks reading its request. The request (code,
timeout, files) comes later: the zygote hands it to the oldest warm supervisor with the result pipe's
write end, the supervisor binds the input files and passes the request on. From then on the
supervisor (root, trusted, never runs user code) captures the child's output with a cap, kills the
child (pid 1 of its PID namespace, so every process of the execution dies) at the deadline, collects
the generated files, and writes one result frame plus the files' bytes straight to the host.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import io
import json
import os
import resource
import select
import signal
import socket
import sys
import time
from types import ModuleType
from typing import Any

SETUP_FAILED = 125
DRAIN_S = 1.0
CPU_SLACK_S = 2
SANDBOX_NICE = 10


class Context:
    """What the zygote prepared once: loaded modules, the seccomp filter, cgroup bases, the config."""

    def __init__(
        self,
        sandbox: ModuleType,
        inside: ModuleType,
        wire: ModuleType,
        streams: ModuleType,
        seccomp_filter: Any,
        cgroup_bases: dict[str, str],
        config: dict[str, Any],
    ) -> None:
        self.sandbox = sandbox
        self.inside = inside
        self.wire = wire
        self.streams = streams
        self.seccomp_filter = seccomp_filter
        self.cgroup_bases = cgroup_bases
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
        self.error: str | None = None
        self.work = ""
        self.fds: dict[str, int] = {}


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
                                 tmp_mb=cfg["tmp_mb"])  # fmt: skip
            socket.sethostname("sandbox")
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        st_r, st_w = os.pipe()
        req_r, req_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child never returns
            for fd in (out_r, err_r, st_r, req_w):
                os.close(fd)
            _child(ctx, warm, out_w, err_w, st_w, req_r)
        for fd in (out_w, err_w, st_w, req_r):
            os.close(fd)
        if warm.cgroup is not None:
            warm.cgroup.close_fds()
        warm.pid = pid
        warm.fds = {"out": out_r, "err": err_r, "st": st_r, "req": req_w}
    except BaseException as exc:
        warm.error = f"{type(exc).__name__}: {exc}"
    return warm


def serve(warm: Warm, ctl: socket.socket) -> None:
    """Wait for the request on ``ctl`` (from the zygote), run it, report; never returns (os._exit)."""
    code = 0
    result_fd = -1
    try:
        req, result_fd = _receive(warm, ctl)
    except BaseException:
        # The zygote went away before handing us a request: nothing to report, just clean up.
        _cleanup(warm, kill=True)
        os._exit(0)
    ctl.close()
    try:
        header, blobs = _execute(warm, req)
    except BaseException as exc:  # report every failure: the host must never wait for nothing
        import traceback

        traceback.print_exc()  # into the zygote's log, for the operator
        header, blobs = {"op": "result", "status": "setup_error", "error": f"{type(exc).__name__}: {exc}"}, []
        code = 1
    try:
        _write_all(result_fd, warm.ctx.wire.encode(header))
        for blob in blobs:
            _write_all(result_fd, blob)
    except OSError:
        code = 1
    os.close(result_fd)
    # After the report: the namespaces' teardown (tens of ms of RCU waits) is off the critical path.
    _cleanup(warm, kill=True)
    os._exit(code)


def _receive(warm: Warm, ctl: socket.socket) -> tuple[dict[str, Any], int]:
    frames = warm.ctx.wire.FrameBuffer()
    fds: list[int] = []
    while True:
        data, anc, _flags, _addr = ctl.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 4))
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[: len(payload) - len(payload) % got.itemsize])
                fds.extend(got)
        if not data:
            raise EOFError("the zygote closed the control socket")
        messages = frames.feed(data)
        if messages:
            if not fds:
                raise EOFError("request without a result pipe")
            return messages[0], fds[0]


def _cleanup(warm: Warm, kill: bool) -> None:
    if kill and warm.pid:
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _execute(warm: Warm, req: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    ctx = warm.ctx
    cfg = ctx.config
    if warm.error is not None:
        return {"op": "result", "status": "setup_error", "error": warm.error}, []
    if ctx.mode != "none" and req.get("files"):
        ctx.sandbox.mounts.add_inputs(cfg["root_dir"], [(f["host_path"], f["path"]) for f in req["files"]])
    payload = json.dumps(
        {"code": req["code"], "timeout": req["timeout"], "files": req.get("files", [])}, ensure_ascii=True
    ).encode("ascii")
    started = time.monotonic()
    try:
        _write_all(warm.fds["req"], payload)
    except OSError:
        pass  # the child died in setup: its status pipe says why
    os.close(warm.fds.pop("req"))
    return _watch(warm, float(req["timeout"]), started)


def _watch(warm: Warm, timeout: float, started: float) -> tuple[dict[str, Any], list[bytes]]:
    cfg = warm.ctx.config
    pid = warm.pid
    out_r, err_r, st_r = warm.fds["out"], warm.fds["err"], warm.fds["st"]
    streams = warm.ctx.streams
    outs = {out_r: streams.Capped(cfg["max_output_bytes"]), err_r: streams.Capped(cfg["max_output_bytes"])}
    status = streams.StatusReader(warm.ctx.wire, cfg["max_generated_files"], cfg["max_generated_bytes"])
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    for fd in (pidfd, out_r, err_r, st_r):
        poller.register(fd, select.POLLIN)
    open_fds = {out_r, err_r, st_r}
    timed_out = exited = False
    deadline = started + timeout
    while not exited and not status.complete and not status.error:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        for fd, _ev in poller.poll(max(1, int(remaining * 1000) + 1)):
            if fd == pidfd:
                exited = True
            else:
                streams.read_into(fd, outs, status, poller, open_fds)
    # Done, failed or out of time: pid 1 of the namespace dies, and every process of the execution with it.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    elapsed = time.monotonic() - started
    poller.unregister(pidfd)
    wstatus = None
    if not status.complete and not timed_out:
        # No report: wait for the exit (its status says what happened) and read the pipes to EOF.
        _, wstatus = os.waitpid(pid, 0)
        warm.pid = 0
        drain_until = time.monotonic() + DRAIN_S
        while open_fds and time.monotonic() < drain_until:
            for fd, _ev in poller.poll(100):
                streams.read_into(fd, outs, status, poller, open_fds)
    else:
        # Reported, or killed at the deadline: what is in the pipes now is all the output that matters.
        # The namespace's teardown (a fork bomb's hundreds of ms) happens after the result is sent.
        for fd in (out_r, err_r):
            if fd in open_fds:
                os.set_blocking(fd, False)
                while fd in open_fds:
                    try:
                        streams.read_into(fd, outs, status, poller, open_fds)
                    except BlockingIOError:
                        break
    for fd in open_fds:
        os.close(fd)
    os.close(pidfd)
    layers = dict(warm.layers)
    layers.update((status.ready or {}).get("layers", {}))
    header: dict[str, Any] = {
        "op": "result",
        "status": "ok",
        "elapsed": elapsed,
        "stdout": outs[out_r].text(),
        "stderr": outs[err_r].text(),
        "stdout_dropped": outs[out_r].dropped,
        "stderr_dropped": outs[err_r].dropped,
        "layers": layers,
        "notes": [],
        "files": [],
    }
    blobs: list[bytes] = []
    if status.complete and status.done is not None and not timed_out:
        rc = status.done.get("rc")
        header["exit_code"] = rc if isinstance(rc, int) else 1
        header["notes"] = [str(n)[:500] for n in status.done.get("notes", [])][:10]
        header["files"] = [
            {
                "filename": f["filename"],
                "mime": str(f.get("mime") or "application/octet-stream"),
                "size": f["size"],
            }
            for f in status.done["files"]
        ]
        blobs = status.blobs
    else:
        if wstatus is not None and os.WIFEXITED(wstatus):
            header["exit_code"] = os.WEXITSTATUS(wstatus)
        elif wstatus is not None:
            header["signal"] = os.WTERMSIG(wstatus)
            header["exit_code"] = -os.WTERMSIG(wstatus)
        if timed_out:
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
    return header, blobs


def _collect_in_child(ctx: Context, work: str) -> tuple[list[dict[str, Any]], list[str], list[bytes]]:
    """In the sandboxed child after the user's code: list and read the generated files.

    Reading here, with the sandbox's own view and uid, means no race with a stray user process can
    ever make a privileged reader follow a swapped symlink.
    """
    cfg = ctx.config
    found, notes = ctx.inside.collect_generated(
        work, set(), cfg["max_generated_files"], cfg["max_generated_bytes"]
    )
    files: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    budget = cfg["max_generated_bytes"]
    for item in found:
        try:
            fd = os.open(item["path"], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o170000 != 0o100000 or st.st_size > budget:
                continue
            chunks = []
            left = st.st_size
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
        except OSError:
            continue
        finally:
            os.close(fd)
        budget -= len(data)
        mime = item.get("mime") or "application/octet-stream"
        files.append({"filename": str(item["filename"]), "mime": mime, "size": len(data)})
        blobs.append(data)
    return files, list(notes), blobs


def _child(
    ctx: Context, warm: Warm, out_w: int, err_w: int, st_w: int, req_r: int
) -> None:  # pragma: no cover
    cfg = ctx.config
    sb = ctx.sandbox
    c = sb._libc
    mode = ctx.mode
    layers = dict(warm.layers)
    st = st_w
    try:
        c.prctl(c.PR_SET_PDEATHSIG, signal.SIGKILL)
        if warm.cgroup is not None:
            warm.cgroup.join()
        if mode != "none":
            sb.mounts.enter_root(cfg["root_dir"])
        work = sb.mounts.WORK_DIR if mode != "none" else warm.work
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        # Keep exactly the status and request pipes, as fds 3 and 4.
        high_st, high_rq = fcntl.fcntl(st_w, fcntl.F_DUPFD, 100), fcntl.fcntl(req_r, fcntl.F_DUPFD, 100)
        os.dup2(high_st, 3)
        os.dup2(high_rq, 4)
        st, rq = 3, 4
        os.closerange(5, 1 << 20)
        address_space = None
        if not layers.get("cgroup_memory"):
            address_space = sb.limits.current_vm_mb() + cfg["memory_mb"]
        sb.limits.apply(
            sb.limits.rlimits_for(
                cpu_seconds=int(cfg["max_timeout"]) + CPU_SLACK_S,
                max_write_mb=cfg["max_write_mb"],
                max_open_files=cfg["max_open_files"],
                # RLIMIT_NPROC counts every process of the uid system-wide: with a pids cgroup per
                # execution it is only a backstop sized for all slots at once.
                max_processes=cfg["max_processes"] * (cfg["max_parallel"] + 1)
                if layers.get("cgroup_pids")
                else cfg["max_processes"],
                address_space_mb=address_space,
            )
        )
        layers["rlimits"] = True
        # Below the host, the zygote and the supervisors: a busy sandbox cannot starve its own killer.
        os.nice(SANDBOX_NICE)
        os.chdir(work)
        if mode == "strict":
            sb.identity.drop_privileges(cfg["uid"], cfg["gid"])
            layers["uid_drop"] = True
        sb.identity.set_no_new_privs()
        layers["no_new_privs"] = True
        tmp = sb.mounts.TMP_DIR if mode != "none" else work
        os.environ.clear()
        os.environ.update(
            PATH="/usr/local/bin:/usr/bin:/bin",
            HOME=work,
            TMPDIR=tmp,
            LANG="C.UTF-8",
            LC_ALL="C.UTF-8",
            MPLBACKEND="Agg",
            MPLCONFIGDIR=os.path.join(tmp, ".matplotlib"),
            PYTHONIOENCODING="utf-8",
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
        )
        import tempfile

        tempfile.tempdir = None
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        # Line-buffered so output written before a timeout kill still reaches the host.
        sys.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", line_buffering=True
        )
        sys.argv = ["<code>"]
        if mode != "none" and ctx.seccomp_filter is not None:
            ctx.seccomp_filter.load()
            layers["seccomp"] = True
        ready = ctx.wire.encode({"op": "ready", "layers": layers})
    except BaseException as exc:
        _setup_failed(ctx, st, exc)
    # Sandboxed from here on; wait for the request.
    try:
        with os.fdopen(rq, "rb") as fh:
            request = json.loads(fh.read())
        used = resource.getrusage(resource.RUSAGE_SELF)
        cpu = int(used.ru_utime + used.ru_stime + float(request["timeout"])) + CPU_SLACK_S
        hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
        cpu = cpu if hard == resource.RLIM_INFINITY else min(cpu, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        files = {f["file_id"]: {"path": f["path"], "filename": f["filename"], "type": f["type"]}
                 for f in request["files"]}  # fmt: skip
        _write_all(st, ready)
    except BaseException as exc:
        _setup_failed(ctx, st, exc)
    rc = 1
    try:
        rc = int(ctx.inside.run_user_code(request["code"], files, work))
    except BaseException:  # run_user_code reports user errors itself; this is a last resort
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    try:
        # Stop stray background processes of the code, then report. Only as pid 1 of our own PID namespace
        # does kill(-1) mean "every process of this execution"; anywhere else it would hit the whole host.
        if mode != "none" and os.getpid() == 1:
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)
        generated, notes, blobs = _collect_in_child(ctx, work)
        _write_all(st, ctx.wire.encode({"op": "done", "rc": rc, "files": generated, "notes": notes}))
        for blob in blobs:
            _write_all(st, blob)
    except BaseException:
        rc = rc or 1
    os._exit(rc)


def _setup_failed(ctx: Context, fd: int, exc: BaseException) -> None:  # pragma: no cover - in the child
    message = f"sandbox setup failed: {type(exc).__name__}: {exc}"
    with contextlib.suppress(BaseException):
        _write_all(fd, ctx.wire.encode({"op": "setup_error", "error": message}))
    os._exit(SETUP_FAILED)
