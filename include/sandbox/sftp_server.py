"""An SFTP server on 127.0.0.1: the district's SFTP server that receives the LMS grade auto-export.

It is real SSH (paramiko's server side), so the Airflow SFTP provider talks to it exactly as
to a district's server: password authentication, a host key the connection must verify, and
the SFTP operations the hook and the sensor use (list, stat with size and mtime, read, put,
rename, mkdir, remove). A local directory is served as ``/``.

Faults: :meth:`SFTPServer.inject` ``("drop_mid_download", after_bytes=N)`` resets the
connection once N bytes of a file have gone out, and :meth:`SFTPServer.stop` /
:meth:`SFTPServer.start` take it down (connections refused) and bring it back on the same port.
"""

from __future__ import annotations

import logging
import os
import posixpath
import secrets
import socket
import struct
import threading
from pathlib import Path

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_OK

from include.sandbox.loopback import Fault, FaultQueue, RestartableServer

FAULTS = ("drop_mid_download",)
_ACCEPT_POLL = 0.1  # seconds; how long stop() may wait for the accept loop to notice
_WIRE_LOG = "include.sandbox.sftp_server.wire"

# paramiko logs every dropped or refused session (tracebacks included); the faults here are on purpose.
logging.getLogger(_WIRE_LOG).addHandler(logging.NullHandler())
logging.getLogger(_WIRE_LOG).propagate = False


