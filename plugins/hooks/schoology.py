"""Schoology's REST API v1 as an Airflow hook: the LMS side of provisioning, its protocol.

:class:`SchoologyHook` implements :class:`include.lms.target.LmsTarget` on top of the http
shared :class:`~plugins.hooks.api_hook.ApiHook` (session, TLS, proxies, the extras checked) and
one Airflow connection:

- host: the API base URL, e.g. ``https://api.schoology.com`` (``/v1`` is added)
- login / password: the consumer key and secret of a Schoology system administrator
  (two-legged OAuth)
- extra ``school_id``: the Schoology school whose buildings are provisioned; optional
  ``read_timeout`` (seconds to wait for an answer before retrying, default 120)

Every call is signed with two-legged OAuth 1.0a, HMAC-SHA1 (RFC 5849), by requests-oauthlib:
its ``Authorization`` header carries the consumer key, no token, a fresh nonce and timestamp
and the signature of the method, the URL with its query and the parameters, keyed by the
consumer secret. The secret never leaves the worker; the hook refuses extras it does not read
(so none becomes a header), sends no Basic auth, and follows ``links.next`` only on the
connection's own scheme, host and port.

Objects go in bulk calls of at most 50 and Schoology answers 207 Multi-Status with one
entry per object; each entry becomes an :class:`ItemResult`, in the order given. Sending
an item twice never duplicates it: users, courses and sections go with
``update_existing=1`` (matched by school_uid, course_code in its building, and for sections
``section_code`` + ``grading_periods`` as Schoology documents it: both codes carry the
section's key, never IC's class code, which two classes of a course and term may share),
enrollments and parent links through the import endpoints (which
create or update), buildings and grading periods are looked up by building_code / title
before every attempt. So a call that timed out after Schoology applied it is simply sent
again. A user IC has again after Schoology made them inactive is brought back with
``PUT users/reactivate`` (found in ``GET users/inactive``; ``update_existing`` sees active users
only), the same account; a user's email, username and preferred name are sent only when IC has
them (a key left out keeps what a school set, ``""`` may clear it). Section lookups send
``include_past=1``: without it Schoology does not list sections whose grading periods ended.

Bulk calls are pipelined, never more than ``max_in_flight`` requests at once, and every
request is paced by a token bucket (``requests_per_second``, never faster), so a load runs at
the LMS's rate limit however slow each call is. :meth:`SchoologyHook.apply_batches` keeps the
next batch's calls under way while the caller records the last batch's answers, so the LMS
never waits on the caller between batches. Schoology documents no rate limit, 429 or
Retry-After: the defaults (5 a second, 2 in flight) are ours. A throttle (429, 503) waits its
``Retry-After`` if it has one, else capped exponential backoff, and holds every call of the
hook meanwhile; other 5xx and dropped connections are retried with capped exponential
backoff. A 401 is signed afresh once (Schoology also answers 401 to a reused nonce or a
timestamp out of sequence); a second fails the task with what to do. Log lines carry counts,
never names or ids of people.

What each item becomes on the wire, and what Schoology's answers become, is not here:
:mod:`include.lms.schoology` (pure functions) maps them; this hook sends and receives.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from itertools import count
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from oauthlib.oauth1 import SIGNATURE_HMAC, SIGNATURE_TYPE_AUTH_HEADER
from requests_oauthlib import OAuth1

from include.lms import schoology as wire
from include.lms.target import (
    ITEM_TYPES,
    Action,
    Building,
    CatalogKind,
    Course,
    Enrollment,
    GradingPeriod,
    GuardianLink,
    ItemResult,
    LmsItem,
    Receipts,
    Section,
    User,
)
from plugins.hooks.api_hook import ApiHook, same_origin
from plugins.hooks.retrying import DROPPED, Transient

LIST_PAGE = 200  # records asked for per page of a list (Schoology's default is 20; a server that
# pages smaller still links the next page, which is followed)
ITEM_FAILURES = frozenset({400, 404, 409, 422})  # a single-object call that failed for that object only
REALM = "Schoology API"
# Schoology documents no rate limit, no 429 and no Retry-After: these defaults are ours, kept low.
# Two calls in flight, not more: Schoology answers 401 to a timestamp "out of sequence" ("you cannot
# use a past timestamp after using a future one"), which calls signed on several threads can be.
DEFAULT_REQUESTS_PER_SECOND = 5.0
DEFAULT_MAX_IN_FLIGHT = 2
# Sections of grading periods that have all ended are listed only with this (Schoology's Course
# Sections docs): a lookup without it takes them for gone.
INCLUDE_PAST = {"include_past": 1}


class SchoologyCredentialsError(AirflowFailException):
    """Schoology refused the consumer key/secret. Retrying cannot help, so the task fails at once."""


class SchoologyRequestError(AirflowException):
    """Schoology rejected a whole call (4xx other than 401/429): a bug or a misconfiguration."""


class SchoologyUnavailableError(AirflowException):
    """Schoology kept failing (429/5xx/dropped connections) through every retry."""


class SchoologyHook(ApiHook):
    """Provisions buildings, grading periods, users, courses, sections, enrollments and parent links."""

    conn_name_attr = "schoology_conn_id"
    default_conn_name = "schoology_default"
    conn_type = "schoology"  # its form: plugins/hooks/provider_info.py; any stored type works
    hook_name = "Schoology"
    OWN_EXTRAS = frozenset({"school_id"})
    MESSAGE_FIELDS = ("error", "message")
    batch_size = 2_000  # items per journal part of the caller: 40 bulk calls of 50

    def __init__(
        self,
        schoology_conn_id: str = default_conn_name,
        *,
        requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND,
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 300.0,
        timeout: tuple[float, float] = (10.0, 120.0),
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if requests_per_second <= 0:
            raise ValueError("requests_per_second must be positive")
        # a kept-alive connection for every call in flight (requests keeps 10 by default)
        super().__init__(schoology_conn_id, unavailable=SchoologyUnavailableError,
                         requests_per_second=requests_per_second, max_attempts=max_attempts,
                         backoff_base=backoff_base, backoff_max=backoff_max, max_retry_after=max_retry_after,
                         timeout=timeout, pool_size=max_in_flight)
        self.schoology_conn_id = schoology_conn_id
        self.requests_per_second = requests_per_second
        self.max_in_flight = max_in_flight
        self._in_flight = threading.BoundedSemaphore(max_in_flight)
        self._calls: ThreadPoolExecutor | None = None  # the call threads, while apply_batches runs
        # inactive users by school_uid, listed once an apply_batches run (None: not yet listed)
        self._inactive: dict[str, str] | None = None
        self._inactive_lock = threading.Lock()

    # -- connection ---------------------------------------------------------------

    @cached_property
    def _settings(self) -> dict[str, str]:
        connection, extras = self.connection, self.extras
        school_id = str(extras.get("school_id") or "")
        if not school_id:
            raise SchoologyRequestError(
                f"Connection '{self.schoology_conn_id}': extra school_id (the Schoology school whose buildings "
                "are provisioned) is required"
            )
        if not connection.login or not connection.password:
            raise SchoologyRequestError(
                f"Connection '{self.schoology_conn_id}': login (consumer key) and password (consumer secret) "
                "are required"
            )
        api = self.base_url.rstrip("/")
        return {"api_url": api if api.endswith("/v1") else f"{api}/v1", "school_id": school_id}

    @property
    def api_url(self) -> str:
        return self._settings["api_url"]

    @property
    def school_id(self) -> str:
        return self._settings["school_id"]

    def test_connection(self) -> tuple[bool, str]:
        """The connection form's Test button: ``GET /v1/users/me``, signed like every call, in at most
        two attempts (a 401 signed once more). Schoology answers with the API user, or a 303 to it,
        which is not followed (a redirect would resend the signature made for users/me).
        ``(True, the API user's id)`` or ``(False, why not)``; no key or secret is in the message."""
        what = "GET /v1/users/me"
        try:
            self.prepare_for_test()
            response = self._retries.call(
                lambda: self._send("GET", self._url("users/me"), allow_redirects=False), what)
        except SchoologyCredentialsError as error:
            return self.test_result(False, str(error))
        except Exception as error:  # the Test button shows the message; a task would have failed with it
            return self.test_result(False, f"{type(error).__name__}: {error}")
        status = response.status_code
        if status in (301, 302, 303, 307, 308):
            user = urlsplit(response.headers.get("Location") or "").path.rstrip("/").rsplit("/", 1)[-1]
        elif status == 200:
            try:
                payload = response.json()
            except ValueError:
                payload = {}
            user = str(payload.get("uid") or payload.get("id") or "") if isinstance(payload, dict) else ""
        else:
            said = self.redacted_message(response)
            return self.test_result(False, f"Schoology answered {status} to {what}: {said}")
        return self.test_result(True, (
            f"Schoology accepted the signed call: {what} answered {status} (API user {user or 'unnamed'}) at "
            f"{self.api_url}; school_id {self.school_id}"
        ))

    @cached_property
    def _session(self) -> requests.Session:
        """The session every call goes through, each signed with two-legged OAuth 1.0a, HMAC-SHA1:
        the consumer key and no token; the secret keys the signature and is never sent."""
        self._settings  # the connection checked first
        session = self.new_session()
        session.auth = OAuth1(self.connection.login, client_secret=self.connection.password,
                              signature_method=SIGNATURE_HMAC, signature_type=SIGNATURE_TYPE_AUTH_HEADER,
                              realm=REALM)
        session.headers["Accept"] = "application/json"
        return session

    # -- requests -----------------------------------------------------------------

    def _send(self, method: str, url: str, *, params: dict | None = None, body: Any = None,
              allow_redirects: bool = True) -> requests.Response:
        """One request, paced by the token bucket; transient failures raise ``Transient``.

        A 401 is sent once more, signed again (a fresh nonce and timestamp): Schoology also refuses
        a nonce used before and a timestamp out of sequence, which another signing mends. A second
        401 is the credentials, and fails the task."""
        what = f"{method} {urlsplit(url).path}"
        for signing in (1, 2):
            self._bucket.take()
            self.count_request()
            try:
                with self._in_flight:
                    response = self._session.request(method, url, params=params, json=body, timeout=self.timeout,
                                                     allow_redirects=allow_redirects)
            except DROPPED as error:
                raise Transient(f"{what}: connection failed ({type(error).__name__})") from None
            if response.status_code != 401:
                break
            if signing == 1:
                self.log.warning("Schoology answered 401 to %s; signing it again with a fresh nonce and timestamp",
                                 what)
                continue
            raise SchoologyCredentialsError(
                f"Schoology refused the consumer key/secret of connection '{self.schoology_conn_id}' twice, "
                f"each signed afresh ({self.redacted_message(response)}). Generate new API credentials in "
                "Schoology (a system administrator with the 'Access Schoology API' permission, Integration > "
                "API) and update the Airflow connection's login and password."
            )
        self.raise_for_transient(response, what)
        return response

    def _url(self, path: str) -> str:
        return f"{self.api_url}/{path}"

    def _expect(self, response: requests.Response, *statuses: int,
                identifiers: Iterable[object] = ()) -> requests.Response:
        """``response`` if its status is one of ``statuses``; else the whole call failed, and its
        message, with ``identifiers`` (the people the call was about) masked, is raised."""
        if response.status_code not in statuses:
            raise SchoologyRequestError(
                f"Schoology answered {response.status_code} to {response.request.method} "
                f"{urlsplit(response.url).path}: {self.redacted_message(response, identifiers)}"
            )
        return response

    def _list_once(self, path: str, key: str, params: dict | None = None) -> list[dict]:
        """Every record of a paged list, following ``links.next`` (one attempt). Pages of
        ``LIST_PAGE``: a 1,000-school district's buildings are 5 calls, not 50."""
        records: list[dict] = []
        url: str | None = self._url(path)
        params = {"limit": LIST_PAGE, **(params or {})}
        while url:
            payload = self._expect(self._send("GET", url, params=params), 200).json()
            records.extend(payload.get(key) or [])
            url, params = (payload.get("links") or {}).get("next"), None
            if url and not same_origin(url, self.api_url):
                raise SchoologyRequestError(
                    f"Connection '{self.schoology_conn_id}': Schoology's next-page link leaves {self.api_url} "
                    f"(for {url.split('?')[0]}); signed calls go to the connection's own scheme, host and port only"
                )
        return records

    def _list(self, path: str, key: str, params: dict | None = None) -> list[dict]:
        return self._retries.call(lambda: self._list_once(path, key, params), "Schoology")

    # -- LmsTarget ------------------------------------------------------------------

    def catalog(self, kind: CatalogKind) -> dict[str, str]:
        """What already exists that a district's maps may point at: LMS id -> title."""
        if kind == "building":
            records = self._list(f"schools/{self.school_id}/buildings", "building")
        elif kind == "grading_period":
            records = self._list("gradingperiods", "gradingperiods")
        elif kind == "role":
            payload = self._retries.call(
                lambda: self._expect(self._send("GET", self._url("roles")), 200).json(), "Schoology"
            )
            records = wire.role_records(payload)
        else:
            raise ValueError(f"unknown catalog kind {kind!r}")
        return wire.catalog_of(records)

    def apply(self, action: Action, items: Sequence[LmsItem]) -> list[ItemResult]:
        """Create, update or deactivate items of one kind; one result per item, in order."""
        results, = self.apply_batches(action, [items])
        return results

    def apply_batches(self, action: Action, batches: Iterable[Sequence[LmsItem]],
                      receipts: Receipts | None = None) -> Iterator[list[ItemResult]]:
        """:meth:`apply` over a stream of batches, yielding each batch's results in turn. The next
        batch's calls are under way while the caller records the last one's answers (its journal),
        so the LMS never waits on the caller between batches; the calls of both share
        ``max_in_flight``. ``batches`` is read one batch ahead of the results yielded. No receipts:
        a call Schoology answered is done, and one sent again upserts by external id."""
        self._settings, self._session  # looked up here: the threads have no task context to ask
        with self._inactive_lock:
            self._inactive = None  # inactive users are listed afresh for every run that sends users
        with (ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="schoology") as calls,
              ThreadPoolExecutor(max_workers=2, thread_name_prefix="schoology-batch") as sending):
            self._calls = calls
            try:
                under_way: deque = deque()
                for batch in batches:
                    under_way.append(sending.submit(self._apply_batch, action, list(batch)))
                    if len(under_way) == 2:
                        yield under_way.popleft().result()
                while under_way:
                    yield under_way.popleft().result()
            finally:
                calls.shutdown(cancel_futures=True)  # a failed batch stops the calls not yet made
                self._calls = None

    def _apply_batch(self, action: Action, items: list[LmsItem]) -> list[ItemResult]:
        if not items:
            return []
        kind = items[0].kind
        if any(type(item) is not ITEM_TYPES[kind] for item in items):
            raise ValueError("apply takes items of one kind at a time")
        handlers: dict[str, Callable[[Action, list], list[ItemResult]]] = {
            "building": self._buildings,
            "grading_period": self._grading_periods,
            "user": self._users,
            "course": self._courses,
            "section": self._sections,
            "enrollment": self._enrollments,
            "guardian_link": self._guardian_links,
        }
        results = handlers[kind](action, items)
        failed = sum(not result.ok for result in results)
        self.log.info("Schoology %s %s: %d item(s), %d failed", action, kind, len(results), failed)
        return results

    # -- pipelining -------------------------------------------------------------------

    def _pipelined(self, send: Callable[[Any], list], jobs: Sequence) -> list:
        """``send`` over ``jobs`` on the call threads (the token bucket still paces every request),
        results flattened in the jobs' order."""
        return [result for answers in self._calls.map(send, jobs) for result in answers]

    def _in_batches(self, items: Sequence[LmsItem], send: Callable[[list], list[ItemResult]]) -> list[ItemResult]:
        return self._pipelined(send, wire.batches(items))

    # -- per kind -------------------------------------------------------------------

    def _single(self, key: str, response: requests.Response, lms_id: str | None) -> ItemResult:
        if response.status_code in ITEM_FAILURES:
            return ItemResult(key=key, ok=False, error=self.message_of(response))
        self._expect(response, 200, 201, 204)
        return ItemResult(key=key, ok=True, lms_id=lms_id)

    def _one_at_a_time(self, items: list, listing: Callable[[], dict[str, str]],
                       attempt: Callable[[Any, dict[str, str]], ItemResult]) -> list[ItemResult]:
        """Objects Schoology only takes one per call (buildings, grading periods), pipelined.

        What exists is listed once for all the items; an item whose call is retried lists it
        again first, so a create the LMS applied before the answer was lost becomes an update.
        """
        known = self._retries.call(listing, "Schoology")

        def send(item) -> list[ItemResult]:
            tries = count()
            return [self._retries.call(lambda: attempt(item, known if next(tries) == 0 else listing()), "Schoology")]

        return self._pipelined(send, items)

    def _buildings(self, action: Action, items: list[Building]) -> list[ItemResult]:
        path = f"schools/{self.school_id}/buildings"

        def listing() -> dict[str, str]:
            return wire.buildings_by_code(self._list_once(path, "building"))

        def attempt(item: Building, existing: dict[str, str]) -> ItemResult:
            found = existing.get(item.building_code)
            if action == "deactivate":
                if found is None:
                    return ItemResult(key=item.key, ok=True)
                return self._single(item.key, self._send("DELETE", self._url(f"schools/{found}")), found)
            body = wire.building_body(item)
            if found:
                return self._single(item.key, self._send("PUT", self._url(f"schools/{found}"), body=body), found)
            response = self._send("POST", self._url(path), body=body)
            return self._single(item.key, response,
                                wire.created_id(response.json()) if response.ok else None)

        return self._one_at_a_time(items, listing, attempt)

    def _grading_periods(self, action: Action, items: list[GradingPeriod]) -> list[ItemResult]:
        def listing() -> dict[str, str]:
            return wire.ids_by(self._list_once("gradingperiods", "gradingperiods"), "title")

        def attempt(item: GradingPeriod, existing: dict[str, str]) -> ItemResult:
            found = existing.get(item.title)
            if action == "deactivate":
                if found is None:
                    return ItemResult(key=item.key, ok=True)
                return self._single(item.key, self._send("DELETE", self._url(f"gradingperiods/{found}")), found)
            body = wire.grading_period_body(item)
            if found:
                return self._single(item.key, self._send("PUT", self._url(f"gradingperiods/{found}"), body=body),
                                    found)
            response = self._send("POST", self._url("gradingperiods"), body=body)
            return self._single(item.key, response,
                                wire.created_id(response.json()) if response.ok else None)

        return self._one_at_a_time(items, listing, attempt)

    def _bulk(self, path: str, outer: str, inner: str, payloads: list[dict], *,
              params: dict | None = None, answer_path: tuple[str, ...] = ()) -> list[dict]:
        """One bulk POST (≤ 50 objects) with retries; Schoology's entry for each object, in order."""
        return self._bulk_call("POST", path, {outer: {inner: payloads}}, answer_path or (inner,), params=params,
                               identifiers=wire.people_in(payloads), count=len(payloads))

    def _bulk_call(self, method: str, path: str, body: dict, answer_path: tuple[str, ...], *,
                   params: dict | None = None, identifiers: Iterable[object] = (),
                   count: int | None = None) -> list[dict]:
        """One bulk call with retries; Schoology's entry for each of its ``count`` objects, in order
        (``count``: the length of the list under ``answer_path`` in ``body``, if not given)."""
        if count is None:
            count = len(wire.bulk_entries(body, answer_path))
        people = list(identifiers)

        def attempt() -> list[dict]:
            response = self._expect(self._send(method, self._url(path), params=params, body=body), 200, 207,
                                    identifiers=people)
            entries = wire.bulk_entries(response.json(), answer_path)
            if not isinstance(entries, list) or len(entries) != count:
                raise SchoologyRequestError(
                    f"Schoology answered {method} {path} with {len(entries or [])} entries for {count} objects"
                )
            return entries

        return self._retries.call(attempt, "Schoology")

    def _users(self, action: Action, items: list[User]) -> list[ItemResult]:
        if action == "deactivate":
            return self._deactivate_by_lookup(
                items, "users", "user", "school_uids", "school_uid", "uid", "uids",
                {"option_keep_enrollments": 1, "email_notification": 0},
            )
        def send(batch: list[User]) -> list[ItemResult]:
            refused = self._reactivate(batch)
            sent = [user for user in batch if user.key not in refused]
            results = dict(refused)
            if sent:
                payloads = [wire.user_payload(user) for user in sent]
                entries = self._bulk("users", "users", "user", payloads, params={"update_existing": 1})
                results.update((user.key, wire.created_result(user.key, entry)) for user, entry in zip(sent, entries))
            return [results[user.key] for user in batch]

        return self._in_batches(items, send)

    def _inactive_users(self) -> dict[str, str]:
        """Schoology's inactive users (``GET users/inactive``): uid by school_uid, listed once a run."""
        with self._inactive_lock:
            if self._inactive is None:
                records = self._list("users/inactive", "user")
                self._inactive = {str(r["school_uid"]): str(r["uid"]) for r in records if r.get("school_uid")}
            return self._inactive

    def _reactivate(self, batch: list[User]) -> dict[str, ItemResult]:
        """Bring back, with Schoology's ``PUT users/reactivate``, the users of ``batch`` that are
        inactive in Schoology (deactivated earlier, active in IC again): the same account, not a new
        one. ``update_existing`` finds active users only. What Schoology refuses to reactivate is
        returned as a failed result by key, and is not sent on (it would be created anew)."""
        inactive = self._inactive_users()
        wanted = [(user, inactive[user.key]) for user in batch if user.key in inactive]
        if not wanted:
            return {}
        entries = self._bulk_call("PUT", "users/reactivate", wire.reactivation_payload([uid for _, uid in wanted]),
                                  ("user",), identifiers=[user.key for user, _ in wanted])
        refused: dict[str, ItemResult] = {}
        with self._inactive_lock:
            for (user, uid), entry in zip(wanted, entries):
                result = wire.result_of_entry(user.key, entry, uid)
                if result.ok:
                    inactive.pop(user.key, None)
                else:
                    refused[user.key] = result
        self.log.info("Schoology reactivated %d user(s), %d refused", len(wanted) - len(refused), len(refused))
        return refused

    def _courses(self, action: Action, items: list[Course]) -> list[ItemResult]:
        if action == "deactivate":
            return self._deactivate_courses(items)
        def send(batch: list[Course]) -> list[ItemResult]:
            payloads = [wire.course_payload(course) for course in batch]
            entries = self._bulk("courses", "courses", "course", payloads, params={"update_existing": 1})
            return [wire.created_result(c.key, entry) for c, entry in zip(batch, entries)]

        return self._in_batches(items, send)

    def _deactivate_courses(self, items: list[Course]) -> list[ItemResult]:
        by_building: dict[str, list[int]] = {}
        for position, course in enumerate(items):
            by_building.setdefault(course.building_id, []).append(position)
        results: list[ItemResult | None] = [None] * len(items)
        for building_id, positions in by_building.items():
            def attempt(positions=positions, building_id=building_id) -> None:
                ids = wire.ids_by(self._list_once("courses", "course", {"building_id": building_id}),
                                         "course_code")
                found = [(position, ids.get(items[position].key)) for position in positions]
                present = [lms_id for _, lms_id in found if lms_id]
                for chunk in wire.batches(present):
                    self._expect(self._send("DELETE", self._url("courses"),
                                            params={"course_ids": ",".join(chunk)}), 200, 204)
                for position, lms_id in found:
                    results[position] = ItemResult(key=items[position].key, ok=True, lms_id=lms_id)

            self._retries.call(attempt, "Schoology")
        return results

    def _sections(self, action: Action, items: list[Section]) -> list[ItemResult]:
        if action == "deactivate":
            return self._deactivate_by_lookup(
                items, "sections", "section", "section_school_codes", "section_school_code", "id", "section_ids", {},
                lookup_options=INCLUDE_PAST,
            )
        by_course: dict[str, list[int]] = {}
        for position, section in enumerate(items):
            by_course.setdefault(section.course_id, []).append(position)
        chunks = [(course_id, chunk) for course_id, positions in by_course.items()
                  for chunk in wire.batches(positions)]

        def send(chunk: tuple[str, list[int]]) -> list[tuple[int, ItemResult]]:
            course_id, positions = chunk
            payloads = [wire.section_payload(items[p]) for p in positions]
            entries = self._bulk(f"courses/{course_id}/sections", "sections", "section", payloads,
                                 params={"update_existing": 1})
            return [(p, wire.created_result(items[p].key, entry)) for p, entry in zip(positions, entries)]

        results: list[ItemResult | None] = [None] * len(items)
        for position, result in self._pipelined(send, chunks):
            results[position] = result
        return results

    def _enrollments(self, action: Action, items: list[Enrollment]) -> list[ItemResult]:
        drop = action == "deactivate"

        def send(batch: list[Enrollment]) -> list[ItemResult]:
            payloads = [wire.enrollment_payload(enrollment, drop=drop) for enrollment in batch]
            entries = self._bulk("enrollments/import/course", "enrollments", "enrollment", payloads,
                                 answer_path=("enrollments", "enrollment"))
            return [wire.enrollment_result(e, entry, drop=drop) for e, entry in zip(batch, entries)]

        return self._in_batches(items, send)

    def _guardian_links(self, action: Action, items: list[GuardianLink]) -> list[ItemResult]:
        drop = action == "deactivate"

        def send(batch: list[GuardianLink]) -> list[ItemResult]:
            payloads = [wire.guardian_link_payload(link, drop=drop) for link in batch]
            entries = self._bulk("users/import/associations/parents", "associations", "association", payloads)
            return [wire.guardian_link_result(link, entry, drop=drop) for link, entry in zip(batch, entries)]

        return self._in_batches(items, send)

    def _deactivate_by_lookup(self, items: list[LmsItem], path: str, key: str, lookup_param: str,
                              external_field: str, id_field: str, delete_param: str,
                              delete_options: dict, *, lookup_options: dict | None = None) -> list[ItemResult]:
        """Find the LMS ids of up to 50 external keys, then delete those still there; gone is done.
        ``lookup_options`` widen the lookup (sections: ``include_past``), so "not listed" means gone."""
        def send(batch: list[LmsItem]) -> list[ItemResult]:
            def attempt() -> list[ItemResult]:
                records = self._list_once(path, key, {lookup_param: ",".join(item.key for item in batch),
                                                      **(lookup_options or {})})
                ids = wire.ids_by(records, external_field, id_field)
                present = [ids[item.key] for item in batch if item.key in ids]
                if present:
                    self._expect(self._send("DELETE", self._url(path),
                                            params={delete_param: ",".join(present), **delete_options}), 200, 204,
                                 identifiers=[item.key for item in batch])
                return [ItemResult(key=item.key, ok=True, lms_id=ids.get(item.key)) for item in batch]

            return self._retries.call(attempt, "Schoology")

        return self._in_batches(items, send)

