"""Fixtures for the token counter: a local HTTP image server on 127.0.0.1 that records every request."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .images import gif, jpeg, png, webp_vp8x


@dataclass
class Hit:
    """One request the server saw."""

    path: str
    range: str | None
    status: int
    bytes_sent: int


@dataclass
class ImageServer:
    """Serves generated images (Range-aware), errors and a stalling endpoint; records hits."""

    port: int
    files: dict[str, tuple[str, bytes]]
    hits: list[Hit] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        """Absolute URL of ``path`` on this server under ``host``."""
        return f"http://{host}:{self.port}{path}"

    def hits_for(self, path: str) -> list[Hit]:
        """Requests whose path (without query) is ``path``."""
        return [h for h in self.hits if h.path.split("?")[0] == path]


def _handler(server: ImageServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            # Recorded before the client can see the response, so a test never races the record.
            server.hits.append(Hit(self.path, self.headers.get("Range"), status, len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == "/stall":
                server.hits.append(Hit(self.path, self.headers.get("Range"), 0, 0))
                server.release.wait(10)  # never answers in time
                return
            if path == "/404.png":
                self._send(404, b"not found", {"Content-Type": "text/plain"})
                return
            if path.startswith("/redirect"):
                target = path.removeprefix("/redirect")
                location = server.url(target, host="localhost") if "out" in self.path else server.url(target)
                self._send(302, b"", {"Location": location})
                return
            if path not in server.files:
                self._send(404, b"missing", {"Content-Type": "text/plain"})
                return
            mime, body = server.files[path]
            rng = self.headers.get("Range")
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", rng or "")
            if m and not path.startswith("/norange"):
                start, end = int(m.group(1)), min(int(m.group(2)), len(body) - 1)
                part = body[start : end + 1]
                self._send(
                    206, part, {"Content-Type": mime, "Content-Range": f"bytes {start}-{end}/{len(body)}"}
                )
            else:
                self._send(200, body, {"Content-Type": mime})

    return Handler


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # The client hangs up after the few KB it wants: that is the behaviour under test, not an error.
        pass


FILES: dict[str, tuple[str, bytes]] = {
    "/a.png": ("image/png", png(1024, 1024)),
    "/b.jpg": ("image/jpeg", jpeg(2048, 4096, tail=200_000)),
    "/exif.jpg": ("image/jpeg", jpeg(1800, 2400, exif_bytes=9000, tail=50_000)),
    "/c.gif": ("image/gif", gif(300, 200)),
    "/d.webp": ("image/webp", webp_vp8x(640, 480)),
    "/norange.png": ("image/png", png(512, 512) + b"\x00" * 300_000),
    "/page.html": ("text/html", b"<html><body>" + b"not an image " * 100 + b"</body></html>"),
    # Discord-shaped paths, served locally.
    "/attachments/111/222/cat.png": ("image/png", png(1600, 900)),
}


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    """A fresh recording image server on 127.0.0.1 (a free port)."""
    srv = ImageServer(port=0, files=dict(FILES))
    httpd = _QuietServer(("127.0.0.1", 0), _handler(srv))
    httpd.daemon_threads = True
    srv.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
