"""The MCP server under a client that sends too much (issue #22, items 6 and 7), driven by the SDK's clients.

- Pending calls are bounded per MCP session and per user: the calls beyond get an error result at
  once instead of queueing (80 queued calls of 1.9 MB each once grew the server by 555 MB).
- Request bodies are bounded: an oversized one gets a JSON-RPC error, and the server goes on.
- A call mounts the files its code names (and the newest few), not all of the user's files: more
  than ~511 stored files once made every call fail ("No space left on device").
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from _process_env import process_env
from code_interpreter.integrations.mcp.mounts import RECENT
from code_interpreter.settings import Settings
from test_mcp import TOOL, http_client, http_server, run, stdio, text_of

BIG = 1_900_000  # bytes of code per call, as in the report


@pytest.fixture
def mcp_env(tmp_path: Path, mongo_uri: str, db_name: str, sandbox_runtime: Any) -> dict[str, str]:
    """The server's environment: its own home, the session's database server, the shared runtime."""
    return process_env(tmp_path / "server-home", mongo_uri, db_name, sandbox_runtime.root)


@pytest.fixture
async def store(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Any]:
    """A CodeInterpreter on the server's database, for uploading users' files (its sandbox never starts)."""
    from code_interpreter.interpreter import CodeInterpreter

    async with CodeInterpreter(make_settings(home=tmp_path / "uploader-home")) as interp:
        yield interp


def padded(code: str, size: int) -> str:
    """``code`` followed by a comment making it ``size`` bytes long."""
    return code + "\n#" + "x" * (size - len(code) - 2)


async def test_pending_calls_are_bounded_per_session_and_per_user(
    mcp_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **mcp_env,
        "CODE_INTERPRETER_MCP_MAX_PENDING_PER_SESSION": "2",
        "CODE_INTERPRETER_MCP_MAX_PENDING_PER_USER": "3",
    }
    results: dict[str, list[tuple[float, Any]]] = {"a": [], "b": []}
    with http_server(env, tmp_path / "server.log", "--user-id", "ana") as url:
        async with http_client(url, mode="legacy") as a, http_client(url, mode="legacy") as b:
            assert not (await run(a, "print('warm')")).is_error
            assert not (await run(b, "print('warm')")).is_error
            started = time.monotonic()

            async def call(client: Any, key: str, code: str) -> None:
                result = await run(client, code)
                results[key].append((time.monotonic() - started, result))

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, a, "a", "import time\ntime.sleep(6)\nprint('slept')")  # holds session a
                await anyio.sleep(1)
                for _ in range(5):  # one more fits session a (2); four are refused at once
                    tg.start_soon(call, a, "a", padded("print('queued')", BIG))
                await anyio.sleep(1.5)
                for _ in range(3):  # ana has 2 pending: one more fits (3 per user); two are refused
                    tg.start_soon(call, b, "b", "import time\ntime.sleep(1)\nprint('other session')")
            after = await run(a, "print('after')")  # the bound refused calls; the server goes on
            assert not after.is_error and "after" in text_of(after)

    refused_a = [(t, r) for t, r in results["a"] if r.is_error]
    served_a = [text_of(r) for t, r in results["a"] if not r.is_error]
    assert len(refused_a) == 4 and len(served_a) == 2
    assert any("slept" in s for s in served_a) and any("queued" in s for s in served_a), served_a
    for elapsed, r in refused_a:
        assert "calls of this connection are already running or waiting" in text_of(r)
        assert elapsed < 4, elapsed  # answered at once, not after the sleeping cell
    refused_b = [r for _, r in results["b"] if r.is_error]
    assert len(refused_b) == 2 and len(results["b"]) == 3
    assert all("across your connections" in text_of(r) for r in refused_b)


async def test_request_bodies_are_bounded(mcp_env: dict[str, str], tmp_path: Path) -> None:
    env = {**mcp_env, "CODE_INTERPRETER_MAX_CODE_BYTES": "100000"}  # bodies up to 2 x 100,000 + 64 KiB
    accept = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    with http_server(env, tmp_path / "server.log", "--user-id", "ana") as url:
        async with http_client(url, mode="legacy") as client:
            with anyio.fail_after(60), pytest.raises(MCPError) as refused:
                await client.call_tool(TOOL, {"code": padded("print(1)", 300_000)})
            assert "the request body is over 265,536 bytes" in refused.value.message
            assert "keep data in files" in refused.value.message
            fits = await run(client, padded("print('fits')", 90_000))  # the server goes on
            assert not fits.is_error and "fits" in text_of(fits), text_of(fits)

        huge = b'{"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "x", "arguments": '
        huge += b'{"code": "'
        async with httpx.AsyncClient(timeout=60) as raw:
            declared = await raw.post(url, content=huge + b"#" * 20_000_000 + b'"}}}', headers=accept)
            assert declared.status_code == 413, declared.text
            assert declared.json()["error"]["code"] == -32600

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
                yield huge
                for _ in range(40):
                    yield b"#" * 100_000

            streamed = await raw.post(url, content=chunks(), headers=accept)
            assert streamed.status_code == 413, streamed.text
            assert "the request body is over" in streamed.json()["error"]["message"]


async def test_a_user_with_many_files_is_not_locked_out_and_sees_the_files_named(
    mcp_env: dict[str, str], store: Any, tmp_path: Path
) -> None:
    """Regression: every stored file was mounted into every call; past ~511 every call failed."""
    ids = [
        str((await store.files.upload_file("ana", f"file {i}\n".encode(), f"file_{i:04d}.txt"))["file_id"])
        for i in range(600)
    ]
    async with stdio(mcp_env, tmp_path / "server.log", "--user-id", "ana") as client:
        code = (
            "import os\n"
            f"print(open('file_0007.txt').read().strip(), '|', load_file({ids[3]!r}).strip())\n"
            "print(sorted(n for n in os.listdir('.') if n.startswith('file_')), len(FILES))"
        )
        first = await run(client, code)
        assert not first.is_error, text_of(first)
        out = text_of(first)
        assert "file 7 | file 3" in out, out
        newest = [f"file_{i:04d}.txt" for i in range(600 - RECENT, 600)]
        mounted = sorted(["file_0003.txt", "file_0007.txt", *newest])  # the named ones and the newest only
        assert f"{mounted} {len(mounted)}" in out, out
        later = await run(client, "print(open('file_0100.txt').read().strip(), open('file_0007.txt').read())")
        assert not later.is_error and "file 100 file 7" in text_of(later), text_of(later)
