"""Shared fixtures: a real MongoDB-compatible server for the session, settings per test.

``MONGODB_URI`` set: every test runs against that server. Otherwise one SecantusDB server is
started for the session on a free 127.0.0.1 port, with its data in a temporary directory.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.asynchronous.database import AsyncDatabase

from code_interpreter.settings import Settings

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["_leaks"]

#: Modules whose tests start processes of their own (servers, CLIs, hosts), kill things, or scan a lot:
#: marked ``slow``, so ``pytest -m "not slow"`` is the inner loop (every module of the package is still
#: imported and its core exercised: the executor, sessions, tools, files, tokens, policy, settings, layout).
SLOW_MODULES = frozenset({
    "test_mcp", "test_mcp_limits", "test_cli", "test_cli_chat", "test_cli_run", "test_cli_sessions",
    "test_embedded_lifecycle", "test_storage", "test_storage_start", "test_files_cleanup",
    "test_files_buckets", "test_sessions_hosts", "test_session_leases", "test_interpreter_packages",
    "test_packages_runtime",
    "test_import_candidates", "test_sandbox_trust", "test_langchain", "test_integration_openai_agents",
    "test_integration_smolagents", "test_integration_pydantic_ai", "test_integrations_optional",
    "test_docs", "test_first_call", "test_report", "test_store",
    "test_session_attacks", "test_session_attacks_limits",
})  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        if module in SLOW_MODULES or "reliability" in item.path.parts:
            item.add_marker(pytest.mark.slow)


# Tests never write outside the repo and temp dirs: tiktoken's seeded cache goes to a temp dir.
os.environ.setdefault("TIKTOKEN_CACHE_DIR", tempfile.mkdtemp(prefix="ci-test-tiktoken-"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_secantus(storage: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start a SecantusDB server process and wait until it answers a ping."""
    port = port or free_port()
    log = open(storage.parent / f"secantus-{port}.log", "ab")  # noqa: SIM115 - closed with the process
    # A 4 GB cache cap (allocated as used), not the default 1 GB: with 1 GB, SecantusDB 0.7.0b3 wedged
    # once in CI, a GridFS insert waiting forever in WiredTiger's cache eviction while holding the
    # storage lock its TTL sweeper waited on, ~225 MB into the suite's writes. WiredTiger drafts writers
    # into eviction at 20% of the cache dirty; 4 GB keeps that out of the suite's reach.
    cmd = [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port), "--cache-size", "4G"]
    proc = subprocess.Popen(
        [*cmd, "--storage-path", str(storage)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()  # the child holds its own descriptor; an unclosed file is a ResourceWarning (an error here)
    uri = f"mongodb://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    with MongoClient(uri, serverSelectionTimeoutMS=500) as client:
        while True:
            try:
                client.admin.command("ping")
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(f"SecantusDB did not start; see {log.name}") from None
                time.sleep(0.1)
    return proc, uri


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of the real server every test talks to."""
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    storage = tmp_path_factory.mktemp("secantus") / "data"
    proc, uri = start_secantus(storage)
    try:
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def db_name() -> str:
    """A database name of the test's own, so tests never see each other's data."""
    return f"ci_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def mongo_db(mongo_uri: str, db_name: str) -> AsyncIterator[AsyncDatabase[Any]]:
    """An async database on the real server, dropped after the test."""
    client: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri, serverSelectionTimeoutMS=5000, tz_aware=True)
    try:
        yield client[db_name]
    finally:
        await client.drop_database(db_name)
        await client.close()


@pytest.fixture
def make_settings(tmp_path: Path, mongo_uri: str, db_name: str) -> Callable[..., Settings]:
    """Settings factory: the test's own data dir and database on the session server."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"home": tmp_path / "home", "mongodb_uri": mongo_uri, "database": db_name}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
async def sandbox_runtime(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shared sandbox runtime with the baseline packages (built once; kept between runs under tox).

    ``CODE_INTERPRETER_TEST_RUNTIME`` names its root (tox sets ``<repo>/.sandbox-runtime``); unset, a
    temporary directory is used and the runtime is built for this session.
    """
    from code_interpreter.packages.generations import ensure_runtime

    root = os.environ.get("CODE_INTERPRETER_TEST_RUNTIME")
    runtime_dir = Path(root) if root else tmp_path_factory.mktemp("sandbox-runtime") / "runtime"
    settings = Settings(home=tmp_path_factory.mktemp("runtime-home"), runtime_dir=runtime_dir)
    return await ensure_runtime(settings)


@pytest.fixture
async def interp(make_settings: Callable[..., Settings], sandbox_runtime: Any) -> AsyncIterator[Any]:
    """A started CodeInterpreter per test: its own data dir and database, the shared sandbox runtime."""
    from code_interpreter.interpreter import CodeInterpreter

    async with CodeInterpreter(make_settings(runtime_dir=sandbox_runtime.root)) as interpreter:
        yield interpreter


@pytest.fixture
def cut_package_index(monkeypatch: pytest.MonkeyPatch) -> Callable[[], str]:
    """A function that points pip at a closed 127.0.0.1 port with every configured source disabled.

    Call it after the runtime is built (building needs the index); it returns the dead index URL.
    """

    def cut() -> str:
        port = free_port()  # nothing listens there: connections are refused at once
        url = f"http://127.0.0.1:{port}/simple"
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # skip pip.conf (find-links, extra indexes)
        monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
        monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
        monkeypatch.delenv("PIP_NO_INDEX", raising=False)
        monkeypatch.setenv("PIP_INDEX_URL", url)
        # with 0 retries pip logs the connection error only at debug level; 1 keeps the warning visible
        monkeypatch.setenv("PIP_RETRIES", "1")
        monkeypatch.setenv("PIP_TIMEOUT", "5")
        return url

    return cut


@pytest.fixture
def tcp_server() -> Iterator[tuple[int, list[Any]]]:
    """A TCP server on the host's own 127.0.0.1: (its port, the addresses of what reached it)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    accepted: list[Any] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = srv.accept()
            except OSError:
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield srv.getsockname()[1], accepted
    stop.set()
    thread.join()
    srv.close()
