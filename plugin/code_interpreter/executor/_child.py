"""The sandboxed child: isolation set up before any request, then a loop over requests (stdlib only).

Forked by a warm supervisor, the child joins its cgroups, enters the mount view, applies rlimits,
drops to the sandbox identity (a real uid in ``strict`` mode; every capability in ``namespaces``
mode), re-arms its parent-death signal (the kernel clears it on a credential change) and checks
that the supervisor is still there, loads seccomp, reports ``ready`` and only then waits for work.

Requests arrive as frames on fd 4: ``cell`` (run code; a one-shot execution is a single cell),
``save`` (a session's snapshot) and ``exit``. Each answer goes to the status pipe (fd 3): ``done``
with the exit code, notes and generated files (their bytes follow), or ``snapshot`` and its bytes.
Everything the child writes after ``ready`` is treated as untrusted by the supervisor: the user's
code runs in this very process.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import resource
import select
import signal
import sys
from typing import Any

SETUP_FAILED = 125
CPU_SLACK_S = 2
SANDBOX_NICE = 10
ST_FD, REQ_FD, LIFE_FD = 3, 4, 5


def main(ctx: Any, warm: Any, out_w: int, err_w: int, st_w: int, req_r: int, life_r: int) -> None:
    """Set up the sandbox, then serve requests until told to exit; never returns."""
    st = st_w
    try:
        layers = _setup(ctx, warm, out_w, err_w, st_w, req_r, life_r)
        st = ST_FD
        ready = ctx.wire.encode({"op": "ready", "layers": layers})
        ctx.wire.write_all(st, ready)
    except BaseException as exc:
        _setup_failed(ctx, st, exc)
    work = ctx.sandbox.mounts.WORK_DIR if ctx.mode != "none" else warm.work
    session: Any = None
    while True:
        try:
            msg = ctx.wire.read_frame(REQ_FD)
        except BaseException:
            os._exit(0)  # the supervisor is gone or closed the channel: nothing left to do
        op = msg.get("op")
        if op == "cell":
            if msg.get("kind") == "session" and session is None:
                session = ctx.inside.Session(work)
            _cell(ctx, msg, work, session)
            if session is None:
                os._exit(0)
        elif op == "save" and session is not None:
            _save(ctx, session, msg)
        else:
            if session is not None:
                session.close()
            os._exit(0)


def _setup(ctx: Any, warm: Any, out_w: int, err_w: int, st_w: int, req_r: int, life_r: int) -> dict[str, Any]:
    cfg = ctx.config
    sb = ctx.sandbox
    c = sb._libc
    mode = ctx.mode
    layers = dict(warm.layers)
    c.prctl(c.PR_SET_PDEATHSIG, signal.SIGKILL)
    # A session and process group of its own: kill(0, ...) from the code must not reach the supervisor
    # (in namespaces mode it runs as the same uid).
    os.setsid()
    if warm.cgroup is not None:
        warm.cgroup.join()
    if mode != "none":
        sb.mounts.enter_root(cfg["root_dir"])
    work = sb.mounts.WORK_DIR if mode != "none" else warm.work
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    # Keep exactly the status, request and lifeline pipes, as fds 3, 4 and 5.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (st_w, req_r, life_r)]
    for target, fd in zip((ST_FD, REQ_FD, LIFE_FD), high, strict=True):
        os.dup2(fd, target)
    os.closerange(LIFE_FD + 1, 1 << 20)
    address_space = None
    if not layers.get("cgroup_memory"):
        address_space = sb.limits.current_vm_mb() + cfg["memory_mb"]
    sb.limits.apply(
        sb.limits.rlimits_for(
            # The hard CPU limit covers a whole session; each cell lowers the soft limit to its own budget.
            cpu_seconds=max(int(cfg["max_timeout"]), int(cfg["session_cpu_s"])) + CPU_SLACK_S,
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
    elif mode == "namespaces":
        sb.identity.drop_capabilities()
    sb.identity.set_no_new_privs()
    layers["no_new_privs"] = True
    # A credential change clears the parent-death signal: arm it again, then make sure the supervisor
    # did not die before that (its end of the lifeline pipe would have closed).
    c.prctl(c.PR_SET_PDEATHSIG, signal.SIGKILL)
    poller = select.poll()
    poller.register(LIFE_FD, select.POLLIN)
    if poller.poll(0):
        os._exit(SETUP_FAILED)
    os.close(LIFE_FD)
    _environment(mode, work)
    if mode != "none" and ctx.seccomp_filter is not None:
        ctx.seccomp_filter.load()
        layers["seccomp"] = True
    return layers


def _environment(mode: str, work: str) -> None:
    tmp = "/tmp" if mode != "none" else work
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


def _cpu_budget(timeout: float, session: bool) -> None:
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime + float(timeout)) + CPU_SLACK_S
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    cpu = cpu if hard == resource.RLIM_INFINITY else min(cpu, hard)
    # One-shot: soft and hard both; a session keeps its hard limit so the next cell can be given more.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard if session else cpu))


def _cell(ctx: Any, msg: dict[str, Any], work: str, session: Any) -> None:
    rc = 1
    notes: list[str] = []
    try:
        files = {
            str(f["file_id"]): {
                "path": f["path"],
                "filename": f["filename"],
                "type": f["type"],
                "name": f["name"],
            }
            for f in msg.get("files", [])
        }
        restore = int(msg.get("restore") or 0)
        if restore and session is not None:
            notes += session.restore(ctx.wire.read_exact(REQ_FD, restore))
        _cpu_budget(float(msg["timeout"]), session is not None)
        if session is None:
            rc = int(ctx.inside.run_user_code(msg["code"], files, work, links=True))
        else:
            rc, cell_notes = session.run_cell(msg["code"], files)
            notes += cell_notes
    except BaseException:  # run_user_code reports user errors itself; this is a last resort
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    try:
        # Stop stray background processes of a one-shot execution, then report. Only as pid 1 of our own
        # PID namespace does kill(-1) mean "every process of this execution"; elsewhere it would hit the host.
        if session is None and ctx.mode != "none" and os.getpid() == 1:
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)
        generated, collect_notes, blobs = _collect(ctx, work, session)
        ctx.wire.send(
            ST_FD, {"op": "done", "rc": rc, "files": generated, "notes": notes + collect_notes}, blobs
        )
    except BaseException:
        os._exit(rc or 1)


def _save(ctx: Any, session: Any, msg: dict[str, Any]) -> None:
    try:
        data, notes = session.snapshot(int(msg.get("cap") or 0))
        ctx.wire.send(ST_FD, {"op": "snapshot", "size": len(data), "notes": notes}, [data])
    except BaseException as exc:
        with contextlib.suppress(BaseException):
            message = f"{type(exc).__name__}: {exc}"[:500]
            ctx.wire.send(ST_FD, {"op": "snapshot", "size": 0, "notes": [f"not saved: {message}"]})


def _collect(ctx: Any, work: str, session: Any) -> tuple[list[dict[str, Any]], list[str], list[bytes]]:
    """List and read the generated files here, in the sandbox's own view and with its own uid.

    Reading here means no race with a stray user process can ever make a privileged reader follow a
    swapped symlink. A session returns only the files that are new or changed since its last cell.
    """
    cfg = ctx.config
    found, notes = ctx.inside.collect_generated(
        work, set(), cfg["max_generated_files"], cfg["max_generated_bytes"]
    )
    if session is not None:
        found = session.changed(found)
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
            data = ctx.wire.read_exact(fd, st.st_size) if st.st_size else b""
        except (OSError, EOFError):
            continue
        finally:
            os.close(fd)
        budget -= len(data)
        mime = item.get("mime") or "application/octet-stream"
        files.append({"filename": str(item["filename"]), "mime": mime, "size": len(data)})
        blobs.append(data)
    return files, list(notes), blobs


def _setup_failed(ctx: Any, fd: int, exc: BaseException) -> None:  # pragma: no cover - in the child
    message = f"sandbox setup failed: {type(exc).__name__}: {exc}"
    with contextlib.suppress(BaseException):
        ctx.wire.write_all(fd, ctx.wire.encode({"op": "setup_error", "error": message}))
    os._exit(SETUP_FAILED)
