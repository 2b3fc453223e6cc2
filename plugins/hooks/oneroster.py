"""Infinite Campus's OneRoster API (1.1 and 1.2) as an Airflow hook.

The hook owns the protocol: OAuth2 client-credentials tokens, IC's URL forms, paging to
the end, retries, and IC's concurrency rules. It is built on the shared
:class:`~plugins.hooks.api_hook.ApiHook` (session, TLS, proxies, keep-alive, the extras checked)
and one Airflow connection:

- host (with scheme and port): the district's Campus server, e.g. ``https://acme.infinitecampus.org``
- login / password: the OneRoster client key and secret from IC's OneRoster tool
- extras: ``app_name`` (required), ``oneroster_version`` ("1.1" or "1.2", default "1.2"),
  ``token_url`` (default ``{host}/campus/oauth2/token?appName={app_name}``), ``scope`` (the
  OAuth scopes to ask the token endpoint for, space-separated, for a server that requires them;
  IC does not), ``read_timeout`` (seconds to wait for an answer before retrying, default 300),
  and for the gradebook ``vendor_key`` / ``vendor_secret``; any other extra is refused.

No extra becomes a header and the login/password go to the token endpoint only: API calls
carry the bearer token alone, and only to the connection's own scheme, host and port (a
next-page link elsewhere is refused).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import requests
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from include.config import InfiniteCampus
from include.oneroster.columnar import BodyError, NormalisedPage, normalise_body, raw_records
from include.oneroster.models import COLLECTIONS, OneRosterVersion
from plugins.hooks.api_hook import ApiHook, ConnectionSettingsError, same_origin
from plugins.hooks.retrying import DROPPED, Transient

TOKEN_REFRESH_MARGIN = 60.0  # seconds before expiry at which a token is renewed


T = TypeVar("T")
WINDOW_CLOSED = "window closed"  # the status of a grade refused for its grading window: a skip, not a failure
# A refusal for the grading window: IC answers 403 ``forbidden``, another server 400 ``invaliddata`` (the
# code minors a refusal of well-formed data carries); what tells is the description.
_WINDOW = re.compile(r"\bgrading[ _](?:window|period)\b[^.]*?\b(?:closed|open(?:s|ed)?)\b", re.IGNORECASE)
_WINDOW_CODE_MINORS = frozenset({"forbidden", "invaliddata"})
_NOT_YET_OPEN = re.compile(r"\bnot (?:yet )?open(?:ed)?\b|\b(?:opens|will open)\b", re.IGNORECASE)
_OPENS_ON = re.compile(r"\b(?:opens?|from)\s+(?:on\s+)?(\d{4}-\d{2}-\d{2})\b", re.IGNORECASE)


TAKEN_STATUSES = ("created", "updated")  # the gradebook answers that mean IC stored the record


@dataclass(frozen=True)
class GradebookAnswer:
    """IC's answer to one gradebook PUT: created / updated / window closed (refused for its grading
    window, closed or not yet open) / rejected, with a message for the report: IC's description,
    after the window's reason ("window closed", "window opens on <day>") or the status code."""

    sourced_id: str
    status: str
    message: str

    @property
    def taken(self) -> bool:
        """IC stored the record."""
        return self.status in TAKEN_STATUSES


