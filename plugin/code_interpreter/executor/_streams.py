"""What the supervisor reads from its sandboxed child: capped output and the status pipe (stdlib only).

Loaded by file path in the zygote, like ``_supervisor.py``. Everything the child writes is untrusted:
stdout and stderr keep a head and a tail within the cap, and the status pipe's frames and file sizes
are checked before anything is kept.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

READ_CHUNK = 65536


class Capped:
    """Keeps the first and last bytes of a stream, counting what is dropped in between."""

    def __init__(self, cap: int) -> None:
        self.head_cap = cap // 2
        self.tail_cap = cap - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        """Account for one chunk."""
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data[-self.tail_cap :]
            if len(self.tail) > self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def dropped(self) -> int:
        """Bytes not kept."""
        return self.total - len(self.head) - len(self.tail)

    def text(self) -> str:
        """Head, a marker when bytes were dropped, tail."""
        head = bytes(self.head).decode("utf-8", "replace")
        tail = bytes(self.tail).decode("utf-8", "replace")
        if self.dropped:
            return f"{head}\n[… {self.dropped} bytes truncated …]\n{tail}"
        return head + tail


class StatusReader:
    """Parses the child's status pipe: a ``ready`` frame, then a ``done`` frame and the files' bytes.

    Everything after ``ready`` is written by the child *after* the user's code ran in that same
    process, so it is untrusted: sizes are capped and checked, and a violation ends the execution.
    """

    def __init__(self, wire: ModuleType, max_files: int, max_bytes: int) -> None:
        self.wire = wire
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.buf = bytearray()
        self.ready: dict[str, Any] | None = None
        self.done: dict[str, Any] | None = None
        self.error: str | None = None
        self.blobs: list[bytes] = []
        self.complete = False

    def feed(self, data: bytes) -> None:
        """Consume bytes; sets ``ready``, ``done``/``complete`` or ``error``."""
        if self.complete or self.error:
            return
        self.buf += data
        try:
            while not self.complete and not self.error:
                if self.done is not None:
                    self._blobs()
                    return
                if len(self.buf) < 4:
                    return
                size = int.from_bytes(self.buf[:4], "big")
                if size > 4 * 2**20:
                    raise ValueError("oversized status frame")
                if len(self.buf) < 4 + size:
                    return
                msg = self.wire.decode(bytes(self.buf[4 : 4 + size]))
                del self.buf[: 4 + size]
                self._frame(msg)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.error = f"invalid report from the sandbox ({exc})"

    def _frame(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ready" and self.ready is None:
            self.ready = msg
        elif op == "setup_error":
            self.error = str(msg.get("error"))[:2000]
        elif op == "done" and self.ready is not None:
            files = msg.get("files")
            if not isinstance(files, list) or len(files) > self.max_files:
                raise ValueError("bad file list")
            total = 0
            for f in files:
                if (
                    not isinstance(f.get("filename"), str)
                    or not isinstance(f.get("size"), int)
                    or f["size"] < 0
                ):
                    raise ValueError("bad file entry")
                total += f["size"]
            if total > self.max_bytes:
                raise ValueError("files exceed the cap")
            self.done = msg
            self._blobs()
        else:
            raise ValueError(f"unexpected {op!r}")

    def _blobs(self) -> None:
        assert self.done is not None
        files = self.done["files"]
        while len(self.blobs) < len(files):
            size = files[len(self.blobs)]["size"]
            if len(self.buf) < size:
                return
            self.blobs.append(bytes(self.buf[:size]))
            del self.buf[:size]
        self.complete = True


def read_into(
    fd: int, outs: dict[int, Capped], status: StatusReader, poller: Any, open_fds: set[int]
) -> None:
    """Read one chunk from ``fd`` into its stream; at EOF unregister and close it."""
    try:
        data = os.read(fd, READ_CHUNK)
    except BlockingIOError:
        raise
    except OSError:
        data = b""
    if not data:
        poller.unregister(fd)
        open_fds.discard(fd)
        os.close(fd)
    elif fd in outs:
        outs[fd].add(data)
    else:
        status.feed(data)
