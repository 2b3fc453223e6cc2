"""What the sandbox's servers on 127.0.0.1 share.

All of them: :class:`LocalServer`, run as a context manager. The SFTP server and the SMTP
sink: its start/stop on a port kept across a restart. The HTTP emulators (IC, Schoology):
:class:`LoopbackHandler` and :class:`LoopbackService` (a threaded HTTP server), the
:class:`Reply` a handler answers with, the :class:`RecordedRequest` each keeps of a request;
and with the SFTP server, the faults a test switches on (:class:`Fault`, :class:`FaultQueue`).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

JSON = "application/json; charset=utf-8"


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on now, for a server started as a process of its own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalServer:
    """A server on 127.0.0.1 as a context manager: ``with Server(...) as server:`` starts and stops it."""

    host = "127.0.0.1"

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


class RestartableServer(LocalServer):
    """A server that :meth:`stop` takes down (connections refused) and :meth:`start` brings back on
    the same port, as a server back from an outage. A subclass names itself (``name``) and opens
    (:meth:`_open`, returning the bound port) and closes (:meth:`_close`) what it serves."""

    name: str  # as a message names it: "the SFTP server"
    _port: int

    def _open(self) -> int:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def start(self) -> Self:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self._port = self._open()
        return self

    def stop(self) -> None:
        if self.running:
            self._close()

    @property
    def port(self) -> int:
        """The bound port; it stays the same while the server is stopped."""
        if not self._port:
            raise RuntimeError(f"{self.name} has not been started")
        return self._port


@dataclass(frozen=True)
class RecordedRequest:
    """One request as an emulator saw it (``status`` 0: the connection was dropped)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    headers: dict[str, str]
    started: float
    ended: float
    body: bytes = b""
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """What a handler answers: a status, headers and a body, and how the answer ends.

    ``cut``: ``"reset"`` drops the connection instead of answering (after ``stall`` seconds, as
    a call that times out once applied); ``"mid_body"`` sends half the body and drops.
    """

    status: int
    headers: dict[str, str]
    body: bytes = b""
    cut: str | None = None
    stall: float = 0.0

    @classmethod
    def json(cls, status: int, body: bytes, headers: dict[str, str] | None = None) -> Reply:
        """``body`` is the payload encoded as the server encodes JSON."""
        return cls(status, {"Content-Type": JSON, **(headers or {})}, body)

    @property
    def recorded_status(self) -> int:
        """The status as the client got it: 0 when the connection was cut."""
        return 0 if self.cut else self.status


@dataclass
class Fault:
    """A fault switched on: it meets ``times`` matching requests once ``after`` have gone by.

    ``retry_after`` and ``seconds`` are the HTTP emulators' (429's Retry-After, a latency or a
    stall); ``after_bytes`` the SFTP server's (bytes of a download sent before the reset).
    """

    kind: str
    times: int = 1
    path_contains: str | None = None
    after: int = 0
    retry_after: float = 1
    seconds: float = 0
    after_bytes: int = 0


class FaultQueue:
    """The faults a server was told to inject, of the ``kinds`` it knows, taken in the order given."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def check(self, kind: str) -> None:
        if kind not in self.kinds:
            raise ValueError(f"unknown fault {kind!r}; choose from {', '.join(self.kinds)}")

    def add(self, fault: Fault) -> None:
        self.check(fault.kind)
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, path: str, meets: Callable[[Fault], bool] | None = None) -> Fault | None:
        """The first fault a request for ``path`` meets (those ``meets`` turns down are passed over),
        counted off; a fault whose ``after`` is not yet used up lets the request through instead."""
        with self._lock:
            for fault in self._faults:
                if fault.times <= 0 or (fault.path_contains and fault.path_contains not in path):
                    continue
                if meets is not None and not meets(fault):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                fault.times -= 1
                return fault
        return None


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, quiet, every method to :meth:`serve`; plus what faults need."""

    emulator: LoopbackService  # set by the service that serves this handler
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

    def record(self, method: str, path: str, query: dict[str, str], body: bytes, reply: Reply,
               started: float) -> None:
        """Keep the request and its reply; called before the client can see the answer, so tests
        never race the log."""
        self.emulator._record(RecordedRequest(method, path, query, reply.recorded_status,
                                              dict(self.headers.items()), started, time.monotonic(), body,
                                              reply.headers))

    def answer(self, reply: Reply) -> None:
        """Send ``reply``, or cut the connection as it says."""
        if reply.cut == "reset":
            if reply.stall:  # the client is left waiting, then cut off
                time.sleep(reply.stall)
            self.drop()
        else:
            self.send(reply.status, reply.headers, reply.body,
                      cut_after=len(reply.body) // 2 if reply.cut == "mid_body" else None)

    def drop(self) -> None:
        """Close with a TCP reset, as a crashed proxy or a load balancer that gave up does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()


class LoopbackService(LocalServer):
    """Serves ``handler_class`` (which gets this object as ``emulator``) on 127.0.0.1:``port``, and
    keeps the last ``max_recorded`` requests it answered (:attr:`requests`)."""

    handler_class: type[BaseHTTPRequestHandler]
    _server: LoopbackServer | None = None

    def __init__(self, *, port: int = 0, max_recorded: int = 100_000) -> None:
        self._port = port
        self._recorded: deque[RecordedRequest] = deque(maxlen=max_recorded)
        self._recorded_lock = threading.Lock()
        self.request_count = 0  # all requests answered, however many are kept in :attr:`requests`

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._recorded_lock:
            return list(self._recorded)

    def _record(self, request: RecordedRequest) -> None:
        """Called by the handler, before the client can see the answer, so tests never race the log."""
        with self._recorded_lock:
            self._recorded.append(request)
            self.request_count += 1

    def _forget_requests(self) -> None:
        with self._recorded_lock:
            self._recorded.clear()

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

    @property
    def port(self) -> int:
        assert self._server, "the emulator is not running"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """What goes in the Airflow connection's host field."""
        return f"http://127.0.0.1:{self.port}"
