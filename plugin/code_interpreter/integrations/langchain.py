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

import asyncio
import threading
import weakref
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException
from pydantic import Field

from ..errors import ConfigurationError
from ..tools import EXECUTE_TOOL, ToolContext, ToolDispatcher, ToolResult, load_schema
from ..tools.schema import describe_state

if TYPE_CHECKING:
    from ..interpreter import CodeInterpreter

__all__ = ["CodeInterpreterTool", "close_tools", "make_tools"]

# The id of the ToolCall being run: BaseTool hands it to run()/arun() but not to _run()/_arun().
_CALL_ID: ContextVar[str | None] = ContextVar("code_interpreter_tool_call_id", default=None)


class _PrivateLoop:
    """An event loop in a daemon thread, for an interpreter whose only callers are synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.loop.call_soon(ready.set)
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="code-interpreter-tools", daemon=True
        )
        self.thread.start()
        ready.wait()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        if not self.thread.is_alive():
            self.loop.close()


_lock = threading.Lock()
# Per interpreter: the loop chosen for it before start() has recorded one, and the tools' own loop.
_claims: weakref.WeakKeyDictionary[CodeInterpreter, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()
_private: weakref.WeakKeyDictionary[CodeInterpreter, _PrivateLoop] = weakref.WeakKeyDictionary()


def _home(interp: CodeInterpreter, claim: asyncio.AbstractEventLoop | None) -> asyncio.AbstractEventLoop:
    """The loop ``interp`` lives on; one not started yet is given ``claim`` (or a private loop)."""
    with _lock:
        loop = interp.loop
        if loop is None:
            loop = _claims.get(interp)
            if loop is None or loop.is_closed():
                if claim is None:
                    own = _private.get(interp)
                    if own is None or own.loop.is_closed():
                        own = _private[interp] = _PrivateLoop()
                    claim = own.loop
                loop = _claims[interp] = claim
    if loop.is_closed():
        raise ConfigurationError(
            "the CodeInterpreter was started on an event loop that has been closed since; await "
            "interp.close() before that loop ends, or create a new CodeInterpreter for these tools"
        )
    return loop


def _running() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _not_running(loop: asyncio.AbstractEventLoop) -> ConfigurationError:
    return ConfigurationError(
        f"the CodeInterpreter's event loop ({loop!r}) is not running, so {EXECUTE_TOOL} cannot run on it; "
        "call the tool while that loop runs (e.g. from a thread beside it), or start the interpreter "
        "on a loop that keeps running"
    )


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
        running = asyncio.get_running_loop()
        home = _home(self.interp, running)
        if home is running:
            result = await self._dispatch(kwargs, call_id)
        elif home.is_running():
            future = asyncio.run_coroutine_threadsafe(self._dispatch(kwargs, call_id), home)
            result = await asyncio.wrap_future(future)
        else:
            raise _not_running(home)
        return self._output(result, call_id)

    def _run(self, **kwargs: Any) -> tuple[Any, ToolResult]:
        call_id = _CALL_ID.get()
        home = _home(self.interp, None)
        if home is _running():
            raise ToolException(
                f"{EXECUTE_TOOL} was invoked synchronously on the event loop the interpreter runs on, "
                "which would block the loop it waits for; use `await tool.ainvoke(...)` there"
            )
        if not home.is_running():
            raise _not_running(home)
        result = asyncio.run_coroutine_threadsafe(self._dispatch(kwargs, call_id), home).result()
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
        if interp is None:
            continue
        with _lock:
            own = _private.pop(interp, None)
            if own is not None and _claims.get(interp) is own.loop:
                del _claims[interp]
        if own is None or own.loop.is_closed():
            continue
        if interp.loop is own.loop:
            asyncio.run_coroutine_threadsafe(interp.close(), own.loop).result(60)
        own.stop()
