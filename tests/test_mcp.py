"""The MCP server, run as a real process and driven by the ``mcp`` SDK's own clients.

Over stdio the SDK's stdio client spawns ``code-interpreter mcp``; over HTTP the command runs with
``--http`` and the SDK's streamable-HTTP client connects. Both use the real sandbox and the
session's real database server; files are uploaded beside them through a CodeInterpreter on the
same database.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from _process_env import process_env
from code_interpreter.settings import Settings
from code_interpreter.tools import load_schema
from code_interpreter.tools.schema import describe_state

REPO = Path(__file__).resolve().parent.parent
CLI = Path(sys.executable).with_name("code-interpreter")  # the console script of this environment
TOOL = "execute_python_code"
PNG = b"\x89PNG\r\n\x1a\n"
ANA, BOB = "ana-token-0123456789abcdef", "bob-token-0123456789abcdef"
CALL_S = 120  # a generous bound on any one exchange: a hang fails the test instead of blocking the run


@pytest.fixture
def mcp_env(tmp_path: Path, mongo_uri: str, db_name: str, sandbox_runtime: Any) -> dict[str, str]:
    """The server's environment: its own home, the session's database server, the shared runtime."""
    return process_env(tmp_path / "server-home", mongo_uri, db_name, sandbox_runtime.root)


def versions(env: dict[str, str]) -> dict[str, str] | None:
    """The Python, pandas and numpy versions of the server's runtime: its tool description names them."""
    from code_interpreter.packages import PackageManager

    return PackageManager(Settings(runtime_dir=Path(env["CODE_INTERPRETER_RUNTIME_DIR"]))).runtime_versions()


@pytest.fixture
async def store(make_settings: Callable[..., Settings], tmp_path: Path) -> AsyncIterator[Any]:
    """A CodeInterpreter on the server's database, for uploading users' files (its sandbox never starts)."""
    from code_interpreter.interpreter import CodeInterpreter

    async with CodeInterpreter(make_settings(home=tmp_path / "uploader-home")) as interp:
        yield interp


async def upload(store: Any, user: str, data: bytes, name: str) -> str:
    saved = await store.files.upload_file(user, data, name)
    assert saved["success"], saved
    return str(saved["file_id"])


@asynccontextmanager
async def stdio(env: dict[str, str], log: Path, *args: str, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's stdio client spawning ``code-interpreter mcp ARGS`` (its stderr appended to ``log``)."""
    params = StdioServerParameters(command=str(CLI), args=["mcp", *args], env=env)
    with log.open("a") as errlog:
        async with Client(stdio_client(params, errlog=errlog), mode=mode) as client:
            yield client


def text_of(result: Any) -> str:
    return "\n".join(b.text for b in result.content if b.type == "text")


async def run(client: Client, code: str, **kwargs: Any) -> Any:
    with anyio.fail_after(CALL_S):
        return await client.call_tool(TOOL, {"code": code}, **kwargs)


def wait_for_line(
    log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 60
) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text() if log.exists() else "")
        if found:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{log.read_text()}")


