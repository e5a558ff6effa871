"""The host's end of one execution's socket: frames to the supervisor, frames and their bytes back (async)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from ..errors import SandboxCrashed
from . import _wire as wire

__all__ = ["ExecChannel"]

_DIED = (
    "the sandbox process died before reporting a result (killed, or the zygote crashed); run the code again"
)


class ExecChannel:
    """Framed messages over one execution's socket; reading raises SandboxCrashed when it ends early."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        exec_id: str = "",
        zygote: Any = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.exec_id = exec_id
        """The execution's id at the zygote (what its ``kill`` names)."""
        self.zygote = zygote
        """The ZygoteProcess that handed the socket on."""
        self.supervisor_pid: int | None = None
        self.child_pid: int | None = None

    @classmethod
    async def open(cls, sock: socket.socket, exec_id: str = "", zygote: Any = None) -> ExecChannel:
        """Wrap a connected Unix socket in asyncio streams."""
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=2**20)
        return cls(reader, writer, exec_id, zygote)

    async def send(self, message: dict[str, Any], blob: bytes = b"") -> None:
        """Write a frame (and raw bytes after it) to the supervisor."""
        try:
            self.writer.write(wire.encode(message))
            if blob:
                self.writer.write(blob)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise SandboxCrashed(f"the sandbox process is gone ({exc})") from None

    async def receive(self) -> tuple[dict[str, Any], list[bytes]]:
        """The next frame and the raw bytes it announces (a result's files, a snapshot)."""
        try:
            (size,) = wire.HEADER.unpack(await self.reader.readexactly(wire.HEADER.size))
            if size > wire.MAX_FRAME:
                raise SandboxCrashed("the sandbox sent an oversized frame")
            frame = wire.decode(await self.reader.readexactly(size))
            blobs: list[bytes] = []
            op = frame.get("op")
            if op == "result":
                blobs = [await self.reader.readexactly(int(f["size"])) for f in frame.get("files", [])]
            elif op == "snapshot" and int(frame.get("size") or 0) > 0:
                blobs = [await self.reader.readexactly(int(frame["size"]))]
            elif op == "started":
                self.supervisor_pid = _pid(frame.get("supervisor_pid"))
                self.child_pid = _pid(frame.get("child_pid"))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise SandboxCrashed(_DIED) from exc
        except ValueError as exc:
            raise SandboxCrashed(f"the sandbox sent an unreadable frame ({exc})") from exc
        return frame, blobs

    def close(self) -> None:
        """Close the socket: a supervisor still running sees EOF and stops its child."""
        with contextlib.suppress(Exception):
            self.writer.close()

    async def aclose(self) -> None:
        """Close and wait for the transport to finish."""
        self.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def _pid(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
