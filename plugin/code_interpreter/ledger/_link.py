"""What asked for an execution: the tool call and the model request, carried from the dispatcher.

The dispatcher knows each tool call's id and (from :class:`~code_interpreter.tools.ToolContext`)
the model request whose answer asked for it; the run path that measures the execution does not.
:func:`linked` sets them for the duration of one execution (a :mod:`contextvars` variable, so
concurrent tool calls, each in its own task, never see each other's), and
``UsageStore.record_execution`` fills a record's missing ids from :func:`current_link`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

__all__ = ["ExecutionLink", "current_link", "linked"]


@dataclass(frozen=True, slots=True)
class ExecutionLink:
    """The ids that link an execution's usage record to the conversation that asked for it."""

    tool_call_id: str | None = None
    """The model's tool call id (``tool_call_id`` / ``call_id``)."""
    request_id: str | None = None
    """The id of the model request whose answer made the call (the token_usage record's ``_id``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return {"tool_call_id": self.tool_call_id, "request_id": self.request_id}


_EMPTY = ExecutionLink()
_CURRENT: ContextVar[ExecutionLink] = ContextVar("code_interpreter_execution_link", default=_EMPTY)


def current_link() -> ExecutionLink:
    """The link of the execution running in this task (empty outside a dispatched tool call)."""
    return _CURRENT.get()


@contextmanager
def linked(link: ExecutionLink) -> Iterator[ExecutionLink]:
    """Make ``link`` the :func:`current_link` inside the ``with`` block (this task and tasks it starts)."""
    token = _CURRENT.set(link)
    try:
        yield link
    finally:
        _CURRENT.reset(token)
