"""The dispatcher: the boundary where a model's tool call becomes an execution, and its result text.

The dispatcher is the boundary between an untrusted model and the interpreter. Everything the
model sends is validated against ``tool_schemas/execute_python_code.json``; everything that goes
wrong comes back as a :class:`ToolResult` whose text says what was wrong and how to retry — never
an exception into the host, never an empty string. Who the user is, which files they may read and
their limits come from the host's :class:`ToolContext`, never from the model's arguments.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CodeInterpreterError
from ..executor import EventCallback, ExecutionEvent, ExecutionResult
from ..ledger import ExecutionLink, linked
from ..request import ExecutionRequest
from .render import function_call_output, image_parts, read_tokens, render_for_model, supports_vision
from .schema import EXECUTE_TOOL, SCHEMA_NAMES, validate_arguments

if TYPE_CHECKING:
    from ..interpreter import CodeInterpreter

__all__ = ["ToolContext", "ToolDispatcher", "ToolResult"]

log = logging.getLogger(__name__)

_RETRY_HINT = 'Retry with arguments like {"code": "print(1 + 1)", "timeout": null, "install_packages": null}.'


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Trusted facts about the call, supplied by the host application (never by the model)."""

    user_id: int | str
    """The user the code runs for; their files and quotas apply."""
    session_id: str | None = None
    """The conversation (or channel) whose calls share one live session; None: each call starts fresh."""
    allowed_file_ids: frozenset[str] | None = None
    """File ids the code may read; None means all of the user's unexpired files."""
    max_timeout: int | None = None
    """This user's cap on the timeout in seconds (below settings.max_timeout); None: no extra cap."""
    allow_install: bool = True
    """Whether the model may ask for extra packages with install_packages."""
    model: str | None = None
    """The model being served; decides whether generated images are attached for it to see."""
    attach_images: bool | None = None
    """Force image attachment on or off; None decides from ``model`` (:func:`supports_vision`)."""
    max_images: int = 4
    """Most images attached per tool result."""
    request_id: str | None = None
    """The model request whose answer made the call (run_agent sets it); named in the usage record."""

    def __post_init__(self) -> None:
        if self.allowed_file_ids is not None and not isinstance(self.allowed_file_ids, frozenset):
            object.__setattr__(self, "allowed_file_ids", frozenset(self.allowed_file_ids))

    @property
    def wants_images(self) -> bool:
        """Whether generated images should be attached for the model."""
        return supports_vision(self.model) if self.attach_images is None else self.attach_images

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view."""
        return {
            "user_id": self.user_id,
            "session_id": self.session_id,
            "allowed_file_ids": None if self.allowed_file_ids is None else sorted(self.allowed_file_ids),
            "max_timeout": self.max_timeout,
            "allow_install": self.allow_install,
            "model": self.model,
            "attach_images": self.attach_images,
            "max_images": self.max_images,
            "request_id": self.request_id,
        }


@dataclass(frozen=True, slots=True)
class ToolResult:
    """The outcome of one tool call: text for the model, the full result for the host (views of one)."""

    tool_call_id: str
    """The id of the call it answers (``tool_call_id`` / ``call_id``)."""
    name: str
    """The tool name the model used."""
    content: str
    """Compact text for the model: output, error with traceback, generated files, notes."""
    execution: ExecutionResult | None = None
    """The execution's result (a refused call's failed result); None only for hand-made results."""
    is_error: bool = False
    """True when the call was refused or the code failed."""
    images: tuple[dict[str, Any], ...] = ()
    """``image_url`` parts (data URLs) of generated images, for vision-capable models."""

    @property
    def result(self) -> dict[str, Any]:
        """The full structured result as the seed's dict (generated file bytes included)."""
        return self.execution.to_dict() if self.execution is not None else {}

    @property
    def message(self) -> dict[str, Any]:
        """The Chat Completions tool message to append to the conversation."""
        return {"role": "tool", "tool_call_id": self.tool_call_id, "content": self.content}

    @property
    def output_item(self) -> dict[str, Any]:
        """The Responses API ``function_call_output`` item; the ``images`` ride in it as input_image parts."""
        return function_call_output(self.tool_call_id, self.content, self.images)

    @property
    def generated_files(self) -> list[dict[str, Any]]:
        """Generated files ({filename, data, type, mime, size, file_id}) to send to the user."""
        return list(self.result.get("generated_files") or [])

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view; generated file bytes are replaced by their size."""
        result = dict(self.result)
        if "generated_files" in result:
            result["generated_files"] = [
                {k: v for k, v in f.items() if k != "data"} for f in result["generated_files"]
            ]
        return {
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "content": self.content,
            "is_error": self.is_error,
            "images": len(self.images),
            "result": result,
        }


@dataclass(frozen=True, slots=True)
class _Call:
    call_id: str
    name: str
    arguments: Any  # str (JSON) from OpenAI, a dict from LangChain, None when absent


def _as_dict(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)
    return dump() if callable(dump) else obj


def _parse_call(tool_call: Any) -> _Call | str:
    """Read a Chat Completions tool call, a Responses function_call item or a LangChain ToolCall."""
    d = _as_dict(tool_call)
    if not isinstance(d, dict):
        return f"unrecognised tool call of type {type(tool_call).__name__}"
    fn = d.get("function")
    if isinstance(fn, dict):  # Chat Completions
        return _Call(str(d.get("id") or ""), str(fn.get("name") or ""), fn.get("arguments"))
    if "call_id" in d or d.get("type") == "function_call":  # Responses API
        return _Call(str(d.get("call_id") or d.get("id") or ""), str(d.get("name") or ""), d.get("arguments"))
    if "args" in d:  # LangChain ToolCall
        return _Call(str(d.get("id") or ""), str(d.get("name") or ""), d.get("args"))
    if "name" in d:
        return _Call(str(d.get("id") or ""), str(d["name"]), d.get("arguments"))
    return "unrecognised tool call: expected a function call with a name and arguments"


class ToolDispatcher:
    """Route model tool calls to the interpreter, validating arguments and shaping results."""

    def __init__(self, interp: CodeInterpreter) -> None:
        """Dispatch to ``interp`` (a started or startable CodeInterpreter)."""
        self.interp = interp

    async def dispatch_all(
        self, tool_calls: Iterable[Any], context: ToolContext, *, on_event: EventCallback | None = None
    ) -> list[ToolResult]:
        """Run several tool calls concurrently; results come back in the calls' order."""
        return list(await asyncio.gather(*(self.dispatch(c, context, on_event=on_event) for c in tool_calls)))

    async def dispatch(
        self, tool_call: Any, context: ToolContext, *, on_event: EventCallback | None = None
    ) -> ToolResult:
        """Run one tool call and return its result; problems become results the model can act on.

        Args:
            tool_call: an openai SDK tool call (or its dict), a Responses ``function_call`` item,
                or a LangChain ``ToolCall``.
            context: the trusted user context from the host application.
            on_event: receives the execution's live events (output chunks, stored files, done), each
                with ``call_id`` set to this tool call's id.
        """
        parsed = _parse_call(tool_call)
        if isinstance(parsed, str):
            return self._refuse("", "", f"{parsed}. {_RETRY_HINT}")
        if parsed.name not in SCHEMA_NAMES:
            shown = parsed.name or "(empty)"
            return self._refuse(
                parsed.call_id,
                parsed.name,
                f"unknown tool {shown!r}. The available tool is "
                f"{EXECUTE_TOOL}(code, timeout, install_packages). {_RETRY_HINT}",
            )
        try:
            # The execution's usage record names this tool call and the request that asked for it.
            with linked(ExecutionLink(parsed.call_id or None, context.request_id)):
                return await self._execute(parsed, context, _tagged(on_event, parsed.call_id))
        except CodeInterpreterError as exc:
            return self._refuse(parsed.call_id, parsed.name, str(exc), error_type=type(exc).__name__)
        except Exception as exc:  # a bug or an unconverted library error must not kill the agent loop
            log.exception("tool call %s failed unexpectedly", parsed.call_id)
            return self._refuse(
                parsed.call_id,
                parsed.name,
                f"internal error while running the tool ({type(exc).__name__}: {exc}). "
                "This is not caused by your code; you may retry once.",
                error_type=type(exc).__name__,
            )

    # -- internals -------------------------------------------------------------------
    def _refuse(
        self, call_id: str, name: str, problem: str, *, error_type: str = "ToolArgumentError"
    ) -> ToolResult:
        content = f"Error: {problem}"
        failed = ExecutionResult.failed(content, isolation=self.interp.isolation[0], error_type=error_type)
        return ToolResult(call_id, name, content, failed, is_error=True)

    def _decode(self, call: _Call) -> Any | str:
        raw = call.arguments
        limit = self.interp.settings.max_code_bytes
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return {}
        if isinstance(raw, bytes | bytearray):
            raw = bytes(raw).decode("utf-8", "replace")
        if isinstance(raw, str):
            # JSON escaping at most doubles typical source; refuse before parsing megabytes of it.
            if len(raw) > 2 * limit + 4096:
                return (
                    f"the arguments are {len(raw):,} characters; code is limited to {limit:,} bytes. "
                    "Send a shorter program: keep data in the user's files (load_file) instead of in the code"
                )
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                return (
                    f"the arguments are not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}). "
                    "Send one JSON object; escape quotes, backslashes and newlines inside the code string"
                )
            except RecursionError:
                return (
                    "the arguments are nested too deeply to read. Send one flat JSON object: "
                    '{"code": "...", "timeout": null, "install_packages": null}'
                )
        return raw

    async def _execute(self, call: _Call, context: ToolContext, on_event: EventCallback | None) -> ToolResult:
        decoded = self._decode(call)
        if isinstance(decoded, str):
            return self._refuse(call.call_id, call.name, f"{decoded}. {_RETRY_HINT}")
        args, problems = validate_arguments(call.name, decoded)
        if problems:
            return self._refuse(
                call.call_id,
                call.name,
                f"invalid arguments for {call.name}: " + "; ".join(problems) + f". {_RETRY_HINT}",
            )
        packages: Sequence[str] | None = args.get("install_packages") or None
        if packages and not context.allow_install:
            return self._refuse(
                call.call_id,
                call.name,
                "installing packages is disabled for this user: pass install_packages null and use the "
                "preinstalled packages (numpy, pandas, matplotlib, seaborn, scipy).",
            )
        timeout, notes = self._timeout(args.get("timeout"), context)
        try:  # before anything is looked up: a bad request costs nothing
            request = ExecutionRequest.build(
                self.interp.settings,
                args["code"],
                context.user_id,
                None,
                packages,
                timeout,
                context.session_id,
            )
        except CodeInterpreterError as exc:
            problem = f"{exc}. {_RETRY_HINT}"
            return self._refuse(call.call_id, call.name, problem, error_type=type(exc).__name__)
        await self.interp.start()  # idempotent; the file listing needs the database
        await self.interp.usage.check_budget(context.user_id)  # spent: refused before running, as a result
        files, missing = await self._file_ids(context)
        if missing:
            notes.append(
                f"file(s) {', '.join(missing)} expired or were deleted and are not available; "
                "ask the user to upload them again"
            )
        request = request.with_files(files)
        result = (await self.interp.run(request, on_event=on_event)).with_notes(*notes, first=True)
        view = result.to_dict()
        content = await render_for_model(
            call.name, view, max_tokens=self.interp.settings.max_tool_output_tokens, model=context.model
        )
        images = image_parts(view["generated_files"], context.max_images) if context.wants_images else ()
        if result.usage is not None:  # what the model reads of it, in its usage record
            read = await read_tokens(content, images, context.model)
            result = result.with_usage(await self.interp.usage.set_result_tokens(result.usage, read))
        return ToolResult(
            call.call_id, call.name, content, result, is_error=not result.success, images=images
        )

    def _timeout(self, timeout: int | None, context: ToolContext) -> tuple[int | None, list[str]]:
        """The model's timeout within this user's cap (the request clamps it to the host's maximum)."""
        cap = context.max_timeout
        if cap is None:
            return timeout, []
        if timeout is None:
            return (cap if self.interp.settings.default_timeout > cap else None), []
        if timeout > cap:
            return cap, [f"timeout {timeout} s exceeds this user's limit; used {cap} s"]
        return timeout, []

    async def _file_ids(self, context: ToolContext) -> tuple[list[str], list[str]]:
        """(file ids to mount, allowed ids that no longer exist)."""
        if context.allowed_file_ids is not None and not context.allowed_file_ids:
            return [], []
        listed = await self.interp.files.list_user_files(context.user_id)
        present = [f["file_id"] for f in listed if f.get("file_id")]
        if context.allowed_file_ids is None:
            return present, []
        # An expired file must not fail every later call of a conversation that once allowed it.
        allowed = context.allowed_file_ids
        return [f for f in present if f in allowed], sorted(allowed - set(present))


def _tagged(on_event: EventCallback | None, call_id: str) -> EventCallback | None:
    """``on_event`` with each event's ``call_id`` set, so a host can tell concurrent calls apart."""
    if on_event is None:
        return None

    def tag(event: ExecutionEvent) -> Awaitable[None] | None:
        return on_event(dataclasses.replace(event, call_id=call_id))

    return tag
