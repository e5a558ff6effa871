"""pydantic-ai runs the toolset: an Agent with its FunctionModel, which decides each step from what it saw.

Each scripted step reads the tool's last result from the message history pydantic-ai built (the
``ToolReturnPart``, its ``outcome`` and content), so the assertions are about what the model saw.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import (
    BinaryImage,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel

from code_interpreter.errors import ConfigurationError
from code_interpreter.integrations.pydantic_ai import CodeInterpreterToolset, context_from_deps
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from code_interpreter.tools import ToolContext, ToolResult, load_schema
from code_interpreter.tools.schema import describe_state

TOOL = "execute_python_code"
PNG = b"\x89PNG\r\n\x1a\n"


class Script:
    """A FunctionModel function: call the tool with each scripted argument dict, then answer ``final``."""

    def __init__(self, calls: list[dict[str, Any]], final: str) -> None:
        self.calls = list(calls)
        self.final = final
        self.returns: list[ToolReturnPart] = []
        self.descriptions: list[str] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.descriptions.append(info.function_tools[0].description or "")
        last = messages[-1]
        if isinstance(last, ModelRequest):
            self.returns += [p for p in last.parts if isinstance(p, ToolReturnPart)]
        if self.calls:
            return ModelResponse(parts=[ToolCallPart(TOOL, self.calls.pop(0))])
        return ModelResponse(parts=[TextPart(self.final)])


def text(part: ToolReturnPart) -> str:
    return part.content if isinstance(part.content, str) else str(part.content[0])


async def test_state_tracebacks_charts_and_an_injected_user(interp: CodeInterpreter) -> None:
    secret = await interp.files.upload_file(51, b"not yours\n", "secret.txt")
    chart = "import matplotlib.pyplot as plt\nplt.plot(values)\nplt.savefig('line.png')\nprint(len(values))"
    script = Script(
        [
            {"code": "values = [2, 4, 8]\nprint(sum(values))", "timeout": None, "install_packages": None},
            {"code": "print(max(values) * 10)"},  # a model without strict mode may omit the nullable keys
            {"code": "def f(v):\n    return v[10]\n\nf(values)"},
            {"code": f"print(open('secret.txt').read(), {secret['file_id']!r})", "user_id": 51},
            {"code": chart},
        ],
        final="Sum 14, max 80.",
    )
    toolset = CodeInterpreterToolset(interp)
    agent = Agent(FunctionModel(script), deps_type=ToolContext, toolsets=[toolset])
    deps = ToolContext(user_id=50, session_id="conv-50", attach_images=True)
    result = await agent.run("Sum and plot.", deps=deps)
    assert result.output == "Sum 14, max 80."
    assert script.descriptions[0] == describe_state(load_schema(TOOL), sessions=True)
    first, later, failed, injected, plotted = script.returns
    assert first.outcome == "success" and "14" in text(first)
    assert later.outcome == "success" and "80" in text(later)  # the variable of the first call
    assert isinstance(later.metadata, ToolResult) and later.metadata.result["session"]["cell"] == 2
    assert failed.outcome == "failed"
    for needle in ("Traceback (most recent", "IndexError: list index out of range", "line 2, in f"):
        assert needle in text(failed), text(failed)
    assert injected.outcome == "failed" and "unexpected argument(s) 'user_id'" in text(injected)
    assert "not yours" not in text(injected)
    assert plotted.outcome == "success" and isinstance(plotted.content, list)
    [image] = [p for p in plotted.content if isinstance(p, BinaryImage)]
    assert image.media_type == "image/png" and image.data.startswith(PNG)
    assert "line.png" in text(plotted)

    one_shot = Script([{"code": "print(values)"}], final="ok")
    await Agent(FunctionModel(one_shot), toolsets=[toolset]).run("Again?", deps={"user_id": 50})
    assert one_shot.descriptions[0] == describe_state(load_schema(TOOL), sessions=False)
    assert "NameError" in text(one_shot.returns[0])  # no session named: the call started fresh


def test_the_user_comes_from_deps_only() -> None:
    given = ToolContext(user_id=1, session_id="s", max_timeout=5)
    assert context_from_deps(given) is given
    assert context_from_deps({"user_id": "ana", "session_id": "c"}) == ToolContext("ana", "c")

    class Deps:
        user_id = 7
        db = object()

    assert context_from_deps(Deps()) == ToolContext(user_id=7)
    for bad in (None, {}, {"user_id": True}, object()):
        with pytest.raises(ConfigurationError, match=r"deps=ToolContext\(user_id=\.\.\."):
            context_from_deps(bad)


def test_run_sync_twice_on_a_toolset_that_starts_the_interpreter(
    make_settings: Callable[..., Settings], sandbox_runtime: Any
) -> None:
    interp = CodeInterpreter(make_settings(runtime_dir=sandbox_runtime.root))
    toolset = CodeInterpreterToolset(interp)
    scripts = [Script([{"code": "n = 6 * 7"}], final="stored"), Script([{"code": "print(n)"}], final="shown")]
    outputs: list[str] = []

    def sync_app() -> None:
        """Two runs; pydantic-ai's run_sync drives this thread's default loop, which stops between them."""
        try:
            for script in scripts:
                agent = Agent(FunctionModel(script), deps_type=ToolContext, toolsets=[toolset])
                deps = ToolContext(user_id=52, session_id="conv-52")
                outputs.append(agent.run_sync("go", deps=deps).output)
        finally:  # run_sync leaves that loop open for later runs; the test must not leave it to the GC
            asyncio.get_event_loop_policy().get_event_loop().close()
            asyncio.set_event_loop(None)

    thread = threading.Thread(target=sync_app)
    try:
        thread.start()
        thread.join(300)
        assert not thread.is_alive()
    finally:
        private = interp.loop
        toolset.close()
    assert outputs == ["stored", "shown"]
    assert "42" in text(scripts[1].returns[0]), text(scripts[1].returns[0])
    assert private is not None and private.is_closed() and interp.loop is None
