"""The host's end of one execution's socket: frames to the supervisor, frames and their bytes back (async)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from ..errors import SandboxCrashed
from ..runtime.protocol import EXECUTION_TO_HOST, HEADER, MAX_FRAME, Frame, Op, ProtocolError, decode, encode

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
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.exec_id = exec_id
        """The execution's id at the zygote (for its log)."""
        self.supervisor_pid: int | None = None
        self.child_pid: int | None = None

    @classmethod
    async def open(cls, sock: socket.socket, exec_id: str = "") -> ExecChannel:
        """Wrap a connected Unix socket in asyncio streams."""
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=2**20)
        return cls(reader, writer, exec_id)

    async def send(self, op: Op, blob: bytes = b"", **fields: Any) -> None:
        """Write a frame (and raw bytes after it) to the supervisor."""
        try:
            self.writer.write(encode(op, **fields))
            if blob:
                self.writer.write(blob)
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise SandboxCrashed(f"the sandbox process is gone ({exc})") from None

    async def receive(self) -> tuple[Frame, list[bytes]]:
        """The next frame and the raw bytes it announces (a result's files, a snapshot)."""
        try:
            (size,) = HEADER.unpack(await self.reader.readexactly(HEADER.size))
            if size > MAX_FRAME:
                raise ProtocolError(f"oversized frame: {size} bytes")
            frame = decode(await self.reader.readexactly(size), EXECUTION_TO_HOST)
            blobs: list[bytes] = []
            op = frame["op"]
            if op == Op.RESULT:
                blobs = [await self.reader.readexactly(int(f["size"])) for f in frame["files"]]
            elif op == Op.SNAPSHOT and frame["size"] > 0:
                blobs = [await self.reader.readexactly(frame["size"])]
            elif op == Op.STARTED:
                self.supervisor_pid = frame["supervisor_pid"]
                self.child_pid = frame["child_pid"]
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise SandboxCrashed(_DIED) from exc
        except ProtocolError as exc:
            raise SandboxCrashed(f"the sandbox sent an unreadable frame ({exc})") from exc
        return frame, blobs

    def close(self) -> None:
        """Close the socket: a supervisor still running sees EOF, kills its child and exits."""
        with contextlib.suppress(Exception):
            self.writer.close()

    async def aclose(self) -> None:
        """Close and wait for the transport to finish."""
        self.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
