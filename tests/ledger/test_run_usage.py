"""What the run path records beside the sandbox's measures: bytes stored, snapshots, what the model read.

The real sandbox, file store and database: a generated file's bytes count once (a deduplicated copy
adds nothing), a saved session's snapshot is recorded with its bytes for the user as the host named
them, and a dispatched call's record holds the tokens of the text and images the model reads of it.
"""

from __future__ import annotations

import struct
from typing import Any

from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.ledger import ExecutionLink, linked
from code_interpreter.tokens import count_text_tokens, image_tokens
from code_interpreter.tools import ToolContext, ToolDispatcher

WRITE = "open('table.bin', 'wb').write(bytes(range(256)) * 400)\nprint('written')"
CHART = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nprint('drawn')"


def _call(code: str, call_id: str) -> dict[str, Any]:
    import json

    return {"id": call_id, "type": "function",
            "function": {"name": "execute_python_code", "arguments": json.dumps({"code": code})}}  # fmt: skip


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


async def test_generated_files_count_in_stored_bytes_once(interp: CodeInterpreter) -> None:
    first = await interp.execute(WRITE, user_id=51)
    [generated] = first["generated_files"]
    assert generated["size"] == 102_400 and first["usage"]["stored_bytes"] == 102_400
    again = await interp.execute(WRITE, user_id=51)  # the same bytes under the same name: deduplicated
    assert again["generated_files"][0]["file_id"] == generated["file_id"]
    assert again["usage"]["stored_bytes"] == 0
    records = await interp.usage.execution_records(user_id=51)
    assert [r.stored_bytes for r in records] == [102_400, 0]
    assert records[0].cost is not None and records[0].cost.storage_usd > 0


async def test_a_saved_snapshot_is_recorded_with_its_bytes(interp: CodeInterpreter) -> None:
    cell = await interp.execute("numbers = list(range(50_000))", user_id=52, session_id="chat-7")
    assert cell["success"] and cell["usage"]["user_id"] == 52  # an int stays an int, as in the token records
    # Closed while another call's link is current: the snapshot is nobody's tool call.
    with linked(ExecutionLink("call_other", "req_other")):
        assert await interp.sessions.close(52, "chat-7")
    totals = await interp.files.storage_totals()
    assert totals["saved_sessions"] == 1 and totals["saved_session_bytes"] > 0
    cell_record, snapshot = await interp.usage.execution_records(session_id="chat-7")
    assert cell_record.execution_id == cell["usage"]["execution_id"]
    assert (snapshot.measured_by, snapshot.user_id, snapshot.stored_bytes) == (
        "snapshot",
        52,
        totals["saved_session_bytes"],
    )
    assert (snapshot.tool_call_id, snapshot.request_id, snapshot.cpu_seconds) == (None, None, 0.0)


async def test_a_dispatched_call_records_the_tokens_the_model_read(interp: CodeInterpreter) -> None:
    dispatcher = ToolDispatcher(interp)
    model = "gpt-4o-mini"
    text = await dispatcher.dispatch(
        _call("print('hello ' * 50)", "call_t"), ToolContext(user_id=53, model=model)
    )
    assert text.result["usage"]["result_tokens"] == count_text_tokens(text.content, model)

    chart = await dispatcher.dispatch(_call(CHART, "call_i"), ToolContext(user_id=53, model=model))
    [image] = chart.generated_files
    assert len(chart.images) == 1  # a vision model is shown the chart
    width, height = _png_size(image["data"])
    read = count_text_tokens(chart.content, model) + image_tokens(width, height, model)
    assert chart.result["usage"]["result_tokens"] == read

    blind = await dispatcher.dispatch(_call(CHART, "call_b"), ToolContext(user_id=53, attach_images=False))
    assert not blind.images
    assert blind.result["usage"]["result_tokens"] == count_text_tokens(blind.content, "gpt-4o")

    records = {r.tool_call_id: r.result_tokens for r in await interp.usage.execution_records(user_id=53)}
    assert records == {c.tool_call_id: c.result["usage"]["result_tokens"] for c in (text, chart, blind)}
