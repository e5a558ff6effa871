"""The supervisor's stream readers on plain bytes (the real pipes are covered by the executor suites)."""

from __future__ import annotations

import pytest

from code_interpreter.runtime.protocol import HEADER, Op, encode
from code_interpreter.runtime.streams import Capped, LiveText, StatusReader


def test_capped_keeps_head_and_tail_and_counts_the_rest() -> None:
    c = Capped(10)
    for chunk in (b"abc", b"defgh", b"ijklmnopqrstuvwxyz"):
        c.add(chunk)
    assert (bytes(c.head), bytes(c.tail), c.total, c.dropped) == (b"abcde", b"vwxyz", 26, 16)
    assert (
        c.text()
        == "abcde\n[… 16 bytes dropped here: only the first 5 and the last 5 bytes were kept …]\nvwxyz"
    )


def test_capped_under_the_cap_is_untouched() -> None:
    c = Capped(100)
    c.add("é ok".encode())
    assert c.text() == "é ok" and c.dropped == 0


def _ready() -> bytes:
    return encode(Op.READY, layers={})


def _done(files: list[tuple[str, bytes]], rc: int = 0) -> bytes:
    listed = [{"filename": n, "size": len(b)} for n, b in files]
    return encode(Op.DONE, rc=rc, files=listed, notes=[]) + b"".join(b for _, b in files)


def _report(files: list[tuple[str, bytes]]) -> bytes:
    return _ready() + _done(files)


def _reader(max_files: int = 3, max_bytes: int = 10, max_snapshot: int = 0) -> StatusReader:
    """A reader past ``ready`` that waits for one cell's ``done``, as the supervisor has it."""
    r = StatusReader(max_files, max_bytes, max_snapshot)
    r.feed(_ready())
    r.expect(Op.DONE)
    return r


def test_status_frames_and_blobs_survive_any_chunking() -> None:
    data = _done([("a.png", b"\x89PNG" * 100), ("b.csv", b"x,y\n1,2\n")])
    for step in (1, 3, 7, len(data)):
        r = _reader(max_files=10, max_bytes=10_000)
        for i in range(0, len(data), step):
            r.feed(data[i : i + step])
        assert r.error is None and len(r.items) == 1
        kind, frame, blobs = r.items[0]
        assert kind == "done" and frame["rc"] == 0
        assert blobs == [b"\x89PNG" * 100, b"x,y\n1,2\n"]


def test_a_session_reports_each_cell_and_a_snapshot_when_asked() -> None:
    r = _reader(max_snapshot=4)
    steps = [(Op.DONE, _done([("a.txt", b"1")])), (Op.DONE, _done([], rc=1)),
             (Op.SNAPSHOT, encode(Op.SNAPSHOT, size=4, notes=[]) + b"ZIPS")]  # fmt: skip
    for op, data in steps:
        r.expect(op)
        for i in range(len(data)):
            r.feed(data[i : i + 1])
    assert r.error is None
    assert [(k, b) for k, _f, b in r.items] == [("done", [b"1"]), ("done", []), ("snapshot", [b"ZIPS"])]


def test_anything_written_when_nothing_was_asked_is_a_violation() -> None:
    """Issue #22, item 2: forged snapshot frames between cells were queued without bound."""
    r = _reader(max_snapshot=2**20)
    r.feed(_done([]))
    assert r.error is None and len(r.items) == 1
    r.feed(encode(Op.SNAPSHOT, size=4, notes=[]) + b"ZIPS")  # between cells: nothing was asked
    assert r.error is not None and "nothing was asked" in r.error and len(r.items) == 1
    r.feed(encode(Op.SNAPSHOT, size=4, notes=[]) * 1000)  # and nothing after is kept
    assert len(r.items) == 1 and len(r.buf) < 100


def test_a_second_frame_for_one_question_is_a_violation() -> None:
    r = _reader()
    r.feed(_done([]) + _done([]))
    assert r.error is not None and "more than it was asked" in r.error and len(r.items) == 1


def test_a_snapshot_over_its_cap_is_a_violation() -> None:
    r = _reader(max_snapshot=4)
    r.items.clear()
    r.expect(Op.SNAPSHOT)
    r.feed(encode(Op.SNAPSHOT, size=5, notes=[]))
    assert r.error is not None and "snapshot size" in r.error and not r.items


def test_live_text_keeps_split_characters_whole_and_stops_at_its_budget() -> None:
    live = LiveText(budget=6)
    data = "é€x".encode()  # 2 + 3 + 1 bytes
    assert live.text(data[:1]) == "" and live.text(data[1:4]) == "é" and live.text(data[4:]) == "€x"
    assert live.text(b"more") == "" and live.cut


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (_report([("a", b"x" * 11)]), "files exceed the cap"),
        (_report([(f"f{i}", b"") for i in range(4)]), "bad file list"),
        (_ready() + (5 * 2**20).to_bytes(4, "big"), "oversized frame"),
        (_ready() + HEADER.pack(20_000) + b"[" * 10_000 + b"]" * 10_000, "too deeply"),
        (encode(Op.DONE, rc=0, files=[], notes=[]), "unexpected 'done'"),  # done before ready
        (b"\x00\x00\x00\x02[]", "not a JSON object"),
        (
            _ready() + HEADER.pack(44) + b'{"op":"done","rc":"0","files":[],"notes":[]}',
            "'rc' missing or not int",
        ),
    ],
)
def test_status_violations_end_with_an_error(data: bytes, why: str) -> None:
    r = StatusReader(max_files=3, max_bytes=10, max_snapshot=0)
    r.feed(data[: len(_ready())] if data.startswith(_ready()) else data)
    r.expect(Op.DONE)
    r.feed(data[len(_ready()) :] if data.startswith(_ready()) else b"")
    assert not r.items and r.error is not None and why in r.error
    r.feed(_report([]))  # nothing after a violation is believed
    assert not r.items
