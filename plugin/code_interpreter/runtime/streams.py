"""What the supervisor reads from its sandboxed child: capped output and the status pipe (stdlib only).

Everything the child writes is untrusted: stdout and stderr keep a head and a tail within the cap, and
the status pipe accepts exactly the frame the supervisor is waiting for — ``ready`` (or
``setup_error``) once at start, one ``done`` while a cell runs, one ``snapshot`` while a save runs,
nothing at all in between — each with its size and its blobs' sizes checked before anything is kept.
Anything else ends the execution with :attr:`StatusReader.error` set, so nothing the child sends can
grow the supervisor between cells.
"""

from __future__ import annotations

import codecs
import collections
import os
import select

from .protocol import MIB, STATUS_TO_SUPERVISOR, Frame, FrameBuffer, Op, ProtocolError

READ_CHUNK = 65536
MAX_STATUS_FRAME = 4 * MIB


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


Item = tuple[Op, Frame, list[bytes]]


class StatusReader:
    """Parses the child's status pipe, accepting only what :meth:`expect` allows right now.

    Completed items wait in ``items`` as ``(op, frame, blobs)``; any violation (an unexpected frame, a bad
    frame, JSON nested too deeply, a size out of range) sets ``error`` and ignores everything after.
    """

    def __init__(self, max_files: int, max_bytes: int, max_snapshot: int) -> None:
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.max_snapshot = max_snapshot
        self.buf = FrameBuffer(STATUS_TO_SUPERVISOR, MAX_STATUS_FRAME)
        self.ready: Frame | None = None
        self.error: str | None = None
        self.items: collections.deque[Item] = collections.deque()
        self.asked: frozenset[Op] = frozenset()
        self._pending: tuple[Op, Frame, list[int], list[bytes]] | None = None

    def expect(self, *ops: Op) -> None:
        """From now on accept one frame of these ops (none: the child must stay silent)."""
        self.asked = frozenset(ops)

    @property
    def expected(self) -> frozenset[Op]:
        """What may come now: ``ready`` (or ``setup_error``) first, then one answer to the question asked."""
        return frozenset({Op.READY, Op.SETUP_ERROR}) if self.ready is None else self.asked

    def feed(self, data: bytes) -> None:
        """Consume bytes; completed frames land in ``items`` (or ``error`` is set)."""
        if self.error is not None:
            return
        try:
            if data and not self.expected and self._pending is None and not len(self.buf):
                raise ProtocolError("the child wrote to its status channel when nothing was asked")
            self.buf.feed(data)
            while True:
                if self._pending is not None:
                    op, msg, sizes, got = self._pending
                    while len(got) < len(sizes):
                        blob = self.buf.take(sizes[len(got)])
                        if blob is None:
                            return
                        got.append(blob)
                    self.items.append((op, msg, got))
                    self._pending = None
                if len(self.buf) and not self.expected:
                    raise ProtocolError("the child wrote more than it was asked for")
                frame = self.buf.next_frame()
                if frame is None:
                    return
                self._frame(frame)
        except (ProtocolError, TypeError, KeyError, AttributeError) as exc:
            self.error = f"invalid report from the sandbox ({str(exc)[:200]})"

    def _frame(self, msg: Frame) -> None:
        op = msg["op"]
        if op not in self.expected:
            raise ProtocolError(f"unexpected {op.value!r} on the status channel")
        if op in self.asked:
            self.asked = frozenset()  # one answer per question
        if op == Op.READY:
            self.ready = msg
        elif op == Op.SETUP_ERROR:
            self.error = str(msg["error"])[:2000]
        elif op == Op.DONE:
            if len(msg["files"]) > self.max_files:
                raise ProtocolError("bad file list (too many files)")
            sizes = [self._file_size(f) for f in msg["files"]]
            if sum(sizes) > self.max_bytes:
                raise ProtocolError("files exceed the cap")
            self._pending = (op, msg, sizes, [])
        elif op == Op.SNAPSHOT:
            size = msg["size"]
            if not 0 <= size <= self.max_snapshot:
                raise ProtocolError("snapshot size out of range")
            self._pending = (op, msg, [size], [])

    @staticmethod
    def _file_size(entry: object) -> int:
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise ProtocolError("bad file entry")
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError("bad file entry")
        return size


def read_into(fd: int, poller: select.poll, open_fds: set[int]) -> bytes:
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
