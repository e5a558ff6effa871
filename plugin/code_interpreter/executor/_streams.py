"""What the supervisor reads from its sandboxed child: capped output and the status pipe (stdlib only).

Loaded by file path in the zygote, like ``_supervisor.py``. Everything the child writes is untrusted:
stdout and stderr keep a head and a tail within the cap, and the status pipe's frames and sizes are
checked before anything is kept.
"""

from __future__ import annotations

import codecs
import collections
import os
from types import ModuleType
from typing import Any

READ_CHUNK = 65536
MAX_STATUS_FRAME = 4 * 2**20


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
        """Head, a marker saying how many bytes were dropped (and that they are kept nowhere), tail."""
        head = bytes(self.head).decode("utf-8", "replace")
        tail = bytes(self.tail).decode("utf-8", "replace")
        if self.dropped:
            kept = f"only the first {len(self.head):,} and the last {len(self.tail):,} bytes were kept"
            return f"{head}\n[… {self.dropped:,} bytes dropped here: {kept} …]\n{tail}"
        return head + tail


class LiveText:
    """Turns a stream's chunks into text for live events, up to a byte budget (split characters whole)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.sent = 0
        self.cut = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def text(self, data: bytes) -> str:
        """The text of ``data`` to send now ("" once the budget is spent)."""
        if self.cut:
            return ""
        room = self.budget - self.sent
        if len(data) > room:
            data, self.cut = data[:room], True
        self.sent += len(data)
        return self._decoder.decode(data, final=self.cut)


class StatusReader:
    """Parses the child's status pipe: ``ready`` once, then ``done`` or ``snapshot`` frames and their bytes.

    Everything after ``ready`` is written by the child *after* the user's code ran in that same
    process, so it is untrusted: frame and blob sizes are capped and checked, any violation (a bad
    frame, JSON nested too deeply, a wrong size) ends the execution with ``error`` set. Completed
    items wait in ``items`` as ``(kind, frame, blobs)``.
    """

    def __init__(self, wire: ModuleType, max_files: int, max_bytes: int, max_snapshot: int = 0) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.max_snapshot = max_snapshot
        self.buf = wire.FrameBuffer(MAX_STATUS_FRAME)
        self.ready: dict[str, Any] | None = None
        self.error: str | None = None
        self.items: collections.deque[tuple[str, dict[str, Any], list[bytes]]] = collections.deque()
        self._pending: tuple[str, dict[str, Any], list[int], list[bytes]] | None = None

    def feed(self, data: bytes) -> None:
        """Consume bytes; completed frames land in ``items`` (or ``error`` is set)."""
        if self.error is not None:
            return
        try:
            self.buf.feed_raw(data)
            while True:
                if self._pending is not None:
                    kind, msg, sizes, got = self._pending
                    while len(got) < len(sizes):
                        blob = self.buf.take(sizes[len(got)])
                        if blob is None:
                            return
                        got.append(blob)
                    self.items.append((kind, msg, got))
                    self._pending = None
                msg = self.buf.next_frame()
                if msg is None:
                    return
                self._frame(msg)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self.error = f"invalid report from the sandbox ({str(exc)[:200]})"

    def _frame(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "ready" and self.ready is None:
            self.ready = msg
        elif op == "setup_error" and self.ready is None:
            self.error = str(msg.get("error"))[:2000]
        elif op == "done" and self.ready is not None:
            files = msg.get("files")
            if not isinstance(files, list) or len(files) > self.max_files:
                raise ValueError("bad file list")
            sizes = []
            for f in files:
                if not isinstance(f, dict) or not isinstance(f.get("filename"), str):
                    raise ValueError("bad file entry")
                size = f.get("size")
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise ValueError("bad file entry")
                sizes.append(size)
            if sum(sizes) > self.max_bytes:
                raise ValueError("files exceed the cap")
            self._pending = ("done", msg, sizes, [])
        elif op == "snapshot" and self.ready is not None:
            size = msg.get("size")
            if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= self.max_snapshot:
                raise ValueError("snapshot size out of range")
            self._pending = ("snapshot", msg, [size], [])
        else:
            raise ValueError(f"unexpected {str(op)[:40]!r}")


def read_into(fd: int, poller: Any, open_fds: set[int]) -> bytes:
    """Read one chunk from ``fd``; at EOF (b"") unregister and close it."""
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
    return data
