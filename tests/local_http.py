"""A tiny HTTP server on 127.0.0.1 serving a table of routes, for tests that talk over the network
(URL intake, model downloads, job callbacks). Clients may hang up mid-response on purpose
(deadline and size-cap tests); the server stays quiet about it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RouteHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    routes: Mapping[str, Callable[[RouteHandler], None]] = {}
    hits: list[str] | None = None  # every requested path, in order, when given

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.hits is not None:
            self.hits.append(self.path)
        route = self.routes.get(self.path.split("?")[0])
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if route is None:
                self.send(404, b"not found")
            else:
                route(self)

    do_POST = do_GET  # routes read the body themselves (callback receivers)

    def send(self, status: int, body: bytes, **headers: str) -> None:
        """A whole response; header names use `_` for `-` (Content_Type=...)."""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str) -> None:
        self.send(302, b"", Location=location)


Route = Callable[[RouteHandler], None]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


@contextlib.contextmanager
def serve_routes(routes: Mapping[str, Route], hits: list[str] | None = None) -> Iterator[str]:
    """Serve `routes` on 127.0.0.1 (a free port); yields the base URL, stops on exit."""
    handler = type("Handler", (RouteHandler,), {"routes": routes, "hits": hits})
    server = _QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
