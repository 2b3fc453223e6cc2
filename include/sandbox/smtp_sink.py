"""An SMTP server on 127.0.0.1 that keeps what it receives: the district's mail relay, for the demo and tests.

Airflow's SMTP provider sends to it as to a real relay (plain SMTP: the connection sets
``disable_ssl`` and ``disable_tls``), and tests read back each message, parsed, with the
envelope sender and recipients (Bcc recipients appear only there).
"""

from __future__ import annotations

import email.policy
import html
import logging
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from include.sandbox.loopback import RestartableServer

# aiosmtpd logs every connection at INFO on "mail.log"; the sink's record is its messages.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass(frozen=True)
class ReceivedMail:
    """One message as delivered: the envelope and the parsed message."""

    envelope_from: str
    envelope_to: tuple[str, ...]
    message: EmailMessage
    received_at: float  # time.time() when the sink accepted it

    @property
    def subject(self) -> str:
        return self.message["Subject"] or ""

    @property
    def body(self) -> str:
        """The HTML part if there is one, else the plain text part."""
        part = self.message.get_body(preferencelist=("html", "plain"))
        return part.get_content() if part is not None else ""

    @property
    def text(self) -> str:
        """The body as its reader sees the words: HTML entities decoded (``&#39;`` is ``'``)."""
        return html.unescape(self.body)


class _Controller(Controller):
    """aiosmtpd's controller, told the port the OS picked when asked for port 0."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class SMTPSink(RestartableServer):
    """The SMTP sink as a context manager: ``with SMTPSink() as smtp: ... smtp.wait_for(1)``."""

    name = "the SMTP sink"

    def __init__(self, *, port: int = 0) -> None:
        self._port = port
        self._received: list[ReceivedMail] = []
        self._arrived = threading.Condition()
        self._controller: _Controller | None = None

    def _open(self) -> int:
        controller = _Controller(_Handler(self), hostname="127.0.0.1", port=self._port, ready_timeout=10)
        controller.start()
        self._controller = controller
        return controller.port

    def _close(self) -> None:
        assert self._controller
        self._controller.stop()
        self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def connection(self, from_email: str) -> dict:
        """The Airflow ``smtp`` connection (``AIRFLOW_CONN_<ID>`` JSON): plain SMTP, no login, one try."""
        return {
            "conn_type": "smtp",
            "host": self.host,
            "port": self.port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": from_email, "timeout": 10,
                      "retry_limit": 0},
        }

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._arrived:
            return list(self._received)

    def clear(self) -> None:
        with self._arrived:
            self._received.clear()

    def wait_for(self, count: int, timeout: float = 10) -> list[ReceivedMail]:
        """Every message received, once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self._received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    subjects = [mail.subject for mail in self._received]
                    raise TimeoutError(
                        f"expected {count} message(s) at the SMTP sink on port {self._port} "
                        f"within {timeout:g}s, received {len(subjects)}: {subjects}"
                    )
                self._arrived.wait(left)
            return list(self._received)

    def _deliver(self, mail: ReceivedMail) -> None:
        with self._arrived:
            self._received.append(mail)
            self._arrived.notify_all()


class _Handler:
    """aiosmtpd's handler: a separate object, as aiosmtpd inspects every attribute of it."""

    def __init__(self, sink: SMTPSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """A complete message: parse it, keep it, wake the waiters."""
        message = message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        self.sink._deliver(ReceivedMail(envelope.mail_from or "", tuple(envelope.rcpt_tos), message, time.time()))
        return "250 Message accepted for delivery"
