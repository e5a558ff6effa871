"""Every frame between the host, the zygote, a supervisor and its sandboxed child, declared once (stdlib).

A frame is a 4-byte big-endian length and a JSON object whose ``op`` names it; some frames announce raw
bytes that follow (a snapshot, generated files). Each op has a declared shape (field → type, required or
not) and a size bound, and each *channel direction* accepts a fixed set of ops: :func:`decode` refuses
anything else with :class:`ProtocolError` before a field is used. Unknown fields from a newer peer are
ignored. The version is exchanged at the start of each channel (``config``/``ready`` with the zygote,
``start``/``started`` with a supervisor) and checked.

Channels:

* **control** (host ↔ zygote, Unix stream socket): ``config`` ``run`` (+ one fd by SCM_RIGHTS) ``shutdown``
  → ``ready`` ``failed``. The zygote never sees code, file names or results.
* **warm** (zygote → a warm supervisor): ``go`` (+ the execution socket's fd).
* **execution** (host ↔ supervisor): ``start`` ``cell`` (+ a snapshot to restore) ``interrupt`` ``save``
  ``close`` → ``started`` ``event`` ``result`` (+ generated files; with the cell's measured ``usage``)
  ``snapshot`` (+ its bytes) ``ended``.
* **request** (supervisor → child, a socket the child can only read): ``cell`` (+ snapshot) ``save`` ``exit``.
* **status** (child → supervisor, a pipe): ``ready`` ``setup_error`` ``done`` (+ files) ``snapshot``
  (+ bytes).
  Everything the child writes after ``ready`` comes from the process the user's code runs in: untrusted.
"""

from __future__ import annotations

import enum
import json
import os
import select
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSION = 3
HEADER = struct.Struct(">I")
KIB = 1024
MIB = 1024 * KIB
#: No frame of any kind is larger (a cell carries the code; a result the capped output).
MAX_FRAME = 64 * MIB

Frame = dict[str, Any]


class ProtocolError(ValueError):
    """A frame that is malformed, too large, of the wrong version, or not expected on this channel now."""


class Op(enum.StrEnum):
    """Every frame's ``op``."""

    # control channel
    CONFIG = "config"
    RUN = "run"
    SHUTDOWN = "shutdown"
    READY = "ready"
    FAILED = "failed"
    # warm channel
    GO = "go"
    # execution channel
    START = "start"
    CELL = "cell"
    INTERRUPT = "interrupt"
    SAVE = "save"
    CLOSE = "close"
    STARTED = "started"
    EVENT = "event"
    RESULT = "result"
    SNAPSHOT = "snapshot"
    ENDED = "ended"
    # request and status channels (``cell``, ``save``, ``ready`` and ``snapshot`` are shared)
    EXIT = "exit"
    SETUP_ERROR = "setup_error"
    DONE = "done"


_NUM = (int, float)


@dataclass(frozen=True, slots=True)
class Shape:
    """What one op's frame holds: required and optional fields with their types, and a size bound."""

    required: Mapping[str, type | tuple[type, ...]]
    optional: Mapping[str, type | tuple[type, ...]]
    max_bytes: int


def _shape(max_bytes: int, optional: Mapping[str, Any] | None = None, **required: Any) -> Shape:
    return Shape(required, optional or {}, max_bytes)


