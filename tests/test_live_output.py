"""Live output: an execution reports its output as it happens, through the interpreter and the dispatcher.

Through the real sandbox: chunks arrive while the code still runs (not at the end), in order, stdout
and stderr apart, each stored generated file as an event, ``done`` last; a one-shot call and a session
cell alike; a failing callback never fails the execution; the dispatcher tags events with the call id.
The figures (first-chunk latency, loop stalls) live in ``python -m benchmarks sessions``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from code_interpreter.executor import ExecutionEvent
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.tools import ToolContext, ToolDispatcher

SLOW = (
    "import sys, time\nprint('first', flush=True)\ntime.sleep(1.5)\n"
    "print('oops', file=sys.stderr, flush=True)\nprint('second')\n"
    "with open('out.txt', 'w') as fh:\n    fh.write('x')"
)


async def _collect(
    interp: CodeInterpreter, **kw: Any
) -> tuple[dict[str, Any], list[tuple[float, ExecutionEvent]]]:
    events: list[tuple[float, ExecutionEvent]] = []
    started = time.monotonic()

    def on_event(event: ExecutionEvent) -> None:
        events.append((time.monotonic() - started, event))

    result = await interp.execute(SLOW, f"u{uuid.uuid4().hex[:8]}", on_event=on_event, **kw)
    return result, events


async def test_output_arrives_while_the_code_runs_in_order_then_files_then_done(
    interp: CodeInterpreter,
) -> None:
    for session_id in (None, "live-session"):
        t0 = time.monotonic()
        result, events = await _collect(interp, session_id=session_id)
        total = time.monotonic() - t0
        assert result["success"], result["error"]
        kinds = [e.kind for _t, e in events]
        assert kinds[-1] == "done" and events[-1][1].success is True
        stdout = "".join(e.text for _t, e in events if e.kind == "stdout")
        stderr = "".join(e.text for _t, e in events if e.kind == "stderr")
        assert stdout == result["output"] == "first\nsecond\n" and stderr == result["stderr"] == "oops\n"
        first_at = next(t for t, e in events if e.kind == "stdout")
        # "first" came while the code slept: well before the call returned (the code sleeps 1.5 s after it).
        assert first_at < total - 1.0, (first_at, total)
        files = [e for _t, e in events if e.kind == "file"]
        assert [(f.filename, f.file_id) for f in files] == [
            (g["filename"], g["file_id"]) for g in result["generated_files"]
        ]
        assert kinds.index("file") > max(i for i, k in enumerate(kinds) if k == "stdout")


async def test_a_failing_callback_never_fails_the_execution(interp: CodeInterpreter) -> None:
    calls = 0

    async def broken(event: ExecutionEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("the host's callback is broken")

    result = await interp.execute("print('still runs')", "u-broken", on_event=broken)
    assert result["success"] and result["output"] == "still runs\n"
    assert calls >= 2  # the chunk and done


async def test_the_dispatcher_tags_each_event_with_its_call_id(interp: CodeInterpreter) -> None:
    seen: dict[str, list[str]] = {}

    def on_event(event: ExecutionEvent) -> None:
        if event.kind == "stdout":
            seen.setdefault(event.call_id or "", []).append(event.text)

    calls = [
        {"id": f"call_{i}", "type": "function",
         "function": {"name": "execute_python_code", "arguments": f'{{"code": "print({i})"}}'}}
        for i in range(3)
    ]  # fmt: skip
    results = await ToolDispatcher(interp).dispatch_all(
        calls, ToolContext(user_id="tagged"), on_event=on_event
    )
    assert all(not r.is_error for r in results)
    assert {k: "".join(v) for k, v in seen.items()} == {"call_0": "0\n", "call_1": "1\n", "call_2": "2\n"}
