"""A real headless Chromium driven over the DevTools protocol on a pipe (stdlib only, no websocket).

``--remote-debugging-pipe`` makes Chromium read commands on fd 3 and write replies and events on
fd 4, each a JSON message ended by NUL. :class:`Browser` starts it with the flags the CI uses,
opens pages, evaluates expressions, takes screenshots and collects what a person would see in the
console: ``console.error``/``warn`` calls, uncaught exceptions, log entries (a CSP violation, a
failed load) and the ``CONSOLE`` lines of ``--enable-logging=stderr``.

If Chromium is missing, :func:`chromium_binary` FAILS the test (never skips), saying how to install it.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--remote-debugging-pipe",
)
# The child gets the pipe ends as fds 3 and 4, as --remote-debugging-pipe expects.
_TRAMPOLINE = (
    "import os, sys\n"
    "os.dup2(int(sys.argv[1]), 3)\nos.dup2(int(sys.argv[2]), 4)\n"
    "os.close(int(sys.argv[1]))\nos.close(int(sys.argv[2]))\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def chromium_binary() -> str:
    """The Chromium executable; fails the test (it is required, not optional) when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "chromium is not installed: the HTML usage report is tested in a real headless browser. "
            "Install it with `apt-get update && apt-get install -y chromium` (.ci/run does this)"
        )
    return found


def _high(fd: int) -> int:
    """``fd`` moved to a number >= 10 (close-on-exec), so the child's dup2 to 3 and 4 cannot clobber it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Page:
    """One tab, attached with its own DevTools session."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A command in this tab's session."""
        return self.browser.send(method, params, session=self.session)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-serialisable)."""
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        return reply["result"].get("value")

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """A PNG of the page (or of ``clip``: x, y, width, height, scale), beyond the viewport if needed."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip is not None:
            params["clip"] = {"scale": 1, **clip}
        return base64.b64decode(self.send("Page.captureScreenshot", params)["data"])

    def events(self, *methods: str) -> list[dict[str, Any]]:
        """This tab's events of the given kinds, in order."""
        return [
            e
            for e in self.browser.events
            if e.get("sessionId") == self.session and e.get("method") in methods
        ]

    def problems(self) -> list[str]:
        """What the console would show as errors or warnings, and uncaught exceptions."""
        out = []
        for e in self.events("Runtime.consoleAPICalled", "Runtime.exceptionThrown", "Log.entryAdded"):
            p = e["params"]
            if e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value') for a in p['args']]}")
            elif e["method"] == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                out.append(f"log {p['entry']['level']}: {p['entry'].get('text')}")
        return out

    def requested_urls(self) -> list[str]:
        """Every URL the page asked for (the page itself included)."""
        return [e["params"]["request"]["url"] for e in self.events("Network.requestWillBeSent")]


class Browser:
    """A headless Chromium process with its DevTools pipe; a context manager that always ends it."""

    def __init__(self, profile: Path, *, width: int = 1000, height: int = 900) -> None:
        self.width, self.height = width, height
        self.stderr_path = profile.parent / f"{profile.name}-stderr.log"
        self.events: list[dict[str, Any]] = []
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        cmd_r, self._cmd_w = map(_high, os.pipe())
        self._ev_r, ev_w = map(_high, os.pipe())
        argv = [chromium_binary(), *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _TRAMPOLINE, str(cmd_r), str(ev_w), *argv],
                pass_fds=(cmd_r, ev_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        os.close(cmd_r)
        os.close(ev_w)
        self._reader = threading.Thread(target=self._read, name="chromium-devtools", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self._ev_r, 1 << 16)
            if not chunk:
                self._replies.put(None)
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self._replies.put(json.loads(raw))

    def _pump(self, timeout: float) -> dict[str, Any]:
        msg = self._replies.get(timeout=timeout)
        if msg is None:
            raise RuntimeError(f"chromium closed its DevTools pipe; see {self.stderr_path}")
        return msg

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: str | None = None,
        timeout: float = 30,
    ) -> dict[str, Any]:
        """Send one command and wait for its reply (events meanwhile are kept in :attr:`events`)."""
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._pump(max(0.01, deadline - time.monotonic()))
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result") or {})
            self.events.append(reply)

    def open(self, url: str, timeout: float = 30) -> Page:
        """A new tab showing ``url``, once its load event has fired."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        page = Page(
            self, self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        )
        for domain in ("Runtime", "Log", "Page", "Network"):
            page.send(f"{domain}.enable")
        page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        page.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while not page.events("Page.loadEventFired"):
            self.events.append(self._pump(max(0.01, deadline - time.monotonic())))
        return page

    def stderr_console_lines(self) -> list[str]:
        """The ``CONSOLE`` lines Chromium logged on stderr (every console message and uncaught error)."""
        return [
            line for line in self.stderr_path.read_text(errors="replace").splitlines() if ":CONSOLE" in line
        ]

    def close(self) -> None:
        """Ask Chromium to quit, kill it if it does not, and release the pipe and the reader thread."""
        if self.proc.poll() is None:
            try:
                os.write(self._cmd_w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            except OSError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        os.close(self._cmd_w)
        self._reader.join(10)
        os.close(self._ev_r)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