SHAPES: dict[Op, Shape] = {
    Op.CONFIG: _shape(1 * MIB, version=int, mode=str),
    Op.RUN: _shape(4 * KIB, id=str),
    Op.SHUTDOWN: _shape(4 * KIB),
    Op.READY: _shape(4 * MIB, {"version": int, "error": str, "probe": dict, "layers": dict}),
    Op.FAILED: _shape(64 * KIB, id=str, error=str),
    Op.GO: _shape(4 * KIB),
    # ``layers``: each result names the sandbox layers that hold (the zygote's self-test).
    Op.START: _shape(64 * KIB, {"layers": bool}, version=int, keep_state=bool),
    Op.CELL: _shape(
        MAX_FRAME, {"stream": bool, "restore": int, "keep_state": bool}, code=str, timeout=_NUM, files=list
    ),
    Op.INTERRUPT: _shape(4 * KIB),
    Op.SAVE: _shape(4 * KIB, {"checkpoint": bool}, cap=int),
    Op.CLOSE: _shape(4 * KIB),
    Op.STARTED: _shape(64 * KIB, version=int, supervisor_pid=int, child_pid=int),
    Op.EVENT: _shape(2 * MIB, stream=str, text=str),
    # ``usage``: the supervisor's measures of the cell (runtime/meter.py), absent when it did not run;
    # ``blocked``: syscalls the seccomp allowlist refused during the cell, by name; ``layers``: only when
    # ``start`` asked.
    Op.RESULT: _shape(
        MAX_FRAME,
        {"usage": dict, "blocked": dict, "layers": dict},
        status=str,
        alive=bool,
        files=list,
        notes=list,
    ),
    Op.SNAPSHOT: _shape(64 * KIB, {"alive": bool}, size=int, notes=list),
    Op.ENDED: _shape(64 * KIB, reason=str),
    Op.EXIT: _shape(4 * KIB),
    Op.SETUP_ERROR: _shape(64 * KIB, error=str),
    Op.DONE: _shape(4 * MIB, {"notes": list}, rc=int, files=list),
}


def _exact(kind: type | tuple[type, ...]) -> frozenset[type]:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return frozenset(kinds)  # bool is not an int here unless named (JSON true is not a number)


# Per op: (field, its type(s), the exact types that pass at once, required?); a subclass goes through _is.
_FIELDS: dict[Op, tuple[tuple[str, type | tuple[type, ...], frozenset[type], bool], ...]] = {
    op: tuple((n, k, _exact(k), True) for n, k in shape.required.items())
    + tuple((n, k, _exact(k), False) for n, k in shape.optional.items())
    for op, shape in SHAPES.items()
}

# What each side accepts on each channel.
CONTROL_TO_ZYGOTE = frozenset({Op.CONFIG, Op.RUN, Op.SHUTDOWN})
CONTROL_TO_HOST = frozenset({Op.READY, Op.FAILED})
WARM_TO_SUPERVISOR = frozenset({Op.GO})
EXECUTION_TO_SUPERVISOR = frozenset({Op.START, Op.CELL, Op.INTERRUPT, Op.SAVE, Op.CLOSE})
EXECUTION_TO_HOST = frozenset({Op.STARTED, Op.EVENT, Op.RESULT, Op.SNAPSHOT, Op.ENDED})
REQUEST_TO_CHILD = frozenset({Op.CELL, Op.SAVE, Op.EXIT})
STATUS_TO_SUPERVISOR = frozenset({Op.READY, Op.SETUP_ERROR, Op.DONE, Op.SNAPSHOT})


_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_DECODER = json.JSONDecoder()
#: Each op by its wire name: one dict lookup per frame instead of an enum call (and its exception).
_OPS: dict[str, Op] = {op.value: op for op in Op}
#: Each op's size bound, looked up once per frame encoded or decoded.
_BOUNDS: dict[Op, int] = {op: shape.max_bytes for op, shape in SHAPES.items()}


def encode(op: Op, **fields: Any) -> bytes:
    """One frame of ``op``: the length, then ASCII JSON.

    Only its size bound is checked here: the fields come from this package's own code, and the
    receiving side checks every frame against its shape (:func:`decode`).
    """
    body = _ENCODER.encode({"op": op.value, **fields}).encode("ascii")
    bound = _BOUNDS[op]
    if len(body) > bound:
        raise ProtocolError(f"{op.value!r} frame of {len(body)} bytes exceeds its bound of {bound}")
    return HEADER.pack(len(body)) + body


def decode(body: bytes, accepted: frozenset[Op]) -> Frame:
    """Parse and check one frame body against the ops ``accepted`` here (ProtocolError otherwise)."""
    try:
        message = _DECODER.decode(body.decode("utf-8"))
    except RecursionError:
        raise ProtocolError("frame is nested too deeply") from None
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    name = message.get("op")
    op = _OPS.get(name) if type(name) is str else None
    if op is None:
        raise ProtocolError(f"unknown op {str(name)[:40]!r}")
    if op not in accepted:
        raise ProtocolError(f"unexpected {op.value!r} here")
    _check(op, message, len(body))
    message["op"] = op
    return message


