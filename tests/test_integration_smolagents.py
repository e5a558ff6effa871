"""smolagents' CodeAgent runs its code steps through SandboxExecutor, driven by a scripted Model.

The model is a :class:`smolagents.Model` subclass that answers from a script and records every
message list it is given, so each assertion is about what the model was shown (observations,
errors) or what the agent returned (its final answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from smolagents import CodeAgent, Model, Tool, tool
from smolagents.models import ChatMessage, MessageRole
from smolagents.monitoring import LogLevel

from code_interpreter.errors import ConfigurationError
from code_interpreter.integrations.smolagents import SandboxExecutor
from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings


class ScriptedModel(Model):
    """Answers each step with the next scripted text; keeps what it was shown."""

    def __init__(self, steps: list[str]) -> None:
        super().__init__(model_id="scripted")
        self.steps = list(steps)
        self.shown: list[str] = []

    def generate(self, messages: list[Any], stop_sequences: Any = None, **kwargs: Any) -> ChatMessage:
        last = messages[-1]
        content = last.content if isinstance(last.content, str) else last.content[-1]["text"]
        self.shown.append(str(content))
        return ChatMessage(role=MessageRole.ASSISTANT, content=self.steps.pop(0))


def step(code: str) -> str:
    return f"Thought: next.\n<code>\n{code}\n</code>"


@tool
def celsius(fahrenheit: float) -> float:
    """Convert degrees Fahrenheit to degrees Celsius.

    Args:
        fahrenheit: the temperature in degrees Fahrenheit
    """
    return (fahrenheit - 32) * 5 / 9


class WebSearch(Tool):
    """A tool holding a host object (its client): it cannot be rebuilt inside the sandbox."""

    name = "web_search"
    description = "Search the web."
    inputs = {"query": {"type": "string", "description": "what to search for"}}
    output_type = "string"

    def __init__(self, client: Callable[[str], str]) -> None:
        super().__init__()
        self.client = client

    def forward(self, query: str) -> str:
        return self.client(query)


def agent_with(interp: CodeInterpreter, executor: SandboxExecutor, steps: list[str]) -> CodeAgent:
    return CodeAgent(
        tools=[celsius, WebSearch(lambda q: "host result")],
        model=ScriptedModel(steps),
        executor=executor,
        max_steps=8,
        verbosity_level=LogLevel.OFF,
    )


def test_code_steps_share_a_session_in_the_sandbox(
    make_settings: Callable[..., Settings], sandbox_runtime: Any
) -> None:
    interp = CodeInterpreter(make_settings(runtime_dir=sandbox_runtime.root))
    executor = SandboxExecutor(interp, user_id=21)
    first_run = [
        step("boiling = celsius(212)\nimport os\nprint('boiling', boiling, 'uid', os.getuid(), 'n', limit)"),
        step("def scale(v):\n    return v / 0\n\nscale(boiling)"),
        step("print('still', boiling)\nweb_search(query='weather')"),
        step("final_answer({'boiling': boiling, 'runs': [1]})"),
    ]
    agent = agent_with(interp, executor, first_run)
    model = agent.model
    assert isinstance(model, ScriptedModel)
    with agent:
        answer = agent.run("Convert 212 F.", additional_args={"limit": 3})
        assert answer == {"boiling": 100.0, "runs": [1]}
        sandbox_uid = interp.settings.sandbox_uid if interp.isolation[0] == "strict" else None
        step1, step2, step3 = model.shown[1:4]
        assert "boiling 100.0 uid" in step1 and "n 3" in step1, step1
        if sandbox_uid is not None:  # strict mode: the step ran as the sandbox's uid, not the host's
            assert f"uid {sandbox_uid} " in step1, step1
        assert "Traceback (most recent call last)" in step2, step2
        assert "ZeroDivisionError: float division by zero" in step2, step2
        assert "line 2, in scale" in step2, step2
        assert "still 100.0" in step3  # the state of step 1, two steps later
        assert "the tool 'web_search' cannot run in this sandbox" in step3, step3
        assert "__init__ must have default values" in step3, step3
        assert set(executor.refused_tools) == {"web_search"}

        # A second run of the same agent continues the same session.
        model.steps = [step("print('again', boiling * 2)"), step("final_answer(boiling * 2)")]
        assert agent.run("Double it.", reset=False) == 200.0
        assert "again 200.0" in model.shown[-1], model.shown[-1]
        live = asyncio.run_coroutine_threadsafe(interp.sessions.list(21), interp.loop).result()  # type: ignore[arg-type]
        assert [s["id"] for s in live] == [executor.session_id]
        private = interp.loop
    # Leaving the agent ended the session it made and closed the executor's own loop.
    assert private is not None and private.is_closed() and interp.loop is None


async def test_the_model_cannot_reach_another_users_files(interp: CodeInterpreter) -> None:
    mine = await interp.files.upload_file(22, b"n\n1\n2\n", "mine.csv")
    theirs = await interp.files.upload_file(23, b"secret\n", "theirs.txt")
    executor = SandboxExecutor(interp, user_id=22, session_id="conv-22")
    steps = [
        step(f"print(sorted(FILES), load_file({mine['file_id']!r}).n.sum())"),
        step(f"print(load_file({theirs['file_id']!r}))"),
        step("final_answer('done')"),
    ]
    agent = agent_with(interp, executor, steps)
    with pytest.raises(ConfigurationError, match="worker thread"):
        agent.run("Read the files.")  # sync on the interpreter's own loop would block it: refused
    agent.model.steps = steps  # type: ignore[attr-defined]
    assert await asyncio.to_thread(agent.run, "Read the files.") == "done"
    shown = agent.model.shown  # type: ignore[attr-defined]
    assert f"['{mine['file_id']}'] 3" in shown[-2], shown[-2]
    assert "secret" not in shown[-1] and "Error" in shown[-1], shown[-1]
    await asyncio.to_thread(executor.cleanup)
    # A session the host named is the conversation's: cleanup keeps it.
    assert [s["id"] for s in await interp.sessions.list(22)] == ["conv-22"]
