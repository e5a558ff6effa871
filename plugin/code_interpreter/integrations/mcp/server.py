"""The MCP server: ``execute_python_code`` as an MCP tool and the user's files as MCP resources.

Built on the MCP SDK's low-level :class:`mcp.server.Server`, so the tool's input schema is exactly
the canonical ``tool_schemas/execute_python_code.json`` (a decorator-based server would derive
one from a function signature). Every call goes through the :class:`~code_interpreter.tools.ToolDispatcher`,
as for the other frameworks: the same argument validation (an injected ``user_id`` is refused),
the same token-bounded text. Who calls — the user, and the session their calls share — is decided
by the transport (:data:`Identify`), never by the model's arguments.

A tool result is the dispatcher's text, the generated images as MCP image content, and a
``resource_link`` to each stored file (protocol 2025-06-18 and later); a failed run or a refused
call is a tool error (``isError``) whose text carries the traceback or the reason.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mcp_types as types
from mcp.server import CacheHint, Server, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS
from mcp_types.version import is_version_at_least

from ... import __version__
from ...errors import CodeInterpreterError
from ...executor import ExecutionResult
from ...tools import EXECUTE_TOOL, ToolContext, ToolDispatcher, ToolResult, load_schema
from ...tools.render import IMAGE_MIMES, MAX_IMAGE_BYTES
from ...tools.schema import describe_state
from .limits import PendingCalls
from .mounts import choose_mounts
from .progress import ProgressRelay

if TYPE_CHECKING:
    from ...interpreter import CodeInterpreter

__all__ = [
    "FILE_URI_PREFIX",
    "FILE_URI_TEMPLATE",
    "RESOURCE_NOT_FOUND",
    "Caller",
    "Identify",
    "build_server",
    "file_id_from_uri",
    "file_uri",
]

FILE_URI_PREFIX = "code-interpreter://files/"
FILE_URI_TEMPLATE = FILE_URI_PREFIX + "{file_id}"
"""The URI of a stored file; ``{file_id}`` is what ``load_file`` takes in the code."""
log = logging.getLogger(__name__)

RESOURCE_NOT_FOUND = -32002
"""The MCP error code for an unknown resource."""
MAX_IMAGES = 4
"""Most images returned as image content per call (the rest are resource links)."""

INSTRUCTIONS = (
    f"Use {EXECUTE_TOOL} to run Python in a sandbox (no network) with numpy, pandas and matplotlib. "
    "The user's files are in the working directory under their names and are listed as resources "
    f"({FILE_URI_TEMPLATE}); charts and files the code writes come back as images and resource links."
)

# Text formats worth sending as text (besides text/*); anything else, or text that is not UTF-8, is a blob.
_TEXT_MIMES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/xml",
        "application/javascript",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/x-sh",
        "application/sql",
    }
)
# Results depend on the caller and change with every upload: never reuse one.
_NO_CACHE = CacheHint(ttl_ms=0, scope="private")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request comes from, as the transport established it."""

    user_id: str
    """Whose files and sessions the request uses."""
    session_id: str | None
    """The code session this connection's calls share; None: each call starts fresh (no connection)."""


Identify = Callable[[ServerRequestContext[Any, Any]], Caller]
"""Decides the :class:`Caller` of a request from its transport context (raise MCPError to refuse)."""


def file_uri(file_id: str) -> str:
    """The resource URI of a stored file."""
    return FILE_URI_PREFIX + file_id


def file_id_from_uri(uri: str) -> str | None:
    """The file id in one of our resource URIs, or None."""
    if not uri.startswith(FILE_URI_PREFIX):
        return None
    file_id = uri[len(FILE_URI_PREFIX) :]
    return file_id if file_id and "/" not in file_id else None


def _mime(name: str | None, stored: str | None) -> str:
    if stored and "/" in stored:
        return stored
    guessed, _ = mimetypes.guess_type(name or "")
    return guessed or "application/octet-stream"


def _as_text(data: bytes, mime: str) -> str | None:
    """The file as text when its type is a text format and its bytes are UTF-8; else None (a blob)."""
    base = mime.split(";", 1)[0].strip().lower()
    if not (base.startswith("text/") or base in _TEXT_MIMES or base.endswith(("+json", "+xml"))):
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _resource(f: dict[str, Any]) -> types.Resource:
    expires = f.get("expires_at") or "never"
    return types.Resource(
        uri=file_uri(str(f["file_id"])),
        name=str(f.get("filename") or f["file_id"]),
        mime_type=_mime(f.get("filename"), f.get("content_type")),
        size=f.get("file_size"),
        description=(
            f"{f.get('file_type') or 'file'} uploaded {f.get('uploaded_at')}, expires {expires}; "
            f"in code: load_file({str(f['file_id'])!r}) or open({str(f.get('filename'))!r})"
        ),
    )


