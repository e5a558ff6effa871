"""LangChain tools in a langchain-core tool-calling flow (its fake chat model; the tool is under test).

One tool instance must work sync and async, in any order, from any thread, with or without a running
loop: the interpreter's coroutines always run on the loop it was started on.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from code_interpreter.errors import ConfigurationError
from code_interpreter.integrations.langchain import CodeInterpreterTool, close_tools, make_tools
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


def call(code: str, call_id: str, **extra: Any) -> dict[str, Any]:
    """A LangChain ToolCall for execute_python_code."""
    return {
        "name": "execute_python_code",
        "args": {"code": code, **extra},
        "id": call_id,
        "type": "tool_call",
    }


def assert_message(msg: Any, call_id: str, status: str, *needles: str) -> ToolResult:
    """A ToolMessage answering ``call_id`` with ``status``, whose text holds every needle; its artifact."""
    assert isinstance(msg, ToolMessage)
    assert msg.tool_call_id == call_id and msg.name == "execute_python_code"
    assert msg.status == status, msg.content
    text = msg.content if isinstance(msg.content, str) else msg.content[0]["text"]
    for needle in needles:
        assert needle in text, text
    assert isinstance(msg.artifact, ToolResult)
    assert msg.artifact.tool_call_id == call_id and msg.artifact.content == text
    return msg.artifact


def test_tool_is_built_from_the_canonical_schema(make_settings: Callable[..., Settings]) -> None:
    [tool] = make_tools(CodeInterpreter(make_settings()), ToolContext(user_id=1))
    assert isinstance(tool, BaseTool) and isinstance(tool, CodeInterpreterTool)
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
    tc = call(code, "lc_1", timeout=None, install_packages=None)
    model = fake_model([AIMessage(content="", tool_calls=[tc]), AIMessage(content="The mean is 4.0.")])
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
    for tool_call in ai.tool_calls:
        msg = await by_name[tool_call["name"]].ainvoke(tool_call)
        artifact = assert_message(msg, "lc_1", "success", "mean 4.0")
        assert artifact.result["success"] is True
        history.append(msg)
    final = await bound.ainvoke(history)
    assert final.content == "The mean is 4.0."
    assert [type(m).__name__ for m in history] == ["HumanMessage", "AIMessage", "ToolMessage"]


async def test_failed_and_refused_calls_are_errors_the_model_can_read(interp: CodeInterpreter) -> None:
    [tool] = make_tools(interp, ToolContext(user_id=34))
    failed = await tool.ainvoke(call("print(1 / 0)", "lc_fail"))
    artifact = assert_message(
        failed, "lc_fail", "error", "ZeroDivisionError", "Traceback", "call execute_python_code"
    )
    assert artifact.is_error and artifact.result["success"] is False
    injected = await tool.ainvoke(call("print(1)", "lc_inj", user_id=1))
    assert_message(injected, "lc_inj", "error", "Error: invalid arguments", "'user_id'")
    bad = await tool.ainvoke(call("print(1)", "lc_bad", timeout="soon"))
    assert_message(bad, "lc_bad", "error", "argument 'timeout' must be integer or null, got string")
    ok = await tool.ainvoke(call("print(6 * 7)", "lc_ok"))
    assert_message(ok, "lc_ok", "success", "42")
    # Without a ToolCall (plain arguments) the tool returns the text itself.
    assert "42" in await tool.ainvoke({"code": "print(6 * 7)"})


async def test_a_vision_model_gets_the_chart_as_an_image_block(interp: CodeInterpreter) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.savefig('trend.png')\nprint('saved')"
    [vision] = make_tools(interp, ToolContext(user_id=36, model="gpt-4o"))
    msg = await vision.ainvoke(call(code, "lc_img"))
    artifact = assert_message(msg, "lc_img", "success", "saved", "trend.png")
    assert isinstance(msg.content, list) and [b["type"] for b in msg.content] == ["text", "image"]
    image = msg.content[1]
    assert image["mime_type"] == "image/png"
    assert base64.b64decode(image["base64"]) == artifact.generated_files[0]["data"]
    [text_only] = make_tools(interp, ToolContext(user_id=36, model="gpt-3.5-turbo"))
    plain = await text_only.ainvoke(call(code, "lc_txt"))
    assert isinstance(plain.content, str) and "trend.png" in plain.content


async def test_async_first_then_sync_from_a_worker_thread(interp: CodeInterpreter) -> None:
    [tool] = make_tools(interp, ToolContext(user_id=32))
    assert_message(await tool.ainvoke(call("print(1)", "a1")), "a1", "success", "1")
    # A sync agent executor in a thread while the interpreter's loop runs.
    msg = await asyncio.to_thread(tool.invoke, call("print(2 ** 10)", "s1"))
    assert_message(msg, "s1", "success", "1024")
    assert interp.loop is asyncio.get_running_loop()


async def test_async_from_another_event_loop_in_another_thread(interp: CodeInterpreter) -> None:
    """The bug this pins: "Cannot use AsyncMongoClient in different event loop" from a second loop."""
    [tool] = make_tools(interp, ToolContext(user_id=37))
    msg = await asyncio.to_thread(asyncio.run, tool.ainvoke(call("print('other loop')", "o1")))
    assert_message(msg, "o1", "success", "other loop")
    assert interp.loop is asyncio.get_running_loop()


async def test_sync_invoke_on_the_interpreter_loop_is_refused(interp: CodeInterpreter) -> None:
    [tool] = make_tools(interp, ToolContext(user_id=33))
    tool.handle_tool_error = True
    msg = tool.invoke(call("print(1)", "lc_3"))  # would deadlock if it waited on this very loop
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert "ainvoke" in str(msg.content)


def test_sync_first_then_async_later(make_settings: Callable[..., Settings], sandbox_runtime: Any) -> None:
    """The bug this pins: sync use before any loop bound the store to a private loop; ainvoke then failed."""
    interp = CodeInterpreter(make_settings(runtime_dir=sandbox_runtime.root))
    [tool] = make_tools(interp, ToolContext(user_id=35))
    try:
        assert_message(tool.invoke(call("print('a' * 3)", "s1")), "s1", "success", "aaa")
        private = interp.loop
        assert private is not None and private.is_running()
        # Later, async code on a loop of its own: the call is handed to the interpreter's loop.
        assert_message(asyncio.run(tool.ainvoke(call("print(40 + 2)", "a1"))), "a1", "success", "42")
        assert_message(tool.invoke(call("print('again')", "s2")), "s2", "success", "again")
    finally:
        close_tools([tool])
    assert private.is_closed() and interp.loop is None


# The interpreter left open on a dead loop cannot be closed any more: its client's ResourceWarning is the
# point of the message under test, so it is collected here and kept out of the tests that follow.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_closed_loop_is_reported_with_how_to_fix_it(make_settings: Callable[..., Settings]) -> None:
    interp = CodeInterpreter(make_settings())

    async def start_and_leave_open(it: CodeInterpreter) -> asyncio.AbstractEventLoop:
        await it.start()  # and not closed before the loop ends: the mistake
        return asyncio.get_running_loop()

    loop = asyncio.run(start_and_leave_open(interp))
    [tool] = make_tools(interp, ToolContext(user_id=38))
    with pytest.raises(ConfigurationError, match=r"await interp\.close\(\) before that loop ends"):
        tool.invoke(call("print(1)", "x"))
    assert loop.is_closed()
    del tool, interp
    gc.collect()


# -- LangChain's own standard tool tests, plus what they leave out: the content ------------------

from langchain_tests.integration_tests import ToolsIntegrationTests  # noqa: E402
from langchain_tests.unit_tests import ToolsUnitTests  # noqa: E402

EXAMPLE = {"code": "print(sum(range(10)))", "timeout": None, "install_packages": None}


class _StandardTool:
    """A fresh tool per test on an interpreter that is not started: each test decides its loop."""

    @property
    def tool_constructor(self) -> type[BaseTool]:
        return CodeInterpreterTool

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        # Constructing is all test_init does: an interpreter that is never started touches nothing.
        unused = Settings(home=Path(tempfile.gettempdir()) / "ci-langchain-never-started")
        return {"interp": CodeInterpreter(unused), "context": ToolContext(user_id=39)}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return dict(EXAMPLE)

    @pytest.fixture
    async def tool(
        self, make_settings: Callable[..., Settings], sandbox_runtime: Any
    ) -> AsyncIterator[BaseTool]:
        interp = CodeInterpreter(make_settings(runtime_dir=sandbox_runtime.root))
        [tool] = make_tools(interp, ToolContext(user_id=39))
        yield tool
        if interp.loop is asyncio.get_running_loop():
            await interp.close()
        await asyncio.to_thread(close_tools, [tool])
        assert interp.loop is None


class TestStandardUnit(_StandardTool, ToolsUnitTests):
    """langchain-tests' unit suite."""

    def test_example_matches_the_canonical_schema(self, tool: BaseTool) -> None:
        from code_interpreter.tools.schema import validate_arguments

        assert validate_arguments("execute_python_code", EXAMPLE) == (EXAMPLE, [])
        assert tool.args == tool_definitions("chat")[0]["function"]["parameters"]["properties"]


class TestStandardIntegration(_StandardTool, ToolsIntegrationTests):
    """langchain-tests' integration suite, then the same calls with their content checked."""

    def test_invoke_content(self, tool: BaseTool) -> None:
        assert_message(tool.invoke(call(EXAMPLE["code"], "123")), "123", "success", "Output:\n45")
        assert "45" in tool.invoke(EXAMPLE)

    async def test_async_invoke_content(self, tool: BaseTool) -> None:
        msg = await tool.ainvoke(call("print(undefined_name)", "124"))
        assert_message(msg, "124", "error", "NameError", "undefined_name")
        assert "45" in await tool.ainvoke(EXAMPLE)
