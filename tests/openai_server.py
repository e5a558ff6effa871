"""A scripted OpenAI-compatible HTTP server for tests: the real openai SDK talks to it over a socket.

Each POST to ``/v1/chat/completions`` or ``/v1/responses`` takes the next entry of the script: a
:class:`Reply`, a response body dict, or a callable that receives the parsed request body (so a
scripted "model" can react to what it was sent, e.g. fix code after reading a traceback). Every
request body is recorded. :func:`completion` builds Chat Completions bodies, :func:`response` (with
:func:`function_call` items) Responses bodies.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

Entry = Any  # Reply | dict | Callable[[dict], Reply | dict]; Any keeps mixed literal lists easy to write

_ids = itertools.count(1)


@dataclass(slots=True)
class Reply:
    """One HTTP response of the script."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def tool_call(name: str, arguments: dict[str, Any] | str, call_id: str | None = None) -> dict[str, Any]:
    """A Chat Completions tool call; dict arguments are JSON-encoded as the API does."""
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {
        "id": call_id or f"call_{next(_ids)}",
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


def completion(
    content: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    *,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    model: str = "gpt-4o-mini",
) -> dict[str, Any]:
    """A chat.completion body with the given assistant message and usage."""
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if tool_calls else "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def function_call(name: str, arguments: dict[str, Any] | str, call_id: str | None = None) -> dict[str, Any]:
    """A Responses ``function_call`` output item; dict arguments are JSON-encoded as the API does."""
    n = next(_ids)
    return {
        "type": "function_call",
        "id": f"fc_{n}",
        "call_id": call_id or f"call_{n}",
        "name": name,
        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
        "status": "completed",
    }


def response(
    text: str | None = None,
    calls: list[dict[str, Any]] | None = None,
    *,
    input_tokens: int = 100,
    output_tokens: int = 20,
    cached_tokens: int = 0,
    model: str = "gpt-4o-mini",
    incomplete: str | None = None,
) -> dict[str, Any]:
    """A Responses ``response`` body: an assistant message with ``text`` and/or function calls, and usage."""
    output: list[dict[str, Any]] = []
    if text is not None:
        output.append(
            {
                "type": "message",
                "id": f"msg_{next(_ids)}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        )
    output.extend(calls or [])
    return {
        "id": f"resp_{next(_ids)}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "incomplete" if incomplete else "completed",
        "incomplete_details": {"reason": incomplete} if incomplete else None,
        "error": None,
        "instructions": None,
        "metadata": {},
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached_tokens, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
    }


def error(status: int, message: str = "scripted error", headers: dict[str, str] | None = None) -> Reply:
    """An API error response in OpenAI's shape."""
    kind = "rate_limit_exceeded" if status == 429 else "server_error"
    return Reply(
        {"error": {"message": message, "type": kind, "param": None, "code": kind}}, status, headers or {}
    )


class ScriptedOpenAI:
    """Serve the script on 127.0.0.1 in a thread; use as a context manager."""

    def __init__(self, script: Sequence[Entry]) -> None:
        self.script: list[Entry] = list(script)
        self.requests: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="scripted-openai", daemon=True
        )

    @property
    def base_url(self) -> str:
        """The URL to give ``openai.AsyncOpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedOpenAI:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            if not self.script:
                return Reply({"error": {"message": f"script exhausted at request {len(self.requests)}"}}, 400)
            entry = self.script.pop(0)
        if callable(entry):
            entry = entry(body)
        return entry if isinstance(entry, Reply) else Reply(entry)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                outer.paths.append(self.path)
                if not self.path.rstrip("/").endswith(("/chat/completions", "/responses")):
                    self._send(Reply({"error": {"message": f"no route {self.path}"}}, 404))
                    return
                try:
                    reply = outer._next(json.loads(raw))
                except Exception as exc:  # a broken script must show up as a failed request, not a hang
                    reply = Reply({"error": {"message": f"scripted server error: {exc!r}"}}, 400)
                self._send(reply)

            def _send(self, reply: Reply) -> None:
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        return Handler
