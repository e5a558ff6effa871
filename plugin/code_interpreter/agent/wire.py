"""How the loop speaks each OpenAI API: the request, the reply it reads, the items it appends.

Chat Completions (``api="chat"``): the history is a list of messages; a reply is one assistant
message whose ``tool_calls`` are answered by ``tool`` messages; tool messages take text only, so
images for a vision model follow in one ``user`` message (:func:`~code_interpreter.tools.images_message`).

Responses (``api="responses"``): the history is a list of input items; the reply's ``output`` items
(assistant messages, reasoning, ``function_call``) are appended as they came, and each
``function_call`` is answered by a ``function_call_output`` item with the same ``call_id`` —
whose ``output`` carries the images for a vision model as ``input_image`` parts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import openai

from ..tools import ToolResult, images_message, tool_definitions

__all__ = ["API_NAMES", "Api", "ChatWire", "ResponsesWire", "Turn", "Wire", "wire_for"]

Api = Literal["chat", "responses"]
API_NAMES: tuple[Api, ...] = ("chat", "responses")
Items = list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Turn:
    """One model reply, read the same way for both APIs."""

    items: list[dict[str, Any]]
    """What to append to the history: the assistant message, or the output items."""
    calls: list[Any]
    """The tool calls to dispatch (SDK objects the dispatcher reads)."""
    text: str
    """The reply's text."""
    usage: dict[str, Any] | None
    """The API's usage, as it reported it."""
    finish_reason: str | None
    """Why the model stopped."""


class Wire(Protocol):
    """One API's request and reply shapes."""

    api: Api

    def tools(
        self, sessions: bool = False, versions: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """The default tool definitions for this API (their description says whether state persists and
        which Python, pandas and numpy versions the code runs on)."""
        ...

    def request(
        self,
        history: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        tool_choice: str | None,
        max_out: int | None,
    ) -> dict[str, Any]:
        """Keyword arguments for the SDK's create call (model and caller's options added by the loop)."""
        ...

    async def create(self, client: openai.AsyncOpenAI, model: str, kwargs: dict[str, Any]) -> Any:
        """Send one request."""
        ...

    def read(self, response: Any) -> Turn:
        """Read one reply."""
        ...

    def answers(self, results: Sequence[ToolResult]) -> list[dict[str, Any]]:
        """The items that answer a round's tool calls, in order."""
        ...


def _usage(response: Any) -> dict[str, Any] | None:
    usage = getattr(response, "usage", None)
    return usage.model_dump(exclude_none=True) if usage is not None else None


def _request(
    history: dict[str, Any],
    tools: list[dict[str, Any]],
    tool_choice: str | None,
    max_out: dict[str, int | None],
) -> dict[str, Any]:
    """The request's keyword arguments: the history, the tools and their choice (only with tools), the
    output cap (only when set); each API names the history and the cap its own way."""
    kwargs = dict(history)
    if tools:
        kwargs["tools"] = tools
        if tool_choice:
            kwargs["tool_choice"] = tool_choice
    kwargs.update({k: v for k, v in max_out.items() if v is not None})
    return kwargs


class ChatWire:
    """Chat Completions: ``client.chat.completions.create``."""

    api: Api = "chat"

    def tools(
        self, sessions: bool = False, versions: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Tools in the Chat Completions shape."""
        return tool_definitions("chat", sessions=sessions, versions=versions)

    def request(
        self,
        history: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        tool_choice: str | None,
        max_out: int | None,
    ) -> dict[str, Any]:
        """``messages``, ``tools``, ``tool_choice``, ``max_completion_tokens``."""
        return _request({"messages": history}, tools, tool_choice, {"max_completion_tokens": max_out})

    async def create(self, client: openai.AsyncOpenAI, model: str, kwargs: dict[str, Any]) -> Any:
        """``chat.completions.create``."""
        return await client.chat.completions.create(model=model, **kwargs)

    def read(self, response: Any) -> Turn:
        """The first choice's assistant message."""
        choice = response.choices[0]
        msg = choice.message
        item: dict[str, Any] = {"role": "assistant", "content": msg.content}
        calls = list(msg.tool_calls or [])
        if calls:
            item["tool_calls"] = [
                {
                    "id": tc.id,
                    "type": "function",
                    "function": {"name": tc.function.name, "arguments": tc.function.arguments},
                }
                for tc in calls
            ]
        return Turn([item], calls, msg.content or "", _usage(response), choice.finish_reason)

    def answers(self, results: Sequence[ToolResult]) -> list[dict[str, Any]]:
        """One tool message per call, then one user message with the round's images (if any)."""
        out = [r.message for r in results]
        followup = images_message(results, api="chat")
        return [*out, followup] if followup is not None else out


class ResponsesWire:
    """The Responses API: ``client.responses.create``, the whole history sent each round."""

    api: Api = "responses"

    def tools(
        self, sessions: bool = False, versions: Mapping[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Tools in the Responses shape (flat function definitions)."""
        return tool_definitions("responses", sessions=sessions, versions=versions)

    def request(
        self,
        history: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        tool_choice: str | None,
        max_out: int | None,
    ) -> dict[str, Any]:
        """``input``, ``tools``, ``tool_choice``, ``max_output_tokens``."""
        return _request({"input": history}, tools, tool_choice, {"max_output_tokens": max_out})

    async def create(self, client: openai.AsyncOpenAI, model: str, kwargs: dict[str, Any]) -> Any:
        """``responses.create`` (not streamed)."""
        return await client.responses.create(model=model, stream=False, **kwargs)

    def read(self, response: Any) -> Turn:
        """Every output item (reasoning included: a reasoning model needs it back), and the calls."""
        output = list(response.output or [])
        # As the API sent them (its field names, nothing it left out): valid input items again.
        items = [o.to_dict(mode="json", exclude_none=True) for o in output]
        calls = [o for o in output if getattr(o, "type", None) == "function_call"]
        if calls:
            finish = "tool_calls"
        elif response.status == "incomplete":
            details = response.incomplete_details
            finish = (details.reason if details is not None else None) or "incomplete"
        else:
            finish = "stop" if response.status == "completed" else response.status
        return Turn(items, calls, response.output_text, _usage(response), finish)

    def answers(self, results: Sequence[ToolResult]) -> list[dict[str, Any]]:
        """One ``function_call_output`` per call (images inside it when the host asked for them)."""
        return [r.output_item for r in results]


def wire_for(api: str) -> Wire:
    """The wire of ``api``.

    Raises:
        ValueError: ``api`` is neither ``"chat"`` nor ``"responses"``.
    """
    if api == "chat":
        return ChatWire()
    if api == "responses":
        return ResponsesWire()
    raise ValueError(f"api must be 'chat' (Chat Completions) or 'responses' (the Responses API), got {api!r}")