class SFTPServer(RestartableServer):
    """The server as a context manager: ``with SFTPServer(root, username=..., password=...) as sftp:``."""

    name = "the SFTP server"

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        username: str,
        password: str,
        port: int = 0,
        host_key_path: str | os.PathLike | None = None,
    ) -> None:
        """``host_key_path``: an RSA private key to serve, created there if missing, so a
        connection holding its public half stays valid across restarts of the demo; without it
        a key is generated for this instance (kept across :meth:`stop` / :meth:`start`). RSA
        because the SSH and SFTP hooks read a bare base64 ``host_key`` extra as RSA."""
        self.root = Path(root).resolve()
        self.username = username
        self._password = password
        self._port = port
        self._host_key = _load_or_create_key(Path(host_key_path) if host_key_path else None)
        self._lock = threading.Lock()
        self._faults = FaultQueue(FAULTS)
        self._transports: set[paramiko.Transport] = set()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------

    def _open(self) -> int:
        """Listen; after :meth:`stop` on the same port, as a server back from an outage."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self._port))
        listener.listen(32)
        listener.settimeout(_ACCEPT_POLL)
        self._listener = listener
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, args=(listener,), name="sftp-server",
                                        daemon=True)
        self._thread.start()
        return listener.getsockname()[1]

    def _close(self) -> None:
        """Close the port (new connections are refused) and cut every open session."""
        assert self._listener
        self._stopping.set()
        assert self._thread
        self._thread.join(timeout=5)
        self._listener.close()
        self._listener = None
        with self._lock:
            transports, self._transports = list(self._transports), set()
        for transport in transports:
            transport.close()

    @property
    def running(self) -> bool:
        return self._listener is not None

    # -- what a client needs to verify the server ---------------------------------------

    @property
    def host_key_type(self) -> str:
        return self._host_key.get_name()

    @property
    def host_key_base64(self) -> str:
        """The public host key as the connection extra ``host_key`` takes it (a bare key is read as RSA)."""
        return self._host_key.get_base64()

    @property
    def known_hosts_line(self) -> str:
        """The line an OpenSSH ``known_hosts`` file holds for this server (non-22 ports are bracketed)."""
        return f"[{self.host}]:{self.port} {self.host_key_type} {self.host_key_base64}"

    def connection(self) -> dict:
        """The Airflow connection (``AIRFLOW_CONN_<ID>`` JSON) that reaches this server and checks its key."""
        return {
            "conn_type": "sftp",
            "host": self.host,
            "port": self.port,
            "login": self.username,
            "password": self._password,
            "extra": {"host_key": self.host_key_base64, "no_host_key_check": False},
        }

    # -- faults -----------------------------------------------------------------------

    def inject(self, fault: str, *, after_bytes: int = 0, times: int = 1,
               path_contains: str | None = None) -> None:
        """Reset the connection of the next ``times`` downloads (of paths containing
        ``path_contains`` when given) once ``after_bytes`` bytes of the file have been sent."""
        self._faults.add(Fault(fault, times, path_contains, after_bytes=after_bytes))

    def clear_faults(self) -> None:
        self._faults.clear()

    def _take_fault(self, path: str) -> Fault | None:
        return self._faults.take(path)

    # -- serving ----------------------------------------------------------------------

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            self._serve(sock)

    def _serve(self, sock: socket.socket) -> None:
        """Hand the socket to a paramiko transport, which runs the session on its own thread."""
        transport = paramiko.Transport(sock)
        transport.set_log_channel(_WIRE_LOG)
        transport.add_server_key(self._host_key)
        transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _Filesystem)
        with self._lock:
            self._transports = {known for known in self._transports if known.is_active()}
            self._transports.add(transport)
        try:
            transport.start_server(event=threading.Event(), server=_Session(self, transport))
        except (paramiko.SSHException, OSError):
            transport.close()

    def _check_password(self, username: str, password: str) -> bool:
        return secrets.compare_digest(username.encode(), self.username.encode()) and secrets.compare_digest(
            password.encode(), self._password.encode()
        )

    def _local(self, path: str) -> str:
        """The file behind an SFTP path; ``..`` never leaves the root."""
        return str(self.root.joinpath(posixpath.normpath("/" + path).lstrip("/")))


def _load_or_create_key(path: Path | None) -> paramiko.RSAKey:
    if path is not None and path.exists():
        return paramiko.RSAKey.from_private_key_file(str(path))
    key = paramiko.RSAKey.generate(2048)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        key.write_private_key_file(str(path))
    return key


class _Session(paramiko.ServerInterface):
    """One SSH session: password auth for the configured user, SFTP only."""

    def __init__(self, server: SFTPServer, transport: paramiko.Transport) -> None:
        self.server = server
        self.transport = transport

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        if self.server._check_password(username, password):
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


def _errors_as_status(method):
    """An OS error becomes the SFTP status code the client turns back into an IOError."""

    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except OSError as error:
            return paramiko.SFTPServer.convert_errno(error.errno)

    return wrapper


class _Filesystem(paramiko.SFTPServerInterface):
    """The served directory, as seen through one SFTP session."""

    def __init__(self, session: _Session, *args, **kwargs) -> None:
        super().__init__(session, *args, **kwargs)
        self.session = session
        self.server = session.server

    @_errors_as_status
    def list_folder(self, path: str):
        local = self.server._local(path)
        entries = []
        for name in sorted(os.listdir(local)):
            attributes = paramiko.SFTPAttributes.from_stat(os.stat(os.path.join(local, name)), name)
            entries.append(attributes)
        return entries

    @_errors_as_status
    def stat(self, path: str):
        return paramiko.SFTPAttributes.from_stat(os.stat(self.server._local(path)))

    @_errors_as_status
    def lstat(self, path: str):
        return paramiko.SFTPAttributes.from_stat(os.lstat(self.server._local(path)))

    @_errors_as_status
    def open(self, path: str, flags: int, attr):
        local = self.server._local(path)
        descriptor = os.open(local, flags, 0o644)
        if flags & os.O_WRONLY:
            mode = "ab" if flags & os.O_APPEND else "wb"
        elif flags & os.O_RDWR:
            mode = "a+b" if flags & os.O_APPEND else "r+b"
        else:
            mode = "rb"
        reading = not flags & (os.O_WRONLY | os.O_RDWR)
        handle = _Handle(flags, self.session.transport, self.server._take_fault(path) if reading else None)
        handle.filename = local
        handle.readfile = handle.writefile = os.fdopen(descriptor, mode)
        return handle

    @_errors_as_status
    def remove(self, path: str):
        os.remove(self.server._local(path))
        return SFTP_OK

    @_errors_as_status
    def rename(self, oldpath: str, newpath: str):
        """SFTP v3 rename: refused when the target exists (OpenSSH links then unlinks)."""
        target = self.server._local(newpath)
        if os.path.lexists(target):
            return SFTP_FAILURE
        os.rename(self.server._local(oldpath), target)
        return SFTP_OK

    @_errors_as_status
    def posix_rename(self, oldpath: str, newpath: str):
        os.replace(self.server._local(oldpath), self.server._local(newpath))
        return SFTP_OK

    @_errors_as_status
    def mkdir(self, path: str, attr):
        os.mkdir(self.server._local(path))
        return SFTP_OK

    @_errors_as_status
    def rmdir(self, path: str):
        os.rmdir(self.server._local(path))
        return SFTP_OK

    @_errors_as_status
    def chattr(self, path: str, attr):
        paramiko.SFTPServer.set_file_attr(self.server._local(path), attr)
        return SFTP_OK


class _Handle(paramiko.SFTPHandle):
    """An open file; a download carrying a ``drop_mid_download`` fault resets the connection."""

    def __init__(self, flags: int, transport: paramiko.Transport, fault: Fault | None) -> None:
        super().__init__(flags)
        self._transport = transport
        self._fault = fault
        self._sent = 0

    def read(self, offset: int, length: int):
        if self._fault is not None:
            left = self._fault.after_bytes - self._sent
            if left <= 0:
                _reset(self._transport)
                return SFTP_FAILURE
            length = min(length, left)
        data = super().read(offset, length)
        if isinstance(data, bytes):
            self._sent += len(data)
        return data

    def stat(self):
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as error:
            return paramiko.SFTPServer.convert_errno(error.errno)

    def chattr(self, attr):
        try:
            paramiko.SFTPServer.set_file_attr(self.filename, attr)
        except OSError as error:
            return paramiko.SFTPServer.convert_errno(error.errno)
        return SFTP_OK


def _reset(transport: paramiko.Transport) -> None:
    """Close with a TCP reset, as a crashed server or a firewall timeout does."""
    sock = transport.sock
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    transport.close()
