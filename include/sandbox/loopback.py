"""What the emulators share: a threaded HTTP server on 127.0.0.1 only, run as a context manager."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


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
