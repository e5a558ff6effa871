"""The embedded SecantusDB server: shared by every process on one home, stopped when the last one goes.

Layout under ``settings.home / "db"``::

    data/            WiredTiger files of the server (``--storage-path``)
    server.lock      fcntl lock + JSON {"pid", "port", "storage_path", "started_at", "watchdog_pid"}
    users.lock       a shared flock held by every process using the server
    server.log       the server's (and its watchdog's) output
    secantusd.toml   its (empty) configuration: every setting is on its command line

The server runs with this directory as its working directory and its ``HOME``, and with an explicit
``--config``: SecantusDB otherwise looks for a configuration in ``./``, ``~/.secantus`` and
``/etc/secantus``, and a home it may not read (``HOME=/root`` inherited by another uid) stopped it
at start. A start that fails says why, from the server's own last words in ``server.log``.

Lifecycle. A process that uses the server first takes a shared ``flock`` on ``users.lock`` and
holds it until it closes its storage; the kernel drops it when the process dies, kill -9
included. The server runs under a small watchdog (:mod:`._watchdog`) that stops it cleanly
once it could take ``users.lock`` exclusively for ``settings.embedded_idle_s`` seconds. So no
server outlives its last user by more than that, however the users ended, and a process
still holding its shared lock is never cut off: the watchdog cannot take the lock while it
does. A process joins *before* it relies on the server: shared lock first, then the check.

Start and reuse. A process takes an exclusive ``flock`` on ``server.lock`` only while it checks
or (re)starts the server. If the recorded server is alive (pid running, its command line names
our data dir, its port accepts connections, its watchdog running) it is reused; otherwise (no
record, a stale record after a crash, a reboot, or a server its watchdog stopped) this process
starts a new one and records it. A crashed server is restarted on the *same* port when
possible, so clients already connected to it recover without being rebuilt. WiredTiger's own
lock on the data dir is the last guard against two servers on the same files.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StorageUnavailable
from ._diagnosis import last_words, remedy, unusable_dir

__all__ = ["EmbeddedServer", "ServerRecord"]

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
LOCK_TIMEOUT_S = 90.0
IDLE_S = 3.0
STOP_WAIT_S = 30.0
WATCHDOG = Path(__file__).with_name("_watchdog.py")
CONFIG_NAME = "secantusd.toml"
CONFIG_TEXT = "# The embedded server of code_interpreter: every setting is on its command line.\n"


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """What the lock file says about the running server."""

    pid: int
    """Process id of the server."""
    port: int
    """TCP port on 127.0.0.1."""
    storage_path: str
    """Its data directory."""
    started_at: float
    """Unix time it was started."""
    watchdog_pid: int | None = None
    """Process id of its watchdog (None for a server recorded by an older version)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return {
            "pid": self.pid,
            "port": self.port,
            "storage_path": self.storage_path,
            "started_at": self.started_at,
            "watchdog_pid": self.watchdog_pid,
        }


