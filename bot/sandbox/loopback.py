"""The HTTP plumbing the loopback emulators share: one handler routing every method to the emulator."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def serve(
    handle: Callable[[BaseHTTPRequestHandler], None],
    *,
    host: str,
    name: str,
    methods: tuple[str, ...],
    tls: ssl.SSLContext | None = None,
) -> ThreadingHTTPServer:
    """Serve `handle` for `methods` on a free port of `host` in a daemon thread (TLS with `tls`)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # one small response must not wait for a delayed ACK

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the default stderr access log."""

    for method in methods:
        setattr(Handler, f"do_{method}", lambda req: handle(req))
    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def shutdown(server: ThreadingHTTPServer | None) -> None:
    """Stop a server started by `serve` (None: nothing to do)."""
    if server is not None:
        server.shutdown()
        server.server_close()
