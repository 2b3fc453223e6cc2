"""An Infinite Campus OneRoster server on 127.0.0.1, for the demo, the tests and the benchmark.

It speaks what IC speaks, at IC's URLs:

- ``POST /campus/oauth2/token?appName=APP`` — OAuth2 client credentials (HTTP Basic),
  bearer tokens that expire after ``token_ttl`` seconds;
- ``GET /campus/api/oneroster/v1p2/APP/ims/oneroster/rostering/v1p2/<collection>[/<id>]``
  and the 1.1 form ``GET /campus/api/oneroster/v1p1/APP/ims/oneroster/v1p1/<collection>[/<id>]``
  for orgs, academicSessions, users, courses, classes and enrollments, with ``limit``
  (default 100, at most 50,000), ``offset``, ``filter`` (at most two predicates joined by
  AND or OR, values single-quoted), ``sort`` / ``orderBy``, ``fields``, the
  ``X-Total-Count`` header and ``Link`` (first / prev / next / last);
- the gradebook, ``GET/PUT/DELETE /campus/api/oneroster/v1p2/APP/ims/oneroster/gradebook/v1p2/...``
  (categories, lineItems, results, scoreScales and the class-scoped reads) and the 1.1 form
  under the 1.1 rostering base, ``.../v1p1/APP/ims/oneroster/v1p1/{categories|lineItems|results}``
  (whose names win over rostering's) with its class-scoped lineItems and results reads,
  which also need IC's ``x-vendor-authorization: vendorKey:vendorSecret`` header; its
  rules are :class:`~include.sandbox.ic_gradebook.Gradebook`'s;
- errors as OneRoster status-info payloads (imsx_codeMajor / imsx_severity /
  imsx_description / imsx_CodeMinor).

Faults are switched on with :meth:`ICEmulator.inject` (429 with Retry-After, 500, 503,
connections reset before, in the middle of or after applying a request, latency, a token
expiring) and the credentials can be revoked. Everything it served is kept in
:attr:`ICEmulator.requests` so tests can assert on the far side. Unfiltered pages cost
O(page), so a 1,000,000 student district is served without materialising it; once built a
page is kept (until the district is edited), and :meth:`ICEmulator.prerender` builds them
all ahead in worker processes, so a benchmark measures the client, not this server.
``latency`` (per request) and ``record_latency`` (per record served) stand for IC's own
time, which the emulator's own building of a page (a filtered one is built when asked for)
counts toward; ``rate_limit`` answers calls beyond that many a second with 429 and Retry-After.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode

import msgspec

from include.oneroster.models import COLLECTIONS
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_gradebook import COLLECTIONS as GRADEBOOK_COLLECTIONS
from include.sandbox.ic_gradebook import FIELDS as GRADEBOOK_FIELDS
from include.sandbox.ic_gradebook import SINGULAR as GRADEBOOK_SINGULAR
from include.sandbox.ic_gradebook import Gradebook, GradebookError
from include.sandbox.loopback import Fault, FaultQueue, LoopbackHandler, LoopbackService, Reply

DEFAULT_LIMIT = 100
MAX_LIMIT = 50_000
FAULTS = ("429", "500", "503", "reset", "reset_mid_body", "reset_after_apply", "latency", "expire_token")
SINGULAR = {
    "orgs": "org",
    "academicSessions": "academicSession",
    "users": "user",
    "courses": "course",
    "classes": "class",
    "enrollments": "enrollment",
}
_ROSTERING_PATH = re.compile(
    r"^/campus/api/oneroster/(?P<api>v1p1|v1p2)/(?P<app>[^/]+)/ims/oneroster/"
    r"(?:rostering/v1p2|v1p1)/(?P<collection>[A-Za-z]+)(?:/(?P<sourced_id>[^/]+))?/?$"
)
_GRADEBOOK_NAMES = "|".join(GRADEBOOK_COLLECTIONS)
_GRADEBOOK_PATHS = {  # by version; 1.1 shares its base with rostering, so only its gradebook endpoints match
    "1.2": re.compile(
        r"^/campus/api/oneroster/v1p2/(?P<app>[^/]+)/ims/oneroster/gradebook/v1p2/(?P<rest>[^?]+?)/?$"
    ),
    "1.1": re.compile(
        r"^/campus/api/oneroster/v1p1/(?P<app>[^/]+)/ims/oneroster/v1p1/"
        rf"(?P<rest>(?:{_GRADEBOOK_NAMES})(?:/[^/]+)?|classes/[^/]+/(?:lineItems|results|"
        r"(?:lineItems|students)/[^/]+/results))/?$"
    ),
}
ROSTER_CORE_READONLY = "https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly"


@dataclass(frozen=True)
class ServerProfile:
    """How a OneRoster server may differ from IC and still be correct: the switches a test turns to
    meet a server no one here wrote. ``ic`` is IC as documented; the others are what other real
    servers were seen to do."""

    name: str
    total_count: bool = True  # X-Total-Count on every list (IC sends it; the spec only suggests it)
    links: bool = True  # Link: first / prev / next / last
    max_limit: int = MAX_LIMIT  # the largest page served, silently, whatever ``limit`` asks
    scope: str | None = None  # the token endpoint refuses a request that does not ask for this scope
    window_refusal_status: int = 403  # the status that carries a closed grading window's refusal
    # (403 ``forbidden`` as IC; 400 ``invaliddata`` otherwise)
    windows_bind_line_items: bool = False  # a closed window refuses a lineItem too, not only its grades
    moves_changed_records: bool = False  # lists are ordered by change: a record edited while a
    # collection is paged (the emulator edits its first record once the first page is served) moves
    # to the end, so offsets shift under a client paging through it


PROFILES = {profile.name: profile for profile in (
    ServerProfile("ic"),
    ServerProfile("capped-no-total", total_count=False, links=False, max_limit=500),
    ServerProfile("scope-required", scope=ROSTER_CORE_READONLY),
    ServerProfile("window-400", window_refusal_status=400, windows_bind_line_items=True),
    ServerProfile("changing", moves_changed_records=True),
)}
_PREDICATE = re.compile(r"^\s*(?P<field>[A-Za-z][A-Za-z0-9_.]*)\s*(?P<op>!=|>=|<=|=|>|<|~)\s*'(?P<value>[^']*)'\s*$")
_JOINER = re.compile(r"\s+(AND|OR)\s+")


class OneRosterError(Exception):
    """An error answered as a OneRoster status-info payload."""

    def __init__(self, status: int, code_minor: str, description: str, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.status = status
        self.code_minor = code_minor
        self.description = description
        self.headers = headers or {}

    def payload(self) -> dict:
        return {
            "imsx_codeMajor": "failure",
            "imsx_severity": "error",
            "imsx_description": self.description,
            "imsx_CodeMinor": {
                "imsx_codeMinorField": [
                    {"imsx_codeMinorFieldName": "TargetEndSystem", "imsx_codeMinorFieldValue": self.code_minor}
                ]
            },
        }


def parse_filter(expression: str) -> Callable[[dict], bool]:
    """OneRoster's filter grammar as IC implements it: one or two predicates, AND or OR."""
    parts = _JOINER.split(expression.strip())
    if len(parts) not in (1, 3):
        raise OneRosterError(400, "invalid_filter_field", f"filter supports at most two predicates: {expression!r}")
    predicates = []
    for text in parts[::2]:
        match = _PREDICATE.match(text)
        if not match:
            raise OneRosterError(400, "invalid_filter_field", f"cannot parse filter predicate {text!r}")
        predicates.append(_predicate(match["field"], match["op"], match["value"]))
    if len(predicates) == 1:
        return predicates[0]
    first, second = predicates
    if parts[1] == "AND":
        return lambda record: first(record) and second(record)
    return lambda record: first(record) or second(record)


