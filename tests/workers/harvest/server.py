"""A real HTTP server on 127.0.0.1 for the harvest tests; it records every request it gets."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, urlsplit

from PIL import Image


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # No Content-Length: the body runs until the connection closes.
    unsized: bool = False


Route = Callable[[Request], Reply]


def jpeg(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A small real JPEG whose pixels (and so sha256) depend on ``seed``."""
    colour = ((seed * 67) % 256, (seed * 151) % 256, (seed * 29) % 256)
    image = Image.new("RGB", (width, height), colour)
    for i, byte in enumerate(seed.to_bytes(4, "big")):
        image.putpixel((i, 0), (byte, 255 - byte, byte))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


class LocalServer:
    """Serves ``routes`` (longest matching path prefix wins) on a free port of ``host``, a
    loopback address."""

    def __init__(self, routes: dict[str, Route], host: str = "127.0.0.1") -> None:
        self.routes = routes
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                request = Request(parts.path, query, dict(self.headers.items()))
                with server._lock:
                    server.requests.append(request)
                reply = server.dispatch(request)
                if reply.delay:
                    time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.unsized:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                try:
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def dispatch(self, request: Request) -> Reply:
        matches = [p for p in self.routes if request.path.startswith(p)]
        if not matches:
            return Reply(404, b"not found", {"Content-Type": "text/plain"})
        return self.routes[max(matches, key=len)](request)

    def hits(self, prefix: str = "/") -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path.startswith(prefix))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
