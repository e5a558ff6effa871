"""run_agent with the real openai SDK against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

import openai
import pytest

from code_interpreter.agent import AgentRetry, run_agent
from code_interpreter.errors import BudgetExceeded
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from code_interpreter.tokens import count_request_tokens
from code_interpreter.tools import ToolContext, tool_definitions
from openai_server import Reply, ScriptedOpenAI, completion, error, tool_call

FAST = AgentRetry(attempts=4, initial_wait=0.01, max_wait=0.05)


def client_for(server: ScriptedOpenAI) -> openai.AsyncOpenAI:
    # max_retries=0: the agent's tenacity policy is the only retry layer under test.
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)


async def agent_on(server: ScriptedOpenAI, *args: Any, **kwargs: Any) -> Any:
    """run_agent with a fresh SDK client on the scripted server, closed afterwards."""
    client = client_for(server)
    try:
        return await run_agent(client, *args, **kwargs)
    finally:
        await client.close()


@pytest.fixture
async def db_interp(make_settings: Callable[..., Settings]) -> AsyncIterator[CodeInterpreter]:
    """A started interpreter on the session database; these tests never reach the sandbox."""
    async with CodeInterpreter(make_settings()) as interp:
        yield interp


def _last_tool_content(body: dict[str, Any]) -> str:
    tools = [m for m in body["messages"] if m.get("role") == "tool"]
    return str(tools[-1]["content"]) if tools else ""


async def test_model_fixes_its_code_after_a_traceback(interp: CodeInterpreter) -> None:
    """The must-show conversation: failing code, the traceback reaches the model, fixed code, answer."""
    data = resources.files("code_interpreter").joinpath("data", "samples", "sales.csv").read_bytes()
    expected = round(sum(float(r["revenue"]) for r in csv.DictReader(io.StringIO(data.decode()))), 2)
    up = await interp.files.upload_file(21, data, "sales.csv")
    fid = up["file_id"]
    buggy = f"df = load_file({fid!r})\nprint(round(df['revnue'].sum(), 2))\n"
    fixed = f"df = load_file({fid!r})\nprint('TOTAL', round(df['revenue'].sum(), 2))\n"

    def second(body: dict[str, Any]) -> dict[str, Any]:
        seen = _last_tool_content(body)
        if "KeyError" not in seen or "revnue" not in seen:
            return completion(f"I never saw the traceback: {seen!r}", prompt_tokens=0)
        return completion(
            None,
            [
                tool_call(
                    "execute_python_code",
                    {"code": fixed, "timeout": None, "install_packages": None},
                    "call_fix",
                )
            ],
            prompt_tokens=480,
            completion_tokens=45,
        )

    def third(body: dict[str, Any]) -> dict[str, Any]:
        m = re.search(r"TOTAL ([0-9.]+)", _last_tool_content(body))
        answer = f"Total revenue is {m.group(1)} USD." if m else "no total in the tool output"
        return completion(answer, prompt_tokens=620, completion_tokens=12)

    script = [
        completion(
            None,
            [
                tool_call(
                    "execute_python_code",
                    {"code": buggy, "timeout": 30, "install_packages": None},
                    "call_bug",
                )
            ],
            prompt_tokens=350,
            completion_tokens=40,
        ),
        second,
        third,
    ]
    messages = [
        {"role": "system", "content": "You analyse files with execute_python_code."},
        {"role": "user", "content": f"What is the total revenue in {fid}?"},
    ]
    ctx = ToolContext(user_id=21, model="gpt-4o-mini")
    with ScriptedOpenAI(script) as server:
        client = client_for(server)
        try:
            result = await run_agent(
                client, "gpt-4o-mini", messages, ctx, max_rounds=5, interpreter=interp, retry=FAST
            )
        finally:
            await client.close()

    assert result.stop_reason == "completed"
    assert result.final_text == f"Total revenue is {expected} USD."
    assert len(server.requests) == 3 and len(result.requests) == 3
    # What the model was sent: our tools each time, and the traceback before it fixed the code.
    for body in server.requests:
        assert body["model"] == "gpt-4o-mini"
        assert body["tools"] == tool_definitions("chat", versions=interp.packages.runtime_versions())
        assert "tool_choice" not in body
    assert "Traceback" in _last_tool_content(server.requests[1])
    assert [m["role"] for m in result.messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]
    assert result.messages[2]["tool_calls"][0]["id"] == "call_bug"
    assert result.messages[3]["tool_call_id"] == "call_bug"
    assert [t.is_error for t in result.tool_results] == [True, False]
    assert messages[-1]["role"] == "user"  # the caller's list is not modified

    # The estimate was recorded before each request and the actual usage after, in the real database.
    docs = {d["_id"]: d async for d in interp.db["token_usage"].find({"user_id": 21})}
    assert set(docs) == {r.request_id for r in result.requests}
    for record, sent, (prompt, completion_tokens) in zip(
        result.requests, server.requests, [(350, 40), (480, 45), (620, 12)], strict=True
    ):
        doc = docs[record.request_id]
        # The estimate was made for exactly the body that went over the wire.
        assert record.estimate.input_tokens == count_request_tokens(
            "gpt-4o-mini", sent["messages"], sent["tools"]
        )
        assert doc["estimate"]["input_tokens"] == record.estimate.input_tokens > 0
        assert doc["estimate"]["model"] == "gpt-4o-mini"
        assert doc["usage_known"] is True
        assert (
            doc["usage"]["prompt_tokens"] == prompt and doc["usage"]["completion_tokens"] == completion_tokens
        )
        assert record.usage is not None and record.usage["prompt_tokens"] == prompt
        assert doc["timestamp"] <= doc["updated_at"]
    # Each estimate grows with the conversation it was made for.
    ests = [r.estimate.input_tokens for r in result.requests]
    assert ests[0] < ests[1] < ests[2]
    assert result.usage_totals == {"prompt_tokens": 1450, "completion_tokens": 97, "total_tokens": 1547}


async def test_estimate_is_recorded_before_the_request_is_sent(db_interp: CodeInterpreter) -> None:
    seen_before: list[int] = []

    async def count() -> int:
        return await db_interp.db["token_usage"].count_documents({"user_id": 22, "usage_known": False})

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        return completion("done")

    with ScriptedOpenAI([reply]) as server:
        client = client_for(server)
        # Check the record exists (estimate only) at the moment the server answers: wrap the SDK call.
        original = client.chat.completions.create

        async def spying(**kwargs: Any) -> Any:
            seen_before.append(await count())
            return await original(**kwargs)

        client.chat.completions.create = spying  # type: ignore[method-assign]
        try:
            result = await run_agent(
                client,
                "gpt-4o-mini",
                [{"role": "user", "content": "hi"}],
                ToolContext(user_id=22),
                interpreter=db_interp,
                retry=FAST,
            )
        finally:
            await client.close()
    assert seen_before == [1]
    assert result.final_text == "done"
    assert await count() == 0  # the same record now carries the actual usage


async def test_rate_limit_and_5xx_are_retried(db_interp: CodeInterpreter) -> None:
    script = [error(429, "slow down", {"retry-after": "0"}), error(503, "busy"), completion("after retries")]
    with ScriptedOpenAI(script) as server:
        result = await agent_on(
            server,
            "gpt-4o-mini",
            [{"role": "user", "content": "hi"}],
            ToolContext(user_id=23),
            interpreter=db_interp,
            retry=FAST,
        )
    assert result.final_text == "after retries"
    assert len(server.requests) == 3
    assert len(result.requests) == 1  # one logical request, one usage record
    assert await db_interp.db["token_usage"].count_documents({"user_id": 23}) == 1


async def test_retries_give_up_and_4xx_is_not_retried(db_interp: CodeInterpreter) -> None:
    with ScriptedOpenAI([error(500), error(502), error(500)]) as server:
        client = client_for(server)
        try:
            with pytest.raises(openai.InternalServerError):
                await run_agent(
                    client,
                    "gpt-4o-mini",
                    [{"role": "user", "content": "x"}],
                    ToolContext(user_id=24),
                    interpreter=db_interp,
                    retry=AgentRetry(attempts=3, initial_wait=0.01, max_wait=0.02),
                )
        finally:
            await client.close()
    assert len(server.requests) == 3
    with ScriptedOpenAI([Reply({"error": {"message": "bad model"}}, 400), completion("never")]) as server:
        client = client_for(server)
        try:
            with pytest.raises(openai.BadRequestError):
                await run_agent(
                    client,
                    "gpt-4o-mini",
                    [{"role": "user", "content": "x"}],
                    ToolContext(user_id=24),
                    interpreter=db_interp,
                    retry=FAST,
                )
        finally:
            await client.close()
    assert len(server.requests) == 1


async def test_last_round_forbids_tools_and_refusals_reach_the_model(db_interp: CodeInterpreter) -> None:
    def second(body: dict[str, Any]) -> dict[str, Any]:
        assert body["tool_choice"] == "none"
        return completion("final: " + _last_tool_content(body).splitlines()[0])

    script = [completion(None, [tool_call("run_shell", {"cmd": "ls"}, "c1")]), second]
    with ScriptedOpenAI(script) as server:
        result = await agent_on(
            server,
            "gpt-4o-mini",
            [{"role": "user", "content": "x"}],
            ToolContext(user_id=25),
            max_rounds=2,
            interpreter=db_interp,
            retry=FAST,
        )
    assert result.stop_reason == "completed"
    assert result.final_text.startswith("final: Error: unknown tool 'run_shell'. The available tool is ")
    assert "tool_choice" not in server.requests[0]


async def test_max_rounds_when_the_model_keeps_calling_tools(db_interp: CodeInterpreter) -> None:
    script = [completion(None, [tool_call("nope", "{}", f"c{i}")]) for i in range(3)]
    with ScriptedOpenAI(script) as server:
        result = await agent_on(
            server,
            "gpt-4o-mini",
            [{"role": "user", "content": "x"}],
            ToolContext(user_id=26),
            max_rounds=2,
            interpreter=db_interp,
            retry=FAST,
        )
    assert result.stop_reason == "max_rounds"
    assert len(server.requests) == 2
    # Every tool call got its answer, so the history is valid for another turn.
    assert [m["role"] for m in result.messages] == ["user", "assistant", "tool", "assistant", "tool"]


async def test_budget_guard_stops_before_sending(make_settings: Callable[..., Settings]) -> None:
    async with CodeInterpreter(make_settings(daily_budget_usd=0.0)) as interp:
        with ScriptedOpenAI([completion("should not be sent")]) as server:
            client = client_for(server)
            try:
                result = await run_agent(
                    client,
                    "gpt-4o-mini",
                    [{"role": "user", "content": "hello"}],
                    ToolContext(user_id=27),
                    interpreter=interp,
                    retry=FAST,
                )
                with pytest.raises(BudgetExceeded, match="daily budget"):
                    await run_agent(
                        client,
                        "gpt-4o-mini",
                        [{"role": "user", "content": "hello"}],
                        ToolContext(user_id=27),
                        interpreter=interp,
                        raise_on_budget=True,
                    )
            finally:
                await client.close()
        assert server.requests == []
        assert result.stop_reason == "budget_exceeded"
        assert result.final_text.startswith("Stopped before request 1: ")
        assert "daily budget" in result.final_text
        assert result.requests == ()
        assert await interp.db["token_usage"].count_documents({}) == 0


async def test_result_to_dict_is_json_serialisable(db_interp: CodeInterpreter) -> None:
    with ScriptedOpenAI([completion("ok", prompt_tokens=11, completion_tokens=2)]) as server:
        result = await agent_on(
            server,
            "gpt-4o-mini",
            [{"role": "user", "content": "x"}],
            ToolContext(user_id=28),
            interpreter=db_interp,
            retry=FAST,
        )
    d = json.loads(json.dumps(result.to_dict()))
    assert d["requests"][0]["usage"]["prompt_tokens"] == 11
    assert d["requests"][0]["estimate"]["model"] == "gpt-4o-mini"
    assert d["stop_reason"] == "completed"


async def test_vision_model_sees_generated_chart_after_the_tool_messages(interp: CodeInterpreter) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.savefig('trend.png')\nprint('saved')\n"

    def second(body: dict[str, Any]) -> dict[str, Any]:
        last = body["messages"][-1]
        if last["role"] != "user" or not isinstance(last["content"], list):
            return completion("no image message")
        kinds = [p["type"] for p in last["content"]]
        url = last["content"][1]["image_url"]["url"] if len(kinds) > 1 else ""
        return completion(f"saw {kinds} {url.split(',')[0]}")

    script = [completion(None, [tool_call("execute_python_code", {"code": code}, "c_img")]), second]
    with ScriptedOpenAI(script) as server:
        result = await agent_on(
            server,
            "gpt-4o",
            [{"role": "user", "content": "plot it"}],
            ToolContext(user_id=29, model="gpt-4o"),
            interpreter=interp,
            retry=FAST,
        )
    assert result.final_text == "saw ['text', 'image_url'] data:image/png;base64"
    assert [m["role"] for m in result.messages] == ["user", "assistant", "tool", "user", "assistant"]
    assert [f["filename"] for f in result.generated_files] == ["trend.png"]
    # The second request's estimate counted the attached image.
    assert result.requests[0].estimate.image_tokens == 0
    assert result.requests[1].estimate.image_tokens > 0
