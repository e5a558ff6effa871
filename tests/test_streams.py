"""The supervisor's stream readers on plain bytes (the real pipes are covered by the executor suites)."""

from __future__ import annotations

import pytest

from code_interpreter.executor import _wire
from code_interpreter.executor._streams import Capped, LiveText, StatusReader


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


def _report(files: list[tuple[str, bytes]]) -> bytes:
    done = {"op": "done", "rc": 0, "files": [{"filename": n, "size": len(b)} for n, b in files]}
    return _wire.encode({"op": "ready", "layers": {}}) + _wire.encode(done) + b"".join(b for _, b in files)


def test_status_frames_and_blobs_survive_any_chunking() -> None:
    data = _report([("a.png", b"\x89PNG" * 100), ("b.csv", b"x,y\n1,2\n")])
    for step in (1, 3, 7, len(data)):
        r = StatusReader(_wire, max_files=10, max_bytes=10_000)
        for i in range(0, len(data), step):
            r.feed(data[i : i + step])
        assert r.error is None and len(r.items) == 1
        kind, frame, blobs = r.items[0]
        assert kind == "done" and frame["rc"] == 0
        assert blobs == [b"\x89PNG" * 100, b"x,y\n1,2\n"]


def test_a_session_reports_many_cells_and_a_snapshot_in_sequence() -> None:
    data = _report([("a.txt", b"1")])
    data += _wire.encode({"op": "done", "rc": 1, "files": [], "notes": []})
    data += _wire.encode({"op": "snapshot", "size": 4, "notes": []}) + b"ZIPS"
    r = StatusReader(_wire, max_files=3, max_bytes=10, max_snapshot=4)
    for i in range(len(data)):
        r.feed(data[i : i + 1])
    assert r.error is None
    assert [(k, b) for k, _f, b in r.items] == [("done", [b"1"]), ("done", []), ("snapshot", [b"ZIPS"])]


def test_a_snapshot_over_its_cap_is_a_violation() -> None:
    r = StatusReader(_wire, max_files=3, max_bytes=10, max_snapshot=4)
    r.feed(_wire.encode({"op": "ready"}) + _wire.encode({"op": "snapshot", "size": 5, "notes": []}))
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
        (_wire.encode({"op": "ready"}) + (5 * 2**20).to_bytes(4, "big"), "oversized frame"),
        (
            _wire.encode({"op": "ready"}) + _wire.HEADER.pack(20_000) + b"[" * 10_000 + b"]" * 10_000,
            "too deeply",
        ),
        (_wire.encode({"op": "done", "files": []}), "unexpected 'done'"),  # done before ready
        (b"\x00\x00\x00\x02[]", "not a JSON object"),
    ],
)
def test_status_violations_end_with_an_error(data: bytes, why: str) -> None:
    r = StatusReader(_wire, max_files=3, max_bytes=10)
    r.feed(data)
    assert not r.items and r.error is not None and why in r.error
    r.feed(_report([]))  # nothing after a violation is believed
    assert not r.items
