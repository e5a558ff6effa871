"""Messages as the model sees them: Chat Completions messages and Responses-API input items.

Per message: 3 tokens of framing, the role, the content, and for a ``name`` its tokens + 1; the
reply is primed with 3 more (the cookbook's rule for every current chat model: 129 tokens on
cl100k models and 124 on o200k for its example).

Tool calls are rendered the way the API's measured counts say the model sees them: a call is a
message whose header is ``assistant to=functions.<name>`` and whose body is the arguments
(3 + header + arguments), and a tool (or legacy function) result is a message whose author is
the called function's name (3 + name + content), the name found through ``tool_call_id``. Those
two rules reproduce every published API measurement we found on cl100k models (see
tests/tokens/test_vectors.py); several calls in one assistant message (parallel calls) go
through a wrapper the API does not publish, so they are counted one by one, with a warning.

Responses-API input items are counted as their Chat Completions equivalent (OpenAI publishes no
measured figures for them): a ``message`` item as the message, each ``function_call`` item as one
call of an assistant message (each call is a message of its own in both APIs), a
``function_call_output`` as a tool message whose ``input_text`` parts are its
text and whose ``input_image`` parts are priced as images. So one conversation counts the same
through either API.

Images are not priced here: the walker returns them as :class:`ImagePart` for the caller, who
knows (or looks up) their sizes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._text import encoded_len

__all__ = [
    "REPLY_PRIMING",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_NAME",
    "ImagePart",
    "MessageWalk",
    "walk_messages",
]

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
CALL_HEADER = "{role} to=functions.{name}"
TOOL_RESULT_ADJUST = -2  # a result whose function is unknown: role "tool" minus 2, as for a function result

_TEXT_PARTS = {"text": "text", "input_text": "text", "output_text": "text", "refusal": "refusal"}
_IMAGE_PARTS = ("image_url", "input_image")
_ADJUSTED_ROLES = frozenset({"tool", "function"})


@dataclass(slots=True)
class ImagePart:
    """One image in the messages: where it is and the detail it asks for."""

    url: str
    detail: str
    where: str


@dataclass(slots=True)
class MessageWalk:
    """Text tokens of the messages (framing included) and the images still to price."""

    text_tokens: int = 0
    images: list[ImagePart] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    has_system: bool = False
    call_names: dict[str, str] = field(default_factory=dict)
    """Function name of each tool call seen so far, by call id (a result's author)."""


def _as_mapping(item: Any) -> Any:
    if hasattr(item, "model_dump"):  # openai SDK objects (e.g. the assistant message of a response)
        return item.model_dump(exclude_none=True)
    return item


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def _content(content: Any, enc: str, walk: MessageWalk, where: str) -> int:
    """Tokens of a content field (str or list of parts); images are queued on ``walk``."""
    if content is None:
        return 0
    if isinstance(content, str):
        return encoded_len(enc, content)
    if type(content) is list:
        return _parts(content, enc, walk, where)
    if isinstance(content, Mapping) or not isinstance(content, Iterable) or isinstance(content, bytes):
        walk.warnings.append(f"{where}: content of type {type(content).__name__} counted as its JSON text")
        return encoded_len(enc, _json_text(content))
    return _parts(content, enc, walk, where)


def _parts(content: Iterable[Any], enc: str, walk: MessageWalk, where: str) -> int:
    """Tokens of a list of content parts; images are queued on ``walk``."""
    total = 0
    for j, part in enumerate(content):
        if type(part) is not dict:
            part = _as_mapping(part)
        pw = f"{where}.content[{j}]"
        if isinstance(part, str):
            total += encoded_len(enc, part)
            continue
        if not isinstance(part, Mapping):
            walk.warnings.append(f"{pw}: a {type(part).__name__} is not a content part; counted as text")
            total += encoded_len(enc, str(part))
            continue
        kind = part.get("type")
        if kind in _TEXT_PARTS:
            value = part.get(_TEXT_PARTS[kind])
            if isinstance(value, str):
                total += encoded_len(enc, value)
            else:
                walk.warnings.append(f"{pw}: {kind} part without a string {_TEXT_PARTS[kind]!r}")
        elif kind in _IMAGE_PARTS:
            _image_part(part, walk, pw)
        else:
            # input_audio, file, input_file …: billed by rules we cannot see from here.
            walk.warnings.append(
                f"{pw}: content part type {kind!r} is not counted exactly; counted as its JSON text"
            )
            total += encoded_len(enc, _json_text(part))
    return total


def _image_part(part: Mapping[str, Any], walk: MessageWalk, where: str) -> None:
    ref = part.get("image_url")
    detail = part.get("detail", "auto")
    if isinstance(ref, Mapping):  # Chat Completions: {"image_url": {"url": …, "detail": …}}
        detail = ref.get("detail", detail)
        ref = ref.get("url")
    if not isinstance(ref, str) or not ref:
        if part.get("file_id"):
            walk.warnings.append(f"{where}: image by file_id has no known size; counted at the upper bound")
            walk.images.append(ImagePart("", _detail(detail, walk, where), where))
            return
        walk.warnings.append(f"{where}: image part without a URL is not counted")
        return
    walk.images.append(ImagePart(ref, _detail(detail, walk, where), where))


def _detail(detail: Any, walk: MessageWalk, where: str) -> str:
    if detail in ("auto", "low", "high"):
        return str(detail)
    walk.warnings.append(f"{where}: unknown image detail {detail!r}; counted as 'auto'")
    return "auto"


def _tool_calls(calls: Any, role: str, enc: str, walk: MessageWalk, where: str) -> int:
    """Tokens of an assistant message's calls: each one a message of its own (3 + header + arguments)."""
    if not isinstance(calls, list):
        walk.warnings.append(f"{where}.tool_calls is not a list; counted as its JSON text")
        return encoded_len(enc, _json_text(calls))
    if len(calls) > 1:
        walk.warnings.append(
            f"{where}: {len(calls)} parallel tool calls; the API wraps them in a form it does not publish, "
            "so they are counted one by one and the count may be low"
        )
    total = 0
    for k, call in enumerate(calls):
        call = _as_mapping(call)
        fn = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(fn, Mapping):
            walk.warnings.append(f"{where}.tool_calls[{k}] has no function; counted as its JSON text")
            total += encoded_len(enc, _json_text(call))
            continue
        name = _str(fn.get("name"))
        if isinstance(call.get("id"), str):
            walk.call_names[call["id"]] = name
        total += _call_tokens(role, name, fn.get("arguments"), enc)
    return total


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _call_tokens(role: str, name: str, arguments: Any, enc: str) -> int:
    """One call as the model sees it: ``<role> to=functions.<name>`` then the arguments, framed."""
    args = arguments if isinstance(arguments, str) else _json_text(arguments) if arguments is not None else ""
    header = CALL_HEADER.format(role=role, name=name)
    return TOKENS_PER_MESSAGE + encoded_len(enc, header) + encoded_len(enc, args)


def _result_author(msg: Mapping[str, Any], walk: MessageWalk, call_key: str) -> str | None:
    """The function a tool/function result answers: by its call id, else its own ``name``."""
    call_id = msg.get(call_key)
    if isinstance(call_id, str) and call_id in walk.call_names:
        return walk.call_names[call_id]
    name = msg.get("name")
    return name if isinstance(name, str) and name else None


def _result_tokens(author: str | None, body: int, enc: str, walk: MessageWalk, where: str) -> int:
    if author is None:
        walk.warnings.append(f"{where}: a tool result whose call is not in the messages; counted as 'tool'")
        return TOKENS_PER_MESSAGE + encoded_len(enc, "tool") + TOOL_RESULT_ADJUST + body
    return TOKENS_PER_MESSAGE + encoded_len(enc, author) + body


def _message(msg: Mapping[str, Any], enc: str, walk: MessageWalk, where: str, pad_system: bool) -> int:
    role = msg.get("role")
    if not isinstance(role, str):
        raise ValueError(f"{where} has no 'role'; expected {{'role': 'user', 'content': …}}")
    content = msg.get("content")
    if pad_system and role == "system" and isinstance(content, str):
        # With tools, the first system message is followed by a newline before the definitions.
        content += "\n"
    body = _content(content, enc, walk, where)
    if role in ("tool", "function"):
        key = "tool_call_id" if role == "tool" else "function_call_id"
        return _result_tokens(_result_author(msg, walk, key), body, enc, walk, where)
    calls = msg.get("tool_calls")
    fc = msg.get("function_call")
    n = 0
    if body or not (calls or isinstance(fc, Mapping)):
        # The text part (a message with calls and no text is the calls alone).
        n = TOKENS_PER_MESSAGE + encoded_len(enc, role) + body
        name = msg.get("name")
        if isinstance(name, str) and name:
            n += encoded_len(enc, name) + TOKENS_PER_NAME
    if calls:
        n += _tool_calls(calls, role, enc, walk, where)
    if isinstance(fc, Mapping):
        n += _call_tokens(role, _str(fc.get("name")), fc.get("arguments"), enc)
    if role == "system":  # the measured rule: tool definitions join the first system message
        walk.has_system = True
    return n


def _item(item: Mapping[str, Any], enc: str, walk: MessageWalk, where: str) -> int:
    """A Responses-API input item that is not a message."""
    kind = item.get("type")
    if kind == "function_call":
        # Counted like the Chat assistant message that carries the same call.
        name = _str(item.get("name"))
        if isinstance(item.get("call_id"), str):
            walk.call_names[item["call_id"]] = name
        return _call_tokens("assistant", name, item.get("arguments"), enc)
    if kind == "function_call_output":
        out = item.get("output")
        if isinstance(out, str):
            body = encoded_len(enc, out)
        elif isinstance(out, list):
            body = _content(out, enc, walk, where)
        else:
            body = encoded_len(enc, _json_text(out))
        return _result_tokens(_result_author(item, walk, "call_id"), body, enc, walk, where)
    walk.warnings.append(
        f"{where}: input item type {kind!r} is not counted exactly; counted as its JSON text"
    )
    return TOKENS_PER_MESSAGE + encoded_len(enc, _json_text(item))


def walk_messages(messages: Any, encoding: str, *, pad_system: bool = False) -> MessageWalk:
    """Count the text of ``messages`` (framing and reply priming included) and collect their images.

    Raises:
        ValueError: ``messages`` is not a list of messages, or a message has no role.
    """
    walk = MessageWalk()
    if isinstance(messages, str):  # Responses API: input="…" is one user message
        messages = [{"role": "user", "content": messages}]
    if isinstance(messages, (Mapping, bytes)) or not isinstance(messages, Iterable):
        raise ValueError(f"messages must be a list of messages, got {type(messages).__name__}")
    padded = False
    total = 0
    for i, raw in enumerate(messages):
        if type(raw) is dict and len(raw) == 2:
            # The common message, {"role": …, "content": "…"}, without the general path's checks.
            role, content = raw.get("role"), raw.get("content")
            if (
                type(role) is str
                and type(content) is str
                and role not in _ADJUSTED_ROLES
                and not (pad_system and not padded and role == "system")
            ):
                total += TOKENS_PER_MESSAGE + encoded_len(encoding, role) + encoded_len(encoding, content)
                walk.has_system = walk.has_system or role == "system"
                continue
        msg = _as_mapping(raw)
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise ValueError(f"{where} must be a mapping with 'role' and 'content', got {type(msg).__name__}")
        if "role" in msg:
            pad = pad_system and not padded and msg.get("role") == "system"
            padded = padded or pad
            total += _message(msg, enc=encoding, walk=walk, where=where, pad_system=pad)
        elif "type" in msg:
            # Each call is a message of its own, as each of a Chat assistant message's calls is.
            total += _item(msg, encoding, walk, where)
        else:
            raise ValueError(f"{where} has no 'role'; expected {{'role': 'user', 'content': …}}")
    walk.text_tokens = total + REPLY_PRIMING
    return walk