def _field_value(record: dict, path: str) -> Any:
    value: Any = record
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, dict):
        return value.get("sourcedId")
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _predicate(path: str, op: str, expected: str) -> Callable[[dict], bool]:
    def matches(record: dict) -> bool:
        value = _field_value(record, path)
        values = [_field_value(item, "sourcedId") if isinstance(item, dict) else item for item in value] \
            if isinstance(value, list) else [value]
        values = [str(item) for item in values if item is not None]
        if op == "~":
            return any(expected.lower() in item.lower() for item in values)
        if op == "!=":
            return all(item != expected for item in values)
        compare = {"=": str.__eq__, ">": str.__gt__, ">=": str.__ge__, "<": str.__lt__, "<=": str.__le__}[op]
        return any(compare(item, expected) for item in values)

    return matches


class ICEmulator(LoopbackService):
    """The IC OneRoster emulator as a context manager: ``with ICEmulator(district, ...) as ic:``."""

    def __init__(
        self,
        district: SyntheticDistrict,
        *,
        client_id: str,
        client_secret: str,
        app_name: str,
        token_ttl: float = 3600,
        port: int = 0,
        max_recorded: int = 100_000,
        vendor_key: str | None = None,
        vendor_secret: str | None = None,
        record_latency: float = 0.0,
        rate_limit: float | None = None,
        profile: str | ServerProfile = "ic",
    ) -> None:
        super().__init__(port=port, max_recorded=max_recorded)
        self.district = district
        self.profile = PROFILES[profile] if isinstance(profile, str) else profile
        self._moved: dict[str, list[int]] = {}  # per collection, records moved to the end while paged
        self.gradebook = Gradebook(district, window_refusal_status=self.profile.window_refusal_status,
                                   windows_bind_line_items=self.profile.windows_bind_line_items)
        self._vendor = f"{vendor_key}:{vendor_secret}" if vendor_key and vendor_secret else None
        self.client_id = client_id
        self.app_name = app_name
        self.token_ttl = token_ttl
        self.latency = 0.0
        self.record_latency = record_latency
        self.rate_limit = rate_limit
        self._pages: dict[tuple, tuple[bytes, dict[str, str]]] = {}
        self._window: deque[float] = deque()
        self._client_secret = client_secret
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._revoked = False
        self._faults = FaultQueue(FAULTS)
        self._in_flight = 0
        self._indexes: dict[tuple[str, str], dict[str, int]] = {}
        self.token_requests = 0
        self.max_in_flight = 0
        self.rate_limited = 0

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/campus/oauth2/token?appName={self.app_name}"

    @property
    def gradebook_url(self) -> str:
        return self.gradebook_url_for("1.2")

    def gradebook_url_for(self, version: str) -> str:
        """IC serves the 1.2 gradebook under its own base and the 1.1 one under the 1.1 rostering base."""
        return self.rostering_url(version).replace("/rostering/v1p2", "/gradebook/v1p2")

    def rostering_url(self, version: str) -> str:
        api = f"{self.base_url}/campus/api/oneroster/v{version.replace('.', 'p')}/{self.app_name}/ims/oneroster"
        return f"{api}/rostering/v1p2" if version == "1.2" else f"{api}/v1p1"

    # -- controls -------------------------------------------------------------------

    def inject(
        self,
        fault: str,
        *,
        times: int = 1,
        path_contains: str | None = None,
        after: int = 0,
        retry_after: float = 1,
        seconds: float = 0,
    ) -> None:
        """Answer ``times`` matching requests with ``fault``, after letting ``after`` of them through.

        Matching requests are API calls (not the token endpoint) whose path contains
        ``path_contains`` when given. ``reset_after_apply`` carries the request out (a PUT
        is stored) and then drops the connection, so only an idempotent retry is safe.
        """
        self._faults.add(Fault(fault, times, path_contains, after, retry_after, seconds))

    def clear_faults(self) -> None:
        self._faults.clear()

    def expire_tokens(self) -> None:
        """Every token issued so far stops working, as if its lifetime had ended."""
        with self._lock:
            self._tokens.clear()

    def revoke_credentials(self) -> None:
        """The client key/secret are refused from now on and every token stops working."""
        with self._lock:
            self._revoked = True
            self._tokens.clear()

    def restore_credentials(self) -> None:
        with self._lock:
            self._revoked = False

    def reset_stats(self) -> None:
        self._forget_requests()
        with self._lock:
            self.token_requests = 0
            self.max_in_flight = 0

    # -- request handling (called by the handler threads) ----------------------------

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _admit_rate(self) -> None:
        """IC's rate limit: more than ``rate_limit`` API calls in the last second are answered 429."""
        if not self.rate_limit:
            return
        now = time.monotonic()
        with self._lock:
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            if len(self._window) >= self.rate_limit:
                wait = self._window[0] + 1.0 - now
                self.rate_limited += 1
                raise OneRosterError(429, "server_busy", "rate limit exceeded", {"Retry-After": f"{wait:.3f}"})
            self._window.append(now)

    def _take_fault(self, path: str) -> Fault | None:
        return self._faults.take(path)

    def _issue_token(self, authorization: str | None, body: bytes, app_name: str | None) -> dict:
        with self._lock:
            self.token_requests += 1
        form = parse_qs(body.decode("utf-8", "replace"))
        if form.get("grant_type") != ["client_credentials"]:
            raise OAuthError("unsupported_grant_type", "use client_credentials")
        wanted = self.profile.scope
        if wanted and wanted not in " ".join(form.get("scope", [])).split():
            raise OAuthError("invalid_scope", f"this client must ask for the scope {wanted}")
        client_id = client_secret = None
        if authorization and authorization.startswith("Basic "):
            try:
                client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
            except ValueError:
                pass
        else:
            client_id, client_secret = form.get("client_id", [None])[0], form.get("client_secret", [None])[0]
        valid = (
            client_id is not None
            and secrets.compare_digest(client_id, self.client_id)
            and secrets.compare_digest(client_secret or "", self._client_secret)
            and app_name == self.app_name
        )
        with self._lock:
            if not valid or self._revoked:
                raise OAuthError("invalid_client", "the client key/secret were refused", status=401)
            token = secrets.token_urlsafe(24)
            self._tokens[token] = time.monotonic() + self.token_ttl
        return {"access_token": token, "token_type": "Bearer", "expires_in": int(self.token_ttl)}

    def _check_token(self, authorization: str | None) -> str:
        token = authorization[7:] if authorization and authorization.startswith("Bearer ") else None
        with self._lock:
            expires = self._tokens.get(token) if token else None
            if expires is None or expires <= time.monotonic():
                self._tokens.pop(token, None)
                raise OneRosterError(401, "unauthorisedrequest", "the access token is missing, invalid or expired")
        return token

    def _check_vendor(self, header: str | None) -> None:
        """IC's gradebook wants ``vendorKey:vendorSecret`` on top of the bearer token."""
        if self._vendor is None or not secrets.compare_digest((header or "").encode(), self._vendor.encode()):
            raise OneRosterError(401, "unauthorisedrequest",
                                 "x-vendor-authorization is missing or refused: gradebook calls need the "
                                 "vendorKey:vendorSecret of IC's Grading Services connection")

    def _invalidate(self, token: str) -> None:
        with self._lock:
            self._tokens.pop(token, None)

    def _sourced_index(self, collection: str, version: str) -> dict[str, int]:
        key = (collection, version)
        with self._lock:
            index = self._indexes.get(key)
        if index is None:
            records = self.district.records(collection, version)
            index = {record["sourcedId"]: position for position, record in enumerate(records)}
            with self._lock:
                self._indexes[key] = index
        return index

    def rostering(self, version: str, collection: str, sourced_id: str | None, query: dict[str, str],
                  url: str) -> tuple[bytes, dict[str, str], int]:
        """The body, headers and record count of a rostering GET; unfiltered pages are kept once served."""
        if collection not in COLLECTIONS:
            raise OneRosterError(404, "unknownobject", f"unknown or unsupported endpoint: {collection}")
        href_base = self.rostering_url(version)
        records = self.district.records(collection, version, href_base)
        fields = self._fields(collection, query.get("fields"))
        if sourced_id is not None:
            position = self._sourced_index(collection, version).get(sourced_id)
            if position is None:
                raise OneRosterError(404, "unknownobject", f"no {SINGULAR[collection]} with sourcedId {sourced_id}")
            return _encode({SINGULAR[collection]: self._select(records[position], fields)}), {}, 1
        limit = self._integer(query, "limit", DEFAULT_LIMIT, minimum=1)
        offset = self._integer(query, "offset", 0, minimum=0)
        limit = min(limit, MAX_LIMIT, self.profile.max_limit)
        unfiltered = not query.get("filter") and not query.get("sort")
        cacheable = unfiltered and not self.profile.moves_changed_records
        key = self._page_key(version, collection, offset, limit, query)
        if cacheable and key in self._pages:
            body, headers = self._pages[key]
            return body, headers, min(limit, max(0, len(records) - offset))
        if unfiltered and self.profile.moves_changed_records:
            records = _ChangeOrder(records, self._moved.get(collection, []))
        selected = self._filtered(collection, version, records, query)
        page = selected[offset:offset + limit]
        headers = self._list_headers(url, query, offset, limit, len(selected))
        body = _encode({collection: [self._select(record, fields) for record in page]})
        if cacheable:
            self._pages[key] = body, headers
        if unfiltered and self.profile.moves_changed_records and offset == 0 and page:
            self._edit_while_paged(collection)
        return body, headers, len(page)

    def _edit_while_paged(self, collection: str) -> None:
        """Once per collection, right after its first page: its first record is edited in IC, and
        a server ordering by change serves it last from now on."""
        with self._lock:
            if collection in self._moved:
                return
            self._moved[collection] = [0]
        self.district.modify(collection, 1, datetime.now(timezone.utc))

    def _list_headers(self, url: str, query: dict[str, str], offset: int, limit: int, total: int) -> dict[str, str]:
        """X-Total-Count and Link, as far as the profile sends them."""
        headers = {}
        if self.profile.total_count:
            headers["X-Total-Count"] = str(total)
        if self.profile.links:
            headers["Link"] = self._links(url, query, offset, limit, total)
        return headers

    def _page_key(self, version: str, collection: str, offset: int, limit: int, query: dict[str, str]) -> tuple:
        """What makes a kept page the right answer: the request's shape and the district's revision."""
        return (version, collection, offset, limit, query.get("fields"), query.get("orderBy"),
                self.district.revision, self.profile)

    def prerender(self, version: str, limit: int, collections: Sequence[str] = COLLECTIONS,
                  workers: int = 2) -> int:
        """Serve every page of ``collections`` once ahead, in ``workers`` processes, so a benchmark
        measures the client and the configured latency, not this emulator building pages."""
        jobs = [(self.district.spec, dict(self.district._modified), self.base_url, self.app_name, version,
                 collection, offset, limit)
                for collection in collections
                for offset in range(0, len(self.district.records(collection, version)) or 1, limit)]
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers) as pool:
            for job, (body, headers) in zip(jobs, pool.imap(_render_page, jobs, chunksize=1)):
                self._pages[self._page_key(version, job[5], job[6], limit, {})] = body, headers
        return len(jobs)

    def gradebook_call(self, version: str, method: str, rest: str, query: dict[str, str], body: bytes,
                       url: str) -> tuple[int, dict | None, dict[str, str]]:
        """Status, body and headers of a gradebook call; ``rest`` is the path after the version's
        :meth:`gradebook_url_for`."""
        parts = rest.split("/")
        try:
            if len(parts) == 2 and parts[0] in GRADEBOOK_COLLECTIONS:
                collection, sourced_id = parts
                singular = GRADEBOOK_SINGULAR[collection]
                if method == "GET":
                    record = self.gradebook.get(collection, sourced_id, version=version)
                    return 200, {singular: record}, {}
                if method == "PUT":
                    try:
                        payload = json.loads(body or b"null")
                    except ValueError:
                        raise OneRosterError(400, "invaliddata", "the body is not JSON") from None
                    created, record = self.gradebook.put(collection, sourced_id, payload, version=version)
                    return 201 if created else 200, {singular: record}, {}
                if method == "DELETE":
                    self.gradebook.delete(collection, sourced_id, version=version)
                    return 204, None, {}
            scope = _gradebook_scope(parts) if method == "GET" else None
            if scope is None:
                raise OneRosterError(404, "unknownobject", f"no such endpoint: {method} {rest}")
            collection, where = scope
            records = self.gradebook.select(collection, **where, version=version)
        except GradebookError as error:
            raise OneRosterError(error.status, error.code_minor, error.description) from None
        return 200, *self._gradebook_page(version, collection, records, query, url)

    def _gradebook_page(self, version: str, collection: str, records: list[dict], query: dict[str, str],
                        url: str) -> tuple[dict, dict[str, str]]:
        """One page of a gradebook list, with the rostering side's filter, sort, fields and paging."""
        limit = min(self._integer(query, "limit", DEFAULT_LIMIT, minimum=1), MAX_LIMIT, self.profile.max_limit)
        offset = self._integer(query, "offset", 0, minimum=0)
        order, sort = query.get("orderBy", "asc"), query.get("sort")
        if order not in ("asc", "desc"):
            raise OneRosterError(400, "invalid_selection_field", f"orderBy must be asc or desc: {order!r}")
        if query.get("filter"):
            keep = parse_filter(query["filter"])
            records = [record for record in records if keep(record)]
        known = GRADEBOOK_FIELDS[version][collection]
        if sort:
            if sort not in known:
                raise OneRosterError(400, "invalid_selection_field", f"cannot sort {collection} by {sort!r}")
            records.sort(key=lambda record: str(_field_value(record, sort) or ""), reverse=order == "desc")
        fields = self._fields(collection, query.get("fields"))
        unknown = [name for name in fields or () if name not in known]
        if unknown:
            raise OneRosterError(400, "invalid_selection_field", f"unknown field(s): {', '.join(unknown)}")
        page = records[offset:offset + limit]
        if fields:
            page = [{name: record[name] for name in fields if name in record} for record in page]
        return {collection: page}, self._list_headers(url, query, offset, limit, len(records))

    def _filtered(self, collection: str, version: str, records: Sequence[dict], query: dict[str, str]) -> Sequence[dict]:
        expression, sort = query.get("filter"), query.get("sort")
        order = query.get("orderBy", "asc")
        if order not in ("asc", "desc"):
            raise OneRosterError(400, "invalid_selection_field", f"orderBy must be asc or desc, got {order!r}")
        if not expression and not sort:
            return records
        if expression:
            delta = self._delta_only(collection, version, expression)
            keep = parse_filter(expression)
            candidates = delta if delta is not None else records
            selected = [record for record in candidates if keep(record)]
        else:
            selected = list(records)
        if sort:
            if not records or sort not in records[0]:
                raise OneRosterError(400, "invalid_selection_field", f"cannot sort {collection} by {sort!r}")
            selected.sort(key=lambda record: str(_field_value(record, sort) or ""), reverse=order == "desc")
        return selected

    def _delta_only(self, collection: str, version: str, expression: str) -> list[dict] | None:
        """A ``dateLastModified>`` filter builds only the records it can match, as IC's index would."""
        match = _PREDICATE.match(expression)
        if not match or match["field"] != "dateLastModified" or match["op"] not in (">", ">="):
            return None
        try:
            indexes = self.district.changed_since(collection, match["value"], inclusive=match["op"] == ">=")
        except ValueError:
            return None
        records = self.district.records(collection, version, self.rostering_url(version))
        return [records[index] for index in indexes]

    @staticmethod
    def _fields(collection: str, requested: str | None) -> list[str] | None:
        if not requested:
            return None
        names = [name.strip() for name in requested.split(",") if name.strip()]
        if "sourcedId" not in names:
            names.insert(0, "sourcedId")
        return names

    @staticmethod
    def _select(record: dict, fields: list[str] | None) -> dict:
        if fields is None:
            return record
        unknown = [name for name in fields if name not in record and name not in ("metadata",)]
        if unknown:
            raise OneRosterError(400, "invalid_selection_field", f"unknown field(s): {', '.join(unknown)}")
        return {name: record[name] for name in fields if name in record}

    @staticmethod
    def _integer(query: dict[str, str], name: str, default: int, minimum: int) -> int:
        raw = query.get(name)
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) < minimum:
            raise OneRosterError(400, "invalid_selection_field", f"{name} must be an integer >= {minimum}, got {raw!r}")
        return int(raw)

    @staticmethod
    def _links(url: str, query: dict[str, str], offset: int, limit: int, total: int) -> str:
        def link(rel: str, at: int) -> str:
            return f'<{url}?{urlencode({**query, "limit": limit, "offset": at})}>; rel="{rel}"'

        last = max(0, (total - 1) // limit * limit)
        links = [link("first", 0)]
        if offset > 0:
            links.append(link("prev", max(0, offset - limit)))
        if offset + limit < total:
            links.append(link("next", offset + limit))
        links.append(link("last", last))
        return ", ".join(links)


class OAuthError(OneRosterError):
    """A token endpoint's refusal as RFC 6749 words it (``error`` / ``error_description``, 400)."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(status, error, f"{error}: {description}")
        self.error = error

    def payload(self) -> dict:
        return {"error": self.error, "error_description": self.description.removeprefix(f"{self.error}: ")}


class _ChangeOrder(Sequence):
    """A collection as a server ordering by change serves it: ``moved`` (edited while being paged)
    after all the others."""

    def __init__(self, records: Sequence[dict], moved: list[int]):
        self._records = records
        self._moved = moved
        self._skipped = sorted(moved)

    def __len__(self) -> int:
        return len(self._records)

    def _index(self, position: int) -> int:
        settled = len(self._records) - len(self._moved)
        if position >= settled:
            return self._moved[position - settled]
        for moved in self._skipped:
            if moved > position:
                break
            position += 1
        return position

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._records[self._index(position)] for position in range(*index.indices(len(self)))]
        return self._records[self._index(index)]


def _encode(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as IC sends it."""
    return msgspec.json.encode(payload)


def _render_page(job: tuple) -> tuple[bytes, dict[str, str]]:
    """One page in a worker process: the district rebuilt from its spec and edits, the page served."""
    spec, modified, base_url, app_name, version, collection, offset, limit = job
    district = SyntheticDistrict(spec)
    for name, edits in modified.items():
        district._modified[name].update(edits)
    emulator = _PageRenderer(district, base_url, app_name)
    url = f"{emulator.rostering_url(version)}/{collection}"
    body, headers, _ = emulator.rostering(version, collection, None, {"limit": str(limit), "offset": str(offset)}, url)
    return body, headers


class _PageRenderer(ICEmulator):
    """The emulator's page building without a server, for :meth:`ICEmulator.prerender`'s workers."""

    def __init__(self, district: SyntheticDistrict, base_url: str, app_name: str):
        super().__init__(district, client_id="-", client_secret="-", app_name=app_name)
        self._base_url = base_url

    @property
    def base_url(self) -> str:
        return self._base_url


def _gradebook_route(path: str) -> tuple[str, re.Match] | None:
    """The gradebook version a path is for and its match (``app``, ``rest``), or None."""
    for version, pattern in _GRADEBOOK_PATHS.items():
        match = pattern.match(path)
        if match:
            return version, match
    return None


def _gradebook_scope(parts: list[str]) -> tuple[str, dict[str, str]] | None:
    """The collection and class scope a gradebook GET list path names, or None."""
    if len(parts) == 1 and parts[0] in GRADEBOOK_COLLECTIONS:
        return parts[0], {}
    if len(parts) < 3 or parts[0] != "classes":
        return None
    if len(parts) == 3 and parts[2] in GRADEBOOK_COLLECTIONS:
        return parts[2], {"class_id": parts[1]}
    if len(parts) == 5 and parts[4] == "results" and parts[2] in ("lineItems", "students"):
        key = "line_item_id" if parts[2] == "lineItems" else "student_id"
        return "results", {"class_id": parts[1], key: parts[3]}
    return None


class _Handler(LoopbackHandler):
    server_version = "InfiniteCampusEmulator/1.0"
    emulator: ICEmulator

    def serve(self, method: str) -> None:
        emulator = self.emulator
        started = time.monotonic()
        path, query, body = self.read_request()
        emulator._enter()
        try:
            reply = self._respond(method, path, query, body)
            self.record(method, path, query, body, reply, started)
            self.answer(reply)
        finally:
            emulator._leave()

    def _respond(self, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
        emulator = self.emulator
        try:
            if path == "/campus/oauth2/token":
                if method != "POST":
                    raise OneRosterError(405, "unsupported", "the token endpoint takes POST")
                return Reply.json(200, _encode(emulator._issue_token(self.headers.get("Authorization"), body,
                                                                     query.get("appName"))))
            gradebook = _gradebook_route(path) if method in ("GET", "PUT", "DELETE") else None
            if gradebook:  # tried before rostering: 1.1 serves both under one base
                version, match = gradebook
            else:
                match = _ROSTERING_PATH.match(path) if method == "GET" else None
            if not match or match["app"] != emulator.app_name:
                raise OneRosterError(404, "unknownobject", f"no such endpoint: {method} {path}")
            emulator._admit_rate()
            fault = emulator._take_fault(path)
            if emulator.latency:
                time.sleep(emulator.latency)
            token = emulator._check_token(self.headers.get("Authorization"))
            if gradebook:
                emulator._check_vendor(self.headers.get("x-vendor-authorization"))
            if fault:
                cut = self._apply(fault, token)
                if cut is not None:
                    return cut
            if gradebook:
                rest = match["rest"]
                status, payload, headers = emulator.gradebook_call(
                    version, method, rest, query, body, f"{emulator.gradebook_url_for(version)}/{rest}")
                reply = (Reply(status, headers) if payload is None
                         else Reply.json(status, _encode(payload), headers))
            else:
                version = "1.1" if match["api"] == "v1p1" else "1.2"
                url = f"{emulator.rostering_url(version)}/{match['collection']}"
                building = time.perf_counter()
                body, headers, served = emulator.rostering(version, match["collection"], match["sourced_id"],
                                                           query, url)
                if emulator.record_latency:
                    time.sleep(max(0.0, emulator.record_latency * served - (time.perf_counter() - building)))
                reply = Reply.json(200, body, headers)
            return replace(reply, cut="reset") if fault and fault.kind == "reset_after_apply" else reply
        except OneRosterError as error:
            return Reply.json(error.status, _encode(error.payload()), error.headers)

    def _apply(self, fault: Fault, token: str) -> Reply | None:
        kind = fault.kind
        if kind == "reset_after_apply":  # the request is carried out first; _respond drops the answer
            return None
        if kind == "latency":
            time.sleep(fault.seconds)
            return None
        if kind == "429":
            raise OneRosterError(429, "server_busy", "too many requests; slow down",
                                 {"Retry-After": f"{fault.retry_after:g}"})
        if kind in ("500", "503"):
            raise OneRosterError(int(kind), "internal_server_error" if kind == "500" else "server_busy",
                                 "Campus could not complete the request")
        if kind == "expire_token":
            self.emulator._invalidate(token)
            raise OneRosterError(401, "unauthorisedrequest", "the access token has expired")
        if kind == "reset":
            return Reply(0, {}, cut="reset")
        body = json.dumps({"users": [{"sourcedId": str(n)} for n in range(200)]}).encode()
        return Reply(200, {"Content-Type": "application/json"}, body, cut="mid_body")


ICEmulator.handler_class = _Handler  # defined after the emulator it serves


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a synthetic district as IC's OneRoster API on 127.0.0.1.")
    parser.add_argument("--students", type=int, default=120)
    parser.add_argument("--schools", type=int, default=None)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--school-year", type=int, default=2027, help="ending year of the active school year")
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--app-name", default="demo")
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True, help="local-only; never a real district's secret")
    parser.add_argument("--token-ttl", type=float, default=3600)
    parser.add_argument("--vendor-key", help="the gradebook's vendorKey; without one it refuses all calls")
    parser.add_argument("--vendor-secret", help="local-only; never a real district's secret")
    args = parser.parse_args(argv)
    district = SyntheticDistrict(DistrictSpec(seed=args.seed, students=args.students, schools=args.schools,
                                              school_year=args.school_year))
    with ICEmulator(district, client_id=args.client_id, client_secret=args.client_secret, app_name=args.app_name,
                    token_ttl=args.token_ttl, port=args.port, vendor_key=args.vendor_key,
                    vendor_secret=args.vendor_secret) as emulator:
        print(f"IC emulator on {emulator.base_url}; 1.2 at {emulator.rostering_url('1.2')}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