def _window_reason(response: requests.Response, description: str) -> str | None:
    """The reason a refusal gives for the grading window ("window closed", "window opens on <day>",
    "window not yet open"), read from its status-info payload whatever the status code; None when it
    refuses something else."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    minor = payload.get("imsx_CodeMinor") if isinstance(payload, dict) else None
    fields = minor.get("imsx_codeMinorField") if isinstance(minor, dict) else None
    minors = {str(field.get("imsx_codeMinorFieldValue")) for field in fields or () if isinstance(field, dict)}
    if not _WINDOW.search(description) or (minors and not minors & _WINDOW_CODE_MINORS):
        return None
    if not _NOT_YET_OPEN.search(description):
        return WINDOW_CLOSED
    opens = _OPENS_ON.search(description)
    return f"window opens on {opens[1]}" if opens else "window not yet open"


@dataclass
class PagingTally:
    """What one read of a collection was told and given: the server's total (None when it sends
    none), the records served and the pages they came in."""

    server_total: int | None = None
    served: int = 0
    pages: int = 0

    def add(self, page: Sized) -> None:
        self.served += len(page)
        self.pages += 1


class OneRosterCredentialsError(AirflowFailException):
    """IC refused the client key/secret. Retrying cannot help, so the task fails at once."""


class OneRosterRequestError(AirflowException):
    """IC rejected a request (4xx other than 401/429): a bug or a misconfiguration, not a blip."""


class OneRosterUnavailableError(AirflowException):
    """IC kept failing (429/5xx/dropped connections) through every retry."""


def _credentials_refused(conn_id: str, detail: str) -> OneRosterCredentialsError:
    return OneRosterCredentialsError(
        f"Infinite Campus refused the OneRoster client key/secret of connection '{conn_id}' "
        f"({detail}). They have expired or been revoked: generate new ones in Campus "
        "(OneRoster / Grading Services connection in the Digital Learning Applications "
        "Configuration tool) and update the Airflow connection's login and password."
    )


# What each OAuth 2 error code (RFC 6749 §5.2) from the token endpoint asks the district to check.
TOKEN_REQUEST_ADVICE = {
    "invalid_scope": "the connection's extra 'scope' (the scopes this server grants the client)",
    "invalid_request": "the connection's extras 'token_url' and 'scope', and its host",
    "unsupported_grant_type": "the connection's extra 'token_url' (this endpoint does not take client credentials)",
    "unauthorized_client": "the client's set-up on the server: it is not allowed the client-credentials grant",
}


def _token_refusal(conn_id: str, response: requests.Response, said: str) -> AirflowFailException:
    """The token endpoint's refusal (``said``: its message, redacted) as what to do: refused
    credentials (``invalid_client``, 401) are to be renewed; any other OAuth error names the
    connection field to check."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    error = str(payload.get("error") or "") if isinstance(payload, dict) else ""
    if error in TOKEN_REQUEST_ADVICE or (response.status_code == 400 and error and error != "invalid_client"):
        advice = TOKEN_REQUEST_ADVICE.get(error, "the connection's extras 'token_url' and 'scope'")
        return ConnectionSettingsError(
            f"The OneRoster token endpoint of connection '{conn_id}' refused the token request "
            f"({response.status_code} {error}: {said}). This is a set-up problem, not expired credentials: "
            f"check {advice}."
        )
    return _credentials_refused(conn_id, f"token endpoint answered {response.status_code}: {said}")


