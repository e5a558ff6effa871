"""The zygote: a warm, single-threaded fork server in the sandbox runtime's interpreter (stdlib only).

    <runtime python> -I runtime/_bootstrap.py <control fd>

It never runs user code and never holds user data. It reads the ``config`` frame, builds the seccomp
filter, preloads numpy/pandas/matplotlib, checks the sandbox with a probe execution, answers
``ready``, then keeps a pool of warm supervisors. A ``run`` request carries only an execution id and
the fd of that execution's own socket, which the zygote hands to a warm supervisor unread: code, file
names and results travel between the host and that supervisor, never through a process that forks
later. Every module of ``runtime/`` is imported before the first fork (after ``pivot_root`` a child
cannot read them).

Lifetimes: the zygote dies with the host (parent-death signal, and the control socket's end), each
supervisor with the zygote, each child with its supervisor. The host's death reaches the zygote as
SIGTERM: before it exits it kills every execution and removes their cgroups (a supervisor killed by its
own parent-death signal could not; :data:`HOST_GONE_EXIT_S` bounds that). ``shutdown`` (a retired
zygote) stops taking work and exits once its running executions have ended.
"""

from __future__ import annotations

import array
import collections
import contextlib
import gc
import glob
import importlib.util
import os
import select
import signal
import site
import socket
import sys
from typing import Any

from . import child, inside, sandbox, supervisor, watch  # noqa: F401 - all imported before any fork
from .config import RuntimeConfig
from .protocol import (
    CONTROL_TO_ZYGOTE,
    EXECUTION_TO_HOST,
    PROTOCOL_VERSION,
    Frame,
    FrameBuffer,
    Op,
    encode,
    read_frame,
    send,
)
from .sandbox import _libc as c

#: After the host died the zygote ends its executions and exits; the kernel ends it after this at most.
HOST_GONE_EXIT_S = 5


