"""A Schoology REST v1 server on 127.0.0.1, for the demo, the tests and the benchmark.

It speaks the subset of Schoology's API that provisioning needs, under ``/v1`` as
``https://api.schoology.com/v1`` does, and enforces its rules:

- two-legged OAuth 1.0a with the HMAC-SHA1 signature in the ``Authorization`` header
  (RFC 5849): ``oauth_consumer_key``, no ``oauth_token`` (or an empty one), ``oauth_nonce``,
  ``oauth_timestamp``, ``oauth_signature_method="HMAC-SHA1"`` and ``oauth_signature``, which
  the emulator recomputes from the method, the URL with its query, the form parameters and the
  consumer secret it never receives. A wrong key or signature, another signature method
  (PLAINTEXT, which sends the secret itself, included), a timestamp more than
  ``TIMESTAMP_SKEW`` seconds off and a timestamp/nonce pair seen before (a replay) answer 401;
- ``GET|POST schools/{school}/buildings`` (``building_code`` unique), ``PUT|DELETE schools/{id}``;
- ``GET|POST gradingperiods``, ``PUT|DELETE gradingperiods/{id}`` (title unique in the
  school; a period still used by a section cannot be deleted);
- ``GET roles`` (Schoology's example ids: 1212 School Admin, 1213 Teacher, 1214 Student,
  1215 Parent, plus any given to the constructor);
- ``GET users`` (``building_id``, ``role_ids``, ``school_uids`` ≤ 50), bulk ``POST users``
  with ``update_existing=1`` matched by ``school_uid`` among active users (usernames and emails
  unique; an optional field left out keeps its value, ``""`` clears it), bulk ``DELETE
  users?uids=`` (users become inactive: listed by ``GET users/inactive`` only, brought back by
  ``PUT users/reactivate`` with ``{"user": [{"uid", "option_reenroll"}]}``);
- ``GET courses`` (``building_id``), bulk ``POST courses`` with ``update_existing=1``,
  bulk ``DELETE courses?course_ids=``;
- ``GET|POST courses/{id}/sections`` (bulk, ``update_existing=1`` matched by ``section_code``
  + ``grading_periods`` as the bulk docs say, by ``section_school_code`` when no section_code
  is sent), ``GET sections?section_school_codes=`` (≤ 50), bulk ``DELETE sections?section_ids=``;
  both lists leave out sections whose grading periods have all ended unless ``include_past=1``;
- ``POST enrollments/import/course`` by ``section_school_code`` + ``school_uid`` (+
  ``course_code`` checked when given), ``admin`` 0/1, ``delete`` 1 to drop;
- ``POST users/import/associations/parents`` by ``student_school_uid`` /
  ``parent_school_uid``, ``delete`` 1 to remove.

Bulk calls take at most 50 objects wrapped as the docs show (``{"users": {"user": [...]}}``)
and answer 207 Multi-Status with one entry per object, in order: ``response_code`` 200
and the ``id`` (and ``location``), or an error ``response_code`` and a ``message``. An
unknown building, role, grading period, section or user, or a duplicate code, fails the
object, not the call. More than 50 objects, a body that is not JSON or a missing wrapper
fails the whole call with 400. Lists are paged with ``start``/``limit`` (default 20, at
most 200) and ``links.next``.

Where Schoology's documentation is silent the emulator chooses, and the hook follows:
single creates answer 201 with the object, PUT and bulk DELETE answer 204, whole-call
errors carry ``{"error": message}``, enrollment import entries also carry the
enrollment ``id``, courses are keyed by ``course_code`` within a building (the docs say
the code is unique in the whole school), a user created with the school_uid of an inactive
one is a new account (the docs do not say), and 429 answers carry ``Retry-After`` unless told
otherwise (the docs document neither 429 nor Retry-After).

A token bucket of ``rate_limit`` requests per second (burst of one second's worth)
answers 429 when exceeded (counted in :attr:`rate_limited`); ``latency`` adds the LMS's
own time to every answer. Faults are switched on with :meth:`SchoologyEmulator.inject`
(``401`` as a reused nonce, ``429``, ``500``, ``503``, ``reject_items``, ``timeout_after_apply``). What was
provisioned stays inspectable (:attr:`buildings`, :attr:`users`, ... keyed by LMS id) and
every request, its body included, is kept in :attr:`requests`.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from functools import cached_property
from itertools import count
from typing import Any
from urllib.parse import urlencode, urlsplit

from oauthlib.common import Request as OAuthRequest
from oauthlib.oauth1.rfc5849 import signature

from include.sandbox.loopback import Fault, FaultQueue, LoopbackHandler, LoopbackService, Reply

FAULTS = ("401", "429", "500", "503", "reject_items", "timeout_after_apply")
DEFAULT = "default"  # inject's retry_after when not given: 429 carries Retry-After: 1, 503 none
REPLAY = "Duplicate timestamp/nonce combination, possible replay attack. Request rejected."
BULK_LIMIT = 50
TIMESTAMP_SKEW = 300  # seconds an oauth_timestamp may be off this server's clock, either way
NONCE_WINDOW = 600.0  # seconds a (timestamp, nonce) pair is remembered: a replay's timestamp is stale by then
DEFAULT_PAGE, MAX_PAGE = 20, 200
API_USER_UID = "5000000"  # the system administrator whose consumer key signs the calls (GET /v1/users/me)
OPTIONAL_USER_FIELDS = ("name_first_preferred", "username", "primary_email")  # kept when left out
SEED_ROLES = {"1212": "School Admin", "1213": "Teacher", "1214": "Student", "1215": "Parent"}
WRITES = frozenset({"POST", "PUT", "DELETE"})
SIGNATURE_METHOD = "HMAC-SHA1"
FORM = "application/x-www-form-urlencoded"  # the one body whose parameters are signed (RFC 5849 §3.4.1.3.1)
_OAUTH_REQUIRED = ("oauth_consumer_key", "oauth_nonce", "oauth_timestamp", "oauth_signature_method",
                   "oauth_signature")


class SchoologyError(Exception):
    """A whole-call error: the status and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class _ItemError(Exception):
    """One object of a bulk call failed; the others go on."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _encode(payload: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true")


def _ids(value: Any) -> list[str]:
    if value in (None, ""):
        return []
    parts = value if isinstance(value, list) else str(value).split(",")
    return [str(part).strip() for part in parts if str(part).strip()]


def _retry_after_header(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": f"{seconds:g}"}


def _required(item: dict, *names: str) -> None:
    for name in names:
        if not str(item.get(name) or "").strip():
            raise _ItemError(400, f"{name} is required")


class SchoologyEmulator(LoopbackService):
    """The Schoology emulator as a context manager: ``with SchoologyEmulator(...) as lms:``."""

    def __init__(
        self,
        *,
        consumer_key: str,
        consumer_secret: str,
        school_id: str = "344232",
        roles: dict[str, str] | None = None,
        rate_limit: float | None = None,
        retry_after: float | None = 1.0,
        latency: float = 0.0,
        port: int = 0,
        max_recorded: int = 100_000,
    ) -> None:
        super().__init__(port=port, max_recorded=max_recorded)
        self.consumer_key = consumer_key
        self.latency = latency
        self.school_id = school_id
        self.rate_limit = rate_limit
        self.retry_after = retry_after
        self.link_origin: str | None = None  # scheme://host:port that links.next names (None: this server)
        self._consumer_secret = consumer_secret
        self._lock = threading.Lock()
        self._ids = count(5_000_001)
        self._roles = {**SEED_ROLES, **(roles or {})}
        self._buildings: dict[str, dict] = {}
        self._grading_periods: dict[str, dict] = {}
        self._users: dict[str, dict] = {}
        self._inactive_users: dict[str, dict] = {}
        self._courses: dict[str, dict] = {}
        self._sections: dict[str, dict] = {}
        self._enrollments: dict[str, dict] = {}
        self._associations: dict[str, dict] = {}
        # indexes over the stores above, so a district of millions is served in constant time per object
        self._uid_by_school_uid: dict[str, str] = {}
        self._uid_by_login: dict[tuple[str, str], str] = {}  # (username|primary_email, lower-cased) -> uid
        self._course_by_code: dict[tuple[str, str], str] = {}  # (course_code, building_id) -> id
        self._section_by_code: dict[str, str] = {}
        # (course id, section_code) -> the ids of its sections: update_existing's match, looked up not scanned
        self._sections_by_section_code: dict[tuple[str, str], set[str]] = {}
        self._enrollment_by_pair: dict[tuple[str, str], str] = {}  # (section_id, uid) -> id
        self._enrollments_by_section: dict[str, set[str]] = {}
        self._faults = FaultQueue(FAULTS)
        self._rejected: dict[str, str] = {}
        self._nonces: OrderedDict[tuple[str, str], float] = OrderedDict()  # (timestamp, nonce) -> seen, oldest first
        self._tokens = float(rate_limit or 0)
        self._refilled = time.monotonic()
        self.write_requests = 0
        self.rate_limited = 0

    # -- controls -------------------------------------------------------------------

    def inject(
        self,
        fault: str,
        *,
        times: int = 1,
        path_contains: str | None = None,
        after: int = 0,
        retry_after: float | None | str = DEFAULT,
        seconds: float = 0,
        keys: tuple[str, ...] | list[str] = (),
        message: str = "rejected by the LMS",
    ) -> None:
        """Answer ``times`` matching requests with ``fault`` after letting ``after`` through.

        ``401`` answers as Schoology does a reused nonce (the request is not applied). ``429``
        carries ``Retry-After: retry_after`` (1 when not given; None: no header), ``503`` carries
        one only when ``retry_after`` is given: Schoology documents neither.

        ``timeout_after_apply`` matches writes only: the call is applied, then the
        connection stalls ``seconds`` and is dropped. ``reject_items`` fails the objects
        whose key (building_code, grading period title, school_uid, course_code,
        section_school_code, ``<section_school_code>:<school_uid>`` for an enrollment,
        ``<parent_school_uid>:<student_school_uid>`` for an association) is in ``keys``
        with ``message`` until :meth:`clear_faults`.
        """
        self._faults.check(fault)
        if retry_after == DEFAULT:
            retry_after = 1 if fault == "429" else None
        if fault != "reject_items":
            self._faults.add(Fault(fault, times, path_contains, after, retry_after, seconds))
            return
        with self._lock:
            self._rejected.update(dict.fromkeys(keys, message))

    def clear_faults(self) -> None:
        self._faults.clear()
        with self._lock:
            self._rejected.clear()

    def reset_stats(self) -> None:
        self._forget_requests()
        with self._lock:
            self.write_requests = 0

    # -- what was provisioned (copies, keyed by LMS id) -----------------------------

    def _snapshot(self, store: dict[str, dict]) -> dict[str, dict]:
        with self._lock:
            return {key: dict(value) for key, value in store.items()}

    @property
    def roles(self) -> dict[str, str]:
        with self._lock:
            return dict(self._roles)

    @property
    def buildings(self) -> dict[str, dict]:
        return self._snapshot(self._buildings)

    @property
    def grading_periods(self) -> dict[str, dict]:
        return self._snapshot(self._grading_periods)

    def add_grading_period(self, title: str, start: str, end: str) -> str:
        """A grading period the school made itself (what a district file maps terms to); its id."""
        with self._lock:
            period = {"id": self._new_id(), **self._grading_period_fields(
                {"title": title, "start": start, "end": end}, None)}
            self._grading_periods[period["id"]] = period
            return period["id"]

    @property
    def users(self) -> dict[str, dict]:
        return self._snapshot(self._users)

    @property
    def inactive_users(self) -> dict[str, dict]:
        return self._snapshot(self._inactive_users)

    @property
    def courses(self) -> dict[str, dict]:
        return self._snapshot(self._courses)

    @property
    def sections(self) -> dict[str, dict]:
        return self._snapshot(self._sections)

    @property
    def enrollments(self) -> dict[str, dict]:
        return self._snapshot(self._enrollments)

    @property
    def associations(self) -> dict[str, dict]:
        """Parent–child links keyed ``<parent uid>:<student uid>``."""
        return self._snapshot(self._associations)

    # -- gatekeeping (called by the handler threads) --------------------------------

    def _admit(self, method: str, path: str) -> Fault | None:
        """Count the request, apply the rate limit and pick the fault it meets, if any."""
        with self._lock:
            if method in WRITES:
                self.write_requests += 1
            if self.rate_limit:
                now = time.monotonic()
                capacity = max(1.0, self.rate_limit)
                self._tokens = min(capacity, self._tokens + (now - self._refilled) * self.rate_limit)
                self._refilled = now
                if self._tokens < 1:
                    self.rate_limited += 1
                    raise SchoologyError(429, "Too many requests: rate limit exceeded",
                                         _retry_after_header(self.retry_after))
                self._tokens -= 1
        # timeout_after_apply is met by writes only
        return self._faults.take(path, lambda fault: fault.kind != "timeout_after_apply" or method in WRITES)

    def _authenticate(self, method: str, target: str, headers, body: bytes) -> None:
        """Two-legged OAuth 1.0a, HMAC-SHA1: the signature recomputed (RFC 5849 §3.4) from the
        method, the URL the client called (``Host`` and ``target``, the path with its query), the
        query, form and header parameters and the consumer secret; then the timestamp must be
        recent and the nonce new."""
        authorization = headers.get("Authorization")
        if not authorization or not authorization.startswith("OAuth "):
            raise SchoologyError(401, "Authorization header missing: use OAuth 1.0a")
        form = body.decode("utf-8", "replace") if FORM in (headers.get("Content-Type") or "") else None
        try:
            params = dict(signature.collect_parameters(headers={"Authorization": authorization},
                                                       exclude_oauth_signature=False))
            signed = signature.collect_parameters(uri_query=urlsplit(target).query, body=form,
                                                  headers={"Authorization": authorization})
        except ValueError:
            raise SchoologyError(401, "the OAuth parameters cannot be read") from None
        missing = [name for name in _OAUTH_REQUIRED if not params.get(name)]
        if missing:
            raise SchoologyError(401, f"OAuth parameter(s) missing: {', '.join(missing)}")
        if params["oauth_signature_method"] != SIGNATURE_METHOD:
            raise SchoologyError(401, f"this server accepts the {SIGNATURE_METHOD} signature method only")
        if params.get("oauth_token"):
            raise SchoologyError(401, "two-legged OAuth: oauth_token must be empty or absent")
        timestamp = params["oauth_timestamp"]
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TIMESTAMP_SKEW:
            raise SchoologyError(401, f"oauth_timestamp must be within {TIMESTAMP_SKEW} s of the server's clock")
        request = OAuthRequest(f"http://{headers.get('Host')}{target}", method)
        request.params, request.signature = signed, params["oauth_signature"]
        if params["oauth_consumer_key"] != self.consumer_key or not signature.verify_hmac_sha1(
            request, client_secret=self._consumer_secret
        ):
            raise SchoologyError(401, "Invalid consumer key or signature")
        replay = (timestamp, params["oauth_nonce"])
        with self._lock:
            if replay in self._nonces:
                raise SchoologyError(401, "Duplicate timestamp/nonce combination, possible replay attack. "
                                          "Request rejected.")
            now = time.monotonic()
            while self._nonces and now - next(iter(self._nonces.values())) >= NONCE_WINDOW:
                self._nonces.popitem(last=False)  # forgotten oldest first: a call costs the same at any rate
            self._nonces[replay] = now

    def _new_id(self) -> str:
        return str(next(self._ids))

    # -- the API ---------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, url: str) -> tuple[int, Any]:
        """Route one authenticated call; the status and the JSON payload (None: no body)."""
        for route_method, pattern, action in self._routes:
            match = pattern.match(path)
            if match and route_method == method:
                payload = json.loads(body) if body and method in ("POST", "PUT") else None
                with self._lock:
                    return action(match, query, payload, url)
        raise SchoologyError(404, f"no such endpoint: {method} {path}")

    @cached_property
    def _routes(self) -> list[tuple[str, re.Pattern, Callable]]:
        table = [
            ("GET", r"/v1/schools/(?P<school>\d+)/buildings", self._list_buildings),
            ("POST", r"/v1/schools/(?P<school>\d+)/buildings", self._create_building),
            ("PUT", r"/v1/schools/(?P<id>\d+)", self._update_school),
            ("DELETE", r"/v1/schools/(?P<id>\d+)", self._delete_school),
            ("GET", r"/v1/gradingperiods", self._list_grading_periods),
            ("POST", r"/v1/gradingperiods", self._create_grading_period),
            ("PUT", r"/v1/gradingperiods/(?P<id>\d+)", self._update_grading_period),
            ("DELETE", r"/v1/gradingperiods/(?P<id>\d+)", self._delete_grading_period),
            ("GET", r"/v1/roles", self._list_roles),
            ("GET", r"/v1/users/me", self._me),
            ("GET", r"/v1/users", self._list_users),
            ("POST", r"/v1/users", self._bulk_users),
            ("DELETE", r"/v1/users", self._delete_users),
            ("GET", r"/v1/users/inactive", self._list_inactive_users),
            ("PUT", r"/v1/users/reactivate", self._reactivate_users),
            ("POST", r"/v1/users/import/associations/parents", self._import_parent_associations),
            ("GET", r"/v1/courses", self._list_courses),
            ("POST", r"/v1/courses", self._bulk_courses),
            ("DELETE", r"/v1/courses", self._delete_courses),
            ("GET", r"/v1/courses/(?P<course>\d+)/sections", self._list_course_sections),
            ("POST", r"/v1/courses/(?P<course>\d+)/sections", self._bulk_sections),
            ("GET", r"/v1/sections", self._list_sections),
            ("DELETE", r"/v1/sections", self._delete_sections),
            ("POST", r"/v1/enrollments/import/course", self._import_enrollments),
        ]
        return [(method, re.compile(f"^{pattern}/?$"), action) for method, pattern, action in table]

    # buildings

    def _list_buildings(self, match, query, payload, url):
        self._school(match["school"])
        return 200, self._page("building", list(self._buildings.values()), query, url)

    def _create_building(self, match, query, payload, url):
        self._school(match["school"])
        item = self._object(payload)
        self._check_rejected_call(item.get("building_code"))
        for name in ("title", "building_code"):
            if not str(item.get(name) or "").strip():
                raise SchoologyError(400, f"{name} is required")
        self._unique_building_code(item["building_code"], None)
        building = {"id": self._new_id(), "title": item["title"], "building_code": item["building_code"]}
        self._buildings[building["id"]] = building
        return 201, building

    def _update_school(self, match, query, payload, url):
        building = self._buildings.get(match["id"])
        if building is None:
            raise SchoologyError(404, f"no building {match['id']}")
        item = self._object(payload)
        if "building_code" in item:
            self._unique_building_code(item["building_code"], building["id"])
        building.update({key: item[key] for key in ("title", "building_code") if key in item})
        return 204, None

    def _delete_school(self, match, query, payload, url):
        if self._buildings.pop(match["id"], None) is None:
            raise SchoologyError(404, f"no building {match['id']}")
        return 204, None

    def _unique_building_code(self, code: str, own_id: str | None) -> None:
        if any(b["building_code"] == code and b["id"] != own_id for b in self._buildings.values()):
            raise SchoologyError(400, f"building_code {code!r} is already used by another building")

    def _school(self, school_id: str) -> None:
        if school_id != self.school_id:
            raise SchoologyError(404, f"no school {school_id}")

    # grading periods

    def _list_grading_periods(self, match, query, payload, url):
        periods = list(self._grading_periods.values())
        if query.get("title"):
            starts = _flag(query.get("startswith"))
            periods = [p for p in periods
                       if (p["title"].startswith(query["title"]) if starts else p["title"] == query["title"])]
        return 200, self._page("gradingperiods", periods, query, url)

    def _create_grading_period(self, match, query, payload, url):
        item = self._object(payload)
        self._check_rejected_call(item.get("title"))
        period = {"id": self._new_id(), **self._grading_period_fields(item, None)}
        self._grading_periods[period["id"]] = period
        return 201, period

    def _update_grading_period(self, match, query, payload, url):
        period = self._grading_periods.get(match["id"])
        if period is None:
            raise SchoologyError(404, f"no grading period {match['id']}")
        period.update(self._grading_period_fields({**period, **self._object(payload)}, period["id"]))
        return 204, None

    def _delete_grading_period(self, match, query, payload, url):
        if match["id"] not in self._grading_periods:
            raise SchoologyError(404, f"no grading period {match['id']}")
        if any(match["id"] in section["grading_periods"] for section in self._sections.values()):
            raise SchoologyError(400, "course sections still belong to this grading period: delete them or "
                                      "move them to another period first")
        del self._grading_periods[match["id"]]
        return 204, None

    def _grading_period_fields(self, item: dict, own_id: str | None) -> dict:
        for name in ("title", "start", "end"):
            if not str(item.get(name) or "").strip():
                raise SchoologyError(400, f"{name} is required")
        try:
            start, end = date.fromisoformat(item["start"]), date.fromisoformat(item["end"])
        except ValueError:
            raise SchoologyError(400, "start and end must be dates (YYYY-MM-DD)") from None
        if end < start:
            raise SchoologyError(400, "end must not be before start")
        if any(p["title"] == item["title"] and p["id"] != own_id for p in self._grading_periods.values()):
            raise SchoologyError(400, f"a grading period titled {item['title']!r} already exists")
        return {"title": item["title"], "start": start.isoformat(), "end": end.isoformat(), "active": "1"}

    # roles

    def _list_roles(self, match, query, payload, url):
        roles = [{"id": role_id, "title": title, "faculty": int(title in ("Teacher", "School Admin")),
                  "role_type": 1} for role_id, title in self._roles.items()]
        return 200, {"role": roles}

    # users

    def _me(self, match, query, payload, url):
        """The API user the consumer key belongs to (Schoology answers with a 303 to its user object;
        the emulator answers with the object itself)."""
        return 200, {"uid": API_USER_UID, "school_id": self.school_id, "role_id": "1212",
                     "name_display": "API Administrator"}

    def _list_users(self, match, query, payload, url):
        if "school_uids" in query:
            wanted = _ids(query["school_uids"])
            if len(wanted) > BULK_LIMIT:
                raise SchoologyError(400, f"school_uids takes at most {BULK_LIMIT} values")
            users = [user for uid in dict.fromkeys(wanted) if (user := self._user_by_school_uid(uid))]
        else:
            users = list(self._users.values())
        if query.get("building_id"):
            users = [u for u in users if u["building_id"] == query["building_id"]]
        if query.get("role_ids"):
            role_ids = set(_ids(query["role_ids"]))
            users = [u for u in users if u["role_id"] in role_ids]
        return 200, self._page("user", users, query, url)

    def _bulk_users(self, match, query, payload, url):
        update = _flag(query.get("update_existing"))

        def one(item: dict) -> dict:
            _required(item, "school_uid", "name_first", "name_last", "role_id")
            existing = self._user_by_school_uid(item["school_uid"])
            # an optional field left out keeps what the account has; "" clears it
            kept = {field: (str(item[field] or "") if field in item else (existing or {}).get(field, ""))
                    for field in OPTIONAL_USER_FIELDS}
            if not (kept["username"] or kept["primary_email"]):
                raise _ItemError(400, "a username or a primary_email is required")
            if str(item["role_id"]) not in self._roles:
                raise _ItemError(400, f"Invalid role_id {item['role_id']}")
            building = str(item.get("building_id") or self.school_id)
            additional = _ids(item.get("additional_buildings"))
            for building_id in (building, *additional):
                if building_id != self.school_id and building_id not in self._buildings:
                    raise _ItemError(400, f"Invalid building_id {building_id}")
            if existing and not update:
                raise _ItemError(400, f"a user with school_uid {item['school_uid']!r} already exists")
            own = existing["uid"] if existing else None
            for field in ("username", "primary_email"):
                value = kept[field].lower()
                if value and self._uid_by_login.get((field, value), own) != own:
                    raise _ItemError(400, f"{field} is already in use by another account")
            user = existing or {"uid": self._new_id(), "school_id": self.school_id}
            self._unindex_logins(user)
            user.update({
                "school_uid": item["school_uid"], "name_first": item["name_first"], "name_last": item["name_last"],
                **kept, "role_id": str(item["role_id"]), "building_id": building,
                "additional_buildings": ",".join(additional), "synced": int(_flag(item.get("synced"))),
            })
            self._users[user["uid"]] = user
            self._uid_by_school_uid[user["school_uid"]] = user["uid"]
            self._index_logins(user)
            return {"id": user["uid"], "location": f"{self._api(url)}/users/{user['uid']}",
                    "school_uid": user["school_uid"]}

        return 207, {"user": self._bulk(payload, "users", "user", lambda item: item.get("school_uid"), one,
                                       ("school_uid",))}

    def _delete_users(self, match, query, payload, url):
        uids = self._delete_ids(query, "uids")
        for uid in uids:
            user = self._users.pop(uid, None)
            if user:
                user["inactive_timestamp"] = int(time.time())
                self._inactive_users[uid] = user
                self._uid_by_school_uid.pop(user["school_uid"], None)
                self._unindex_logins(user)
        return 204, None

    def _list_inactive_users(self, match, query, payload, url):
        """``GET users/inactive``: the inactive users, in the fields Schoology documents for them."""
        records = [{"uid": user["uid"], "name": f"{user['name_first']} {user['name_last']}",
                    "school_uid": user["school_uid"], "synced": user.get("synced", 0),
                    "inactive_timestamp": user.get("inactive_timestamp"), "modified_by_uid": None}
                   for user in self._inactive_users.values()]
        return 200, self._page("user", records, query, url)

    def _reactivate_users(self, match, query, payload, url):
        """``PUT users/reactivate``: ``{"user": [{"uid": ..., "option_reenroll": 0|1}]}``, an entry
        each. Without ``option_reenroll=1`` the user is not placed back into their sections."""
        items = payload.get("user") if isinstance(payload, dict) else None
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list) or not items:
            raise SchoologyError(400, 'the body must list the users as {"user": [{"uid": ...}]}')
        if len(items) > BULK_LIMIT:
            raise SchoologyError(400, f"at most {BULK_LIMIT} users per call, got {len(items)}")
        answers = []
        for item in items:
            uid = str(item.get("uid") or "") if isinstance(item, dict) else ""
            user = self._inactive_users.get(uid)
            if user is None:
                answers.append({"response_code": 404, "message": f"no inactive user {uid}"})
                continue
            if self._user_by_school_uid(user["school_uid"]) is not None:
                answers.append({"response_code": 409, "message": "an active user already has this school_uid"})
                continue
            logins = [field for field in ("username", "primary_email")
                      if user.get(field) and (field, str(user[field]).lower()) in self._uid_by_login]
            if logins:
                answers.append({"response_code": 409,
                                "message": f"{logins[0]} is already in use by another account"})
                continue
            del self._inactive_users[uid]
            user.pop("inactive_timestamp", None)
            self._users[uid] = user
            self._uid_by_school_uid[user["school_uid"]] = uid
            self._index_logins(user)
            if not _flag(item.get("option_reenroll")):
                for enrollment_id in [e["id"] for e in self._enrollments.values() if e["uid"] == uid]:
                    enrollment = self._enrollments.pop(enrollment_id)
                    del self._enrollment_by_pair[(enrollment["section_id"], uid)]
                    self._enrollments_by_section.get(enrollment["section_id"], set()).discard(enrollment_id)
            answers.append({"response_code": 200, "location": f"{self._api(url)}/users/{uid}",
                            "message": "You have successfully re-actived this user."})
        return 207, {"user": answers}

    def _user_by_school_uid(self, school_uid: str) -> dict | None:
        uid = self._uid_by_school_uid.get(school_uid)
        return self._users[uid] if uid is not None else None

    def _index_logins(self, user: dict) -> None:
        for field in ("username", "primary_email"):
            if user.get(field):
                self._uid_by_login[(field, str(user[field]).lower())] = user["uid"]

    def _unindex_logins(self, user: dict) -> None:
        for field in ("username", "primary_email"):
            if user.get(field) and self._uid_by_login.get((field, str(user[field]).lower())) == user["uid"]:
                del self._uid_by_login[(field, str(user[field]).lower())]

    # courses

    def _list_courses(self, match, query, payload, url):
        courses = list(self._courses.values())
        if query.get("building_id"):
            courses = [c for c in courses if c["building_id"] == query["building_id"]]
        return 200, self._page("course", courses, query, url)

    def _bulk_courses(self, match, query, payload, url):
        update = _flag(query.get("update_existing"))

        def one(item: dict) -> dict:
            _required(item, "title", "course_code")
            building = str(item.get("building_id") or self.school_id)
            if building != self.school_id and building not in self._buildings:
                raise _ItemError(400, f"Invalid building_id {building}")
            existing_id = self._course_by_code.get((item["course_code"], building))
            existing = self._courses[existing_id] if existing_id is not None else None
            if existing and not update:
                raise _ItemError(400, f"a course with course_code {item['course_code']!r} already exists")
            course = existing or {"id": self._new_id(), "course_code": item["course_code"], "building_id": building}
            course.update({"title": item["title"], "synced": int(_flag(item.get("synced")))})
            self._courses[course["id"]] = course
            self._course_by_code[(course["course_code"], building)] = course["id"]
            return {"id": course["id"], "location": f"{self._api(url)}/courses/{course['id']}",
                    "course_code": course["course_code"]}

        return 207, {"course": self._bulk(payload, "courses", "course", lambda item: item.get("course_code"),
                                         one, ("course_code",))}

    def _delete_courses(self, match, query, payload, url):
        for course_id in self._delete_ids(query, "course_ids"):
            if course := self._courses.pop(course_id, None):
                del self._course_by_code[(course["course_code"], course["building_id"])]
                for section_id in [s["id"] for s in self._sections.values() if s["course_id"] == course_id]:
                    self._drop_section(section_id)
        return 204, None

    # sections

    def _list_course_sections(self, match, query, payload, url):
        course = self._course(match["course"])
        found = [s for s in self._sections.values() if s["course_id"] == course["id"]]
        return 200, self._page("section", self._current(found, query), query, url)

    def _list_sections(self, match, query, payload, url):
        codes = _ids(query.get("section_school_codes"))
        if not codes or len(codes) > BULK_LIMIT:
            raise SchoologyError(400, f"section_school_codes takes 1 to {BULK_LIMIT} values")
        found = [self._sections[self._section_by_code[code]] for code in dict.fromkeys(codes)
                 if code in self._section_by_code]
        return 200, self._page("section", self._current(found, query), query, url)

    def _current(self, sections: list[dict], query: dict[str, str]) -> list[dict]:
        """``sections`` as Schoology lists them: without ``include_past=1``, not those whose grading
        periods have all ended ("include sections from expired/past grading periods")."""
        if _flag(query.get("include_past")):
            return sections
        today = date.today().isoformat()
        return [section for section in sections
                if any(self._grading_periods.get(period, {}).get("end", today) >= today
                       for period in section["grading_periods"])]

    def _section_by_section_code(self, course_id: str, code: str, periods: list[str],
                                 other_than: dict | None) -> tuple[dict | None, bool]:
        """The course's section ``update_existing`` matches (same ``section_code``, same grading
        periods), and whether a section other than ``other_than`` shares the code in one of ``periods``
        ("unique across the course and grading period")."""
        wanted, clash = set(periods), False
        for section_id in sorted(self._sections_by_section_code.get((course_id, code), ()), key=int):
            section = self._sections[section_id]
            if set(section["grading_periods"]) == wanted:
                return section, False
            clash = clash or (section is not other_than and bool(wanted & set(section["grading_periods"])))
        return None, clash

    def _bulk_sections(self, match, query, payload, url):
        course = self._course(match["course"])
        update = _flag(query.get("update_existing"))

        def one(item: dict) -> dict:
            title = item.get("title") or item.get("section_title")
            if not title:
                raise _ItemError(400, "title is required")
            section_code = str(item.get("section_code") or "")
            code = str(item.get("section_school_code") or "")
            if not (section_code or code):
                raise _ItemError(400, "section_code or section_school_code is required")
            periods = [str(period) for period in item.get("grading_periods") or []]
            if not periods:
                raise _ItemError(400, "grading_periods is required")
            unknown = [period for period in periods if period not in self._grading_periods]
            if unknown:
                raise _ItemError(400, f"Invalid grading period id(s): {', '.join(unknown)}")
            # update_existing: "matched by the section_code and grading_periods fields" (the bulk docs);
            # a section sent without a section_code is matched by its section_school_code
            by_school_code = self._sections.get(self._section_by_code.get(code, "")) if code else None
            existing, clash = (self._section_by_section_code(course["id"], section_code, periods, by_school_code)
                               if section_code else (None, False))
            if existing is None and clash:
                raise _ItemError(400, f"section_code {section_code!r} is already used in this course in one of "
                                      "these grading periods")
            if existing is None:
                existing = by_school_code
            if by_school_code and by_school_code is not existing:
                raise _ItemError(400, f"section_school_code {code!r} is already used by another section")
            if existing and existing["course_id"] != course["id"]:
                raise _ItemError(400, f"section_school_code {code!r} is already used by a section of another course")
            if existing and not update:
                raise _ItemError(400, "a section with this section_code and grading periods, or this "
                                      "section_school_code, already exists")
            section = existing or {"id": self._new_id(), "course_id": course["id"], "section_school_code": ""}
            if code and section["section_school_code"] != code:
                self._section_by_code.pop(section["section_school_code"], None)
                section["section_school_code"] = code
            self._sections_by_section_code.get((section["course_id"], section.get("section_code", "")),
                                               set()).discard(section["id"])
            section.update({"section_title": title, "section_code": section_code,
                            "grading_periods": periods, "synced": int(_flag(item.get("synced")))})
            if section_code:
                self._sections_by_section_code.setdefault((section["course_id"], section_code), set()).add(section["id"])
            self._sections[section["id"]] = section
            if section["section_school_code"]:
                self._section_by_code[section["section_school_code"]] = section["id"]
            return {"id": section["id"], "location": f"{self._api(url)}/sections/{section['id']}",
                    "section_code": section["section_code"], "section_school_code": section["section_school_code"],
                    "grading_periods": [int(period) for period in periods]}

        return 207, {"section": self._bulk(payload, "sections", "section",
                                           lambda item: item.get("section_school_code"), one,
                                           ("section_school_code",))}

    def _delete_sections(self, match, query, payload, url):
        for section_id in self._delete_ids(query, "section_ids"):
            self._drop_section(section_id)
        return 204, None

    def _drop_section(self, section_id: str) -> None:
        if section := self._sections.pop(section_id, None):
            self._section_by_code.pop(section["section_school_code"], None)
            self._sections_by_section_code.get((section["course_id"], section["section_code"]), set()).discard(section_id)
            for enrollment_id in self._enrollments_by_section.pop(section_id, set()):
                enrollment = self._enrollments.pop(enrollment_id)
                del self._enrollment_by_pair[(section_id, enrollment["uid"])]

    def _course(self, course_id: str) -> dict:
        course = self._courses.get(course_id)
        if course is None:
            raise SchoologyError(404, f"no course {course_id}")
        return course

    # enrollments

    def _import_enrollments(self, match, query, payload, url):
        def key(item: dict) -> str:
            return f"{item.get('section_school_code')}:{item.get('school_uid')}"

        def one(item: dict) -> dict:
            _required(item, "section_school_code", "school_uid")
            section = self._sections.get(self._section_by_code.get(item["section_school_code"], ""))
            if section is None:
                raise _ItemError(404, f"Section {item['section_school_code']!r} not found")
            course = self._courses[section["course_id"]]
            if item.get("course_code") and item["course_code"] != course["course_code"]:
                raise _ItemError(400, f"Section {item['section_school_code']!r} does not belong to course "
                                      f"{item['course_code']!r}")
            user = self._user_by_school_uid(item["school_uid"])
            if user is None:
                raise _ItemError(404, f"User {item['school_uid']!r} not found")
            pair = (section["id"], user["uid"])
            existing = self._enrollments.get(self._enrollment_by_pair.get(pair, ""))
            if _flag(item.get("delete")):
                if existing is None:
                    raise _ItemError(404, "Enrollment not found")
                del self._enrollments[existing["id"]], self._enrollment_by_pair[pair]
                self._enrollments_by_section[section["id"]].discard(existing["id"])
                enrollment = existing
            else:
                enrollment = existing or {"id": self._new_id(), "section_id": section["id"], "uid": user["uid"],
                                          "status": 1}
                enrollment["admin"] = int(_flag(item.get("admin")))
                self._enrollments[enrollment["id"]] = enrollment
                self._enrollment_by_pair[pair] = enrollment["id"]
                self._enrollments_by_section.setdefault(section["id"], set()).add(enrollment["id"])
            return {"id": enrollment["id"],
                    "location": f"{self._api(url)}/sections/{section['id']}/enrollments/{enrollment['id']}",
                    "school_uid": user["school_uid"], "section_school_code": section["section_school_code"],
                    "course_code": course["course_code"], "section_code": section["section_code"]}

        return 207, {"enrollments": {"enrollment": self._bulk(payload, "enrollments", "enrollment", key, one,
                                                                ("section_school_code", "school_uid"))}}

    # parent associations

    def _import_parent_associations(self, match, query, payload, url):
        def key(item: dict) -> str:
            return f"{item.get('parent_school_uid')}:{item.get('student_school_uid')}"

        def one(item: dict) -> dict:
            _required(item, "student_school_uid", "parent_school_uid")
            student = self._user_by_school_uid(item["student_school_uid"])
            parent = self._user_by_school_uid(item["parent_school_uid"])
            if student is None or parent is None:
                missing = "student" if student is None else "parent"
                raise _ItemError(404, f"The {missing} user was not found")
            if student["uid"] == parent["uid"]:
                raise _ItemError(400, "a user cannot be their own parent")
            link = f"{parent['uid']}:{student['uid']}"
            if _flag(item.get("delete")):
                if self._associations.pop(link, None) is None:
                    raise _ItemError(404, "Association not found")
            else:
                self._associations[link] = {"parent_uid": parent["uid"], "student_uid": student["uid"]}
            return {"student_school_uid": student["school_uid"], "student_uid": student["uid"],
                    "parent_school_uid": parent["school_uid"], "parent_uid": parent["uid"]}

        return 207, {"association": self._bulk(payload, "associations", "association", key, one,
                                                ("student_school_uid", "parent_school_uid"))}

    # shared shapes

    def _bulk(self, payload: Any, outer: str, inner: str, key: Callable[[dict], Any],
              one: Callable[[dict], dict], echo: tuple[str, ...]) -> list[dict]:
        """Apply each object of a bulk call on its own: one entry per object, in order.

        A failed object's entry repeats its identifying fields (``echo``) next to the message.
        """
        items = payload.get(outer, {}).get(inner) if isinstance(payload, dict) and \
            isinstance(payload.get(outer), dict) else None
        if isinstance(items, dict):
            items = [items]
        if not isinstance(items, list) or not items:
            raise SchoologyError(400, f"the body must wrap the objects as {{\"{outer}\": {{\"{inner}\": [...]}}}}")
        if len(items) > BULK_LIMIT:
            raise SchoologyError(400, f"at most {BULK_LIMIT} {outer} per call, got {len(items)}")
        answers = []
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise _ItemError(400, "each object must be a JSON object")
                self._check_rejected(key(item))
                answers.append({"response_code": 200, **one(item)})
            except _ItemError as error:
                echoed = {name: item[name] for name in echo if name in item} if isinstance(item, dict) else {}
                answers.append({"response_code": error.code, "message": error.message, **echoed})
        return answers

    def _check_rejected(self, key: Any) -> None:
        if key is not None and str(key) in self._rejected:
            raise _ItemError(400, self._rejected[str(key)])

    def _check_rejected_call(self, key: Any) -> None:
        try:
            self._check_rejected(key)
        except _ItemError as error:
            raise SchoologyError(error.code, error.message) from None

    @staticmethod
    def _object(payload: Any) -> dict:
        if not isinstance(payload, dict):
            raise SchoologyError(400, "the body must be a JSON object")
        return payload

    @staticmethod
    def _delete_ids(query: dict[str, str], name: str) -> list[str]:
        ids = _ids(query.get(name))
        if not ids or len(ids) > BULK_LIMIT:
            raise SchoologyError(400, f"{name} takes 1 to {BULK_LIMIT} ids")
        return ids

    @staticmethod
    def _api(url: str) -> str:
        return url.split("/v1/", 1)[0] + "/v1"

    @staticmethod
    def _page(key: str, records: list[dict], query: dict[str, str], url: str) -> dict:
        try:
            start = max(0, int(query.get("start", 0)))
            limit = min(max(1, int(query.get("limit", DEFAULT_PAGE))), MAX_PAGE)
        except ValueError:
            raise SchoologyError(400, "start and limit must be integers") from None
        links = {"self": f"{url}?{urlencode({**query, 'start': start, 'limit': limit})}"}
        if start + limit < len(records):
            links["next"] = f"{url}?{urlencode({**query, 'start': start + limit, 'limit': limit})}"
        return {key: [dict(record) for record in records[start:start + limit]], "total": len(records),
                "links": links}


class _Handler(LoopbackHandler):
    server_version = "SchoologyEmulator/1.0"
    emulator: SchoologyEmulator

    def serve(self, method: str) -> None:
        started = time.monotonic()
        path, query, body = self.read_request()
        reply = self._respond(method, path, query, body)
        if self.emulator.latency:
            time.sleep(self.emulator.latency)
        self.record(method, path, query, body, reply, started)
        self.answer(reply)

    def _respond(self, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
        emulator = self.emulator
        try:
            fault = emulator._admit(method, path)
            emulator._authenticate(method, self.path, self.headers, body)
            if fault and fault.kind == "401":
                raise SchoologyError(401, REPLAY)
            if fault and fault.kind == "429":
                raise SchoologyError(429, "Too many requests", _retry_after_header(fault.retry_after))
            if fault and fault.kind in ("500", "503"):
                raise SchoologyError(int(fault.kind), "the service is temporarily unavailable",
                                     _retry_after_header(fault.retry_after if fault.kind == "503" else None))
            url = f"{emulator.link_origin or emulator.base_url}{path}"
            try:
                status, payload = emulator.handle(method, path, query, body, url)
            except json.JSONDecodeError:
                raise SchoologyError(400, "the body is not valid JSON") from None
            reply = Reply(status, {}) if payload is None else Reply.json(status, _encode(payload))
            if fault and fault.kind == "timeout_after_apply":  # applied, then the client waits and is cut off
                return replace(reply, cut="reset", stall=fault.seconds)
            return reply
        except SchoologyError as error:
            return Reply.json(error.status, _encode({"error": error.message}), error.headers)


SchoologyEmulator.handler_class = _Handler  # defined after the emulator it serves


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an empty Schoology school's REST v1 API on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=18081)
    parser.add_argument("--consumer-key", required=True)
    parser.add_argument("--consumer-secret", required=True, help="local-only; never a real district's secret")
    parser.add_argument("--school-id", default="344232")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second before 429")
    args = parser.parse_args(argv)
    with SchoologyEmulator(consumer_key=args.consumer_key, consumer_secret=args.consumer_secret,
                           school_id=args.school_id, rate_limit=args.rate_limit, port=args.port) as lms:
        print(f"Schoology emulator on {lms.base_url}/v1 (school {lms.school_id})", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
