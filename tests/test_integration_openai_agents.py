"""The OpenAI Agents SDK drives the tool: its Runner and its own OpenAI models, against a scripted server.

The SDK's ``OpenAIChatCompletionsModel`` and ``OpenAIResponsesModel`` talk over a socket to
:mod:`openai_server`; each scripted reply reads what the SDK sent (the tool's output) before it
answers, so every assertion is about what the model was shown. Tracing is off (it would export
to the network).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from agents import Agent, FunctionTool, OpenAIChatCompletionsModel, OpenAIResponsesModel, RunConfig, Runner
from openai import AsyncOpenAI

from code_interpreter.errors import ConfigurationError
from code_interpreter.integrations.openai_agents import close_tool, make_tool
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from code_interpreter.tools import ToolContext, load_schema
from code_interpreter.tools.schema import describe_state
from openai_server import ScriptedOpenAI, completion, function_call, response, tool_call

TOOL = "execute_python_code"
NO_TRACING = RunConfig(tracing_disabled=True)
PNG = b"\x89PNG\r\n\x1a\n"


def tool_messages(body: dict[str, Any]) -> list[str]:
    """The contents of the Chat Completions tool messages in a request, in order."""
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]


def last_tool_message(body: dict[str, Any]) -> str:
    content = tool_messages(body)[-1]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


def chat_call(code: str, **extra: Any) -> dict[str, Any]:
    """A scripted assistant turn calling the tool, as a strict model sends it (all three keys)."""
    arguments = {"code": code, "timeout": None, "install_packages": None, **extra}
    return completion(None, [tool_call(TOOL, arguments)])


@pytest.fixture
def run_in_thread() -> Iterator[Callable[..., Any]]:
    """Run a sync function in a fresh thread (as a sync app would), then close that thread's event loop.

    ``Runner.run_sync`` runs on the thread's default loop and leaves it open on purpose; a test must
    not leave it for the garbage collector (an unclosed loop is a ResourceWarning, an error here).
    """

    def run(fn: Callable[[], Any]) -> Any:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:
                box["error"] = exc
            finally:
                asyncio.get_event_loop_policy().get_event_loop().close()
                asyncio.set_event_loop(None)

        thread = threading.Thread(target=target, name="sync-app")
        thread.start()
        thread.join(300)
        assert not thread.is_alive(), "the sync run did not finish"
        if "error" in box:
            raise box["error"]
        return box["value"]

    yield run


def test_the_tool_is_the_canonical_schema(make_settings: Callable[..., Settings]) -> None:
    interp = CodeInterpreter(make_settings())  # never started: only the tool's shape is read
    canonical = load_schema(TOOL)
    one_shot = make_tool(interp, user_id=1)
    assert isinstance(one_shot, FunctionTool)
    assert one_shot.name == TOOL and one_shot.strict_json_schema is True
    assert one_shot.params_json_schema == canonical["parameters"]
    assert one_shot.description == describe_state(canonical, sessions=False)
    conversation = make_tool(interp, user_id=1, session_id="conv-1")
    assert conversation.description == describe_state(canonical, sessions=True)
    assert "State persists between calls" in conversation.description
    with pytest.raises(ConfigurationError, match="pass user_id"):
        make_tool(interp)
    with pytest.raises(ConfigurationError, match="not both"):
        make_tool(interp, user_id=1, context=ToolContext(user_id=1))


async def test_runner_run_keeps_state_shows_tracebacks_and_refuses_an_injected_user(
    interp: CodeInterpreter,
) -> None:
    secret = await interp.files.upload_file(99, b"the other user's secret\n", "secret.txt")
    assert secret["success"]

    def saw(needles: tuple[str, ...], then: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
        def reply(body: dict[str, Any]) -> dict[str, Any]:
            shown = last_tool_message(body)
            for needle in needles:
                assert needle in shown, shown
            return then

        return reply

    script = [
        chat_call("rows = [3, 5, 8]\ntotal = sum(rows)\nprint('stored', total)"),
        saw(("stored 16",), chat_call("print('doubled', total * 2)")),
        saw(("doubled 32", "Status: success"), chat_call("def ratio(a):\n    return a / 0\n\nratio(total)")),
        saw(
            ("Traceback (most recent call last)", "ZeroDivisionError: division by zero", "line 2, in ratio"),
            chat_call("print(open('secret.txt').read())", user_id=99),
        ),
        saw(("unexpected argument(s) 'user_id'",), completion("Total 16, doubled 32.")),
    ]
    with ScriptedOpenAI(script) as server:
        async with AsyncOpenAI(base_url=server.base_url, api_key="sk-test") as client:
            agent = Agent(
                name="analyst",
                model=OpenAIChatCompletionsModel("gpt-4o-mini", client),
                tools=[make_tool(interp, user_id=7, session_id="conv-7")],
            )
            result = await Runner.run(agent, "Sum the rows, then double it.", run_config=NO_TRACING)
        assert result.final_output == "Total 16, doubled 32."
        assert len(server.requests) == 5
        assert server.requests[0]["tools"][0]["function"]["parameters"] == load_schema(TOOL)["parameters"]
        injected = tool_messages(server.requests[4])[-1]
        assert "secret" not in injected and "Error: invalid arguments" in injected
    sessions = await interp.sessions.list(7)
    assert [(s["id"], s["cells"]) for s in sessions] == [("conv-7", 3)], sessions


def test_run_sync_on_a_tool_that_starts_the_interpreter_itself_with_charts_for_the_model(
    make_settings: Callable[..., Settings], sandbox_runtime: Any, run_in_thread: Callable[..., Any]
) -> None:
    """Runner.run_sync twice (a loop that stops between runs); the session spans both runs."""
    plot = "import matplotlib.pyplot as plt\nsquares = [x * x for x in range(6)]\nplt.plot(squares)"
    seen: list[dict[str, Any]] = []

    def after_chart(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body)
        [out] = [i for i in body["input"] if i.get("type") == "function_call_output"]
        kinds = [p["type"] for p in out["output"]]
        assert kinds == ["input_text", "input_image"], out
        assert base64.b64decode(out["output"][1]["image_url"].split(",", 1)[1]).startswith(PNG)
        return response("A parabola.")

    def after_recall(body: dict[str, Any]) -> dict[str, Any]:
        [out] = [i for i in body["input"] if i.get("type") == "function_call_output"]
        assert "[0, 1, 4, 9, 16, 25]" in out["output"], out
        return response("The squares are 0 to 25.")

    script = [
        response(None, [function_call(TOOL, {"code": plot, "timeout": None, "install_packages": None})]),
        after_chart,
        response(None, [function_call(TOOL, {"code": "squares", "timeout": None, "install_packages": None})]),
        after_recall,
    ]
    interp = CodeInterpreter(make_settings(runtime_dir=sandbox_runtime.root))
    tool = make_tool(interp, user_id=8, session_id="conv-8")

    def sync_app(base_url: str, prompt: str) -> Any:
        """A sync program: one run on its thread's default loop (which stops after it), its client closed."""
        client = AsyncOpenAI(base_url=base_url, api_key="sk-test")
        agent = Agent(name="plotter", model=OpenAIResponsesModel("gpt-4o", client), tools=[tool])
        try:
            return Runner.run_sync(agent, prompt, run_config=NO_TRACING)
        finally:
            asyncio.get_event_loop_policy().get_event_loop().run_until_complete(client.close())

    # Two runs, each on a loop of its own thread that is closed afterwards (a second run_sync on the same
    # thread would do too, but the SDK flushes async generators after each run and the openai client's
    # next one then warns): the interpreter's loop must outlive them all.
    with ScriptedOpenAI(script) as server:
        try:
            first = run_in_thread(lambda: sync_app(server.base_url, "Plot the squares."))
            second = run_in_thread(lambda: sync_app(server.base_url, "Which squares?"))
        finally:
            private = interp.loop
            close_tool(tool)
    assert first.final_output == "A parabola." and second.final_output == "The squares are 0 to 25."
    assert server.paths == ["/v1/responses"] * 4
    assert private is not None and private.is_closed() and interp.loop is None
    assert json.dumps(seen[0]["tools"][0]["parameters"]) == json.dumps(load_schema(TOOL)["parameters"])
