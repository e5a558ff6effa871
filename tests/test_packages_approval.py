"""Approval is decided before any lock (#25), and the approved list the seed's categories call for.

A refused import (an unapproved package: nothing to install) waited 36 s behind another user's
install, because the runtime's install lock was taken before approval was decided. Here a real pip
run hangs on a local package index that serves its wheel only when told to, and a refusal must come
back while that install is still running.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from code_interpreter.packages import PackageManager
from code_interpreter.settings import Settings

HANG_GUARD_S = 120  # bounds a hang only (pip on the loaded 2-core machine)
WHEEL = "ci_slow-1.0-py3-none-any.whl"


def _wheel() -> bytes:
    """A minimal pure-Python wheel: ``import ci_slow`` works once it is installed."""
    files = {
        "ci_slow/__init__.py": b"VALUE = 42\n",
        "ci_slow-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: ci-slow\nVersion: 1.0\n",
        "ci_slow-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("ci_slow-1.0.dist-info/RECORD,,")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("ci_slow-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return buf.getvalue()


class SlowIndex:
    """A PEP 503 index on 127.0.0.1 whose one wheel is sent only after ``release`` is set."""

    def __init__(self) -> None:
        self.wheel = _wheel()
        self.asked = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/simple/ci-slow":
                    sha = hashlib.sha256(outer.wheel).hexdigest()
                    link = f'<a href="/files/{WHEEL}#sha256={sha}">{WHEEL}</a>'
                    self._send(f"<html><body>{link}</body></html>".encode(), "text/html")
                elif self.path == f"/files/{WHEEL}":
                    outer.asked.set()
                    outer.release.wait(HANG_GUARD_S)  # the install hangs here, holding its lock
                    self._send(outer.wheel, "application/octet-stream")
                else:
                    self.send_error(404)

            def _send(self, body: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def __enter__(self) -> SlowIndex:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def slow_index(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowIndex]:
    with SlowIndex() as index:
        monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # this index only: no pip.conf, no find-links
        for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("PIP_INDEX_URL", index.url)
        yield index


async def test_a_refusal_returns_while_another_install_holds_the_lock(
    tmp_path: Path, slow_index: SlowIndex
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        runtime_dir=tmp_path / "rt",
        runtime_packages=(),
        approved_packages=("ci-slow",),
    )
    pm = PackageManager(settings)
    await pm.ensure_runtime()  # a bare venv: seconds
    installing = asyncio.create_task(pm.prepare("import ci_slow"))
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            while not slow_index.asked.is_set():  # pip is downloading the wheel: the install holds the lock
                assert not installing.done(), installing.result()
                await asyncio.sleep(0.05)
            refused = await pm.prepare("import flask\nprint(flask.__version__)")
            assert not installing.done()  # the refusal did not wait for the install
            asked = await pm.prepare("print(1)", ["requests"])  # a refused install_packages name too
            assert not installing.done()
    finally:
        slow_index.release.set()
    assert refused.refused and refused.installed == ()
    assert "module 'flask' (line 1) is not installed and flask is not on the approved package list" in (
        refused.refusal_message()
    )
    assert [name for name, _ in asked.refused] == ["requests"]
    async with asyncio.timeout(HANG_GUARD_S):
        done = await installing
    assert done.installed == ("ci-slow",) and done.ok
    assert pm.pip_calls == 1  # the refusals started no pip run


async def test_an_unapproved_import_is_refused_before_the_runtime_is_built(tmp_path: Path) -> None:
    """Approval needs no runtime: nothing is built for code that cannot run as written."""
    pm = PackageManager(Settings(home=tmp_path / "home", runtime_dir=tmp_path / "rt", runtime_packages=()))
    result = await pm.prepare("import flask")
    assert [name for name, _ in result.refused] == ["flask"]
    assert not pm.runtime.exists() and pm.pip_calls == 0


# -- the approved list: helpers realistic data and image code imports (#25) -----------------------------


@pytest.mark.parametrize(
    ("module", "dist"),
    [
        ("bs4", "beautifulsoup4"),
        ("faker", "faker"),
        ("cv2", "opencv-python-headless"),
        ("soupsieve", "soupsieve"),
    ],
)
def test_the_seeds_data_and_image_helpers_are_approved_by_import_name(
    tmp_path: Path, module: str, dist: str
) -> None:
    pm = PackageManager(Settings(home=tmp_path))
    assert pm.distribution_for_import(module) == dist
    ok, reason = pm.is_package_approved(dist)
    assert ok, reason
    assert dist in pm.approval.listed or module == "soupsieve"  # soupsieve comes along with bs4


async def test_bs4_and_faker_install_on_import_and_work(tmp_path: Path) -> None:
    pm = PackageManager(Settings(home=tmp_path / "home", runtime_dir=tmp_path / "rt", runtime_packages=()))
    result = await pm.prepare("from bs4 import BeautifulSoup\nfrom faker import Faker\n")
    assert result.ok, result.refusal_message()
    assert set(result.installed) == {"beautifulsoup4", "faker"}
    code = (
        "from bs4 import BeautifulSoup; from faker import Faker; Faker.seed(1); "
        "print(BeautifulSoup('<p>hi</p>', 'html.parser').p.text, bool(Faker().name()))"
    )
    proc = await asyncio.create_subprocess_exec(
        str(pm.runtime.python),
        "-I",
        "-c",
        code,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["hi", "True"]


def test_writing_named_packages_adds_them_and_keeps_the_rest(tmp_path: Path) -> None:
    """``closure --write NAME`` replaced every dependency by NAME's closure; now it adds NAME and its own."""
    from code_interpreter.packages.closure import main

    data = tmp_path / "approved.json"
    data.write_text(json.dumps({"packages": ["numpy"], "dependencies": ["kept-dep"]}))
    assert main(["--write", "--data", str(data), "beautifulsoup4"]) == 0
    written = json.loads(data.read_text())
    assert written["packages"] == ["beautifulsoup4", "numpy"]
    assert {"kept-dep", "soupsieve"} <= set(written["dependencies"])