class Zygote:
    """The fork server's state and loop."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = FrameBuffer(CONTROL_TO_ZYGOTE)
        self.fds: list[int] = []
        self.children: dict[int, str] = {}
        self.ctx: supervisor.Context | None = None
        self.accepting = True
        self.host_gone = False
        self.pool: collections.deque[tuple[int, socket.socket, str]] = collections.deque()
        self.counter = 0
        self.exec_ids: dict[int, str] = {}

    @property
    def context(self) -> supervisor.Context:
        """The prepared context (after :meth:`setup`)."""
        assert self.ctx is not None
        return self.ctx

    # -- I/O -----------------------------------------------------------------
    def send(self, op: Op, **fields: Any) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(encode(op, **fields))

    def receive(self) -> list[Frame]:
        fds = array.array("i")
        data, ancdata, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[: len(payload) - (len(payload) % got.itemsize)])
                self.fds.extend(got)
        if not data:
            self.accepting = False
            self.host_gone = True
            return []
        self.frames.feed(data)
        return self.frames.frames()

    def receive_one(self) -> Frame:
        while True:
            frames = self.receive()
            if frames:
                return frames[0]
            if self.host_gone:
                raise EOFError("host closed the control socket")

    # -- setup ---------------------------------------------------------------
    def setup(self, config: RuntimeConfig) -> dict[str, Any]:
        config = _with_hidden(config)
        seccomp_filter = None
        if config.mode != "none" and config.pyseccomp:
            pyseccomp = _load_file("_ci_pyseccomp", config.pyseccomp)
            census = config.seccomp_census
            seccomp_filter = sandbox.seccomp.build(pyseccomp, census=census)
            if census:
                sys.stderr.write("seccomp census mode: no system call is refused, every one is recorded\n")
        bases: dict[str, str] = {}
        if config.mode == "strict":
            bases = sandbox.cgroups.create_base(os.getpid())
        self.ctx = supervisor.Context(config, seccomp_filter, bases)
        preloaded = list(inside.preload(config.preload))
        # Objects from the preload never change again: keep the collector off their pages so forked
        # children share them copy-on-write instead of dirtying them on the first collection.
        gc.collect()
        gc.freeze()
        return {"preloaded": preloaded, "cgroups": sorted(bases), "seccomp": seccomp_filter is not None,
                "hidden": list(config.hidden)}  # fmt: skip

    def probe(self) -> Frame:
        """Run one trivial execution through the full sandbox; its result says which layers hold."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.dispatch("probe", theirs.detach())
            send(mine.fileno(), Op.START, version=PROTOCOL_VERSION, keep_state=False, layers=True)
            send(mine.fileno(), Op.CELL, code="pass", files=[], timeout=self.context.config.max_timeout)
            while True:
                frame = read_frame(mine.fileno(), EXECUTION_TO_HOST)
                if frame["op"] == Op.RESULT:
                    return frame
        except (OSError, EOFError, ValueError) as exc:
            return {"status": "setup_error", "error": f"probe supervisor died ({exc})"}
        finally:
            mine.close()

    # -- the pool of warm supervisors -------------------------------------------
    def fork_warm(self) -> None:
        ctx = self.context
        self.counter += 1
        name = f"w{os.getpid()}-{self.counter}"
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                supervisor.arm_parent_death()
                os.setsid()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                # Only our own end of our own socket survives: a warm supervisor must see EOF when the
                # zygote goes, and must never hold another execution's sockets.
                self.sock.close()
                mine.close()
                for _pid, other, _name in self.pool:
                    other.close()
                for fd in self.fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                work = os.path.join(ctx.config.work_root, name) if ctx.mode == "none" else None
                warm = supervisor.prepare(ctx, name, work)
                supervisor.serve(warm, theirs)
            finally:
                os._exit(1)
        theirs.close()
        self.pool.append((pid, mine, name))
        self.children[pid] = name

    def refill(self) -> None:
        while self.accepting and len(self.pool) < self.context.config.pool_size:
            self.fork_warm()

    def dispatch(self, exec_id: str, channel_fd: int) -> int:
        """Hand the execution socket (unread) to the oldest warm supervisor; return its pid."""
        try:
            for _attempt in range(3):
                if not self.pool:
                    self.fork_warm()
                pid, sock, _name = self.pool.popleft()
                try:
                    sock.sendmsg(
                        [encode(Op.GO)],
                        [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [channel_fd]))],
                    )
                    self.exec_ids[pid] = exec_id
                    return pid
                except OSError:
                    continue  # that warm supervisor died; take the next
                finally:
                    sock.close()
            raise OSError("no warm supervisor accepted the request")
        finally:
            os.close(channel_fd)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            name = self.children.pop(pid, None)
            self.exec_ids.pop(pid, None)
            for entry in [e for e in self.pool if e[0] == pid]:
                self.pool.remove(entry)
                entry[1].close()
            if name is not None and os.WIFSIGNALED(status):
                # A supervisor killed before cleaning up leaves its cgroups behind, and maybe processes in
                # them (its child dies of the parent-death signal; this is the second line).
                for base in self.context.cgroup_bases.values():
                    sandbox.cgroups.kill_and_remove(os.path.join(base, name))

    def handle(self, msg: Frame) -> None:
        op = msg["op"]
        if op == Op.RUN:
            if not self.fds:
                self.send(Op.FAILED, id=msg["id"], error="no execution socket received")
                return
            fd = self.fds.pop(0)
            if not self.accepting:
                os.close(fd)  # a retired zygote: the host sees the socket close and retries elsewhere
                self.send(Op.FAILED, id=msg["id"], error="this zygote is shutting down")
                return
            try:
                self.dispatch(msg["id"], fd)
            except OSError as exc:
                self.send(Op.FAILED, id=msg["id"], error=f"cannot start the sandbox: {exc}")
        elif op == Op.SHUTDOWN:
            self.accepting = False
            self._drop_pool()

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._host_died)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        self.refill()
        # A retired zygote keeps serving its running executions' reaping until the last one ended.
        while not self.host_gone and (self.accepting or self.exec_ids):
            for fd, _ev in poller.poll(1000):
                if fd == wake_r:
                    with contextlib.suppress(OSError):
                        os.read(wake_r, 4096)
                else:
                    for msg in self.receive():
                        self.handle(msg)
                    if self.host_gone:
                        poller.unregister(self.sock.fileno())
            self.reap()
            self.refill()
        self._drop_pool()
        if self.host_gone:
            self._end_executions()
        # Every execution ended: the base cgroups are removed when empty, else by the next zygote's sweep.
        for base in self.context.cgroup_bases.values() if self.ctx else ():
            sandbox.cgroups.remove_tree(base)

    def _host_died(self, _signum: int, _frame: Any) -> None:
        """SIGTERM (the parent-death signal): stop serving; the kernel ends us if the cleanup hangs."""
        signal.alarm(HOST_GONE_EXIT_S)
        self.host_gone = True
        self.accepting = False

    def _end_executions(self) -> None:
        """The host is gone and nobody will read a result: kill every execution (a supervisor's child dies
        with it), reap them, and remove the cgroups they could not remove themselves."""
        for pid in list(self.children):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()
        self.exec_ids.clear()
        for base in self.context.cgroup_bases.values() if self.ctx else ():
            sandbox.cgroups.kill_and_remove(base)

    def _drop_pool(self) -> None:
        for _pid, sock, _name in self.pool:
            sock.close()  # warm supervisors see EOF, kill their child and remove their cgroups
        for pid, _sock, _name in self.pool:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.children.pop(pid, None)
        self.pool.clear()


def _load_file(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _with_hidden(config: RuntimeConfig) -> RuntimeConfig:
    """The config with the host's package directories the sandbox must not see: the base interpreter's
    site-packages and the distribution's dist-packages (the runtime venv's own site-packages stays)."""
    import dataclasses

    found = set(site.getsitepackages([sys.base_prefix]))
    patterns = ["/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages"]
    patterns.append(os.path.join(sys.base_prefix, "lib", "python3*", "*-packages"))
    for pattern in patterns:
        found.update(glob.glob(pattern))
    own = os.path.realpath(sys.prefix) + os.sep
    hidden = sorted(
        p for p in found if os.path.isdir(p) and not (os.path.realpath(p) + os.sep).startswith(own)
    )
    return dataclasses.replace(config, hidden=tuple(hidden))


def main() -> int:
    """Entry point: serve the control socket passed as argv[1]."""
    # Dies with the host that started it (SIGTERM: it ends its executions first, see serve); if the host
    # already went, there is nobody to serve.
    host = os.getppid()
    c.prctl(c.PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != host:
        return 0
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    zygote = Zygote(sock)
    try:
        config = RuntimeConfig.from_frame(zygote.receive_one())
        info = zygote.setup(config)
        probe = zygote.probe()
    except BaseException as exc:
        zygote.send(Op.READY, version=PROTOCOL_VERSION, ok=False, error=f"{type(exc).__name__}: {exc}"[:4000])
        raise
    zygote.send(Op.READY, version=PROTOCOL_VERSION, ok=probe.get("status") == "ok", pid=os.getpid(),
                probe=probe, **info)  # fmt: skip
    zygote.serve()
    return 0
