"""The base both API hooks (IC's OneRoster, Schoology) share: one Airflow connection, its extras
checked, a ``requests`` session built from it, and the answers every API gives alike.

A hook built on :class:`ApiHook` names the extras it reads (``OWN_EXTRAS``); besides those only
``read_timeout`` and the transport settings its session takes are accepted: ``verify`` (TLS
verification, on unless set false; or a CA bundle), ``cert`` (a client certificate), ``proxies``
and ``trust_env``. Any other extra — a typo, a secret put in the wrong place — fails the task with
the connection's name, the extra and the allowed ones, before anything is sent. The session is
built here from the connection's host and those transport settings alone: no extra becomes a
header, and the login/password are never sent as they are (each hook authenticates its calls its
own way).

What the APIs answer alike is handled here too: a 429 holds every call of the hook for its
Retry-After and, like a 5xx, is a :class:`~plugins.hooks.retrying.Transient` for the retry
policy; a server's message is read from the JSON fields its API puts it in, and redacted
(:func:`include.privacy.redacted`) before it goes into an exception or a log line.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException
from requests_toolbelt.adapters.socket_options import TCPKeepAliveAdapter

from include.privacy import redacted
from plugins.hooks.retrying import RetryPolicy, TokenBucket, Transient, retry_after_seconds

if TYPE_CHECKING:
    from airflow.sdk import Connection

TRANSPORT_EXTRAS = frozenset({"verify", "cert", "proxies", "trust_env"})
SHARED_EXTRAS = frozenset({"read_timeout"})  # seconds to wait for an answer before retrying
KEEP_ALIVE = {"idle": 120, "count": 20, "interval": 30}  # TCP keep-alive probes of an idle connection
BODY_EXCERPT = 200  # characters of a non-JSON answer kept as the server's message


class ConnectionSettingsError(AirflowFailException):
    """A connection is set up wrongly: retrying cannot help, so the task fails at once."""


class ApiHook(BaseHook):
    """A hook on one HTTP API: its connection read once, its extras checked, sessions built from
    it, calls paced and retried, and the server's answers read alike."""

    hook_name: str
    OWN_EXTRAS: frozenset[str] = frozenset()
    MESSAGE_FIELDS: tuple[str, ...] = ()  # the JSON fields the API puts its message in, in order

    def __init__(
        self,
        conn_id: str,
        *,
        unavailable: Callable[[str], Exception],
        requests_per_second: float | None,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        max_retry_after: float,
        timeout: tuple[float, float],
        pool_size: int = 10,
    ) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.timeout = timeout
        # one pool of kept-alive connections for every session the hook builds (one a thread, say):
        # a connection a call has finished with is the next call's, whichever thread makes it
        self._adapter = TCPKeepAliveAdapter(pool_maxsize=pool_size, **KEEP_ALIVE)
        self.request_count = 0
        self._stats_lock = threading.Lock()  # guards the counts calls from several threads add to
        self._retries = RetryPolicy(
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            max_retry_after=max_retry_after,
            unavailable=unavailable,
            log=self.log,
            hold=lambda seconds: self._bucket.hold(seconds),
        )
        self._bucket = TokenBucket(requests_per_second)

    @property
    def retry_count(self) -> int:
        """Retries made so far (429, 5xx, dropped connections)."""
        return self._retries.retry_count

    def count_request(self) -> None:
        with self._stats_lock:
            self.request_count += 1

    # -- the connection -------------------------------------------------------------

    @cached_property
    def connection(self) -> Connection:
        """The hook's connection, looked up once: in the task's own thread, as the threads that
        make calls have no task context to ask the secrets backends from."""
        return self.get_connection(self.conn_id)

    @cached_property
    def extras(self) -> dict[str, Any]:
        """The connection's extras, once each is known to be one this hook or its session reads;
        ``read_timeout`` (if set) becomes the read part of :attr:`timeout`."""
        extras = self.connection.extra_dejson
        allowed = self.OWN_EXTRAS | SHARED_EXTRAS | TRANSPORT_EXTRAS
        unknown = sorted(set(extras) - allowed)
        if unknown:
            raise ConnectionSettingsError(
                f"Connection '{self.conn_id}' has extra(s) {', '.join(unknown)} that {self.hook_name} "
                f"does not read; the allowed extras are {', '.join(sorted(allowed))}. Remove or rename them "
                "(a misspelt setting would otherwise be silently ignored)."
            )
        if extras.get("read_timeout"):
            self.timeout = (self.timeout[0], float(extras["read_timeout"]))
        return extras

    @cached_property
    def base_url(self) -> str:
        """The connection's server: its host as a URL (the schema field, else https, when the host
        names no scheme: a bare host name never sends a secret in clear), with the port field if set."""
        host = self.connection.host or ""
        url = host if "://" in host else f"{self.connection.schema or 'https'}://{host}"
        if self.connection.port:
            url += f":{self.connection.port}"
        if not urlsplit(url).hostname:
            raise ConnectionSettingsError(
                f"Connection '{self.conn_id}': host (the server's URL, e.g. https://example.org) is required"
            )
        return url

    def new_session(self) -> requests.Session:
        """A session to the connection's server with the transport extras applied and nothing else
        from the connection (no headers, no auth), on the hook's pool of ``pool_size`` connections."""
        extras = self.extras
        session = requests.Session()
        session.verify = extras.get("verify", True)
        session.cert = extras.get("cert")
        session.proxies = extras.get("proxies") or {}
        session.trust_env = extras.get("trust_env", True)
        session.mount("http://", self._adapter)
        session.mount("https://", self._adapter)
        return session

    # -- answers ----------------------------------------------------------------------

    def raise_for_transient(self, response: requests.Response, what: str) -> None:
        """A 429 or a 5xx is raised as ``Transient``, for the retry policy to try again. A throttle
        (429, and 503 Service Unavailable) holds every call of this hook: for its Retry-After when
        it has one (RFC 9110 §10.2.3 gives 503 one too), else for the policy's backoff."""
        status = response.status_code
        if status in (429, 503):
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if retry_after:
                self._bucket.hold(min(retry_after, self._retries.max_retry_after))
            said = "429 (too many requests)" if status == 429 else f"503: {self.redacted_message(response)}"
            raise Transient(f"{what} answered {said}", retry_after=retry_after, throttled=True)
        if status >= 500:
            raise Transient(f"{what} answered {status}: {self.redacted_message(response)}")

    def message_of(self, response: requests.Response) -> str:
        """What the server said, as it said it (for the staged reports): the first of
        ``MESSAGE_FIELDS`` its JSON answer fills, else the start of its body."""
        try:
            payload = response.json()
        except ValueError:
            return response.text[:BODY_EXCERPT]
        if isinstance(payload, dict):
            for field in self.MESSAGE_FIELDS:
                if payload.get(field):
                    return str(payload[field])
        return response.text[:BODY_EXCERPT]

    def redacted_message(self, response: requests.Response, identifiers: Iterable[object] = ()) -> str:
        """:meth:`message_of`, fit for an exception or a log line: ``identifiers`` (the people the
        call was about) and anything that looks like a person's identifier masked."""
        return redacted(self.message_of(response), identifiers)

    # -- the connection form's Test button --------------------------------------------

    SECRET_EXTRAS: frozenset[str] = frozenset()  # extras whose values never go into a message

    def prepare_for_test(self) -> None:
        """The hook set for one interactive test, which the Test button waits on: the extras checked
        (raising what a task would), two attempts a call with a short backoff, and at most 10 s to
        connect and 30 s for an answer, whatever the connection's read_timeout."""
        self.extras  # noqa: B018 -- checked (and read_timeout applied) before the timeout is capped
        self.timeout = (min(self.timeout[0], 10.0), min(self.timeout[1], 30.0))
        quick = copy.copy(self._retries)  # the same policy (its errors, its hold), shorter
        quick.max_attempts, quick.backoff_base, quick.backoff_max, quick.max_retry_after = 2, 0.5, 2.0, 5.0
        self._retries = quick

    def test_result(self, ok: bool, message: str) -> tuple[bool, str]:
        """``(ok, message)`` for the connection form, with the connection's login, password and
        secret extras masked wherever the message (a server's words, an exception) repeats them."""
        try:
            connection = self.connection
            secrets = [connection.login, connection.password,
                       *(connection.extra_dejson.get(name) for name in self.SECRET_EXTRAS)]
        except Exception:
            secrets = []
        for secret in sorted({str(s) for s in secrets if s and len(str(s)) >= 3}, key=len, reverse=True):
            message = message.replace(secret, "***")
        return ok, message


def same_origin(url: str, base: str) -> bool:
    """Whether ``url`` is on ``base``'s scheme, host and port (a next-page link a token may follow)."""
    target, origin = urlsplit(url), urlsplit(base)
    return (target.scheme, target.hostname, target.port or _default_port(target.scheme)) == (
        origin.scheme, origin.hostname, origin.port or _default_port(origin.scheme))


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme)
