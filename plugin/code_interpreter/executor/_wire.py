"""The executor's wire format: length-prefixed JSON frames (stdlib only; host, zygote, supervisor, child).

Three channels use it. **Control socket** (host ↔ zygote, Unix stream): ``config`` (first), ``run``
(an execution id, and one fd by SCM_RIGHTS: the supervisor's end of that execution's own socket),
``kill``, ``shutdown``; the zygote answers ``ready``, ``spawned``, ``failed``, ``exited``. The zygote
never sees code, file names or results: it only passes the execution socket on.
**Execution socket** (host ↔ supervisor): ``start`` (kind, code, files, timeout; a snapshot's bytes
may follow), then for a session ``cell``, ``save``, ``close``; the supervisor answers ``event``
(live output), ``result`` followed by the bytes of each generated file, ``snapshot`` followed by its
bytes, and ``ended`` when a session's process is gone. **Child pipes** (supervisor ↔ child): the
same frames on the request pipe, and ``ready`` / ``done`` / ``snapshot`` on the status pipe.
Unknown keys are ignored.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 2**20
PROTOCOL_VERSION = 2


def encode(message: dict[str, Any]) -> bytes:
    """One frame: 4-byte big-endian length, then ASCII JSON (lone surrogates survive as escapes)."""
    body = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    """Parse a frame body; anything but a JSON object (or JSON nested too deeply) is a protocol error."""
    try:
        message = json.loads(body)
    except RecursionError:
        raise ValueError("frame is nested too deeply") from None
    if not isinstance(message, dict):
        raise ValueError("frame is not a JSON object")
    return message


class FrameBuffer:
    """Accumulates stream bytes and yields complete frames."""

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add bytes; return every frame now complete (for channels that carry no raw bytes)."""
        self._buf += data
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def feed_raw(self, data: bytes) -> None:
        """Add bytes without parsing (read them with :meth:`next_frame` and :meth:`take`)."""
        self._buf += data

    def next_frame(self) -> dict[str, Any] | None:
        """The next complete frame, or None until its bytes have all arrived."""
        if len(self._buf) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._buf)
        if size > self.limit:
            raise ValueError(f"oversized frame: {size} bytes, the limit is {self.limit}")
        if len(self._buf) < HEADER.size + size:
            return None
        body = bytes(self._buf[HEADER.size : HEADER.size + size])
        del self._buf[: HEADER.size + size]
        return decode(body)

    def take(self, size: int) -> bytes | None:
        """The next ``size`` raw bytes (a blob after a frame) if they have all arrived, else None."""
        if len(self._buf) < size:
            return None
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data


# -- blocking helpers (the zygote's children) ---------------------------------------------------------


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte to ``fd`` (a blocking pipe or socket)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def send(fd: int, message: dict[str, Any], blobs: tuple[bytes, ...] | list[bytes] = ()) -> None:
    """Write one frame and the raw bytes that follow it."""
    write_all(fd, encode(message))
    for blob in blobs:
        write_all(fd, blob)


def read_exact(fd: int, size: int) -> bytes:
    """Exactly ``size`` bytes from a blocking ``fd``; EOFError if it ends first."""
    chunks = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError(f"the channel closed with {left} of {size} bytes unread")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int = MAX_FRAME) -> dict[str, Any]:
    """One frame from a blocking ``fd``; EOFError at a clean end, ValueError for a bad frame."""
    head = os.read(fd, HEADER.size)
    if not head:
        raise EOFError("the channel closed")
    if len(head) < HEADER.size:
        head += read_exact(fd, HEADER.size - len(head))
    (size,) = HEADER.unpack(head)
    if size > limit:
        raise ValueError(f"frame of {size} bytes exceeds {limit}")
    return decode(read_exact(fd, size))