def _check(op: Op, message: Mapping[str, Any], size: int) -> None:
    bound = _BOUNDS[op]
    if size > bound:
        raise ProtocolError(f"{op.value!r} frame of {size} bytes exceeds its bound of {bound}")
    for name, kind, exact, required in _FIELDS[op]:
        value = message.get(name)
        if type(value) in exact or (value is None and not required):
            continue  # the common case, decided by the exact type (what JSON gives)
        if not _is(value, kind):
            what = "missing or not" if required else "is not"
            raise ProtocolError(f"{op.value!r} frame: field {name!r} {what} {_name(kind)}")


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
        return False  # JSON true is not a number here
    return isinstance(value, kind)


def _name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def check_version(frame: Mapping[str, Any]) -> None:
    """ProtocolError unless the peer speaks this version."""
    if frame.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {frame.get('version')!r} where {PROTOCOL_VERSION} is spoken: the host and "
            "the sandbox runtime come from different code_interpreter versions (restart the host)"
        )


class FrameBuffer:
    """Accumulates stream bytes; yields complete frames (checked) and the raw bytes that follow them."""

    def __init__(self, accepted: frozenset[Op], limit: int = MAX_FRAME) -> None:
        self.accepted = accepted
        self.limit = limit
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Add bytes (read them back with :meth:`next_frame` and :meth:`take`)."""
        self._buf += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until its bytes have all arrived (ProtocolError if bad)."""
        if len(self._buf) < HEADER.size:
            return None
        (size,) = HEADER.unpack_from(self._buf)
        if size > self.limit:
            raise ProtocolError(f"oversized frame: {size} bytes, the limit here is {self.limit}")
        if len(self._buf) < HEADER.size + size:
            return None
        body = bytes(self._buf[HEADER.size : HEADER.size + size])
        del self._buf[: HEADER.size + size]
        return decode(body, self.accepted)

    def frames(self) -> list[Frame]:
        """Every frame now complete (for channels that carry no raw bytes)."""
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def take(self, size: int) -> bytes | None:
        """The next ``size`` raw bytes if they have all arrived, else None."""
        if len(self._buf) < size:
            return None
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data


# -- blocking I/O (zygote, supervisor, child): every write has a deadline ------------------------------


class Stalled(OSError):
    """The peer did not take (or give) the bytes before the deadline."""


def write_all(fd: int, data: bytes | memoryview, deadline: float | None = None) -> None:
    """Write every byte to ``fd``; with a ``deadline`` (monotonic), never block past it (Stalled).

    A write with a deadline works on a non-blocking fd too: nothing the other side does can hold the
    writer longer than the deadline.
    """
    view = memoryview(data)
    poller: select.poll | None = None
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            n = 0
        view = view[n:]
        if view:
            if deadline is None:
                poller = poller or _poller(fd, select.POLLOUT)
                poller.poll()
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise Stalled(f"the peer took {len(data) - len(view)} of {len(data)} bytes in time")
            poller = poller or _poller(fd, select.POLLOUT)
            poller.poll(max(1, int(left * 1000)))


def send(fd: int, op: Op, blobs: Sequence[bytes] = (), deadline: float | None = None, **fields: Any) -> None:
    """Write one frame of ``op`` and the raw bytes that follow it."""
    write_all(fd, encode(op, **fields), deadline)
    for blob in blobs:
        write_all(fd, blob, deadline)


def read_exact(fd: int, size: int) -> bytes:
    """Exactly ``size`` bytes from a blocking ``fd``; EOFError if it ends first."""
    chunks = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, MIB))
        if not chunk:
            raise EOFError(f"the channel closed with {left} of {size} bytes unread")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, accepted: frozenset[Op], limit: int = MAX_FRAME) -> Frame:
    """One frame from a blocking ``fd``; EOFError at a clean end, ProtocolError for a bad frame."""
    head = os.read(fd, HEADER.size)
    if not head:
        raise EOFError("the channel closed")
    if len(head) < HEADER.size:
        head += read_exact(fd, HEADER.size - len(head))
    (size,) = HEADER.unpack(head)
    if size > limit:
        raise ProtocolError(f"frame of {size} bytes exceeds {limit}")
    return decode(read_exact(fd, size), accepted)


def _poller(fd: int, events: int) -> select.poll:
    poller = select.poll()
    poller.register(fd, events)
    return poller
