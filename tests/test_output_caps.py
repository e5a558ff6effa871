"""Output caps through the real sandbox: a flood on stdout or stderr keeps its head and tail within the cap,
and both the result and the text the model reads say exactly what was kept where.

Regressions: a cap on stderr fifty times too large went unnoticed (no test flooded stderr, and the
truncation note was never checked); after a 10 MB print the model read "the host has the full text"
while the host kept 100,000 bytes (#25).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from _interp_helpers import close_and_drop, started
from code_interpreter import CodeInterpreter, ToolContext, ToolDispatcher
from code_interpreter.settings import Settings

CAP = 4000
#: the marker between head and tail: "\n[… N bytes dropped here: only the first … were kept …]\n"
MARKER_ROOM = 128
#: 200 times the cap: a cap even 50 times too large still truncates, and still shows
FLOOD = 200 * CAP
DROPPED = FLOOD + len("HEAD-OF-FLOOD\nTAIL-OF-FLOOD\n") - CAP  # every byte but the kept 2,000 + 2,000


def result_note(stream: str) -> str:
    """The result's note on a flooded stream: its size, what is kept, that the rest is gone."""
    return (
        f"{stream} was {DROPPED + CAP:,} bytes: only its first {CAP // 2:,} and last {CAP // 2:,} were kept "
        f"(max_output_bytes); the {DROPPED:,} between are gone"
    )


KEPT = f"only the first {CAP // 2:,} and the last {CAP // 2:,} bytes were kept"
MARKER = f"[… {DROPPED:,} bytes dropped here: {KEPT} …]"
MODEL_NOTE = "print less, or summarise (head(), describe(), counts) instead of printing everything"


@pytest.fixture(scope="module")
async def interp(
    tmp_path_factory: pytest.TempPathFactory, mongo_uri: str, sandbox_runtime: Any
) -> AsyncIterator[CodeInterpreter]:
    """One started interpreter (strict sandbox, policy on) with a small output cap."""
    settings = Settings(
        home=tmp_path_factory.mktemp("caps") / "home",
        mongodb_uri=mongo_uri,
        database=f"ci_test_{uuid.uuid4().hex[:12]}",
        runtime_dir=sandbox_runtime.root,
        max_output_bytes=CAP,
    )
    interpreter = await started(settings)
    yield interpreter
    await close_and_drop(interpreter)


def flood(stream: str, then: str = "") -> str:
    """Code writing FLOOD bytes to ``stream`` between a recognisable head and tail, then ``then``."""
    return (
        "import sys\n"
        f"out = sys.{stream}\n"
        "out.write('HEAD-OF-FLOOD\\n')\n"
        f"for _ in range({FLOOD // 1000}):\n"
        "    out.write('x' * 999 + '\\n')\n"
        "out.write('TAIL-OF-FLOOD\\n')\n"
        "out.flush()\n"
        f"{then}\n"
    )


def assert_capped(text: str) -> None:
    """Within the cap (plus the marker), with the head, the tail and the marker saying how much went."""
    assert len(text.encode()) <= CAP + MARKER_ROOM, f"{len(text.encode())} bytes kept; the cap is {CAP}"
    assert text.startswith("HEAD-OF-FLOOD\n") and text.rstrip().endswith("TAIL-OF-FLOOD")
    assert MARKER in text


def _uid() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_a_flood_keeps_head_and_tail_within_the_cap(interp: CodeInterpreter, stream: str) -> None:
    r = await interp.execute(flood(stream), user_id=_uid(), timeout=30)
    assert r["success"], r["error"]
    flooded, other = ("output", "stderr") if stream == "stdout" else ("stderr", "output")
    assert_capped(r[flooded])
    assert r[other] == ""
    assert r["truncated"] is True
    assert r["notes"] == [result_note(stream)]


async def test_both_streams_flooded_at_once_are_each_capped(interp: CodeInterpreter) -> None:
    code = flood("stdout") + flood("stderr")
    r = await interp.execute(code, user_id=_uid(), timeout=30)
    assert r["success"], r["error"]
    assert_capped(r["output"])
    assert_capped(r["stderr"])
    assert r["truncated"] is True
    assert r["notes"] == [result_note("stdout"), result_note("stderr")]


async def test_the_traceback_after_a_stderr_flood_survives_in_the_error(interp: CodeInterpreter) -> None:
    # A failing script that first floods stderr: the traceback is in the kept tail, the error is capped.
    r = await interp.execute(
        flood("stderr", "raise ValueError('after the flood')"), user_id=_uid(), timeout=30
    )
    assert not r["success"] and r["return_code"] == 1
    assert len(r["error"].encode()) <= CAP + MARKER_ROOM
    assert r["error"].startswith("HEAD-OF-FLOOD") and f"bytes dropped here: {KEPT} …]" in r["error"]
    assert r["error"].rstrip().endswith("ValueError: after the flood")
    assert r["truncated"] is True


async def test_output_within_the_cap_is_whole_and_not_marked(interp: CodeInterpreter) -> None:
    text = "y" * (CAP - 100)
    r = await interp.execute(f"import sys\nprint({text!r})\nprint({text!r}, file=sys.stderr)", user_id=_uid())
    assert r["success"], r["error"]
    assert r["output"] == text + "\n" and r["stderr"] == text + "\n"
    assert r["truncated"] is False and r["notes"] == []


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_the_model_reads_a_capped_flood_and_the_truncation_note(
    interp: CodeInterpreter, stream: str
) -> None:
    args = {"code": flood(stream), "timeout": 30, "install_packages": None}
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "execute_python_code", "arguments": json.dumps(args)},
    }
    result = await ToolDispatcher(interp).dispatch(call, ToolContext(user_id=_uid()))
    assert not result.is_error, result.content
    text = result.content
    # What the model reads: one capped stream, a few lines of status and notes around it.
    assert len(text.encode()) <= CAP + MARKER_ROOM + 600, f"the model reads {len(text.encode())} bytes"
    assert text.count("x" * 999) <= CAP // 1000 + 1
    assert "HEAD-OF-FLOOD" in text and "TAIL-OF-FLOOD" in text and MARKER in text
    assert ("Stderr:" in text) is (stream == "stderr")
    assert MODEL_NOTE in text and result_note(stream) in text
    assert "full text" not in text  # the model is never told that anyone has what the sandbox dropped