def _content(result: ToolResult, protocol_version: str) -> list[types.ContentBlock]:
    """The dispatcher's text, then images, then links to every stored generated file."""
    blocks: list[types.ContentBlock] = [types.TextContent(text=result.content)]
    files = result.generated_files
    images = 0
    for f in files:
        data, mime = f.get("data"), f.get("mime")
        if images == MAX_IMAGES:
            break
        if mime not in IMAGE_MIMES or not isinstance(data, bytes | bytearray) or len(data) > MAX_IMAGE_BYTES:
            continue
        blocks.append(types.ImageContent(data=base64.b64encode(data).decode("ascii"), mime_type=mime))
        images += 1
    if is_version_at_least(protocol_version, "2025-06-18"):  # resource_link content is new in 2025-06-18
        for f in files:
            if f.get("file_id"):
                link = types.ResourceLink(
                    uri=file_uri(str(f["file_id"])),
                    name=str(f.get("filename") or f["file_id"]),
                    mime_type=f.get("mime") or None,
                    size=f.get("size"),
                )
                blocks.append(link)
    return blocks


class _Handlers:
    """The request handlers of one server, over one interpreter."""

    def __init__(self, interp: CodeInterpreter, identify: Identify) -> None:
        self.interp = interp
        self.identify = identify
        self.dispatcher = ToolDispatcher(interp)
        self.schema = load_schema(EXECUTE_TOOL)
        self._running: set[asyncio.Future[ToolResult]] = set()
        settings = interp.settings
        self.pending = PendingCalls(settings.mcp_max_pending_per_session, settings.mcp_max_pending_per_user)

    def input_schema(self, name: str) -> dict[str, Any] | None:
        return dict(self.schema["parameters"]) if name == EXECUTE_TOOL else None

    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = self.identify(ctx)
        d = self.schema
        tool = types.Tool(
            name=d["name"],
            title="Run Python code",
            description=describe_state(
                d, sessions=caller.session_id is not None, versions=self.interp.packages.runtime_versions()
            ),
            input_schema=d["parameters"],
            annotations=types.ToolAnnotations(
                title="Run Python code",
                read_only_hint=False,
                destructive_hint=False,  # it adds files; it never changes or deletes stored ones
                idempotent_hint=False,
                open_world_hint=False,  # the sandbox has no network
            ),
        )
        return types.ListToolsResult(tools=[tool])

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        if params.name != EXECUTE_TOOL:
            raise MCPError(INVALID_PARAMS, f"unknown tool {params.name!r}: this server has {EXECUTE_TOOL}")
        caller = self.identify(ctx)
        refusal = self.pending.acquire(caller.user_id, caller.session_id)
        if refusal is not None:  # bounded: a client sending faster than its cells run is told to wait
            return types.CallToolResult(content=[types.TextContent(text=refusal)], is_error=True)
        arguments: Any = params.arguments if params.arguments is not None else {}
        call = {"id": str(ctx.request_id or ""), "name": params.name, "arguments": arguments}
        answered = asyncio.Event()
        # A cancelled request (the client's cancel, or its timeout) lets its cell run to its end: stopping the
        # wait mid-cell would leave the cell's output for the session's next call to read.
        task = asyncio.ensure_future(self._dispatch(ctx, call, caller, answered))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        task.add_done_callback(lambda _: self.pending.release(caller.user_id, caller.session_id))
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            answered.set()
            log.info("call %s was cancelled; its cell runs on to its end (its timeout at most)", call["id"])
            raise
        return types.CallToolResult(content=_content(result, ctx.protocol_version), is_error=result.is_error)

    async def _context(self, caller: Caller, arguments: Any) -> tuple[ToolContext, str | None]:
        """The call's trusted context: its user, session and the files it mounts (see :mod:`.mounts`)."""
        await self.interp.start()
        code = arguments.get("code") if isinstance(arguments, dict) else None
        mounts = await choose_mounts(await self.interp.files.list_user_files(caller.user_id), code)
        # Images go out as MCP image content (below); the host decides what its model sees.
        context = ToolContext(
            user_id=caller.user_id,
            session_id=caller.session_id,
            allowed_file_ids=mounts.file_ids,
            attach_images=False,
        )
        return context, mounts.note

    async def _dispatch(
        self,
        ctx: ServerRequestContext[Any, Any],
        call: dict[str, Any],
        caller: Caller,
        answered: asyncio.Event,
    ) -> ToolResult:
        try:
            context, note = await self._context(caller, call["arguments"])
        except CodeInterpreterError as exc:  # the store is down: the call cannot know its files
            text = f"Error: your files could not be listed ({exc}); call {EXECUTE_TOOL} again shortly."
            failed = ExecutionResult.failed(
                text, isolation=self.interp.isolation[0], error_type=type(exc).__name__
            )
            return ToolResult(str(call["id"]), EXECUTE_TOOL, text, failed, is_error=True)
        result = await self._run(ctx, call, context, answered)
        if note:
            result = dataclasses.replace(result, content=f"{result.content}\nNote: {note}.")
        return result

    async def _run(
        self,
        ctx: ServerRequestContext[Any, Any],
        call: dict[str, Any],
        context: ToolContext,
        answered: asyncio.Event,
    ) -> ToolResult:
        if (ctx.meta or {}).get("progress_token") is None:
            return await self.dispatcher.dispatch(call, context)

        async def send(progress: float, message: str) -> None:
            if not answered.is_set():  # no progress for a request that is over
                await ctx.session.report_progress(progress, None, message)

        async with ProgressRelay(send) as relay:
            return await self.dispatcher.dispatch(call, context, on_event=relay.on_event)

    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        caller = self.identify(ctx)
        try:
            await self.interp.start()
            files = await self.interp.files.list_user_files(caller.user_id)
        except CodeInterpreterError as exc:
            raise MCPError(INTERNAL_ERROR, f"cannot list the files: {exc}") from None
        return types.ListResourcesResult(resources=[_resource(f) for f in files if f.get("file_id")])

    async def list_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        template = types.ResourceTemplate(
            uri_template=FILE_URI_TEMPLATE,
            name="file",
            title="A stored file",
            description="One of your uploaded or generated files, by the file_id that load_file() takes.",
        )
        return types.ListResourceTemplatesResult(resource_templates=[template])

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        caller = self.identify(ctx)
        uri = str(params.uri)
        file_id = file_id_from_uri(uri)
        if file_id is None:
            raise MCPError(
                INVALID_PARAMS,
                f"unknown resource URI {uri[:200]!r}: this server's resources are {FILE_URI_TEMPLATE} "
                "(resources/list shows yours)",
            )
        try:
            await self.interp.start()
            meta = await self.interp.files.get_file(file_id, caller.user_id)
            data = await self.interp.files.read_file(file_id, caller.user_id) if meta else None
        except CodeInterpreterError as exc:
            raise MCPError(INTERNAL_ERROR, f"cannot read {file_id}: {exc}") from None
        if meta is None or data is None:  # unknown, expired, deleted and another user's look the same
            raise MCPError(
                RESOURCE_NOT_FOUND,
                f"file {file_id[:80]!r} not found: it expired, was deleted or is not yours "
                "(resources/list shows your files)",
                {"uri": uri},
            )
        mime = _mime(meta.get("filename"), meta.get("content_type"))
        text = _as_text(data, mime)
        contents: types.TextResourceContents | types.BlobResourceContents
        if text is not None:
            contents = types.TextResourceContents(uri=uri, mime_type=mime, text=text)
        else:
            blob = base64.b64encode(data).decode("ascii")
            contents = types.BlobResourceContents(uri=uri, mime_type=mime, blob=blob)
        return types.ReadResourceResult(contents=[contents])


def build_server(
    interp: CodeInterpreter, identify: Identify, *, name: str = "code-interpreter"
) -> Server[Any]:
    """An MCP server (the SDK's low-level ``Server``) exposing ``interp`` to callers ``identify`` names.

    Args:
        interp: the CodeInterpreter the code runs on (started on first use when not yet).
        identify: decides each request's user and session from its transport context.
        name: the server name reported to clients.
    """
    h = _Handlers(interp, identify)
    return Server(
        name,
        version=__version__,
        title="Code interpreter",
        instructions=INSTRUCTIONS,
        cache_hints={
            "tools/list": _NO_CACHE,
            "resources/list": _NO_CACHE,
            "resources/templates/list": _NO_CACHE,
            "resources/read": _NO_CACHE,
        },
        get_tool_input_schema=h.input_schema,
        on_list_tools=h.list_tools,
        on_call_tool=h.call_tool,
        on_list_resources=h.list_resources,
        on_list_resource_templates=h.list_templates,
        on_read_resource=h.read_resource,
    )
