"""run_agent(api="responses") with the real openai SDK against a scripted Responses server on 127.0.0.1.

Every request body the SDK sent is validated against the SDK's own param types (pydantic over its
TypedDicts, unknown keys refused), so what the loop builds is what the Responses API accepts.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import openai
import pytest
from openai.types.responses import ResponseInputParam
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming
from pydantic import ConfigDict, TypeAdapter, ValidationError

from code_interpreter.agent import AgentRetry, run_agent
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from code_interpreter.tokens import count_message_tokens, count_request_tokens
from code_interpreter.tools import ToolResult, images_message, tool_definitions
from code_interpreter.tools.dispatch import ToolContext
from openai_server import ScriptedOpenAI, function_call, response

FAST = AgentRetry(attempts=2, initial_wait=0.01, max_wait=0.02)
FORBID = ConfigDict(extra="forbid")
# Wrapped in a list: pydantic takes a config for a list of TypedDicts, and it reaches every nested one.
BODIES = TypeAdapter(list[ResponseCreateParamsNonStreaming], config=FORBID)
INPUT = TypeAdapter(ResponseInputParam, config=FORBID)
PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9aw"
    "AAAABJRU5ErkJggg=="
)


def assert_valid_bodies(bodies: list[dict[str, Any]]) -> None:
    BODIES.validate_python(bodies)


async def agent_on(server: ScriptedOpenAI, *args: Any, **kwargs: Any) -> Any:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
    try:
        return await run_agent(client, *args, api="responses", retry=FAST, **kwargs)
    finally:
        await client.close()


@pytest.fixture
async def db_interp(make_settings: Callable[..., Settings]) -> AsyncIterator[CodeInterpreter]:
    """A started interpreter on the session database; these tests never reach the sandbox."""
    async with CodeInterpreter(make_settings()) as interp:
        yield interp


def _outputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in body["input"] if i.get("type") == "function_call_output"]


def _text(item: dict[str, Any]) -> str:
    out = item["output"]
    return out if isinstance(out, str) else "".join(p.get("text", "") for p in out)


async def test_model_fixes_its_code_after_a_traceback(interp: CodeInterpreter) -> None:
    data = resources.files("code_interpreter").joinpath("data", "samples", "sales.csv").read_bytes()
    expected = round(sum(float(r["revenue"]) for r in csv.DictReader(io.StringIO(data.decode()))), 2)
    fid = (await interp.files.upload_file(41, data, "sales.csv"))["file_id"]
    buggy = f"df = load_file({fid!r})\nprint(round(df['revnue'].sum(), 2))\n"
    fixed = f"df = load_file({fid!r})\nprint('TOTAL', round(df['revenue'].sum(), 2))\n"

    def second(body: dict[str, Any]) -> dict[str, Any]:
        [out] = _outputs(body)
        if out["call_id"] != "call_bug" or "KeyError" not in _text(out):
            return response(f"I never saw the traceback: {out!r}")
        code = {"code": fixed, "timeout": None, "install_packages": None}
        return response(None, [function_call("execute_python_code", code, "call_fix")], input_tokens=480)

    def third(body: dict[str, Any]) -> dict[str, Any]:
        m = re.search(r"TOTAL ([0-9.]+)", _text(_outputs(body)[-1]))
        return response(
            f"Total revenue is {m.group(1) if m else '?'} USD.", input_tokens=620, output_tokens=12
        )

    first = response(
        "Let me look at the file.",
        [
            function_call(
                "execute_python_code", {"code": buggy, "timeout": 30, "install_packages": None}, "call_bug"
            )
        ],
        input_tokens=350,
        output_tokens=40,
    )
    messages = [
        {"role": "system", "content": "You analyse files with execute_python_code."},
        {"role": "user", "content": f"What is the total revenue in {fid}?"},
    ]
    with ScriptedOpenAI([first, second, third]) as server:
        result = await agent_on(
            server,
            "gpt-4o-mini",
            messages,
            ToolContext(user_id=41, model="gpt-4o-mini"),
            5,
            interpreter=interp,
        )

    assert result.stop_reason == "completed"
    assert result.final_text == f"Total revenue is {expected} USD."
    assert server.paths == ["/v1/responses"] * 3
    assert_valid_bodies(server.requests)
    for body in server.requests:
        assert body["tools"] == tool_definitions("responses", versions=interp.packages.runtime_versions())
        assert "tool_choice" not in body
    # The conversation as input items: every function_call answered by its call_id, the traceback first.
    kinds = [i.get("type", i.get("role")) for i in result.messages]
    calls = ["function_call", "function_call_output"]
    assert kinds == ["system", "user", "message", *calls, *calls, "message"]
    assert [i["call_id"] for i in result.messages if "call_id" in i] == ["call_bug"] * 2 + ["call_fix"] * 2
    assert (
        "Traceback" in _text(result.messages[4])
        and result.messages[4]["output"] == result.tool_results[0].content
    )
    assert [t.is_error for t in result.tool_results] == [True, False]
    assert [r.finish_reason for r in result.requests] == ["tool_calls", "tool_calls", "stop"]
    INPUT.validate_python(result.messages)  # ready for the next turn as it is

    # Estimated before each request for exactly the body sent; actual usage recorded beside it after.
    docs = {d["_id"]: d async for d in interp.db["token_usage"].find({"user_id": 41})}
    for record, sent, prompt in zip(result.requests, server.requests, [350, 480, 620], strict=True):
        assert record.estimate.input_tokens == count_request_tokens(
            "gpt-4o-mini", sent["input"], sent["tools"]
        )
        assert record.usage is not None and record.usage["input_tokens"] == prompt
        doc = docs[record.request_id]
        assert doc["estimate"]["input_tokens"] == record.estimate.input_tokens > 0
        assert doc["usage_known"] is True and doc["usage"]["prompt_tokens"] == prompt
    ests = [r.estimate.input_tokens for r in result.requests]
    assert ests[0] < ests[1] < ests[2]
    assert result.usage_totals == {"prompt_tokens": 1450, "completion_tokens": 72, "total_tokens": 1522}


async def test_the_last_round_forces_a_text_answer(db_interp: CodeInterpreter) -> None:
    def second(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("tool_choice") != "none":
            return response("tools were still allowed")
        return response("final: " + _text(_outputs(body)[0]).splitlines()[0])

    script = [response(None, [function_call("run_shell", {"cmd": "ls"}, "c1")]), second]
    with ScriptedOpenAI(script) as server:
        result = await agent_on(
            server,
            "gpt-4o-mini",
            [{"role": "user", "content": "x"}],
            ToolContext(user_id=42),
            2,
            interpreter=db_interp,
        )
    assert_valid_bodies(server.requests)
    assert result.stop_reason == "completed"
    assert result.final_text.startswith("final: Error: unknown tool 'run_shell'.")
    assert "tool_choice" not in server.requests[0]
    # The refused call was answered (its call_id), so the history stays valid.
    assert result.messages[2] == {
        "type": "function_call_output",
        "call_id": "c1",
        "output": result.tool_results[0].content,
    }
    assert result.tool_results[0].is_error


async def test_max_output_tokens_and_options_reach_the_request(db_interp: CodeInterpreter) -> None:
    with ScriptedOpenAI([response("cut", incomplete="max_output_tokens")]) as server:
        result = await agent_on(
            server,
            "gpt-4o-mini",
            [{"role": "user", "content": "hi"}],
            ToolContext(user_id=43),
            interpreter=db_interp,
            max_output_tokens=64,
            request_options={"temperature": 0.2},
        )
    assert_valid_bodies(server.requests)
    [body] = server.requests
    assert (
        body["max_output_tokens"] == 64 and body["temperature"] == 0.2 and "max_completion_tokens" not in body
    )
    assert result.requests[0].finish_reason == "max_output_tokens"
    assert result.requests[0].estimate.output_tokens == 64
    assert result.final_text == "cut"


async def test_a_vision_model_sees_the_chart_inside_the_function_call_output(interp: CodeInterpreter) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.savefig('trend.png')\nprint('saved')\n"

    def second(body: dict[str, Any]) -> dict[str, Any]:
        [out] = _outputs(body)
        parts = out["output"] if isinstance(out["output"], list) else []
        kinds = [p["type"] for p in parts]
        url = next((p["image_url"] for p in parts if p["type"] == "input_image"), "")
        return response(f"saw {kinds} {url.split(',')[0]}")

    script = [response(None, [function_call("execute_python_code", {"code": code}, "c_img")]), second]
    with ScriptedOpenAI(script) as server:
        result = await agent_on(
            server,
            "gpt-4o",
            [{"role": "user", "content": "plot it"}],
            ToolContext(user_id=44, model="gpt-4o"),
            interpreter=interp,
        )
    assert_valid_bodies(server.requests)
    assert result.final_text == "saw ['input_text', 'input_image'] data:image/png;base64"
    # No follow-up user message: the image travelled in the tool's answer.
    assert [i.get("type", i.get("role")) for i in result.messages] == [
        "user",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert [f["filename"] for f in result.generated_files] == ["trend.png"]
    assert result.requests[0].estimate.image_tokens == 0
    assert result.requests[1].estimate.image_tokens > 0
    assert result.requests[1].estimate.input_tokens == count_request_tokens(
        "gpt-4o", server.requests[1]["input"], server.requests[1]["tools"]
    )


async def test_budget_guard_stops_before_sending(make_settings: Callable[..., Settings]) -> None:
    async with CodeInterpreter(make_settings(daily_budget_usd=0.0)) as interp:
        with ScriptedOpenAI([response("should not be sent")]) as server:
            result = await agent_on(
                server,
                "gpt-4o-mini",
                [{"role": "user", "content": "hello"}],
                ToolContext(user_id=45),
                interpreter=interp,
            )
        assert server.requests == []
        assert result.stop_reason == "budget_exceeded" and "daily budget" in result.final_text
        assert result.requests == ()
        assert await interp.db["token_usage"].count_documents({}) == 0


async def test_an_unknown_api_is_refused_before_anything_is_sent(db_interp: CodeInterpreter) -> None:
    client = openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0)
    try:
        with pytest.raises(ValueError, match="api must be 'chat'"):
            await run_agent(client, "gpt-4o", [], ToolContext(user_id=46), api="completions")  # type: ignore[arg-type]
    finally:
        await client.close()


def _result_with_image(call_id: str = "c9") -> ToolResult:
    image = {"type": "image_url", "image_url": {"url": PNG, "detail": "auto"}}
    return ToolResult(call_id, "execute_python_code", "Status: success in 0.10 s.", images=(image,))


def test_images_message_has_a_responses_form_the_sdk_accepts() -> None:
    results = [_result_with_image()]
    chat = images_message(results)
    # The bug this pins: the Chat form fails the Responses input types (image_url is no Responses part).
    with pytest.raises(ValidationError):
        INPUT.validate_python([chat])
    msg = images_message(results, api="responses")
    assert msg is not None
    INPUT.validate_python([msg])
    assert [p["type"] for p in msg["content"]] == ["input_text", "input_image"]
    assert msg["content"][1]["image_url"] == PNG
    assert images_message([ToolResult("c", "execute_python_code", "x")], api="responses") is None
    with pytest.raises(ValueError, match="api must be"):
        images_message(results, api="assistants")


def test_output_item_carries_the_images_only_when_there_are_some() -> None:
    with_image = _result_with_image().output_item
    INPUT.validate_python([with_image])
    assert with_image["call_id"] == "c9"
    assert with_image["output"][0] == {"type": "input_text", "text": "Status: success in 0.10 s."}
    assert with_image["output"][1] == {"type": "input_image", "image_url": PNG, "detail": "auto"}
    plain = ToolResult("c1", "execute_python_code", "42").output_item
    INPUT.validate_python([plain])
    assert plain == {"type": "function_call_output", "call_id": "c1", "output": "42"}


def test_a_responses_conversation_counts_as_its_chat_equivalent() -> None:
    """The derived rule: each item as its Chat equivalent, parallel calls in one assistant turn."""
    args = ['{"code": "print(1)"}', '{"code": "print(2)"}']
    chat = [
        {"role": "user", "content": "two things"},
        {
            "role": "assistant",
            "content": "Running both.",
            "tool_calls": [
                {
                    "id": f"c{i}",
                    "type": "function",
                    "function": {"name": "execute_python_code", "arguments": a},
                }
                for i, a in enumerate(args)
            ],
        },
        {"role": "tool", "tool_call_id": "c0", "content": "1"},
        {"role": "tool", "tool_call_id": "c1", "content": "2"},
    ]
    items: list[dict[str, Any]] = [
        {"role": "user", "content": "two things"},
        response("Running both.")["output"][0],
        *(dict(function_call("execute_python_code", a, f"c{i}")) for i, a in enumerate(args)),
        {"type": "function_call_output", "call_id": "c0", "output": "1"},
        {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "2"}]},
    ]
    INPUT.validate_python(items)
    for model in ("gpt-4o", "gpt-4"):
        assert count_message_tokens(items, model) == count_message_tokens(chat, model)
        tools_r, tools_c = tool_definitions("responses"), tool_definitions("chat")
        assert count_request_tokens(model, items, tools_r, "none") == count_request_tokens(
            model, chat, tools_c, "none"
        )
