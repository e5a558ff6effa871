"""The embedded SecantusDB server: started as a child process, shared by every process on one home.

Layout under ``settings.home / "db"``::

    data/            WiredTiger files of the server (``--storage-path``)
    server.lock      fcntl lock + JSON {"pid", "port", "storage_path", "started_at"}
    server.log       the server's stdout/stderr

Protocol: a process takes an exclusive ``flock`` on ``server.lock`` only while it checks or
(re)starts the server. If the recorded server is alive (pid running, its command line names
our data dir, its port accepts connections) it is reused; otherwise (no record, a stale record
after a crash or reboot) this process starts a new one and records it. A crashed server is
restarted on the *same* port when possible, so clients already connected to it recover
without being rebuilt. Only the process that started a server stops it (on close); a process
that reused a server leaves it running. WiredTiger's own lock on the data dir is the last
guard against two servers on the same files.
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

__all__ = ["EmbeddedServer", "ServerRecord"]

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
LOCK_TIMEOUT_S = 90.0


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

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return {
            "pid": self.pid,
            "port": self.port,
            "storage_path": self.storage_path,
            "started_at": self.started_at,
        }


class EmbeddedServer:
    """Start, reuse, restart and stop the SecantusDB server of one data directory."""

    def __init__(self, root: Path, *, start_timeout_s: float = START_TIMEOUT_S) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.lock_path = self.root / "server.lock"
        self.log_path = self.root / "server.log"
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._record: ServerRecord | None = None
        self._mutex = asyncio.Lock()

    # -- public --------------------------------------------------------------
    @property
    def record(self) -> ServerRecord | None:
        """The server this object is connected to, once ensured."""
        return self._record

    @property
    def owned(self) -> bool:
        """True when this process started the recorded server (and so must stop it)."""
        return (
            self._proc is not None
            and self._record is not None
            and self._proc.pid == self._record.pid
            and self._proc.poll() is None
        )

    async def ensure(self) -> ServerRecord:
        """Return a running server: the recorded one if alive, else one started now (same port if known)."""
        async with self._mutex, self._locked() as fd:
            rec = _read_record(fd)
            if rec is not None and self._alive(rec):
                self._record = rec
                return rec
            port = rec.port if rec is not None else (self._record.port if self._record else None)
            rec = await self._start(port)
            _write_record(fd, rec)
            self._record = rec
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
        """Stop the server if this process started it; otherwise only forget it."""
        proc = self._proc
        if proc is None:
            self._record = None
            return
        async with self._mutex, self._locked() as fd:
            rec = _read_record(fd)
            if proc.poll() is None:
                proc.terminate()
                try:
                    await asyncio.to_thread(proc.wait, 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    await asyncio.to_thread(proc.wait)
            else:
                proc.wait()
            if rec is not None and rec.pid == proc.pid:
                _write_record(fd, None)
        self._proc = None
        self._record = None

    # -- internals -----------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[int]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:  # poll instead of a blocking flock so the event loop keeps running
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StorageUnavailable(
                            f"another process holds {self.lock_path} for over {LOCK_TIMEOUT_S:.0f} s "
                            "while starting the embedded server; check that process or remove the file"
                        ) from None
                    await asyncio.sleep(0.05)
            yield fd
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def _alive(self, rec: ServerRecord) -> bool:
        if self._proc is not None and self._proc.pid == rec.pid and self._proc.poll() is not None:
            return False  # our own child died (poll() also reaps the zombie)
        if not _pid_running(rec.pid):
            return False
        if not _cmdline_mentions(rec.pid, str(self.data_dir)):
            return False  # the pid was reused by an unrelated process
        return _port_open(rec.port)

    async def _start(self, port: int | None) -> ServerRecord:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(0)
            self._proc = None
        if port is None or _port_open(port) or not _port_free(port):
            port = _free_port()
        cmd = [
            sys.executable,
            "-m",
            "secantus",
            "--host",
            HOST,
            "--port",
            str(port),
            "--storage-path",
            str(self.data_dir),
            "--log-level",
            "WARNING",
        ]
        proc = await asyncio.to_thread(_spawn, cmd, self.log_path)
        deadline = time.monotonic() + self.start_timeout_s
        while not _port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    proc.kill()
                await asyncio.to_thread(proc.wait)
                raise StorageUnavailable(
                    f"the embedded SecantusDB server did not start on {HOST}:{port} "
                    f"(exit code {proc.returncode}); see {self.log_path}, "
                    "or set MONGODB_URI to use a real MongoDB"
                )
            await asyncio.sleep(0.05)
        self._proc = proc
        return ServerRecord(pid=proc.pid, port=port, storage_path=str(self.data_dir), started_at=time.time())

    def kill_for_tests(self) -> None:
        """SIGKILL the recorded server (crash simulation for tests and benchmarks)."""
        if self._record is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._record.pid, signal.SIGKILL)


def _spawn(cmd: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        # Own session: a Ctrl-C aimed at this process must not kill a server others may share.
        return subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def _read_record(fd: int) -> ServerRecord | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        d = json.loads(raw.decode())
        return ServerRecord(int(d["pid"]), int(d["port"]), str(d["storage_path"]), float(d["started_at"]))
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
