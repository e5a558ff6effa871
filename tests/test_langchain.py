"""LangChain tools in a langchain-core tool-calling flow (its fake chat model; the tool is under test)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from code_interpreter.integrations.langchain import close_tools, make_tools
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from code_interpreter.tools import ToolContext, ToolResult, tool_definitions


class ToolCallingFakeModel(GenericFakeChatModel):
    """GenericFakeChatModel plus bind_tools done the way real chat models do it (OpenAI tool format)."""

    bound: list[list[dict[str, Any]]] = []

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | None = None, **kwargs: Any
    ) -> Runnable[Any, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        self.bound.append(formatted)
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)


def fake_model(replies: list[AIMessage]) -> ToolCallingFakeModel:
    it: Iterator[AIMessage] = iter(replies)
    return ToolCallingFakeModel(messages=it, bound=[])


def test_tool_is_built_from_the_canonical_schema(make_settings: Callable[..., Settings]) -> None:
    [tool] = make_tools(CodeInterpreter(make_settings()), ToolContext(user_id=1))
    assert isinstance(tool, BaseTool) and isinstance(tool, StructuredTool)
    assert tool.name == "execute_python_code"
    assert tool.response_format == "content_and_artifact"
    rendered = convert_to_openai_tool(tool)["function"]
    canonical = tool_definitions("chat")[0]["function"]
    assert rendered["name"] == canonical["name"]
    assert rendered["description"] == canonical["description"]
    assert rendered["parameters"] == canonical["parameters"]


async def test_tool_calling_flow(interp: CodeInterpreter) -> None:
    up = await interp.files.upload_file(31, b"n\n3\n4\n5\n", "nums.csv")
    code = f"df = load_file({up['file_id']!r})\nprint('mean', df['n'].mean())"
    call = {
        "name": "execute_python_code",
        "args": {"code": code, "timeout": None, "install_packages": None},
        "id": "lc_1",
        "type": "tool_call",
    }
    model = fake_model([AIMessage(content="", tool_calls=[call]), AIMessage(content="The mean is 4.0.")])
    tools = make_tools(interp, ToolContext(user_id=31))
    bound = model.bind_tools(tools)
    assert (
        model.bound[0][0]["function"]["parameters"] == tool_definitions("chat")[0]["function"]["parameters"]
    )

    history: list[BaseMessage] = [HumanMessage("What is the mean of n in nums.csv?")]
    ai = await bound.ainvoke(history)
    assert isinstance(ai, AIMessage) and ai.tool_calls
    history.append(ai)
    by_name = {t.name: t for t in tools}
    for tc in ai.tool_calls:
        msg = await by_name[tc["name"]].ainvoke(tc)
        assert isinstance(msg, ToolMessage)
        assert msg.tool_call_id == "lc_1"
        assert "mean 4.0" in str(msg.content)
        assert isinstance(msg.artifact, ToolResult) and msg.artifact.result["success"] is True
        history.append(msg)
    final = await bound.ainvoke(history)
    assert final.content == "The mean is 4.0."
    assert [type(m).__name__ for m in history] == ["HumanMessage", "AIMessage", "ToolMessage"]


async def test_sync_invoke_from_a_worker_thread(interp: CodeInterpreter) -> None:
    [tool] = make_tools(interp, ToolContext(user_id=32))
    call = {
        "name": "execute_python_code",
        "args": {"code": "print(2 ** 10)"},
        "id": "lc_2",
        "type": "tool_call",
    }
    # A sync agent executor in a thread: the call is run on the loop the interpreter lives on.
    msg = await asyncio.to_thread(tool.invoke, call)
    assert isinstance(msg, ToolMessage) and "1024" in str(msg.content)
    close_tools([tool])


async def test_sync_invoke_on_the_interpreter_loop_is_refused(interp: CodeInterpreter) -> None:
    [tool] = make_tools(interp, ToolContext(user_id=33))
    tool.handle_tool_error = True
    call = {"name": "execute_python_code", "args": {"code": "print(1)"}, "id": "lc_3", "type": "tool_call"}
    msg = tool.invoke(call)  # would deadlock if it waited on this very loop
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert "ainvoke" in str(msg.content)


async def test_injected_user_id_and_bad_types_are_refused(interp: CodeInterpreter) -> None:
    [tool] = make_tools(interp, ToolContext(user_id=34))
    call = {
        "name": "execute_python_code",
        "args": {"code": "print(1)", "user_id": 1},
        "id": "lc_4",
        "type": "tool_call",
    }
    msg = await tool.ainvoke(call)
    assert str(msg.content).startswith("Error: invalid arguments")
    assert "'user_id'" in str(msg.content)
    assert msg.artifact.is_error
    bad = {
        "name": "execute_python_code",
        "args": {"code": "print(1)", "timeout": "soon"},
        "id": "lc_5",
        "type": "tool_call",
    }
    msg = await tool.ainvoke(bad)
    assert "argument 'timeout' must be integer or null, got string" in str(msg.content)


def test_sync_only_use_runs_on_a_private_loop(
    make_settings: Callable[..., Settings], sandbox_runtime: Any
) -> None:
    """No event loop anywhere (a plain sync program): the tools bring their own and close it."""
    interp = CodeInterpreter(make_settings(runtime_dir=sandbox_runtime.root))
    [tool] = make_tools(interp, ToolContext(user_id=35))
    binding = tool.metadata["code_interpreter_binding"]  # type: ignore[index]
    try:
        first = tool.invoke(
            {
                "name": "execute_python_code",
                "args": {"code": "print('a' * 3)"},
                "id": "s1",
                "type": "tool_call",
            }
        )
        second = tool.invoke(
            {
                "name": "execute_python_code",
                "args": {"code": "print(40 + 2)"},
                "id": "s2",
                "type": "tool_call",
            }
        )
        assert "aaa" in str(first.content) and "42" in str(second.content)
    finally:
        loop = binding.loop
        asyncio.run_coroutine_threadsafe(interp.close(), loop).result(30)
        close_tools([tool])
    assert loop.is_closed()
