"""The sandboxed child: isolation set up before any request, then a loop over requests (stdlib only).

Forked by a warm supervisor, the child joins its cgroups, enters the mount view, applies rlimits,
drops to the sandbox identity (a real uid in ``strict`` mode; every capability in ``namespaces``
mode), re-arms its parent-death signal (the kernel clears it on a credential change) and checks
that the supervisor is still there, loads the seccomp allowlist (handing its listener to the supervisor,
which answers the calls off the list), reports ``ready`` and only then waits for work.

Requests arrive as frames on fd 4 (a socket it can only read): ``cell`` (run code, restoring a
snapshot first when one follows), ``save`` (a session's snapshot) and ``exit``. Each answer goes to the
status pipe (fd 3): ``done`` with the exit code, notes and generated files (their bytes follow), or
``snapshot`` and its bytes. Everything the child writes after ``ready`` is treated as untrusted by the
supervisor: the user's code runs in this very process.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import resource
import select
import signal
import socket
import sys
import traceback
from typing import Any

from . import inside, sandbox
from .protocol import REQUEST_TO_CHILD, Frame, Op, encode, read_exact, read_frame, send, write_all
from .sandbox import _libc as c
from .warm import Warm

SETUP_FAILED = 125
CPU_SLACK_S = 2
SANDBOX_NICE = 10
ST_FD, REQ_FD, LIFE_FD, NOTIFY_FD = 3, 4, 5, 6


def main(warm: Warm, out_w: int, err_w: int, st_w: int, req_r: int, life_r: int, notify: int) -> None:
    """Set up the sandbox, then serve requests until told to exit; never returns."""
    st = st_w
    try:
        layers = _setup(warm, out_w, err_w, st_w, req_r, life_r, notify)
        st = ST_FD
        write_all(st, encode(Op.READY, layers=layers))
    except BaseException as exc:
        _setup_failed(st, exc)
    work = sandbox.mounts.WORK_DIR if warm.ctx.mode != "none" else warm.work
    runner: inside.CellRunner | None = None
    while True:
        try:
            msg = read_frame(REQ_FD, REQUEST_TO_CHILD)
        except BaseException:
            os._exit(0)  # the supervisor is gone or closed the channel: nothing left to do
        op = msg["op"]
        if op == Op.CELL:
            if runner is None:
                runner = inside.CellRunner(work, keep_state=bool(msg.get("keep_state")))
            _cell(warm, msg, work, runner)
            if not runner.keep_state:
                # Stay until the supervisor has measured this process (runtime/meter.py) and ends it.
                with contextlib.suppress(BaseException):
                    read_frame(REQ_FD, REQUEST_TO_CHILD)
                os._exit(0)
        elif op == Op.SAVE and runner is not None:
            _save(runner, msg["cap"])
        else:
            if runner is not None:
                runner.close()
            os._exit(0)


def _setup(
    warm: Warm, out_w: int, err_w: int, st_w: int, req_r: int, life_r: int, notify: int
) -> dict[str, Any]:
    cfg = warm.ctx.config
    mode = warm.ctx.mode
    layers = dict(warm.layers)
    c.prctl(c.PR_SET_PDEATHSIG, signal.SIGKILL)
    # A session and process group of its own: kill(0, ...) from the code must not reach the supervisor
    # (in namespaces mode it runs as the same uid).
    os.setsid()
    if warm.cgroup is not None:
        warm.cgroup.join()
    if mode != "none":
        sandbox.mounts.enter_root(cfg.root_dir)
    work = sandbox.mounts.WORK_DIR if mode != "none" else warm.work
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    # Keep exactly the status, request, lifeline and seccomp hand-over channels, as fds 3, 4, 5 and 6.
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (st_w, req_r, life_r, notify)]
    for target, fd in zip((ST_FD, REQ_FD, LIFE_FD, NOTIFY_FD), high, strict=True):
        os.dup2(fd, target)
    os.closerange(NOTIFY_FD + 1, 1 << 20)
    address_space = None
    if not layers.get("cgroup_memory"):
        address_space = sandbox.limits.current_vm_mb() + cfg.memory_mb
    sandbox.limits.apply(
        sandbox.limits.rlimits_for(
            # The hard CPU limit covers a whole session; each cell lowers the soft limit to its own budget.
            cpu_seconds=max(int(cfg.max_timeout), cfg.session_cpu_s) + CPU_SLACK_S,
            # A file cannot outgrow its tmpfs anyway; this backstop sits just past it, so a full work dir
            # says "No space left on device" (what the code can act on) rather than "File too large".
            max_write_bytes=cfg.work_bytes + 2**20,
            max_open_files=cfg.max_open_files,
            # RLIMIT_NPROC counts every process of the uid system-wide: with a pids cgroup per
            # execution it is only a backstop sized for all slots at once.
            max_processes=cfg.max_processes * (cfg.max_parallel + 1)
            if layers.get("cgroup_pids")
            else cfg.max_processes,
            address_space_mb=address_space,
        )
    )
    layers["rlimits"] = True
    # Below the host, the zygote and the supervisors: a busy sandbox cannot starve its own killer.
    os.nice(SANDBOX_NICE)
    os.chdir(work)
    if mode == "strict":
        sandbox.identity.drop_privileges(cfg.uid, cfg.gid)
        layers["uid_drop"] = True
    elif mode == "namespaces":
        sandbox.identity.drop_capabilities()
    sandbox.identity.set_no_new_privs()
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
    hand_over = socket.socket(fileno=NOTIFY_FD)  # before the filter (see notify.hand_over)
    listener = -1
    if mode != "none" and warm.ctx.seccomp_filter is not None:
        listener = sandbox.seccomp.load(warm.ctx.seccomp_filter)
        layers["seccomp"] = True
    # The supervisor answers the filter's refusals; this process must never hold the listener.
    sandbox.notify.hand_over(listener, hand_over)
    return layers


def _environment(mode: str, work: str) -> None:
    tmp = "/tmp" if mode != "none" else work
    os.environ.clear()
    os.environ.update(
        # ``python`` and ``python3`` are the runtime's own interpreter (its venv's bin first).
        PATH=os.pathsep.join((os.path.dirname(sys.executable), "/usr/local/bin", "/usr/bin", "/bin")),
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


def _cell(warm: Warm, msg: Frame, work: str, runner: inside.CellRunner) -> None:
    rc = 1
    notes: list[str] = []
    try:
        files = {
            str(f["file_id"]): {k: f[k] for k in ("path", "filename", "type", "name")} for f in msg["files"]
        }
        restore = int(msg.get("restore") or 0)
        if restore:
            notes += runner.restore(read_exact(REQ_FD, restore))
        _cpu_budget(float(msg["timeout"]), runner.keep_state)
        rc, cell_notes = runner.run(msg["code"], files)  # it flushes every standard stream at its end
        notes += cell_notes
    except BaseException:  # the runner reports the code's errors itself; this is a last resort
        with contextlib.suppress(BaseException):
            traceback.print_exc()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
    try:
        # Stop stray background processes of a one-shot execution, then report. Only as pid 1 of our own
        # PID namespace does kill(-1) mean "every process of this execution"; elsewhere it would hit the host.
        if not runner.keep_state and warm.ctx.mode != "none" and os.getpid() == 1:
            with contextlib.suppress(OSError):
                os.kill(-1, signal.SIGKILL)
        generated, collect_notes, blobs = _collect(warm, work, runner)
        send(ST_FD, Op.DONE, blobs, rc=rc, files=generated, notes=notes + collect_notes)
    except BaseException:
        os._exit(rc or 1)


def _save(runner: inside.CellRunner, cap: int) -> None:
    # The supervisor interrupts a save past its deadline: the KeyboardInterrupt ends this snapshot only.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        data, notes = runner.snapshot(cap)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        send(ST_FD, Op.SNAPSHOT, [data], size=len(data), notes=notes)
    except BaseException as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with contextlib.suppress(BaseException):
            message = f"{type(exc).__name__}: {exc}"[:500]
            send(ST_FD, Op.SNAPSHOT, size=0, notes=[f"not saved: {message}"])


def _collect(
    warm: Warm, work: str, runner: inside.CellRunner
) -> tuple[list[dict[str, Any]], list[str], list[bytes]]:
    """List and read the generated files here, in the sandbox's own view and with its own uid.

    Reading here means no race with a stray user process can ever make a privileged reader follow a
    swapped symlink. A session returns only the files that are new or changed since its last cell.
    """
    cfg = warm.ctx.config
    found, notes = inside.collect_generated(work, set(), cfg.max_generated_files, cfg.max_generated_bytes)
    found = runner.changed(found)
    files: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    budget = cfg.max_generated_bytes
    for item in found:
        try:
            fd = os.open(item["path"], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o170000 != 0o100000 or st.st_size > budget:
                continue
            data = read_exact(fd, st.st_size) if st.st_size else b""
        except (OSError, EOFError):
            continue
        finally:
            os.close(fd)
        budget -= len(data)
        mime = item.get("mime") or "application/octet-stream"
        files.append({"filename": str(item["filename"]), "mime": mime, "size": len(data)})
        blobs.append(data)
    return files, list(notes), blobs


def _setup_failed(fd: int, exc: BaseException) -> None:  # pragma: no cover - in the child
    message = f"sandbox setup failed: {type(exc).__name__}: {exc}"[:2000]
    with contextlib.suppress(BaseException):
        write_all(fd, encode(Op.SETUP_ERROR, error=message))
    os._exit(SETUP_FAILED)
