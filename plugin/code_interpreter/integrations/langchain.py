"""LangChain tools built from the canonical JSON schema: ``make_tools(interp, context)``.

The tool is a langchain-core :class:`~langchain_core.tools.BaseTool` whose ``args_schema`` is the
JSON schema of ``tool_schemas/execute_python_code.json`` (the single source of truth; the
dispatcher validates the arguments against it). Invoked with a ``ToolCall`` it returns a
``ToolMessage``: the same compact text the dispatcher gives OpenAI models (plus the charts as
LangChain image blocks when ``ToolContext.wants_images``), ``status="error"`` when the call was
refused or the code failed, and ``artifact`` = the full :class:`~code_interpreter.tools.ToolResult`
with the call's id (generated file bytes included) for the host.

One tool, any caller. The interpreter's database client and sandbox pipes belong to the event loop
it was started on (:attr:`CodeInterpreter.loop`), so every call runs the interpreter's coroutines
*there*: directly when the caller is on that loop, else handed over with
``asyncio.run_coroutine_threadsafe`` (awaited with ``asyncio.wrap_future`` from another loop,
waited for from sync code in any thread). An interpreter not started yet is started on the
caller's loop (``ainvoke``), or, for sync callers, on a private background loop owned by the tools
(:func:`close_tools` closes the interpreter and stops it). Sync ``invoke`` *on* the interpreter's
own loop thread would block the very loop it waits for: it raises and says to use ``ainvoke``.
"""

from __future__ import annotations

from collections.abc import Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException
from pydantic import Field

from ..tools import EXECUTE_TOOL, ToolContext, ToolDispatcher, ToolResult, load_schema
from ..tools.schema import describe_state
from ._loop import acall, call, close_private, home, running_loop

if TYPE_CHECKING:
    from ..interpreter import CodeInterpreter

__all__ = ["CodeInterpreterTool", "close_tools", "make_tools"]

# The id of the ToolCall being run: BaseTool hands it to run()/arun() but not to _run()/_arun().
_CALL_ID: ContextVar[str | None] = ContextVar("code_interpreter_tool_call_id", default=None)


def _image_blocks(images: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """LangChain standard image blocks from the ``image_url`` parts (``data:`` URLs) of a result."""
    blocks: list[dict[str, Any]] = []
    for part in images:
        url = str((part.get("image_url") or {}).get("url") or "")
        head, _, data = url.partition(",")
        if head.startswith("data:") and head.endswith(";base64") and data:
            blocks.append({"type": "image", "base64": data, "mime_type": head[5:-7]})
    return blocks


def _definition() -> dict[str, Any]:
    return load_schema(EXECUTE_TOOL)


def _args_schema() -> dict[str, Any]:
    d = _definition()
    return dict(d["parameters"], title=d["name"], description=d["description"])


class CodeInterpreterTool(BaseTool):
    """``execute_python_code`` as a LangChain tool over a CodeInterpreter (sync and async).

    ``CodeInterpreterTool(interp=interp, context=ToolContext(user_id=…))``; name, description and
    arguments come from the canonical schema.
    """

    name: str = EXECUTE_TOOL
    description: str = Field(default_factory=lambda: str(_definition()["description"]))
    args_schema: Any = Field(default_factory=_args_schema)
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    interp: Any
    """The CodeInterpreter the code runs on (started or not)."""
    context: ToolContext
    """Who the user is and what they may do (from the host, never from the model)."""
    dispatcher: ToolDispatcher | None = None
    """Validates the arguments against the canonical schema and runs the call (default: one over interp)."""

    # -- where the call id comes in ----------------------------------------------------
    def run(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        """BaseTool.run, with the ToolCall's id made available to the tool."""
        token = _CALL_ID.set(kwargs.get("tool_call_id"))
        try:
            return super().run(tool_input, *args, **kwargs)
        finally:
            _CALL_ID.reset(token)

    async def arun(self, tool_input: Any, *args: Any, **kwargs: Any) -> Any:
        """BaseTool.arun, with the ToolCall's id made available to the tool."""
        token = _CALL_ID.set(kwargs.get("tool_call_id"))
        try:
            return await super().arun(tool_input, *args, **kwargs)
        finally:
            _CALL_ID.reset(token)

    # -- the call ------------------------------------------------------------------------
    def _dispatch(self, args: dict[str, Any], call_id: str | None) -> Coroutine[Any, Any, ToolResult]:
        # Arguments go through the dispatcher as they are, so extra keys (e.g. user_id) are refused there.
        dispatcher = self.dispatcher or ToolDispatcher(self.interp)
        return dispatcher.dispatch({"name": self.name, "args": args, "id": call_id or ""}, self.context)

    async def _arun(self, **kwargs: Any) -> tuple[Any, ToolResult]:
        call_id = _CALL_ID.get()
        result = await acall(
            self.interp, lambda: self._dispatch(kwargs, call_id), claim_caller=True, what=EXECUTE_TOOL
        )
        return self._output(result, call_id)

    def _run(self, **kwargs: Any) -> tuple[Any, ToolResult]:
        call_id = _CALL_ID.get()
        if home(self.interp, None) is running_loop():
            raise ToolException(
                f"{EXECUTE_TOOL} was invoked synchronously on the event loop the interpreter runs on, "
                "which would block the loop it waits for; use `await tool.ainvoke(...)` there"
            )
        result = call(
            self.interp,
            lambda: self._dispatch(kwargs, call_id),
            what=EXECUTE_TOOL,
            hint="use `await tool.ainvoke(...)` there",
        )
        return self._output(result, call_id)

    def _output(self, result: ToolResult, call_id: str | None) -> tuple[Any, ToolResult]:
        """(content, artifact) — the content a ToolMessage with the call's id and status, for a ToolCall."""
        blocks = _image_blocks(result.images)
        content: str | list[Any] = (
            [{"type": "text", "text": result.content}, *blocks] if blocks else result.content
        )
        if not call_id:
            return content, result
        status: Literal["success", "error"] = "error" if result.is_error else "success"
        message = ToolMessage(content, artifact=result, tool_call_id=call_id, name=self.name, status=status)
        return message, result


def make_tools(
    interp: CodeInterpreter, context: ToolContext, *, dispatcher: ToolDispatcher | None = None
) -> list[BaseTool]:
    """LangChain tools (sync and async, any thread, any order) for ``interp``, bound to ``context``.

    Args:
        interp: the CodeInterpreter the tools run code on (started or not).
        context: who the user is and what they may do (from the host, never from the model).
        dispatcher: reuse a ToolDispatcher (default: a new one over ``interp``).
    """
    versions = interp.packages.runtime_versions()
    description = describe_state(_definition(), sessions=context.session_id is not None, versions=versions)
    tool = CodeInterpreterTool(
        interp=interp,
        context=context,
        dispatcher=dispatcher or ToolDispatcher(interp),
        description=description,
    )
    return [tool]


def close_tools(tools: list[BaseTool]) -> None:
    """Close the interpreter the tools started on their private loop, and stop that loop (safe always)."""
    for t in tools:
        interp = getattr(t, "interp", None)
        if interp is not None:
            close_private(interp)
