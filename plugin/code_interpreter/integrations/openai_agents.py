"""The OpenAI Agents SDK: ``execute_python_code`` as a ``FunctionTool``: ``make_tool(interp, user_id=…)``.

Needs the optional extra: ``pip install 'code-interpreter[openai-agents]'``.

The tool's name, description and parameters are the canonical schema
(``tool_schemas/execute_python_code.json``, strict), and every call goes through the
:class:`~code_interpreter.tools.ToolDispatcher`, as for the other frameworks: the same argument
validation (an injected ``user_id`` is refused), the same token-bounded text, tracebacks included.
The user and the session come from the host when the tool is made, never from the model. With a
``session_id`` the calls share one live session (one per conversation); without, each starts fresh.

Charts come back as ``ToolOutputImage`` parts after the text: the Responses API shows them to the
model; the SDK's Chat Completions converter keeps the text only (tool messages take no images).

The tool works under ``Runner.run`` and ``Runner.run_sync``. The interpreter's coroutines run on
the loop it lives on (see :mod:`._loop`): an interpreter started by the host (``async with``) stays
on the host's loop; one not started yet is started on a background loop of the tool's own, which
:func:`close_tool` closes — ``run_sync`` runs each call on a loop that stops between runs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

try:
    from agents import FunctionTool
    from agents.tool import ToolOutputImage, ToolOutputText
    from agents.tool_context import ToolContext as AgentsToolContext
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        "code_interpreter.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install 'code-interpreter[openai-agents]'"
    ) from exc

from ..errors import ConfigurationError
from ..tools import EXECUTE_TOOL, ToolContext, ToolDispatcher, ToolResult, load_schema
from ..tools.render import supports_vision
from ..tools.schema import describe_state
from ._loop import acall, close_private

if TYPE_CHECKING:
    from ..interpreter import CodeInterpreter

__all__ = ["close_tool", "make_tool"]


def _model_name(ctx: AgentsToolContext[Any]) -> str | None:
    """The model serving this run, when the SDK says: the run's override, else the agent's."""
    run_config = getattr(ctx, "run_config", None)
    agent = getattr(ctx, "agent", None)
    for model in (getattr(run_config, "model", None), getattr(agent, "model", None)):
        if isinstance(model, str) and model:
            return model
        name = getattr(model, "model", None)  # OpenAIResponsesModel / OpenAIChatCompletionsModel
        if isinstance(name, str) and name:
            return name
    return None


class _Invoke:
    """The tool's ``on_invoke_tool``: one call, from the SDK's tool context and the model's JSON arguments."""

    def __init__(self, interp: CodeInterpreter, context: ToolContext, dispatcher: ToolDispatcher) -> None:
        self.interp = interp
        self.context = context
        self.dispatcher = dispatcher

    async def __call__(self, ctx: AgentsToolContext[Any], arguments: str) -> Any:
        # The arguments go to the dispatcher as the model sent them: extra keys (user_id) are refused there.
        call = {
            "type": "function_call",
            "call_id": getattr(ctx, "tool_call_id", "") or "",
            "name": EXECUTE_TOOL,
            "arguments": arguments,
        }
        context = self.context
        if context.attach_images is None and context.model is None:
            name = _model_name(ctx)
            context = dataclasses.replace(context, attach_images=supports_vision(name) if name else True)
        result = await acall(
            self.interp,
            lambda: self.dispatcher.dispatch(call, context),
            claim_caller=False,
            what=EXECUTE_TOOL,
        )
        return _output(result)


def _output(result: ToolResult) -> str | list[ToolOutputText | ToolOutputImage]:
    """The text alone, or the text then one ``ToolOutputImage`` per chart (``data:`` URLs)."""
    if not result.images:
        return result.content
    parts: list[ToolOutputText | ToolOutputImage] = [ToolOutputText(text=result.content)]
    for part in result.images:
        ref = part.get("image_url") or {}
        parts.append(ToolOutputImage(image_url=str(ref.get("url")), detail=ref.get("detail") or "auto"))
    return parts


def make_tool(
    interp: CodeInterpreter,
    user_id: int | str | None = None,
    session_id: str | None = None,
    *,
    context: ToolContext | None = None,
    dispatcher: ToolDispatcher | None = None,
) -> FunctionTool:
    """``execute_python_code`` as an Agents SDK ``FunctionTool`` for one user (and conversation).

    Args:
        interp: the CodeInterpreter the code runs on (started or not; see the module notes).
        user_id: whose files and quotas apply (from the host, never from the model).
        session_id: a conversation id: its calls share one live session; None: each call starts fresh.
        context: a full :class:`~code_interpreter.ToolContext` instead of ``user_id``/``session_id``
            (allowed files, timeout cap, packages, images).
        dispatcher: reuse a ToolDispatcher (default: a new one over ``interp``).

    Raises:
        ConfigurationError: neither or both of ``user_id`` and ``context`` were given.
    """
    if (context is None) == (user_id is None):
        raise ConfigurationError(
            "make_tool needs the user: pass user_id=... (and session_id=... for a conversation), or "
            "context=ToolContext(...), not both"
        )
    if context is None:
        assert user_id is not None
        context = ToolContext(user_id=user_id, session_id=session_id)
    elif session_id is not None:
        raise ConfigurationError("pass session_id inside context=ToolContext(..., session_id=...)")
    definition = load_schema(EXECUTE_TOOL)
    return FunctionTool(
        name=definition["name"],
        description=describe_state(definition, sessions=context.session_id is not None),
        params_json_schema=definition["parameters"],
        on_invoke_tool=_Invoke(interp, context, dispatcher or ToolDispatcher(interp)),
        strict_json_schema=bool(definition.get("strict", True)),
    )


def close_tool(tool: FunctionTool) -> None:
    """Close the interpreter the tool started on its own background loop, and stop that loop (safe always).

    An interpreter the host started (``async with CodeInterpreter()``) is the host's to close.
    """
    invoke = tool.on_invoke_tool
    if isinstance(invoke, _Invoke):
        close_private(invoke.interp)