@contextmanager
def http_server(env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    """``code-interpreter mcp --http --port 0 ARGS``; yields its URL (on 127.0.0.1); stops it with SIGTERM."""
    with log.open("ab") as errlog:
        proc = subprocess.Popen(
            [str(CLI), "mcp", "--http", "--port", "0", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errlog,
        )
    try:
        found = wait_for_line(log, r"MCP server on http://(\S+?):(\d+)/mcp", proc)
        yield f"http://127.0.0.1:{found.group(2)}/mcp"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
        assert "MCP server stopped; live sessions saved" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def http_client(url: str, *, token: str | None = None, mode: str = "auto") -> AsyncIterator[Client]:
    """The SDK's streamable-HTTP client, with a bearer token when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("code-interpreter: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -- stdio ------------------------------------------------------------------------------------------------
async def test_stdio_tool_state_errors_charts_files_and_refusals(
    mcp_env: dict[str, str], store: Any, tmp_path: Path
) -> None:
    sales = await upload(store, "ana", b"city,sales\nOslo,3\nLima,5\n", "sales.csv")
    secret = await upload(store, "bob", b"bob's secret\n", "secret.txt")
    log = tmp_path / "server.log"
    async with stdio(mcp_env, log, "--user-id", "ana") as client:
        tools = (await client.list_tools()).tools
        canonical = load_schema(TOOL)
        assert [t.name for t in tools] == [TOOL]
        assert tools[0].input_schema == canonical["parameters"]
        assert tools[0].description == describe_state(canonical, sessions=True, versions=versions(mcp_env))
        assert "State persists between calls" in tools[0].description

        first = await run(
            client, "import pandas as pd\ndf = pd.read_csv('sales.csv')\ntotal = int(df.sales.sum())"
        )
        assert not first.is_error, text_of(first)
        second = await run(client, "import os\nprint(total * 2, sorted(os.listdir('.')), sorted(FILES))")
        assert not second.is_error, text_of(second)
        assert f"16 ['sales.csv'] ['{sales}']" in text_of(second)  # state kept; ana's file only

        failed = await run(client, "def f():\n    return 1 / 0\n\nf()")
        assert failed.is_error
        assert "Traceback (most recent call last)" in text_of(failed)
        assert "ZeroDivisionError: division by zero" in text_of(failed)

        chart = await run(
            client,
            "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.savefig('trend.png')",
        )
        assert not chart.is_error, text_of(chart)
        images = [b for b in chart.content if b.type == "image"]
        assert len(images) == 1 and images[0].mime_type == "image/png"
        assert base64.b64decode(images[0].data).startswith(PNG)
        links = [b for b in chart.content if b.type == "resource_link"]
        assert [(link.name, link.mime_type) for link in links] == [("trend.png", "image/png")]

        injected = await client.call_tool(TOOL, {"code": "print('ran')", "user_id": "bob"})
        assert injected.is_error
        assert "unexpected argument(s) 'user_id'" in text_of(injected) and "ran" not in text_of(injected)
        with pytest.raises(MCPError) as unknown:
            await client.call_tool("run_shell", {"command": "id"})
        assert "unknown tool 'run_shell'" in unknown.value.message

        listed = {r.name: r for r in (await client.list_resources()).resources}
        assert set(listed) == {"sales.csv", "trend.png"}  # the upload and the chart; never bob's file
        assert str(listed["sales.csv"].uri) == f"code-interpreter://files/{sales}"
        assert listed["sales.csv"].mime_type == "text/csv" and listed["sales.csv"].size == 25
        csv = (await client.read_resource(str(listed["sales.csv"].uri))).contents[0]
        assert csv.text == "city,sales\nOslo,3\nLima,5\n"
        png = (await client.read_resource(str(listed["trend.png"].uri))).contents[0]
        assert png.mime_type == "image/png" and base64.b64decode(png.blob).startswith(PNG)
        assert str(listed["trend.png"].uri) == str(links[0].uri)
        with pytest.raises(MCPError) as foreign:
            await client.read_resource(f"code-interpreter://files/{secret}")
        assert foreign.value.code == -32002 and "not found" in foreign.value.message
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["code-interpreter://files/{file_id}"]

    async with stdio(mcp_env, log, "--user-id", "ana") as client:  # a new connection is a new session
        fresh = await run(client, "print(total)")
        assert fresh.is_error and "NameError: name 'total' is not defined" in text_of(fresh)
        assert "Session: new" in text_of(fresh)
    assert log.read_text().count("MCP server stopped; live sessions saved") == 2


async def test_stdio_session_is_saved_when_the_client_leaves_and_continues_by_name(
    mcp_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    async with stdio(mcp_env, log, "--session-id", "notebook-1") as client:
        assert not (await run(client, "x = 41\nimport json")).is_error
    # The client closed stdin: the server saved the session and exited on its own.
    assert "MCP server stopped; live sessions saved" in log.read_text()
    async with stdio(mcp_env, log, "--session-id", "notebook-1", mode="legacy") as client:
        again = await run(client, "print(x + 1, json.dumps([1]))")
        assert not again.is_error, text_of(again)
        assert "42 [1]" in text_of(again) and "Session: restored" in text_of(again)


async def test_progress_notifications_carry_a_long_cells_output_as_it_runs(
    mcp_env: dict[str, str], tmp_path: Path
) -> None:
    seen: list[tuple[float, float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((time.monotonic(), progress, message))

    code = (
        "import time\n"
        "for i in range(5):\n"
        "    print('tick', i, flush=True)\n"
        "    time.sleep(0.5)\n"
        "time.sleep(6.5)  # silent: a heartbeat keeps the client's timeout from running out\n"
        "print('end')\n"
    )
    async with stdio(mcp_env, tmp_path / "server.log") as client:
        await run(client, "print('warm')")  # the sandbox is up: the timing below is the cell's alone
        result = await run(client, code, progress_callback=on_progress)
        finished = time.monotonic()
        assert not result.is_error, text_of(result)

        messages = [m or "" for _, _, m in seen]
        ticks = [line for m in messages for line in m.splitlines() if line.startswith("tick")]
        assert ticks == [f"tick {i}" for i in range(5)], messages
        assert messages[-1] == "end"
        assert any(m.startswith("running for ") for m in messages), messages  # the heartbeat
        assert finished - seen[0][0] > 8, "the first notification came only at the end"
        assert all(a[1] < b[1] for a, b in itertools.pairwise(seen)), seen  # progress increases

        # A request the client gives up on (its timeout) lets the cell finish; the next call gets its answer.
        with pytest.raises(MCPError):
            await client.call_tool(TOOL, {"code": "time.sleep(2.5)\ny = 5"}, read_timeout_seconds=1)
        after = await run(client, "print('y is', y)")
        assert not after.is_error and "y is 5" in text_of(after), text_of(after)


# -- streamable HTTP ----------------------------------------------------------------------------------
async def test_http_one_code_session_per_mcp_session(
    mcp_env: dict[str, str], store: Any, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with http_server(mcp_env, log, "--user-id", "ana") as url:
        async with http_client(url, mode="legacy") as client:  # the handshake era: an MCP session
            tool = (await client.list_tools()).tools[0]
            assert tool.description == describe_state(
                load_schema(TOOL), sessions=True, versions=versions(mcp_env)
            )
            assert not (await run(client, "x = 7")).is_error
            kept = await run(client, "print(x * 6)")
            assert text_of(kept).splitlines()[2] == "42", text_of(kept)
            seen: list[str | None] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(message)

            code = "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(0.6)"
            assert not (await run(client, code, progress_callback=on_progress)).is_error
            assert [line for m in seen for line in (m or "").splitlines()] == ["step 0", "step 1", "step 2"]
        # The client ended its MCP session (DELETE): its code session was saved before the answer.
        saved = await store.db["session_snapshots"].find({"user_id": "ana"}).to_list(None)
        assert len(saved) == 1 and saved[0]["session_id"].startswith("mcp-"), saved

        async with http_client(url, mode="legacy") as client:  # another MCP session: fresh state
            other = await run(client, "print(x)")
            assert other.is_error and "NameError" in text_of(other)

        async with http_client(url) as client:  # 2026-07-28: no session exists, and the tool says so
            assert client.protocol_version == "2026-07-28"
            tool = (await client.list_tools()).tools[0]
            assert tool.description == describe_state(
                load_schema(TOOL), sessions=False, versions=versions(mcp_env)
            )
            assert "Each call starts fresh" in tool.description
            assert not (await run(client, "y = 1")).is_error
            alone = await run(client, "print(y)")
            assert alone.is_error and "NameError" in text_of(alone)


def test_http_off_loopback_needs_tokens_and_bad_options_are_refused(
    mcp_env: dict[str, str], tmp_path: Path
) -> None:
    one_line_error(
        run_cli(mcp_env, "mcp", "--http", "--host", "0.0.0.0"), 2, "--host 0.0.0.0", "--tokens FILE"
    )
    bad = {
        "short.txt": ("tok ana\n", "has 3 characters"),
        "fields.txt": ("a-long-enough-token-1234 ana extra\n", "line 1: expected '<token> <user id>'"),
        "twice.txt": ("a-long-enough-token-1234 ana\na-long-enough-token-1234 bob\n", "listed twice"),
        "list.json": ('["a-long-enough-token-1234"]', "must be a JSON object"),
        "empty.txt": ("# nobody yet\n", "has no tokens"),
    }
    for name, (content, needle) in bad.items():
        (tmp_path / name).write_text(content)
        proc = run_cli(mcp_env, "mcp", "--http", "--host", "0.0.0.0", "--tokens", str(tmp_path / name))
        one_line_error(proc, 2, needle)
    one_line_error(
        run_cli(mcp_env, "mcp", "--http", "--tokens", str(tmp_path / "missing.txt")), 2, "cannot read"
    )
    one_line_error(run_cli(mcp_env, "mcp", "--tokens", str(tmp_path / "short.txt")), 2, "--http only")
    one_line_error(run_cli(mcp_env, "mcp", "--http", "--session-id", "s"), 2, "stdio only")
    one_line_error(run_cli(mcp_env, "mcp", "--http", "--port", "70000"), 2, "--port must be between 0 and")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = run_cli(mcp_env, "mcp", "--http", "--port", port)
        one_line_error(busy, 1, f"cannot listen on 127.0.0.1:{port}")
    env = {**mcp_env, "CODE_INTERPRETER_MCP_TOKENS": "tok ana"}
    one_line_error(run_cli(env, "mcp", "--http", "--host", "0.0.0.0"), 2, "$CODE_INTERPRETER_MCP_TOKENS")


async def test_http_bearer_tokens_decide_the_user(
    mcp_env: dict[str, str], store: Any, tmp_path: Path
) -> None:
    ana_file = await upload(store, "ana", b"ana's numbers\n", "ana.txt")
    bob_file = await upload(store, "bob", b"bob's numbers\n", "bob.txt")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# token user\n{ANA} ana\n{BOB} bob  # bob\n")
    with http_server(mcp_env, tmp_path / "server.log", "--host", "0.0.0.0", "--tokens", str(tokens)) as url:
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        accept = {"Accept": "application/json, text/event-stream"}
        async with httpx.AsyncClient() as raw:
            for headers in (
                {},
                {"Authorization": "Bearer not-a-known-token-at-all"},
                {"Authorization": "Basic x"},
            ):
                refused = await raw.post(url, json=initialize, headers={**accept, **headers})
                assert refused.status_code == 401, refused.text
                assert refused.headers["www-authenticate"].startswith("Bearer")
            # An MCP session belongs to the user whose token opened it: another user's token finds none.
            as_ana = {**accept, "Authorization": f"Bearer {ANA}"}
            opened = await raw.post(url, json=initialize, headers=as_ana)
            assert opened.status_code == 200, opened.text
            sid = opened.headers["mcp-session-id"]
            session = {"Mcp-Session-Id": sid, "Mcp-Protocol-Version": "2025-11-25"}
            as_bob = {**accept, "Authorization": f"Bearer {BOB}"}
            listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
            joined = await raw.post(url, json=listing, headers={**as_bob, **session})
            assert joined.status_code == 404, joined.text
            own = await raw.post(url, json=listing, headers={**as_ana, **session})
            assert own.status_code == 200, own.text  # the same request with the opener's token is served
        with pytest.raises(Exception):  # noqa: B017 - the SDK's error for a 401 is not part of its API
            async with http_client(url, token="not-a-known-token-at-all") as client:
                await client.list_tools()

        for token, mine, theirs in (
            (ANA, ana_file, bob_file),
            (BOB, bob_file, ana_file),
        ):
            for mode in ("legacy", "auto"):
                async with http_client(url, token=token, mode=mode) as client:
                    listed = [str(r.uri) for r in (await client.list_resources()).resources]
                    assert listed == [f"code-interpreter://files/{mine}"]
                    with pytest.raises(MCPError):
                        await client.read_resource(f"code-interpreter://files/{theirs}")
                    seen = await run(client, "print(sorted(FILES))")
                    assert f"['{mine}']" in text_of(seen), text_of(seen)


async def test_progress_relay_stops_when_the_last_output_and_the_end_come_together() -> None:
    """Regression: the relay waited with asyncio.wait_for, which on 3.11 swallows a cancel arriving as the
    event it waits for is set; the last output and the end of a cell come together, so the relay never
    stopped and the tools/call never answered (1 run in 3 of the progress test above)."""
    from code_interpreter.executor import ExecutionEvent
    from code_interpreter.integrations.mcp.progress import ProgressRelay

    sent: list[str] = []

    async def send(progress: float, message: str) -> None:
        sent.append(message)

    for _ in range(20):
        async with asyncio.timeout(10):
            async with ProgressRelay(send, interval=0) as relay:
                await asyncio.sleep(0)  # the relay is waiting for output
                relay.on_event(ExecutionEvent("stdout", "end\n"))
    assert sent == ["end"] * 20


@pytest.mark.parametrize(
    ("text", "commas"),
    [
        (f"{ANA} ana\n\n# bob too\n{BOB}   bob\n", False),  # a --tokens file
        (f'{{"{ANA}": "ana", "{BOB}": "bob"}}', False),  # JSON
        (f"{ANA} ana,{BOB} bob", True),  # CODE_INTERPRETER_MCP_TOKENS, comma-separated
    ],
)
def test_token_table_forms(text: str, commas: bool) -> None:
    from code_interpreter.integrations.mcp import TokenTable

    table = TokenTable.from_text(text, "tokens", commas=commas)
    assert (table.user_for(ANA), table.user_for(BOB), table.user_for(ANA[:-1])) == ("ana", "bob", None)
    assert table.users == {"ana", "bob"}


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        *[(h, True) for h in ("127.0.0.1", "127.8.0.1", "::1", "localhost", "LOCALHOST")],
        *[(h, False) for h in ("0.0.0.0", "::", "192.168.1.4", "example.com", "")],
    ],
)
def test_which_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    from code_interpreter.integrations.mcp import is_loopback

    assert is_loopback(host) is loopback


# -- packaging and docs ----------------------------------------------------------------------------------
def test_without_the_sdk_the_command_names_the_extra(mcp_env: dict[str, str]) -> None:
    code = (
        "import sys\nsys.modules['mcp'] = None  # as if the extra were not installed\n"
        "from code_interpreter.cli import main\nsys.exit(main(['mcp']))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=mcp_env, capture_output=True, text=True, timeout=60
    )
    one_line_error(proc, 2, "pip install '.[mcp]' in the clone, or pip install 'mcp>=2.3,<3'")


def test_importing_the_package_and_its_cli_does_not_import_the_sdk(mcp_env: dict[str, str]) -> None:
    code = (
        "import sys, code_interpreter, code_interpreter.cli, code_interpreter.integrations\n"
        "print(sorted(m for m in ('mcp', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=mcp_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _readme_json(marker: str) -> dict[str, Any]:
    blocks = re.findall(r"```json\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"{len(found)} README json blocks contain {marker!r}"
    data: dict[str, Any] = json.loads(found[0])
    return data


async def test_readme_host_configuration_starts_the_server(mcp_env: dict[str, str], tmp_path: Path) -> None:
    entry = _readme_json('"command"')["mcpServers"]["code-interpreter"]
    assert entry["command"] == "code-interpreter" and entry["args"][0] == "mcp"
    params = StdioServerParameters(
        command=str(CLI), args=entry["args"], env={**mcp_env, **entry.get("env", {})}
    )
    with (tmp_path / "server.log").open("a") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            assert [t.name for t in (await client.list_tools()).tools] == [TOOL]
    http = _readme_json('"headers"')["mcpServers"]["code-interpreter"]
    assert http["url"].endswith("/mcp") and http["headers"]["Authorization"].startswith("Bearer ")
