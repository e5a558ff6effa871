"""Turning an execution result into what the model reads: compact text, and image parts for vision models.

Chat Completions *tool* messages accept text only, so generated images cannot travel inside the
tool message: for vision-capable models they follow in one ``user`` message right after the tool
messages of a round, as ``image_url`` parts holding ``data:`` URLs (:func:`images_message`). The
Responses API's ``function_call_output`` takes a list of ``input_text`` / ``input_image`` /
``input_file`` parts, so there the images travel inside the tool's answer
(:func:`function_call_output`); :func:`images_message` with ``api="responses"`` builds the
follow-up message instead, for providers whose Responses endpoint takes text outputs only.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable, Sequence
from typing import Any

from ..tokens import count_message_tokens, count_text_tokens
from .hints import hint_for
from .trim import fit_streams

__all__ = [
    "IMAGE_MIMES",
    "MAX_IMAGE_BYTES",
    "function_call_output",
    "image_parts",
    "images_message",
    "read_tokens",
    "render_content",
    "render_for_model",
    "supports_vision",
]

IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# OpenAI refuses images over 20 MB in a request; a chart is far smaller, a huge one is not worth the tokens.
MAX_IMAGE_BYTES = 5 * 2**20

# Model families that accept image input (prefixes of the model name, lower case, provider prefix removed).
_VISION_PREFIXES = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-4-turbo",
    "gpt-4-vision",
    "gpt-5",
    "chatgpt-4o",
    "o1",
    "o3",
    "o4",
    "claude-3",
    "claude-sonnet",
    "claude-opus",
    "claude-haiku",
    "gemini",
    "llava",
    "pixtral",
    "qwen-vl",
    "qwen2-vl",
    "qwen2.5-vl",
)
_NOT_VISION = ("o1-mini", "o1-preview", "o3-mini", "gpt-4o-audio", "gpt-4o-realtime", "gpt-4o-mini-tts")


def supports_vision(model: str | None) -> bool:
    """Whether a model name belongs to a family that accepts image input (a heuristic on the name)."""
    if not model:
        return False
    name = model.lower().rsplit("/", 1)[-1]
    if name.startswith(_NOT_VISION):
        return False
    return name.startswith(_VISION_PREFIXES)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 2**20:
        return f"{n / 1024:.1f} KB"
    return f"{n / 2**20:.1f} MB"


# What the model is told when a session's state is not simply "live" (variables from earlier calls kept).
_SESSION_STATES = {
    "new": "Session: new (no variables from earlier calls).",
    "restored": "Session: restored from a saved snapshot (variables and files are back; see the notes).",
    "restarted": "Session: restarted — the previous process was stopped; variables from before are gone.",
}


def render_content(
    name: str, result: dict[str, Any], *, max_tokens: int | None = None, model: str | None = None
) -> str:
    """Compact text for the model: status, output, error with traceback, generated files, notes.

    With ``max_tokens``, the output, error and stderr shown share that many tokens of ``model``'s
    tokenizer (head and tail of each kept, see :mod:`.trim`); ``result`` itself is never changed.
    """
    ok = bool(result.get("success"))
    seconds = float(result.get("execution_time") or 0.0)
    code = result.get("return_code")
    lines: list[str] = []
    if ok:
        lines.append(f"Status: success in {seconds:.2f} s.")
    else:
        rc = f" (exit code {code})" if code not in (None, 0) else ""
        lines.append(f"Status: failed{rc} after {seconds:.2f} s.")
    session = result.get("session")
    if isinstance(session, dict) and session.get("state") in _SESSION_STATES:
        lines.append(_SESSION_STATES[session["state"]])
    output = (result.get("output") or "").rstrip("\n")
    error = (result.get("error") or "").rstrip("\n")
    stderr = (result.get("stderr") or "").rstrip("\n")
    # The executor often puts the traceback in both: show it once.
    if error and (stderr in error or error in stderr):
        stderr = ""
    cuts = fit_streams([output, error, stderr], max_tokens, model) if max_tokens else []
    if cuts:
        output, error, stderr = (c.text for c in cuts)
    if output:
        lines += ["Output:", output]
    elif ok:
        lines.append("Output: (nothing was printed; print() the values you want to see)")
    if error:
        lines += ["Error:", error]
    if stderr:
        lines += ["Stderr:", stderr]
    files = result.get("generated_files") or []
    if files:
        lines.append("Generated files (already sent to the user):")
        for f in files:
            fid = f.get("file_id")
            ref = f"file_id {fid}" if fid else "not stored"
            mime = f.get("mime") or f.get("type") or "file"
            lines.append(f"- {f.get('filename')} ({mime}, {_size(int(f.get('size') or 0))}; {ref})")
    notes = [n for n in result.get("notes") or () if n]
    cut = sum(c.cut_tokens for c in cuts)
    if cut:
        lines_cut = sum(c.cut_lines for c in cuts)
        notes.append(
            f"to fit {max_tokens:,} tokens, {cut:,} tokens ({lines_cut:,} lines) were cut (marked …)"
        )
    if cut or result.get("truncated"):
        notes.append("print less, or summarise (head(), describe(), counts) instead of printing everything")
    hint = hint_for(str(result.get("error") or "")) if not ok else None
    if hint:
        notes.append(f"this code looks {hint}")
    if notes:
        lines.append("Notes:")
        lines += [f"- {n}" for n in notes]
    if not ok:
        lines.append(f"Read the error, fix the code and call {name} again.")
    return "\n".join(lines)


# Text over this many characters takes a millisecond or more to tokenize: do it off the event loop.
_OFF_LOOP_CHARS = 16_384


async def render_for_model(
    name: str, result: dict[str, Any], *, max_tokens: int | None = None, model: str | None = None
) -> str:
    """:func:`render_content`, in a worker thread when the text is long enough to stall the event loop."""
    size = sum(len(result.get(k) or "") for k in ("output", "error", "stderr"))
    if max_tokens and size > max(max_tokens, _OFF_LOOP_CHARS):
        return await asyncio.to_thread(render_content, name, result, max_tokens=max_tokens, model=model)
    return render_content(name, result, max_tokens=max_tokens, model=model)


#: The tokenizer used when the model is not known (o200k_base, as the trim's).
_DEFAULT_MODEL = "gpt-4o"


def _read_tokens(content: str, images: Sequence[dict[str, Any]], model: str) -> int:
    text = count_text_tokens(content, model)
    if not images:
        return text
    # The images' own tokens: the message holding them, less the same message empty.
    with_images = count_message_tokens([{"role": "user", "content": list(images)}], model)
    return text + with_images - count_message_tokens([{"role": "user", "content": ""}], model)


async def read_tokens(content: str, images: Sequence[dict[str, Any]], model: str | None) -> int:
    """Tokens the model reads of a tool's answer: its text and the images attached for it (the usage
    record's ``result_tokens``); counted with ``model``'s tokenizer, o200k_base when None."""
    name = model or _DEFAULT_MODEL
    if len(content) > _OFF_LOOP_CHARS:
        return await asyncio.to_thread(_read_tokens, content, images, name)
    return _read_tokens(content, images, name)


def image_parts(files: Iterable[dict[str, Any]], limit: int) -> tuple[dict[str, Any], ...]:
    """``image_url`` content parts (data URLs) for up to ``limit`` generated images."""
    parts: list[dict[str, Any]] = []
    for f in files:
        if len(parts) >= limit:
            break
        mime = f.get("mime") or ""
        data = f.get("data")
        if mime not in IMAGE_MIMES or not isinstance(data, bytes | bytearray) or len(data) > MAX_IMAGE_BYTES:
            continue
        url = f"data:{mime};base64,{base64.b64encode(bytes(data)).decode('ascii')}"
        parts.append({"type": "image_url", "image_url": {"url": url, "detail": "auto"}})
    return tuple(parts)


def _responses_image(part: dict[str, Any]) -> dict[str, Any]:
    """A Chat ``image_url`` part as a Responses ``input_image`` part."""
    ref = part.get("image_url") or {}
    return {"type": "input_image", "image_url": ref.get("url"), "detail": ref.get("detail", "auto")}


def function_call_output(call_id: str, content: str, images: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The Responses ``function_call_output`` item: text alone, or text then ``input_image`` parts."""
    if not images:
        return {"type": "function_call_output", "call_id": call_id, "output": content}
    parts = [{"type": "input_text", "text": content}, *(_responses_image(p) for p in images)]
    return {"type": "function_call_output", "call_id": call_id, "output": parts}


def images_message(results: Sequence[Any], api: str = "chat") -> dict[str, Any] | None:
    """One ``user`` message carrying the images of a round's tool results, or None when there are none.

    ``results`` are :class:`~code_interpreter.tools.ToolResult` objects (anything with ``images``
    and ``tool_call_id``). ``api="chat"``: ``text`` and ``image_url`` parts, to follow the round's
    tool messages. ``api="responses"``: ``input_text`` and ``input_image`` parts — needed only when
    the images are not already inside the ``function_call_output`` items (see ``output_item``).

    Raises:
        ValueError: ``api`` is neither ``"chat"`` nor ``"responses"``.
    """
    if api not in ("chat", "responses"):
        raise ValueError(f"api must be 'chat' or 'responses', got {api!r}")
    text_type = "text" if api == "chat" else "input_text"
    content: list[dict[str, Any]] = []
    for r in results:
        if r.images:
            content.append(
                {
                    "type": text_type,
                    "text": f"Images generated by tool call {r.tool_call_id} (already shown to the user):",
                }
            )
            content.extend(r.images if api == "chat" else (_responses_image(p) for p in r.images))
    if not content:
        return None
    return {"role": "user", "content": content}
