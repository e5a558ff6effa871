"""LangChain tools built from the canonical JSON schema: ``make_tools(interp, context)``.

The tools return ``(content, artifact)``: the ToolMessage content is the same compact text the
dispatcher gives OpenAI models, and ``ToolMessage.artifact`` is the full
:class:`~code_interpreter.tools.ToolResult` (generated file bytes included) for the host.

Sync and async: ``ainvoke`` runs on the caller's event loop. ``invoke`` (sync) submits the call to
the event loop the interpreter lives on (pymongo's async client and the sandbox's pipes are bound
to one loop) — the loop it was first used on through these tools, or ``loop=`` — and waits; called
from a thread with no such loop it runs the interpreter on a private background loop owned by the
tools (stop it with :func:`close_tools`). Calling ``invoke`` *on* the interpreter's loop thread would
deadlock, so it raises and tells you to use ``ainvoke``.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from langchain_core.tools import BaseTool, StructuredTool, ToolException

from ..tools import EXECUTE_TOOL, ToolContext, ToolDispatcher, ToolResult, load_schema

if TYPE_CHECKING:
    from ..interpreter import CodeInterpreter

__all__ = ["close_tools", "make_tools"]


class _LoopBinding:
    """Which event loop the interpreter runs on, and a private one for sync-only callers."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self._own: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def remember(self) -> None:
        if self.loop is None or self.loop.is_closed():
            self.loop = asyncio.get_running_loop()

    def target(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self.loop is not None and not self.loop.is_closed() and self.loop.is_running():
                return self.loop
            if self._own is None:
                self._own = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._own.run_forever, name="code-interpreter-langchain", daemon=True
                )
                self._thread.start()
            self.loop = self._own
            return self._own

    def close(self) -> None:
        with self._lock:
            own, thread = self._own, self._thread
            self._own = self._thread = None
        if own is not None and thread is not None:
            own.call_soon_threadsafe(own.stop)
            thread.join(10)
            own.close()


def make_tools(
    interp: CodeInterpreter,
    context: ToolContext,
    *,
    dispatcher: ToolDispatcher | None = None,
    loop: asyncio.AbstractEventLoop | None = None,
) -> list[BaseTool]:
    """LangChain tools (sync and async) for ``interp``, bound to the trusted ``context``.

    Args:
        interp: the CodeInterpreter the tools run code on.
        context: who the user is and what they may do (from the host, never from the model).
        dispatcher: reuse a ToolDispatcher (default: a new one over ``interp``).
        loop: the event loop ``interp`` runs on, for sync ``invoke`` from other threads
            (default: the running loop when called from async code, else learned on first ``ainvoke``).
    """
    dispatcher = dispatcher or ToolDispatcher(interp)
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    binding = _LoopBinding(loop)
    definition = load_schema(EXECUTE_TOOL)
    args_schema = dict(
        definition["parameters"], title=definition["name"], description=definition["description"]
    )

    async def call(**kwargs: Any) -> tuple[str, ToolResult]:
        binding.remember()
        # Arguments go through the dispatcher as-is so extra keys (e.g. user_id) are refused there.
        result = await dispatcher.dispatch({"name": EXECUTE_TOOL, "args": kwargs, "id": ""}, context)
        return result.content, result

    def call_sync(**kwargs: Any) -> tuple[str, ToolResult]:
        target = binding.target()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is target:
            raise ToolException(
                f"{EXECUTE_TOOL} was invoked synchronously on the event loop the interpreter runs on; "
                "use `await tool.ainvoke(...)` there"
            )
        return asyncio.run_coroutine_threadsafe(call(**kwargs), target).result()

    tool = StructuredTool.from_function(
        func=call_sync,
        coroutine=call,
        name=definition["name"],
        description=definition["description"],
        args_schema=args_schema,
        response_format="content_and_artifact",
    )
    tool.metadata = {"code_interpreter_binding": binding}
    return [tool]


def close_tools(tools: list[BaseTool]) -> None:
    """Stop the private background loop that sync-only use may have started (safe to call always)."""
    for t in tools:
        binding = (t.metadata or {}).get("code_interpreter_binding")
        if isinstance(binding, _LoopBinding):
            binding.close()
