"""Fixtures of the reliability suite: interpreters with chosen settings, a database server of our own.

The shared ``sandbox_runtime`` is used read-only here; tests that break or change a runtime build a
small one of their own in a temp dir (:func:`small_runtime_settings`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from code_interpreter.interpreter import CodeInterpreter
from code_interpreter.settings import Settings
from conftest import free_port, start_secantus  # the root conftest's helpers (tests/ is on sys.path)

OpenInterp = Callable[..., "contextlib.AbstractAsyncContextManager[CodeInterpreter]"]


@pytest.fixture
def open_interp(make_settings: Callable[..., Settings], sandbox_runtime: Any) -> OpenInterp:
    """``async with open_interp(**overrides) as interp``: a started interpreter on the shared runtime."""

    @contextlib.asynccontextmanager
    async def opened(**overrides: Any) -> AsyncIterator[CodeInterpreter]:
        values: dict[str, Any] = {"runtime_dir": sandbox_runtime.root}
        values.update(overrides)
        async with CodeInterpreter(make_settings(**values)) as interp:
            yield interp

    return opened


def small_runtime_settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Overrides for a private, package-free runtime in ``tmp_path`` (a venv: built in seconds)."""
    values: dict[str, Any] = {
        "runtime_dir": tmp_path / "small-runtime",
        "runtime_packages": (),
        "preload_modules": (),
    }
    values.update(overrides)
    return values


@dataclass
class OwnServer:
    """A SecantusDB server process of the test's own, which the test may kill -9 and restart."""

    storage: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        """The server's URI (the same across restarts: fixed port and storage path)."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> None:
        """Start (or restart) the server on the same port and storage path; waits for a ping."""
        self.proc, _ = start_secantus(self.storage, self.port)

    def kill9(self) -> None:
        """SIGKILL the server: no shutdown, no flush — a crash."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """Terminate the server if it runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[OwnServer]:
    """A started server with its data under ``tmp_path``; stopped at the end of the test."""
    storage = tmp_path / "own-db" / "data"
    storage.parent.mkdir(parents=True)
    server = OwnServer(storage, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def within(seconds: float, aw: Any) -> Any:
    """Await ``aw`` but fail the test (not hang it) when it takes longer than ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        pytest.fail(f"hung: no answer within {seconds} s")