class _Prefetch:
    """Pages at ``offsets`` in order, fetched (and parsed) ahead by a thread pool from the moment
    it is made: twice ``concurrency`` fetches are under way, so while some threads parse, as many
    requests as IC allows are in flight (the hook's slots bound them)."""

    def __init__(self, fetch: Callable[[int], tuple[Any, Any]], offsets: range, concurrency: int):
        ahead = 2 * concurrency if concurrency > 1 else 1
        self._fetch = fetch
        self._offsets = iter(offsets)
        self._pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="oneroster")
        self._in_flight = deque(self._pool.submit(fetch, offset) for _, offset in zip(range(ahead), self._offsets))

    def __iter__(self) -> Iterator[Any]:
        while self._in_flight:
            page = self._in_flight.popleft().result()[0]
            offset = next(self._offsets, None)
            if offset is not None:
                self._in_flight.append(self._pool.submit(self._fetch, offset))
            yield page

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class OneRosterHook(ApiHook):
    """Reads OneRoster rostering collections from Infinite Campus, page by page.

    At most ``max_concurrency`` requests are in flight, and with ``requests_per_second``
    they are spaced so that IC's rate limit is never exceeded (a 429 still waits its
    Retry-After).
    """

    conn_name_attr = "oneroster_conn_id"
    default_conn_name = "oneroster_default"
    conn_type = "infinite_campus_oneroster"  # its form: plugins/hooks/provider_info.py; any stored type works
    hook_name = "Infinite Campus OneRoster"
    OWN_EXTRAS = frozenset({"app_name", "oneroster_version", "token_url", "scope", "vendor_key", "vendor_secret"})
    SECRET_EXTRAS = frozenset({"vendor_key", "vendor_secret"})
    MESSAGE_FIELDS = ("imsx_description", "error_description", "error")

    def __init__(
        self,
        oneroster_conn_id: str = default_conn_name,
        *,
        max_concurrency: int = 1,
        requests_per_second: float | None = None,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 300.0,
        timeout: tuple[float, float] = (10.0, 300.0),
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        super().__init__(oneroster_conn_id, unavailable=OneRosterUnavailableError,
                         requests_per_second=requests_per_second, max_attempts=max_attempts,
                         backoff_base=backoff_base, backoff_max=backoff_max, max_retry_after=max_retry_after,
                         timeout=timeout)
        self.oneroster_conn_id = oneroster_conn_id
        self.max_concurrency = max_concurrency
        self.bytes_received = 0
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._local = threading.local()

    # -- connection ---------------------------------------------------------------

    @cached_property
    def _settings(self) -> dict[str, Any]:
        connection, extras = self.connection, self.extras
        version = str(extras.get("oneroster_version") or "1.2")  # a form may store an empty field as null
        if version not in ("1.1", "1.2"):
            raise ConnectionSettingsError(
                f"Connection '{self.oneroster_conn_id}': extra oneroster_version must be '1.1' or '1.2', got {version!r}"
            )
        app_name = extras.get("app_name")
        if not app_name:
            raise ConnectionSettingsError(
                f"Connection '{self.oneroster_conn_id}': extra app_name (IC's OneRoster application name) is required"
            )
        if not connection.login or not connection.password:
            raise ConnectionSettingsError(
                f"Connection '{self.oneroster_conn_id}': login (client key) and password (client secret) are required"
            )
        campus = self.base_url.rstrip("/")
        if not campus.endswith("/campus"):
            campus += "/campus"
        api = f"{campus}/api/oneroster/v{version.replace('.', 'p')}/{app_name}/ims/oneroster"
        return {
            "version": version,
            "rostering_url": f"{api}/rostering/v1p2" if version == "1.2" else f"{api}/v1p1",
            "token_url": extras.get("token_url") or f"{campus}/oauth2/token?appName={app_name}",
            "scope": str(extras.get("scope") or "").strip(),
            "client_id": connection.login,
            "client_secret": connection.password,
        }

    @property
    def version(self) -> OneRosterVersion:
        return self._settings["version"]

    @property
    def rostering_url(self) -> str:
        return self._settings["rostering_url"]

    def test_connection(self) -> tuple[bool, str]:
        """The connection form's Test button: a token from the token endpoint and one page of orgs
        (``orgs?limit=1``) with it, in at most two attempts each. ``(True, what was read)`` or
        ``(False, why not)``; no key or secret of the connection is in the message."""
        try:
            self.prepare_for_test()
            orgs, _ = self.get_page(f"{self.rostering_url}/orgs", {"limit": 1},
                                    lambda body: raw_records("orgs", body))
        except Exception as error:  # the Test button shows the message; a task would have failed with it
            return self.test_result(False, f"{type(error).__name__}: {error}")
        settings = self._settings
        return self.test_result(True, (
            f"IC granted a token and answered GET orgs?limit=1 with {len(orgs)} org(s): OneRoster "
            f"{settings['version']} at {settings['rostering_url']}"
        ))

    def _session(self) -> requests.Session:
        """This thread's session: no auth of its own (API calls carry the bearer token, the token
        request the client key/secret)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self.new_session()
        return session

    # -- tokens -------------------------------------------------------------------

    def _current_token(self) -> str:
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_expires_at:
                self._token, self._token_expires_at = self._request_token()
            return self._token

    def _invalidate(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _request_token(self) -> tuple[str, float]:
        settings = self._settings
        form = {"grant_type": "client_credentials"}
        if settings["scope"]:
            form["scope"] = settings["scope"]

        def attempt() -> tuple[str, float]:
            try:
                response = self._session().post(
                    settings["token_url"],
                    data=form,
                    auth=(settings["client_id"], settings["client_secret"]),
                    timeout=self.timeout,
                )
            except DROPPED as error:
                raise Transient(f"token endpoint unreachable: {type(error).__name__}") from None
            if response.status_code in (400, 401, 403):
                raise _token_refusal(self.oneroster_conn_id, response, self.redacted_message(response))
            self.raise_for_transient(response, "token endpoint")
            if response.status_code != 200:
                raise OneRosterRequestError(
                    f"IC token endpoint answered {response.status_code}: {self.redacted_message(response)}"
                )
            payload = response.json()
            lifetime = float(payload.get("expires_in", 3600))
            return payload["access_token"], time.monotonic() + max(lifetime - TOKEN_REFRESH_MARGIN, lifetime / 2)

        return self._retries.call(attempt, "the IC token endpoint")

    # -- requests -----------------------------------------------------------------

    def _send_once(
        self, method: str, url: str, *, params: dict[str, Any] | None = None, body: dict | None = None,
        headers: dict[str, str] | None = None, label: str | None = None,
    ) -> requests.Response:
        """One call with a valid token inside the concurrency limit; a 401 renews the token once.
        ``label`` names the call in errors and logs instead of its URL (a result's URL holds a
        student's id)."""
        session = self._session()
        with self._slots:
            for renewed in (False, True):
                self._bucket.take()
                token = self._current_token()
                self.count_request()
                try:
                    response = session.request(
                        method, url, params=params, json=body, timeout=self.timeout,
                        headers={"Authorization": f"Bearer {token}", **(headers or {})},
                    )
                except DROPPED as error:
                    raise Transient(f"connection to IC failed: {type(error).__name__}") from None
                if response.status_code != 401:
                    break
                self._invalidate(token)
                if renewed:
                    refused = "a fresh token" + (" with the vendor key/secret" if headers else "")
                    raise _credentials_refused(
                        self.oneroster_conn_id, f"{refused} was refused: {self.redacted_message(response)}"
                    )
        self.raise_for_transient(response, label or f"{method} {url}")
        return response

    def get_page(
        self, url: str, params: dict[str, Any], parse: Callable[[bytes], T]
    ) -> tuple[T, requests.structures.CaseInsensitiveDict]:
        """One GET with the token, the concurrency limit and the retry policy applied; ``parse``
        turns the body into a page in the calling thread, and a body it cannot read (cut short)
        is fetched again."""

        def attempt() -> tuple[T, requests.structures.CaseInsensitiveDict]:
            response = self._send_once("GET", url, params=params)
            if response.status_code != 200:
                raise OneRosterRequestError(
                    f"IC answered {response.status_code} to GET {url}: {self.redacted_message(response)}"
                )
            with self._stats_lock:
                self.bytes_received += len(response.content)
            try:
                return parse(response.content), response.headers
            except BodyError as error:
                raise Transient(f"GET {url}: {error}") from None

        return self._retries.call(attempt, f"GET {url}")

    # -- gradebook ----------------------------------------------------------------

    @property
    def gradebook_url(self) -> str:
        """1.2 has a gradebook service of its own; 1.1 serves lineItems and results beside the roster."""
        if self.version == "1.1":
            return self.rostering_url
        return self.rostering_url.replace("/rostering/v1p2", "/gradebook/v1p2")

    def _vendor_header(self) -> dict[str, str]:
        extras = self.extras
        key, secret = extras.get("vendor_key"), extras.get("vendor_secret")
        if not key or not secret:
            raise OneRosterRequestError(
                f"Connection '{self.oneroster_conn_id}': IC's gradebook needs the extras vendor_key and "
                "vendor_secret (from the OneRoster / Grading Services connection in Campus)"
            )
        return {"x-vendor-authorization": f"{key}:{secret}"}

    def put_gradebook(self, collection: str, sourced_id: str, record: dict) -> GradebookAnswer:
        """PUT one lineItem/result/category/scoreScale by its deterministic sourcedId, so a retry
        is an update, never a second object. A 4xx is IC's answer about this record (returned,
        not retried); 429/5xx/dropped connections are retried, and logged without the record's URL
        (a result's sourcedId holds its student's id)."""
        url = f"{self.gradebook_url}/{collection}/{quote(sourced_id, safe='')}"
        singular = {"lineItems": "lineItem", "results": "result", "categories": "category", "scoreScales": "scoreScale"}
        headers = self._vendor_header()

        response = self._retries.call(
            lambda: self._send_once("PUT", url, body={singular[collection]: record}, headers=headers,
                                    label=f"PUT {collection}"),
            f"PUT {collection}",
        )
        if response.status_code in (200, 201):
            return GradebookAnswer(sourced_id, "created" if response.status_code == 201 else "updated", "")
        description = self.message_of(response)
        window = _window_reason(response, description)
        if window:
            return GradebookAnswer(sourced_id, WINDOW_CLOSED, f"{window}: {description}")
        return GradebookAnswer(sourced_id, "rejected", f"{response.status_code}: {description}")

    # -- paging -------------------------------------------------------------------

    def iter_pages(
        self,
        collection: str,
        *,
        page_size: int = 10_000,
        filter: str | None = None,
        sort: str | None = None,
        order_by: str | None = None,
        parse: Callable[[bytes], Sized] | None = None,
        tally: PagingTally | None = None,
    ) -> Iterator[Any]:
        """Yield a collection page by page, in order, to the last page.

        A server may serve fewer records than ``limit`` asks (a silent cap), so the next offset
        is always what was served so far, never ``page_size`` more. Once the first page tells the
        total (X-Total-Count), the remaining offsets are fetched ``max_concurrency`` at a time;
        without a total, ``Link: rel="next"`` is followed where the server sends Link headers (and
        the link names the next unread record, on this connection's own host), and otherwise pages
        are read until one comes back empty: a short page alone never ends a collection.
        ``tally`` (if given) ends up holding the server's total and what was served.
        Each page is ``parse(body)`` (by default its list of raw records), parsed in the
        fetching thread, so parsing overlaps the transfer of the pages still in flight.
        Memory holds at most 2 × ``max_concurrency`` + 1 pages.
        """
        if collection not in COLLECTIONS:
            raise ValueError(f"unknown OneRoster collection {collection!r}")
        url = f"{self.rostering_url}/{collection}"
        parse = parse or (lambda body: raw_records(collection, body))
        tally = tally if tally is not None else PagingTally()
        base: dict[str, Any] = {"limit": page_size}
        for key, value in (("filter", filter), ("sort", sort), ("orderBy", order_by)):
            if value:
                base[key] = value

        def fetch(offset: int) -> tuple[Sized, requests.structures.CaseInsensitiveDict]:
            return self.get_page(url, {**base, "offset": offset}, parse)

        page, headers = fetch(0)
        total_header = headers.get("X-Total-Count", "")
        if total_header.isdigit():
            tally.server_total = total = int(total_header)
            served = len(page)
            step = served if 0 < served < min(page_size, total) else page_size
            rest = _Prefetch(fetch, range(step, total, step), self.max_concurrency)
            try:
                tally.add(page)
                yield page  # the next pages are already on their way while this one is written
                for page in rest:
                    tally.add(page)
                    yield page
            finally:
                rest.close()
            if tally.served != total:
                self.log.warning("%s: the server reported %d records but served %d", collection, total, tally.served)
            return
        yield from self._pages_without_total(url, base, parse, page, headers, tally)

    def _pages_without_total(self, url: str, base: dict[str, Any], parse: Callable[[bytes], Sized], page: Sized,
                             headers, tally: PagingTally) -> Iterator[Any]:
        """The pages after the first of a server that sends no total: by its next links, or by
        offset (what was served so far) until an empty page. A server that answers every offset
        with the same page (it ignores ``offset``) fails the task rather than loop."""

        def parse_and_digest(body: bytes) -> tuple[Sized, bytes]:
            return parse(body), hashlib.blake2b(body, digest_size=16).digest()

        linked, last_digest = bool(headers.get("Link")), None  # links are followed while they add up
        while len(page):
            tally.add(page)
            yield page
            next_url = self._next_link(headers) if linked else None
            if linked and next_url is None:
                return  # the server's links say this was the last page
            if next_url is not None and self._link_offset(next_url) not in (None, tally.served):
                linked = next_url = None  # its links skip or repeat records: page by offset from here on
            if next_url is not None:
                if not same_origin(next_url, url):
                    raise OneRosterRequestError(
                        f"Connection '{self.oneroster_conn_id}': the server's next-page link leaves "
                        f"{self.base_url} (for {next_url.split('?')[0]}); the bearer token goes to the "
                        "connection's own scheme, host and port only"
                    )
                (page, digest), headers = self.get_page(next_url, {}, parse_and_digest)
            else:  # no link, or one that would skip or repeat records: page by what was served
                (page, digest), headers = self.get_page(url, {**base, "offset": tally.served}, parse_and_digest)
            if digest == last_digest and len(page):
                raise OneRosterRequestError(
                    f"GET {url}: offset {tally.served} was answered with the same page as the offset before: "
                    "the server does not honour offset, so the collection cannot be read to its end"
                )
            last_digest = digest

    @staticmethod
    def _next_link(headers: requests.structures.CaseInsensitiveDict) -> str | None:
        for part in requests.utils.parse_header_links(headers.get("Link") or ""):
            if part.get("rel") == "next" and part.get("url"):
                return part["url"]
        return None

    @staticmethod
    def _link_offset(link: str) -> int | None:
        values = parse_qs(urlsplit(link).query).get("offset")
        return int(values[0]) if values and values[0].isdigit() else None

    def iter_entities(self, collection: str, **paging: Any) -> Iterator[NormalisedPage]:
        """Pages as normalised tables (one shape for 1.1 and 1.2) with the records that did not fit."""
        version = self.version
        yield from self.iter_pages(collection, parse=lambda body: normalise_body(collection, version, body),
                                   **paging)


def district_ic(config: InfiniteCampus) -> OneRosterHook:
    """The district's IC as its file allows: the concurrency of the hour (serial at peak),
    its rate limit and its retries."""
    return OneRosterHook(
        config.conn_id,
        max_concurrency=config.concurrency_at(datetime.now(timezone.utc)),
        requests_per_second=config.requests_per_second,
        max_attempts=config.max_attempts,
        backoff_base=config.backoff_seconds,
    )
