"""The zygote protocol: length-prefixed JSON frames (stdlib only; shared by host and zygote).

Control socket (Unix stream): host → zygote ``config`` (first), ``run`` (carries one fd by SCM_RIGHTS:
the write end of the execution's result pipe), ``kill``, ``shutdown``; zygote → host ``ready``,
``spawned``, ``failed``, ``exited``. Result pipe (supervisor → host): one ``result`` frame, then the
bytes of each generated file in the order the frame lists them. Unknown keys are ignored.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 2**20
PROTOCOL_VERSION = 1


def encode(message: dict[str, Any]) -> bytes:
    """One frame: 4-byte big-endian length, then ASCII JSON (lone surrogates survive as escapes)."""
    body = json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    if len(body) > MAX_FRAME:
        raise ValueError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    """Parse a frame body; anything but a JSON object is a protocol error."""
    message = json.loads(body)
    if not isinstance(message, dict):
        raise ValueError("frame is not a JSON object")
    return message


class FrameBuffer:
    """Accumulates stream bytes and yields complete frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Add bytes; return every frame now complete."""
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buf)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME}")
            if len(self._buf) < HEADER.size + size:
                break
            body = bytes(self._buf[HEADER.size : HEADER.size + size])
            del self._buf[: HEADER.size + size]
            out.append(decode(body))
        return out
