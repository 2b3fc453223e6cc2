"""The base both HTTP hooks share: a connection whose extras are the hook's own settings.

``HttpHook`` sends every connection extra it does not know as an HTTP header, on every request.
A hook built on this base names the extras it reads (``OWN_EXTRAS``); besides those only the
transport settings ``HttpHook`` applies to its session (TLS verification, a client certificate,
proxies, ``trust_env``) are accepted. Any other extra — a typo, a secret put in the wrong place —
fails the task with the connection's name, the extra and the allowed ones, before anything is
sent; and nothing from the extras ever becomes a header.
"""

from __future__ import annotations

import copy
import json
from urllib.parse import urlsplit

from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.exceptions import AirflowFailException

TRANSPORT_EXTRAS = frozenset({"verify", "cert", "proxies", "trust_env"})


class ConnectionSettingsError(AirflowFailException):
    """A connection is set up wrongly: retrying cannot help, so the task fails at once."""


class OwnExtrasHttpHook(HttpHook):
    """An ``HttpHook`` that reads ``OWN_EXTRAS`` itself and refuses extras it does not know."""

    OWN_EXTRAS: frozenset[str] = frozenset()

    def checked_extras(self, connection) -> dict:
        """The connection's extras, once each is known to be one this hook or its session reads."""
        extras = connection.extra_dejson
        allowed = self.OWN_EXTRAS | TRANSPORT_EXTRAS
        unknown = sorted(set(extras) - allowed)
        if unknown:
            raise ConnectionSettingsError(
                f"Connection '{connection.conn_id}' has extra(s) {', '.join(unknown)} that {self.hook_name} "
                f"does not read; the allowed extras are {', '.join(sorted(allowed))}. Remove or rename them "
                "(unknown extras would otherwise be sent to the server as HTTP headers)."
            )
        return extras

    def _configure_session_from_extra(self, session, connection, extra_options):
        """Only the transport extras reach ``HttpHook``, so no extra becomes a header."""
        transport = copy.copy(connection)
        transport.extra = json.dumps(
            {key: value for key, value in connection.extra_dejson.items() if key in TRANSPORT_EXTRAS}
        )
        return super()._configure_session_from_extra(session, transport, extra_options)


def same_origin(url: str, base: str) -> bool:
    """Whether ``url`` is on ``base``'s scheme, host and port (a next-page link a token may follow)."""
    target, origin = urlsplit(url), urlsplit(base)
    return (target.scheme, target.hostname, target.port or _default_port(target.scheme)) == (
        origin.scheme, origin.hostname, origin.port or _default_port(origin.scheme))


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme)
