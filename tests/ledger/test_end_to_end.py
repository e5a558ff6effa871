"""A conversation end to end: model requests, their tool calls, and the sandbox cost of each, linked.

run_agent with the real openai SDK against a scripted server on 127.0.0.1, the real sandbox and the
real database. The run path measures each execution in the sandbox and records it
(``interp.usage.record_execution``), linked by the dispatcher to the tool call and the request
that asked for it; ``result["usage"]`` is that record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from code_interpreter.agent import AgentRetry, run_agent
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.ledger import ExecutionUsage
from code_interpreter.settings import Settings
from code_interpreter.tools import ToolContext
from openai_server import ScriptedOpenAI, completion, tool_call

FAST = AgentRetry(attempts=2, initial_wait=0.01, max_wait=0.05)
MODEL = "gpt-4o-mini"


def _script() -> list[Any]:
    """Request 1 asks for two calls at once, request 2 for one more, request 3 answers."""
    return [
        completion(
            None,
            [
                tool_call("execute_python_code", {"code": "x = 6 * 7\nprint(x)"}, "call_a"),
                tool_call("execute_python_code", {"code": "print(sum(range(10)))"}, "call_b"),
            ],
            prompt_tokens=300,
            completion_tokens=30,
        ),
        completion(
            None,
            # 16 MiB more than the session held: a cell's peak memory is what it adds (a bare print adds
            # no page, and honestly measures 0).
            [tool_call("execute_python_code", {"code": "y = b'y' * 2**24\nprint(x + 1)"}, "call_c")],
            prompt_tokens=400,
            completion_tokens=20,
        ),
        completion("42, 45 and 43.", prompt_tokens=500, completion_tokens=10),
    ]


async def _converse(interp: CodeInterpreter, **kwargs: Any) -> Any:
    with ScriptedOpenAI(_script()) as server:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
        try:
            return await run_agent(
                client,
                MODEL,
                [{"role": "user", "content": "Compute some numbers."}],
                ToolContext(user_id=31, session_id="conv-1"),
                interpreter=interp,
                retry=FAST,
                **kwargs,
            )
        finally:
            await client.close()


async def test_a_request_its_tool_calls_and_their_sandbox_cost(interp: CodeInterpreter) -> None:
    result = await _converse(interp)
    assert result.stop_reason == "completed" and result.final_text == "42, 45 and 43."
    first, second, last = (r.request_id for r in result.requests)
    calls = {rid: sorted(r.tool_call_id or "" for r in await interp.usage.execution_records(request_id=rid))
             for rid in (first, second, last)}  # fmt: skip
    assert calls == {first: ["call_a", "call_b"], second: ["call_c"], last: []}

    # What each tool result carries is its record, with the tokens the model read of it.
    records = {r.execution_id: r for r in await interp.usage.execution_records(session_id="conv-1")}
    for tool_result in result.tool_results:
        usage = tool_result.result["usage"]
        record = records[usage["execution_id"]]
        assert record.tool_call_id == tool_result.tool_call_id
        assert record.result_tokens == usage["result_tokens"] and usage["result_tokens"] > 10
        assert usage["cost_usd"] == pytest.approx(record.cost_usd)

    # The conversation summed end to end: its three requests and its three executions.
    [conversation] = await interp.usage.cost_summary(group_by="session")
    assert conversation["session_id"] == "conv-1"
    assert (conversation["requests"], conversation["executions"]) == (3, 3)
    assert conversation["input_tokens"] == 1200
    assert conversation["cpu_seconds"] == pytest.approx(sum(r.cpu_seconds for r in records.values()))
    assert conversation["sandbox_cost_usd"] > 0 and conversation["token_cost_usd"] > 0
    assert conversation["cost_usd"] == pytest.approx(
        conversation["token_cost_usd"] + conversation["sandbox_cost_usd"]
    )
    [by_model] = await interp.usage.cost_summary(group_by="model")
    assert (by_model["model"], by_model["executions"]) == (MODEL, 3)
    assert await interp.usage.spent_today(31) == pytest.approx(conversation["cost_usd"])


async def test_the_run_path_records_every_execution_measured(interp: CodeInterpreter) -> None:
    result = await _converse(interp)
    assert result.stop_reason == "completed"
    for tool_result in result.tool_results:
        usage = tool_result.result.get("usage")
        assert usage is not None, "result['usage'] is missing"
        assert usage["cpu_seconds"] > 0 and usage["wall_seconds"] > 0 and usage["cost_usd"] > 0
    first, second, _ = (r.request_id for r in result.requests)
    records = await interp.usage.execution_records(request_id=first)
    assert sorted(r.tool_call_id or "" for r in records) == ["call_a", "call_b"]
    assert all(r.session_id == "conv-1" and r.isolation and r.success for r in records)
    [third] = await interp.usage.execution_records(request_id=second)
    assert third.tool_call_id == "call_c" and 14 < third.peak_memory_mb < 40


async def test_the_budget_before_a_request_counts_sandbox_cost(
    make_settings: Callable[..., Settings],
) -> None:
    async with CodeInterpreter(make_settings(daily_budget_usd=0.01)) as interp:
        # $0.014 of CPU already run today by user 32, no token spent.
        await interp.usage.record_execution(
            ExecutionUsage(user_id=32, cpu_seconds=1000.0, peak_memory_mb=0.0, wall_seconds=0.0)
        )
        with ScriptedOpenAI([completion("should not be sent")]) as server:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key="test-key", max_retries=0)
            try:
                result = await run_agent(
                    client,
                    MODEL,
                    [{"role": "user", "content": "hi"}],
                    ToolContext(user_id=32),
                    interpreter=interp,
                )
            finally:
                await client.close()
        assert server.requests == []
    assert result.stop_reason == "budget_exceeded"
    assert "($0.00 tokens, $0.014 sandbox) of the $0.01 daily budget" in result.final_text
