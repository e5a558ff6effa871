"""The zygote: a warm, single-threaded fork server (run as a script by the runtime interpreter).

    <runtime python> -I _zygote.py <control fd>

It never runs user code and never holds user data. It reads a ``config`` frame, loads the
child-side packages by file path under private names (``code_interpreter/__init__`` is never
executed: its dependencies are not in the runtime), builds the seccomp filter, preloads
numpy/pandas/matplotlib, checks the sandbox with a probe execution, answers ``ready``, then keeps a
pool of warm supervisors. A ``run`` request carries only an execution id and the fd of that
execution's own socket, which the zygote hands to a warm supervisor unread: code, file names and
results travel between the host and that supervisor, never through a process that forks later.
"""

from __future__ import annotations

import array
import collections
import contextlib
import gc
import importlib.util
import os
import select
import signal
import socket
import sys
from types import ModuleType
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.dirname(HERE)


def _load_file(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load_package(name: str, directory: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(directory, "__init__.py"), submodule_search_locations=[directory]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {directory}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


wire = _load_file("_ci_wire", os.path.join(HERE, "_wire.py"))
streams = _load_file("_ci_streams", os.path.join(HERE, "_streams.py"))
watch = _load_file("_ci_watch", os.path.join(HERE, "_watch.py"))
child = _load_file("_ci_child", os.path.join(HERE, "_child.py"))
supervisor = _load_file("_ci_supervisor", os.path.join(HERE, "_supervisor.py"))


class Zygote:
    """The fork server's state and loop."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.frames = wire.FrameBuffer()
        self.fds: list[int] = []
        self.children: dict[int, str] = {}
        self.ctx: Any = None
        self.running = True
        self.pool: collections.deque[tuple[int, socket.socket, str]] = collections.deque()
        self.pool_size = 1
        self.counter = 0
        self.exec_ids: dict[int, str] = {}

    # -- I/O -----------------------------------------------------------------
    def send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(wire.encode(message))

    def receive(self) -> list[dict[str, Any]]:
        fds = array.array("i")
        data, ancdata, _flags, _addr = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16 * fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[: len(payload) - (len(payload) % got.itemsize)])
                self.fds.extend(got)
        if not data:
            self.running = False
            return []
        return self.frames.feed(data)

    def receive_one(self) -> dict[str, Any]:
        while True:
            frames = self.receive()
            if frames:
                return frames[0]
            if not self.running:
                raise EOFError("host closed the control socket")

    # -- setup ---------------------------------------------------------------
    def setup(self, config: dict[str, Any]) -> dict[str, Any]:
        sandbox = _load_package("_ci_sandbox", os.path.join(PACKAGE, "sandbox"))
        boot = _load_file("_ci_inside_bootstrap", os.path.join(PACKAGE, "inside", "_bootstrap.py"))
        inside = boot.load_inside_package(os.path.join(PACKAGE, "inside"))
        mode = config["mode"]
        config["hidden"] = _host_site_packages()
        seccomp_filter = None
        if mode != "none" and config.get("pyseccomp"):
            pyseccomp = _load_file("_ci_pyseccomp", config["pyseccomp"])
            seccomp_filter = sandbox.seccomp.build(pyseccomp)
        bases: dict[str, str] = {}
        if mode == "strict":
            bases = sandbox.cgroups.create_base(os.getpid())
        modules = {"sandbox": sandbox, "inside": inside, "wire": wire, "streams": streams, "watch": watch,
                   "child": child}  # fmt: skip
        self.ctx = supervisor.Context(modules, seccomp_filter, bases, config)
        self.pool_size = max(1, int(config.get("pool_size", 1)))
        preloaded = list(inside.preload(config.get("preload", [])))
        # Objects from the preload never change again: keep the collector off their pages so forked
        # children share them copy-on-write instead of dirtying them on the first collection.
        gc.collect()
        gc.freeze()
        return {"preloaded": preloaded, "cgroups": sorted(bases), "seccomp": seccomp_filter is not None,
                "hidden": config["hidden"]}  # fmt: skip

    def probe(self) -> dict[str, Any]:
        """Run one trivial execution through the full sandbox; its result says which layers hold."""
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        start = {"op": "start", "kind": "oneshot", "code": "pass", "files": [],
                 "timeout": self.ctx.config["max_timeout"]}  # fmt: skip
        try:
            self.dispatch("probe", theirs.detach())
            wire.send(mine.fileno(), start)
            while True:
                frame = wire.read_frame(mine.fileno())
                if frame.get("op") == "result":
                    return frame
        except (OSError, EOFError, ValueError) as exc:
            return {"status": "setup_error", "error": f"probe supervisor died ({exc})"}
        finally:
            mine.close()

    # -- the pool of warm supervisors -------------------------------------------
    def fork_warm(self) -> None:
        self.counter += 1
        name = f"w{os.getpid()}-{self.counter}"
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                # Only our own end of our own socket survives: a warm supervisor must see EOF when the
                # zygote goes, and must never hold another execution's pipes.
                self.sock.close()
                mine.close()
                for _pid, other, _name in self.pool:
                    other.close()
                for fd in self.fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                work = os.path.join(self.ctx.config["work_root"], name) if self.ctx.mode == "none" else None
                warm = supervisor.prepare(self.ctx, name, work)
                supervisor.serve(warm, theirs)
            finally:
                os._exit(1)
        theirs.close()
        self.pool.append((pid, mine, name))
        self.children[pid] = name

    def refill(self) -> None:
        while len(self.pool) < self.pool_size:
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
                        [wire.encode({"op": "go"})],
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
            exec_id = self.exec_ids.pop(pid, None)
            for entry in [e for e in self.pool if e[0] == pid]:
                self.pool.remove(entry)
                entry[1].close()
            if name is not None and os.WIFSIGNALED(status):
                # A supervisor killed before cleaning up leaves its cgroups behind, and maybe processes in
                # them (its child dies of the parent-death signal; this is the second line).
                for base in self.ctx.cgroup_bases.values():
                    self.ctx.sandbox.cgroups.kill_and_remove(os.path.join(base, name))
            if exec_id is not None:
                self.send({"op": "exited", "id": exec_id, "status": status})

    def handle(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "run":
            if not self.fds:
                self.send({"op": "failed", "id": msg.get("id"), "error": "no execution socket received"})
                return
            try:
                pid = self.dispatch(str(msg.get("id")), self.fds.pop(0))
            except OSError as exc:
                self.send({"op": "failed", "id": msg.get("id"), "error": f"cannot start the sandbox: {exc}"})
                return
            self.send({"op": "spawned", "id": msg.get("id"), "pid": pid})
        elif op == "kill":
            for pid, exec_id in list(self.exec_ids.items()):
                if exec_id == str(msg.get("id")):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        elif op == "shutdown":
            self.running = False

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        self.refill()
        while self.running:
            for fd, _ev in poller.poll():
                if fd == wake_r:
                    with contextlib.suppress(OSError):
                        os.read(wake_r, 4096)
                    self.reap()
                else:
                    for msg in self.receive():
                        self.handle(msg)
            self.reap()
            if self.running:
                self.refill()
        for _pid, sock, _name in self.pool:
            sock.close()  # warm supervisors see EOF, kill their child and remove their cgroups
        for pid, _sock, _name in self.pool:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        # Supervisors still running an execution finish on their own and report straight to the host;
        # the base cgroup is removed when empty (else by the next zygote's sweep).
        for base in self.ctx.cgroup_bases.values() if self.ctx else ():
            self.ctx.sandbox.cgroups.remove_tree(base)


def _host_site_packages() -> list[str]:
    """The host's package directories the sandbox must not see: the base interpreter's site-packages and
    the distribution's dist-packages (the runtime venv's own site-packages stays)."""
    import glob
    import site

    found = set(site.getsitepackages([sys.base_prefix]))
    patterns = ["/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages"]
    patterns.append(os.path.join(sys.base_prefix, "lib", "python3*", "*-packages"))
    for pattern in patterns:
        found.update(glob.glob(pattern))
    own = os.path.realpath(sys.prefix) + os.sep
    return sorted(p for p in found if os.path.isdir(p) and not (os.path.realpath(p) + os.sep).startswith(own))


def main() -> int:
    """Entry point: serve the control socket passed as argv[1]."""
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(True)
    zygote = Zygote(sock)
    try:
        config = zygote.receive_one()
        info = zygote.setup(config)
        probe = zygote.probe()
    except BaseException as exc:
        zygote.send({"op": "ready", "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        raise
    zygote.send(
        {"op": "ready", "ok": probe.get("status") == "ok", "pid": os.getpid(), "probe": probe, **info}
    )
    zygote.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
