"""Host side of the zygote's control socket: start the fork server, open execution channels (async)."""

from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
from pathlib import Path
from typing import Any

from ..errors import SandboxCrashed, SandboxError
from ..runtime.config import RuntimeConfig
from ..runtime.protocol import CONTROL_TO_HOST, Frame, FrameBuffer, Op, ProtocolError, check_version, encode
from .channel import ExecChannel

log = logging.getLogger("code_interpreter.executor")

#: Run by the runtime's interpreter: loads ``runtime/`` by path and starts the zygote.
ZYGOTE_SCRIPT = Path(__file__).resolve().parent.parent / "runtime" / "_bootstrap.py"
LOG_TAIL_BYTES = 4000


class ZygoteProcess:
    """One running zygote and its control socket."""

    def __init__(self, python: Path, config: RuntimeConfig, env: dict[str, str], log_path: Path) -> None:
        self.python = python
        self.config = config
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.ready: dict[str, Any] = {}
        self._reader: asyncio.Task[None] | None = None
        self._ready_fut: asyncio.Future[dict[str, Any]] | None = None
        self._send_lock = asyncio.Lock()
        self._dead = False

    @property
    def pid(self) -> int | None:
        """The zygote's pid."""
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        """True while the zygote runs and its socket is open."""
        return self.proc is not None and self.proc.returncode is None and not self._dead

    def log_tail(self) -> str:
        """The end of the zygote's log (for error messages)."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - LOG_TAIL_BYTES))
                return fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    async def start(self, wait: float) -> dict[str, Any]:
        """Spawn the zygote, send the config, wait for ``ready`` (the probe result)."""
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.log_path, "ab") as logf:  # noqa: ASYNC230 - a local append-open, once per start
                self.proc = await asyncio.create_subprocess_exec(
                    str(self.python), "-I", str(ZYGOTE_SCRIPT), str(child.fileno()),
                    pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL, stderr=logf, env=self.env,
                    start_new_session=True,  # signals to the host's process group never reach it
                )  # fmt: skip
        except OSError as exc:
            parent.close()
            raise SandboxError(f"cannot start the zygote with {self.python}: {exc}") from exc
        finally:
            child.close()
        parent.setblocking(False)
        self.sock = parent
        self._ready_fut = loop.create_future()
        self._reader = asyncio.create_task(self._read_loop(), name=f"zygote-{self.proc.pid}-reader")
        await self._send(encode(Op.CONFIG, **self.config.to_frame()))
        try:
            self.ready = await asyncio.wait_for(self._ready_fut, wait)
            check_version(self.ready)
        except TimeoutError:
            await self.terminate()
            raise SandboxError(f"the zygote did not become ready within {wait:.0f} s") from None
        except (SandboxCrashed, ProtocolError) as exc:
            await self.terminate()
            raise SandboxError(f"the zygote failed to start: {exc}\n{self.log_tail()}") from None
        return self.ready

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        frames = FrameBuffer(CONTROL_TO_HOST)
        assert self.sock is not None
        try:
            while True:
                data = await loop.sock_recv(self.sock, 65536)
                if not data:
                    break
                frames.feed(data)
                for msg in frames.frames():
                    self._dispatch(msg)
        except (OSError, ValueError) as exc:
            log.warning("zygote control socket failed: %s", exc)
        finally:
            self._dead = True
            if self._ready_fut is not None and not self._ready_fut.done():
                self._ready_fut.set_exception(
                    SandboxCrashed(f"the zygote exited during startup ({self.log_tail()})")
                )

    def _dispatch(self, msg: Frame) -> None:
        if msg["op"] == Op.READY and self._ready_fut is not None and not self._ready_fut.done():
            self._ready_fut.set_result(msg)
        elif msg["op"] == Op.FAILED:
            log.warning("zygote could not start execution %s: %s", msg["id"], msg["error"])

    async def _send(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        if self.sock is None or self._dead:
            raise SandboxCrashed("the zygote is not running")
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        async with self._send_lock:
            pending_fds = fds
            while view:
                try:
                    if pending_fds:
                        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", pending_fds))]
                        n = self.sock.sendmsg([view], ancillary)
                        pending_fds = ()
                    else:
                        n = self.sock.send(view)
                    view = view[n:]
                except BlockingIOError:
                    fut: asyncio.Future[None] = loop.create_future()
                    loop.add_writer(self.sock.fileno(), fut.set_result, None)
                    try:
                        await fut
                    finally:
                        loop.remove_writer(self.sock.fileno())
                except OSError as exc:
                    self._dead = True
                    raise SandboxCrashed(f"the zygote is gone ({exc})") from exc

    async def open_channel(self, exec_id: str) -> ExecChannel:
        """Start an execution: a fresh socket pair, one end handed (through the zygote) to a warm supervisor.

        The zygote never reads it: the request, live output and the result travel between the host and
        that supervisor only. If the zygote dies before handing it on, the channel reads EOF at once.
        """
        host_end, supervisor_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await self._send(encode(Op.RUN, id=exec_id), (supervisor_end.fileno(),))
        except BaseException:
            host_end.close()
            raise
        finally:
            supervisor_end.close()
        return await ExecChannel.open(host_end, exec_id)

    async def shutdown(self, wait: float | None = 5.0) -> None:
        """Ask the zygote to stop taking work and exit once its running executions end, then reap it.

        Past ``wait`` seconds it is killed (and its executions with it); ``None`` waits for them all (a
        retired zygote whose sessions go on).
        """
        with contextlib.suppress(SandboxCrashed):
            await self._send(encode(Op.SHUTDOWN))
        await self._wait_exit(wait)

    async def terminate(self) -> None:
        """Kill the zygote now."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self._wait_exit(5.0)

    async def _wait_exit(self, wait: float | None) -> None:
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), wait)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.sock is not None:
            self.sock.close()
        self._dead = True
