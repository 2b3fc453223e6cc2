"""What the emulators share: a threaded HTTP server on 127.0.0.1 only, run as a context manager."""

from __future__ import annotations

import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, quiet, every method to :meth:`serve`; plus what faults need."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once; no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: each emulator keeps its own record of requests."""

    def do_GET(self) -> None:
        self.serve("GET")

    def do_POST(self) -> None:
        self.serve("POST")

    def do_PUT(self) -> None:
        self.serve("PUT")

    def do_DELETE(self) -> None:
        self.serve("DELETE")

    def serve(self, method: str) -> None:
        raise NotImplementedError

    def read_request(self) -> tuple[str, dict[str, str], bytes]:
        """The path, the query (last value of each name) and the body."""
        parts = urlsplit(self.path)
        query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        return parts.path, query, self.rfile.read(length) if length else b""

    def send(self, status: int, headers: dict[str, str], body: bytes, *, cut_after: int | None = None) -> None:
        """Answer; with ``cut_after``, promise the whole body, send that many bytes and reset."""
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cut_after is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut_after])
        self.wfile.flush()
        self.drop()

    def drop(self) -> None:
        """Close with a TCP reset, as a crashed proxy or a load balancer that gave up does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


class LoopbackService:
    """Serves ``handler_class`` (which gets this object as ``emulator``) on 127.0.0.1:``_port``."""

    handler_class: type[BaseHTTPRequestHandler]
    _port: int
    _server: LoopbackServer | None = None

    def start(self) -> Self:
        handler = type(f"{type(self).__name__}Handler", (self.handler_class,), {"emulator": self})
        self._server = LoopbackServer(("127.0.0.1", self._port), handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=type(self).__name__, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server, "the emulator is not running"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """What goes in the Airflow connection's host field."""
        return f"http://127.0.0.1:{self.port}"
