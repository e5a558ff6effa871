"""pydantic-ai: :class:`CodeInterpreterToolset` registers ``execute_python_code`` on an ``Agent``.

Needs the optional extra: ``pip install 'code-interpreter[pydantic-ai]'``.

``Agent(model, deps_type=ToolContext, toolsets=[CodeInterpreterToolset(interp)])``, then
``agent.run(prompt, deps=ToolContext(user_id=42, session_id="conv-1"))``: who the user is and which
conversation's session the calls share come from the run's dependencies (``RunContext.deps``),
which the host passes — never from the model's arguments. ``deps`` may be a
:class:`~code_interpreter.ToolContext`, any object or mapping with ``user_id`` (and
``session_id``), or anything a ``context=`` function turns into a ToolContext.

The tool's name, description and parameters are the canonical schema (strict); pydantic-ai is told
not to validate the arguments itself, so every call goes through the
:class:`~code_interpreter.tools.ToolDispatcher` as for the other frameworks (an injected ``user_id``
is refused, the text is token-bounded). A successful call returns the text (and the charts as
``BinaryImage`` parts for a vision model) with the full :class:`~code_interpreter.tools.ToolResult`
as the part's ``metadata``; a failed or refused one raises ``ToolFailed`` with the same text (the
traceback), which pydantic-ai sends the model as a failed tool result without spending a retry.

The interpreter's coroutines run on the loop it lives on (see :mod:`._loop`): one the host started
stays on the host's loop; one not started yet is started on a background loop of the toolset's own
(``run_sync`` runs each call on a loop that ends with it), which :meth:`CodeInterpreterToolset.close`
closes.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

try:
    from pydantic_ai import RunContext
    from pydantic_ai.exceptions import ToolFailed
    from pydantic_ai.messages import BinaryImage, ToolReturn
    from pydantic_ai.tools import Tool, ToolDefinition
    from pydantic_ai.toolsets import FunctionToolset
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the extra
    raise ImportError(
        "code_interpreter.integrations.pydantic_ai needs pydantic-ai: "
        "pip install 'code-interpreter[pydantic-ai]'"
    ) from exc

from ..errors import ConfigurationError
from ..tools import EXECUTE_TOOL, ToolContext, ToolDispatcher, ToolResult, load_schema
from ..tools.schema import describe_state
from ._loop import acall, close_private

if TYPE_CHECKING:
    from ..interpreter import CodeInterpreter

__all__ = ["CodeInterpreterToolset", "context_from_deps"]


def context_from_deps(deps: Any) -> ToolContext:
    """The trusted :class:`ToolContext` of a run, from its ``deps``.

    A ToolContext is used as it is; otherwise ``user_id`` and ``session_id`` are read as attributes
    or mapping keys.

    Raises:
        ConfigurationError: ``deps`` names no user.
    """
    if isinstance(deps, ToolContext):
        return deps
    if isinstance(deps, Mapping):
        user, session = deps.get("user_id"), deps.get("session_id")
    else:
        user, session = getattr(deps, "user_id", None), getattr(deps, "session_id", None)
    if user is None or isinstance(user, bool) or not isinstance(user, int | str):
        raise ConfigurationError(
            f"{EXECUTE_TOOL} needs the user from the run's deps, got {type(deps).__name__}: run the agent "
            "with deps=ToolContext(user_id=..., session_id=...) (or deps with a user_id attribute), or pass "
            "CodeInterpreterToolset(interp, context=lambda deps: ToolContext(...))"
        )
    if session is not None and not isinstance(session, str):
        raise ConfigurationError(
            f"deps.session_id must be a string (a conversation id) or None, got {session!r:.80}"
        )
    return ToolContext(user_id=user, session_id=session)


class CodeInterpreterToolset(FunctionToolset[Any]):
    """A pydantic-ai toolset with ``execute_python_code``; the user and session come from ``RunContext.deps``.

    Args:
        interp: the CodeInterpreter the code runs on (started or not).
        context: turns a run's ``deps`` into the trusted ToolContext (default :func:`context_from_deps`).
        dispatcher: reuse a ToolDispatcher (default: a new one over ``interp``).
        id: the toolset's id (pydantic-ai's, for durable execution).
    """

    def __init__(
        self,
        interp: CodeInterpreter,
        *,
        context: Callable[[Any], ToolContext] = context_from_deps,
        dispatcher: ToolDispatcher | None = None,
        id: str | None = "code-interpreter",
    ) -> None:
        super().__init__(id=id)
        self.interp = interp
        self.context = context
        self.dispatcher = dispatcher or ToolDispatcher(interp)
        self._definition = load_schema(EXECUTE_TOOL)
        tool: Tool[Any] = Tool.from_schema(
            self._call,
            name=self._definition["name"],
            description=self._definition["description"],
            json_schema=self._definition["parameters"],
            takes_ctx=True,
        )
        tool.strict = bool(self._definition.get("strict", True))
        tool.prepare = self._prepare
        self.add_tool(tool)

    async def _prepare(self, ctx: RunContext[Any], definition: ToolDefinition) -> ToolDefinition:
        """The description tells the truth about state: kept in a session, or each call fresh."""
        sessions = self.context(ctx.deps).session_id is not None
        description = describe_state(self._definition, sessions=sessions)
        return dataclasses.replace(definition, description=description)

    async def _call(self, ctx: RunContext[Any], **arguments: Any) -> ToolReturn:
        context = self.context(ctx.deps)
        if context.attach_images is None and context.model is None:
            name = getattr(ctx.model, "model_name", None)
            context = dataclasses.replace(context, model=name if isinstance(name, str) else None)
        # The arguments go to the dispatcher as the model sent them: extra keys (user_id) are refused there.
        call = {"id": ctx.tool_call_id or "", "name": EXECUTE_TOOL, "arguments": arguments}
        dispatch = self.dispatcher.dispatch
        result = await acall(
            self.interp, lambda: dispatch(call, context), claim_caller=False, what=EXECUTE_TOOL
        )
        if result.is_error:
            raise ToolFailed(result.content)
        return ToolReturn(return_value=_value(result), metadata=result)

    def close(self) -> None:
        """Close the interpreter the toolset started on its own background loop, and stop that loop.

        Safe always; an interpreter the host started (``async with CodeInterpreter()``) is the host's.
        """
        close_private(self.interp)


def _value(result: ToolResult) -> str | list[str | BinaryImage]:
    """The text alone, or the text then one ``BinaryImage`` per chart the model should see."""
    images: list[str | BinaryImage] = []
    for part in result.images:
        head, _, data = str((part.get("image_url") or {}).get("url") or "").partition(",")
        if head.startswith("data:") and head.endswith(";base64"):
            images.append(BinaryImage(data=base64.b64decode(data), media_type=head[5:-7]))
    return [result.content, *images] if images else result.content