class EmbeddedServer:
    """Join, start, reuse and restart the SecantusDB server of one data directory."""

    def __init__(
        self, root: Path, *, start_timeout_s: float = START_TIMEOUT_S, idle_s: float = IDLE_S
    ) -> None:
        self.root = Path(root).absolute()  # the server runs in it: no path may be relative
        self.data_dir = self.root / "data"
        self.lock_path = self.root / "server.lock"
        self.users_path = self.root / "users.lock"
        self.log_path = self.root / "server.log"
        self.start_timeout_s = start_timeout_s
        self.idle_s = idle_s
        self._users_fd: int | None = None
        self._started: ServerRecord | None = None
        self._record: ServerRecord | None = None
        self._mutex = asyncio.Lock()

    # -- public --------------------------------------------------------------
    @property
    def record(self) -> ServerRecord | None:
        """The server this object is connected to, once ensured."""
        return self._record

    @property
    def owned(self) -> bool:
        """True when this process started the recorded server (it stops by itself once unused)."""
        return self._started is not None and self._started == self._record

    async def ensure(self) -> ServerRecord:
        """Join the server's users, then return it: the recorded one if alive, else one started now.

        Raises:
            StorageUnavailable: the data directory is not usable, or the server did not start (the
                message says why and what to do).
        """
        try:
            return await self._ensure()
        except OSError as exc:  # the data dir: not creatable, not writable, full
            raise StorageUnavailable(unusable_dir(self.root, exc)) from exc

    async def _ensure(self) -> ServerRecord:
        async with self._mutex:
            await self._join()
            starting = "while starting the embedded server"
            async with self._locked(self.lock_path, fcntl.LOCK_EX, starting) as fd:
                rec = _read_record(fd)
                if rec is not None and self._alive(rec):
                    self._record = rec
                    return rec
                port = rec.port if rec is not None else (self._record.port if self._record else None)
                if rec is not None and _cmdline_mentions(rec.pid, str(self.data_dir)):
                    await _wait_gone(rec.pid, STOP_WAIT_S)  # stopping (its watchdog died): free the port
                rec = await self._start(port)
                _write_record(fd, rec)
                self._started = self._record = rec
                return rec

    async def recover(self) -> None:
        """Restart the server if it died (the retry hook); a live server is left alone."""
        rec = self._record
        if rec is not None and self._alive(rec):
            return
        new = await self.ensure()
        if rec is not None and new.port != rec.port:
            raise StorageUnavailable(
                f"the embedded SecantusDB server on {HOST}:{rec.port} died and its port was taken; "
                f"it was restarted on {HOST}:{new.port}: restart this process to reconnect"
            )

    async def stop(self) -> None:
        """Stop using the server: release this process's share; its watchdog stops it once unused."""
        async with self._mutex:
            fd, self._users_fd = self._users_fd, None
            if fd is not None:
                os.close(fd)  # closing the descriptor releases the shared flock
            self._record = None
            self._started = None

    # -- internals -----------------------------------------------------------
    async def _join(self) -> None:
        """Hold a shared flock on users.lock (waits while a watchdog is stopping the server)."""
        if self._users_fd is not None:
            return
        async with self._locked(self.users_path, fcntl.LOCK_SH, "while stopping the embedded server") as fd:
            self._users_fd = os.dup(fd)  # the duplicate shares the lock and outlives the context

    @contextlib.asynccontextmanager
    async def _locked(self, path: Path, mode: int, doing: str) -> AsyncIterator[int]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:  # poll instead of a blocking flock so the event loop keeps running
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StorageUnavailable(
                            f"another process holds {path} for over {LOCK_TIMEOUT_S:.0f} s {doing}; "
                            "check that process (see server.log beside it) or remove the file"
                        ) from None
                    await asyncio.sleep(0.05)
            yield fd
        finally:
            os.close(fd)

    def _alive(self, rec: ServerRecord) -> bool:
        if not _pid_running(rec.pid):
            return False
        if not _cmdline_mentions(rec.pid, str(self.data_dir)):
            return False  # the pid was reused by an unrelated process
        if rec.watchdog_pid is not None and not _pid_running(rec.watchdog_pid):
            return False  # killed with its watchdog: the server got SIGTERM and is going away
        return _port_open(rec.port)

    async def _start(self, port: int | None) -> ServerRecord:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.root / CONFIG_NAME
        if not config.is_file():
            config.write_text(CONFIG_TEXT)
        if port is None or _port_open(port) or not _port_free(port):
            port = _free_port()
        server_cmd = [
            sys.executable,
            "-m",
            "secantus",
            "--config",
            str(config),
            "--host",
            HOST,
            "--port",
            str(port),
            "--storage-path",
            str(self.data_dir),
            "--log-level",
            "WARNING",
            # No replica-set advertisement, so no oplog: nothing here uses change streams or
            # transactions, and an oplog entry per written document halves delete throughput.
            "--standalone",
        ]
        cmd = [sys.executable, "-I", str(WATCHDOG), str(self.root), repr(self.idle_s), "--", *server_cmd]
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        pids = await asyncio.to_thread(_launch, cmd, self.root, self.log_path, self.start_timeout_s)
        server_pid, watchdog_pid = pids
        deadline = time.monotonic() + self.start_timeout_s
        while not _port_open(port):
            exited = not _pid_running(server_pid)
            if exited or time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(watchdog_pid, signal.SIGTERM)  # it stops the server it started
                raise StorageUnavailable(self._start_failure(port, exited, log_start))
            await asyncio.sleep(0.05)
        return ServerRecord(
            pid=server_pid,
            port=port,
            storage_path=str(self.data_dir),
            started_at=time.time(),
            watchdog_pid=watchdog_pid,
        )

    def _start_failure(self, port: int, exited: bool, log_start: int) -> str:
        """Why the server did not start, from what it wrote to the log since ``log_start``, and the fix."""
        head = f"the embedded SecantusDB server (data in {self.data_dir}) did not start on {HOST}:{port}"
        if not exited:
            return (
                f"{head}: it did not accept connections within {self.start_timeout_s:.0f} s (a slow or "
                f"overloaded machine?); see {self.log_path}, try again, or set MONGODB_URI to use MongoDB"
            )
        last = last_words(self.log_path, log_start)
        said = f": it exited saying {last!r}" if last else ": it exited without a word"
        return f"{head}{said}; {remedy(last, self.root)}; its log is {self.log_path}"


def _launch(cmd: list[str], root: Path, log_path: Path, timeout_s: float) -> tuple[int, int]:
    """Start the watchdog (which starts the server); (server pid, watchdog pid) from its handshake.

    Both run in ``root`` with ``HOME=root``: the caller's working directory and home may be anything
    (unreadable to this uid, or holding another server's configuration).
    """
    env = {**os.environ, "HOME": str(root)}
    with open(log_path, "ab") as log:
        # Own session: a Ctrl-C aimed at this process must not reach a server others may share.
        launcher = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=root,
            env=env,
        )
    assert launcher.stdout is not None
    with launcher.stdout:
        line = launcher.stdout.readline()  # the watchdog writes one line, then closes its end
    launcher.wait(timeout_s)  # the launcher exits as soon as it has forked the watchdog
    try:
        hello = json.loads(line)
        return int(hello["server_pid"]), int(hello["watchdog_pid"])
    except (ValueError, KeyError, TypeError):
        raise StorageUnavailable(
            f"the embedded server's watchdog did not start (exit code {launcher.returncode}); "
            f"see {log_path}, or set MONGODB_URI to use a real MongoDB"
        ) from None


async def _wait_gone(pid: int, limit_s: float) -> None:
    """Wait (bounded) until ``pid`` has exited, so its port is free again."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not _pid_running(pid):
            return
        await asyncio.sleep(0.05)


def _read_record(fd: int) -> ServerRecord | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        d = json.loads(raw.decode())
        watchdog = d.get("watchdog_pid")
        return ServerRecord(
            int(d["pid"]),
            int(d["port"]),
            str(d["storage_path"]),
            float(d["started_at"]),
            int(watchdog) if watchdog is not None else None,
        )
    except (ValueError, KeyError, TypeError):
        return None  # empty or garbled: treated as no server


def _write_record(fd: int, rec: ServerRecord | None) -> None:
    data = json.dumps(rec.to_dict()).encode() if rec is not None else b""
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie still answers kill(0) but serves nothing
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _cmdline_mentions(pid: int, text: str) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): fall back to the port check
    return any(os.fsdecode(part) == text for part in cmd)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
