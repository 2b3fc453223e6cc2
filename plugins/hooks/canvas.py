"""Canvas LMS's REST API as an Airflow hook: rosters go into Canvas as SIS Imports, and this hook
owns that protocol. It is the Canvas adapter of :class:`include.lms.target.LmsTarget`: each batch of
items is one import, what goes into its zip and how Canvas's answer reads per item being
:mod:`include.lms.canvas` (pure functions); the hook sends the zip, waits for the import and reads
Canvas's lists (sub-accounts and terms, the catalogs a district file's maps point at). It is also the
district's :class:`~include.lms.target.LmsGradeSource`: it reads each course's grading periods and its
students' grades (the Enrollments API), which :mod:`include.lms.canvas_grades` turns into grade rows.

:class:`CanvasHook` is an :class:`~plugins.hooks.api_hook.ApiHook` (session, TLS, proxies, the
extras checked) on one Airflow connection:

- host: the Canvas base URL, e.g. ``https://district.instructure.com`` (``/api/v1`` is added)
- password: an access token of a Canvas admin of the root account allowed to import SIS data
  (login is not used)
- extra ``account_id``: the root account (Canvas takes SIS imports on a root account only), its
  number or ``self``; optional ``poll_seconds`` (the longest wait between two reads of an import's
  status, default 10; see :class:`ImportPace`), ``import_timeout_seconds`` (how long
  :meth:`CanvasHook.wait_for_sis_import` waits unless told, default 3600) and ``read_timeout``
  (seconds to wait for an answer, default 300: Canvas stores the whole upload before it answers
  the POST)

What Canvas documents (Canvas LMS REST API: "SIS Imports", "Pagination", "Throttling"):

- ``POST /api/v1/accounts/:account_id/sis_imports`` takes the data as a raw body with a suitable
  Content-Type (``application/zip``) and, as encouraged, ``extension=zip``; ``import_type`` is
  ``instructure_csv``. The parameters go in the query string, as the body is the zip. The answer
  is the SisImport object, whose id the caller keeps. The import runs later, one at a time per
  account: ``workflow_state`` initializing, created, importing (``progress`` 0-100),
  cleanup_batch, then imported, imported_with_messages, aborted, failed or failed_with_messages
  (restoring, partially_restored and restored belong to restoring a finished import; the last two
  are final too). ``processing_warnings`` / ``processing_errors`` are lists of ``[file, message]``
  and ``data.counts`` the rows processed per kind. ``GET .../sis_imports/:id`` reads an import and
  ``GET .../sis_imports`` lists them, newest first.
- Lists are paged, 10 records by default, ``per_page`` up to "an unspecified limit"; the
  ``Link`` header's ``rel="next"`` URL (absolute, opaque) is the next page.
- A token whose quota is spent is answered ``403 Forbidden (Rate Limit Exceeded)`` (one page of
  the docs says 429), with no Retry-After; while throttling applies every answer carries
  ``X-Rate-Limit-Remaining``. A client making one request at a time "is unlikely to be throttled".
- The token goes as ``Authorization: Bearer <token>``; Canvas also takes it as ``access_token``
  in the query, which the hook never does (a URL ends up in logs).

Choices where the docs are silent:

- One request at a time (a pool of one connection, no pacing), after the throttling page.
- A 403 whose body says "Rate Limit Exceeded" is the throttle (``X-Rate-Limit-Remaining`` is on
  every answer, so it cannot tell the two apart); it and a 429 or 503 are retried with capped
  exponential backoff, holding every call of the hook; so are other 5xx and dropped connections.
  Any other 401 or 403 is the token (wrong, expired, deleted) or its user's permissions, and fails
  the task at once saying what to fix; the token is never in a message.
- ``per_page`` is 100 (the docs name no limit; a server that caps it lower still links the next
  page, which is followed); a next link to another scheme, host or port than the connection's is
  refused, as the token would go with it.
- An upload is never applied twice by the hook. Before its first POST the hook reads the newest
  import's id. A POST that was refused unread (429, throttled 403, 503) or that may have been
  received (no answer, a dropped connection, another 5xx) is retried only after listing the
  imports newer than that id (with the same ``diffing_data_set_identifier``, when one is given):
  one listed is taken as the upload's and its id returned; several fail the task, naming them;
  none, and the zip is posted again. When the last attempt fails too, the
  :class:`CanvasUnavailableError` says that the upload may have reached Canvas and names the
  import id to look past. An import still not finished after ``import_timeout_seconds`` fails
  the call (:class:`CanvasImportPendingError` carries its id); provisioning has noted the id in
  the task's receipts before waiting, so a cleared or retried task waits for that import again
  instead of uploading its batch behind it. What remains: an upload Canvas is still storing when
  the hook looks is posted again. Neither applies anything twice: a SIS import upserts rows by SIS
  id, so the same zip twice changes nothing more (with diffing the second finds no difference).
- Log lines carry import ids, states and counts. Canvas's messages about rows name people (user
  ids, logins): they are in the :class:`~include.lms.canvas.SisImportResult` for the caller's staged reports, never
  logged; a whole call's refusal is redacted (:func:`include.privacy.redacted`) before it goes
  into an exception. The paths given to :meth:`CanvasHook.get_all` appear in messages: they
  name accounts, courses and sections, not people.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import count, takewhile
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from include.lms import canvas as wire
from include.lms import canvas_grades as grades
from include.lms.target import Action, CatalogKind, ItemResult, LmsItem, Receipts, SectionGrades

from plugins.hooks.api_hook import ApiHook, ConnectionSettingsError, same_origin
from plugins.hooks.retrying import DROPPED, Transient

API_PATH = "/api/v1"
PER_PAGE = 100
THROTTLED = "rate limit exceeded"  # in the body of Canvas's "403 Forbidden (Rate Limit Exceeded)"
DEFAULT_POLL_SECONDS = 10.0
DEFAULT_IMPORT_TIMEOUT_SECONDS = 3600.0


class CanvasCredentialsError(AirflowFailException):
    """Canvas refused the access token or its user's permissions: retrying cannot help."""


class CanvasRequestError(AirflowException):
    """Canvas rejected a call (a 4xx other than 401, 403 and 429), such as an upload it refused."""


class CanvasUnavailableError(AirflowException):
    """Canvas kept failing (throttled, 5xx, dropped connections) through every retry."""


class CanvasUploadUnconfirmedError(AirflowFailException):
    """An upload may have been taken by Canvas, and the imports it lists cannot tell which is it."""


class CanvasImportPendingError(AirflowException):
    """An import had not finished when the wait ran out. Canvas still has it: a retry polls
    ``import_id`` again instead of uploading again."""

    def __init__(self, message: str, *, import_id: int, workflow_state: str) -> None:
        super().__init__(message)
        self.import_id = import_id
        self.workflow_state = workflow_state


class ImportPace:
    """How long to wait before reading an import's status again. Canvas runs an account's imports one
    after the other, so a wait past an import's end is time lost to every batch behind it; a read
    too many costs one cheap request. The first read comes ``shortest`` after the upload and the
    waits grow by half each time; once the import's ``progress`` has moved between two reads, the
    wait is the time its rate says is left. Never shorter than ``shortest`` nor longer than
    ``longest`` (the connection's ``poll_seconds``)."""

    GROWTH = 1.5

    def __init__(self, longest: float, shortest: float = 0.25) -> None:
        self.longest = longest
        self.shortest = min(shortest, longest)
        self._wait = 0.0
        self._first_moving: tuple[float, int] | None = None  # (when, progress) it was first read under way

    def next_wait(self, progress: int, now: float) -> float:
        """The seconds to wait after a read at ``now`` (monotonic) saw ``progress`` (0-100)."""
        if progress > 0 and self._first_moving is None:
            self._first_moving = (now, progress)
        elif self._first_moving is not None and progress > self._first_moving[1] and now > self._first_moving[0]:
            since, first = self._first_moving
            left = (100 - progress) * (now - since) / (progress - first)
            return min(self.longest, max(self.shortest, left))
        self._wait = min(self.longest, max(self.shortest, self._wait * self.GROWTH))
        return self._wait


@dataclass(frozen=True)
class CanvasSettings:
    """What the hook reads from its connection, checked."""

    api_url: str
    account_id: str
    poll_seconds: float
    import_timeout_seconds: float


class CanvasHook(ApiHook):
    """Provisions sub-accounts, terms, users, courses (IC classes), enrollments and observers through
    SIS imports to a Canvas root account, waiting for each, reads Canvas's lists and its courses'
    final grades."""

    conn_name_attr = "canvas_conn_id"
    default_conn_name = "canvas_default"
    conn_type = "canvas"  # its form: plugins/hooks/provider_info.py; any stored type works
    hook_name = "Canvas"
    OWN_EXTRAS = frozenset({"account_id", "poll_seconds", "import_timeout_seconds"})
    MESSAGE_FIELDS = ("message", "error_message", "error")

    def __init__(
        self,
        canvas_conn_id: str = default_conn_name,
        *,
        rows_per_import: int = 10_000,
        dropped_enrollments: str = "deleted",
        grade_score: str = "current",
        max_attempts: int = 6,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        max_retry_after: float = 300.0,
        timeout: tuple[float, float] = (10.0, 300.0),
    ) -> None:
        super().__init__(canvas_conn_id, unavailable=CanvasUnavailableError, requests_per_second=None,
                         max_attempts=max_attempts, backoff_base=backoff_base, backoff_max=backoff_max,
                         max_retry_after=max_retry_after, timeout=timeout, pool_size=1)
        self.canvas_conn_id = canvas_conn_id
        self.batch_size = rows_per_import
        self.dropped_enrollments = dropped_enrollments
        self.grade_score = grade_score

    # -- connection ---------------------------------------------------------------

    @cached_property
    def settings(self) -> CanvasSettings:
        """The connection's settings, checked before anything is sent."""
        extras = self.extras
        account_id = str(extras.get("account_id") or "").strip()
        if not account_id:
            raise ConnectionSettingsError(
                f"Connection '{self.canvas_conn_id}': extra account_id (the Canvas root account's id, e.g. 1; "
                "SIS imports run on the root account only) is required"
            )
        if not self.connection.password:
            raise ConnectionSettingsError(
                f"Connection '{self.canvas_conn_id}': password (the access token of a Canvas admin) is required"
            )
        return CanvasSettings(
            api_url=self.base_url.rstrip("/").removesuffix(API_PATH) + API_PATH,
            account_id=account_id,
            poll_seconds=self._positive_extra("poll_seconds", DEFAULT_POLL_SECONDS),
            import_timeout_seconds=self._positive_extra("import_timeout_seconds", DEFAULT_IMPORT_TIMEOUT_SECONDS),
        )

    def _positive_extra(self, name: str, default: float) -> float:
        value = self.extras.get(name)
        if value is None or value == "":
            return default
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            seconds = 0.0
        if not seconds > 0:
            raise ConnectionSettingsError(
                f"Connection '{self.canvas_conn_id}': extra {name} must be a number of seconds above 0"
            )
        return seconds

    @property
    def api_url(self) -> str:
        return self.settings.api_url

    @property
    def _imports_path(self) -> str:
        return f"accounts/{quote(self.settings.account_id, safe=':')}/sis_imports"

    @cached_property
    def _session(self) -> requests.Session:
        """Every call's session: the token as a bearer header (requests drops it on a redirect to
        another host), JSON asked for."""
        self.settings  # noqa: B018 -- the connection checked first
        session = self.new_session()
        session.headers.update({"Authorization": f"Bearer {self.connection.password}",
                                "Accept": "application/json"})
        return session

    def test_connection(self) -> tuple[bool, str]:
        """The connection form's Test button: one page of the root account's SIS imports
        (``GET accounts/:id/sis_imports?per_page=1``), which needs what an upload needs: the
        token, the account being a root account, and the user's permission to import SIS data.
        ``(True, what was read)`` or ``(False, why not)``; the token is not in the message."""
        try:
            self.prepare_for_test()
            newest = self._newest_import_id()
        except Exception as error:  # the Test button shows the message; a task would have failed with it
            return self.test_result(False, f"{type(error).__name__}: {error}")
        listed = f"newest SIS import {newest}" if newest else "no SIS import yet"
        return self.test_result(True, (
            f"Canvas accepted the access token: root account {self.settings.account_id} at {self.api_url} "
            f"lists its SIS imports ({listed})"
        ))

    # -- requests -----------------------------------------------------------------

    def _send(self, method: str, url: str, *, params: dict | None = None, data: bytes | None = None,
              headers: dict[str, str] | None = None) -> requests.Response:
        """One request; transient failures raise ``Transient``, a refused token fails at once."""
        what = f"{method} {urlsplit(url).path}"
        self._bucket.take()
        self.count_request()
        try:
            response = self._session.request(method, url, params=params, data=data, headers=headers,
                                             timeout=self.timeout)
        except DROPPED as error:
            raise Transient(f"{what}: no answer ({type(error).__name__})") from None
        status = response.status_code
        if status == 403 and THROTTLED in response.text.lower():
            remaining = response.headers.get("X-Rate-Limit-Remaining", "not given")
            raise Transient(f"{what} answered 403 (Rate Limit Exceeded; X-Rate-Limit-Remaining {remaining})",
                            throttled=True)
        if status in (401, 403):
            raise CanvasCredentialsError(
                f"Canvas refused the access token of connection '{self.canvas_conn_id}': {what} answered "
                f"{status} ({self.redacted_message(response)}). Check that the token is current (not expired "
                "or deleted) and that its user is an admin of root account "
                f"{self.settings.account_id} allowed to import SIS data; put a new token in the connection's "
                "password."
            )
        self.raise_for_transient(response, what)
        return response

    def message_of(self, response: requests.Response) -> str:
        """Canvas's message: those of its ``errors`` list (``[{"message": ...}]`` or ``[text]``),
        else the first of ``MESSAGE_FIELDS``, else the start of the body."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if isinstance(errors, list) and errors:
            return "; ".join(str(error.get("message", error)) if isinstance(error, dict) else str(error)
                             for error in errors)
        return super().message_of(response)

    def _expect(self, response: requests.Response, status: int) -> requests.Response:
        if response.status_code != status:
            raise CanvasRequestError(
                f"Canvas answered {response.status_code} to {response.request.method} "
                f"{urlsplit(response.url).path}: {self.redacted_message(response)}"
            )
        return response

    def _url(self, path: str) -> str:
        return f"{self.api_url}/{path.lstrip('/')}"

    def _get(self, url: str, params: dict | None = None) -> requests.Response:
        return self._retries.call(lambda: self._expect(self._send("GET", url, params=params), 200), "Canvas")

    # -- lists --------------------------------------------------------------------

    def get_all(self, path: str, params: dict | None = None, *, key: str | None = None) -> list[Any]:
        """Every record of a paged list (``path`` under /api/v1, e.g. ``accounts/1/courses``),
        ``per_page`` 100, following the ``Link`` header's next page on the connection's own
        scheme, host and port only. ``key``: the field holding the records when Canvas wraps
        the list in an object (``sis_imports``). Each page is retried on its own."""
        return list(self._records(path, params, key=key))

    def _records(self, path: str, params: dict | None = None, *, key: str | None = None,
                 per_page: int = PER_PAGE) -> Iterator[Any]:
        url: str | None = self._url(path)
        query: dict | None = {**(params or {}), "per_page": per_page}
        while url:
            response = self._get(url, query)
            payload = response.json()
            yield from (payload.get(key) if key else payload) or []
            url, query = response.links.get("next", {}).get("url"), None
            if url and not same_origin(url, self.api_url):
                raise CanvasRequestError(
                    f"Connection '{self.canvas_conn_id}': Canvas's next-page link leaves {self.api_url} "
                    f"(for {url.split('?')[0]}); the access token goes to the connection's own scheme, host "
                    "and port only"
                )

    # -- SIS imports --------------------------------------------------------------

    def start_sis_import(self, zip_bytes: bytes, *, diffing_data_set_identifier: str | None = None,
                         diffing_remaster_data_set: bool = False, diffing_drop_status: str | None = None,
                         change_threshold: int | None = None) -> int:
        """Upload a zip of SIS CSV files as a new import of the root account; its id, to wait for
        (:meth:`wait_for_sis_import`).

        With ``diffing_data_set_identifier`` Canvas applies only what changed since the last import
        of that data set (``diffing_remaster_data_set`` applies all of it once more), and a row the
        data set loses is applied as deleted (enrollments: ``diffing_drop_status``, deleted,
        completed or inactive); with ``change_threshold`` (percent) Canvas applies the whole import
        instead of a diff when the files' size changed by more than that. The identifier also tells
        this upload's import from others' when a retried POST looks for it (the module's docstring)."""
        params: dict[str, Any] = {"import_type": "instructure_csv", "extension": "zip"}
        if diffing_data_set_identifier:
            params["diffing_data_set_identifier"] = diffing_data_set_identifier
        if diffing_remaster_data_set:
            params["diffing_remaster_data_set"] = "true"
        if diffing_drop_status:
            params["diffing_drop_status"] = diffing_drop_status
        if change_threshold is not None:
            params["change_threshold"] = int(change_threshold)
        url = self._url(self._imports_path)
        newest_before = self._newest_import_id()
        attempts = count()

        def attempt() -> int:
            if next(attempts):
                taken = self._imports_newer_than(newest_before, diffing_data_set_identifier)
                if len(taken) == 1:
                    self.log.warning("Canvas lists SIS import %s, new since the upload was first sent: taken as "
                                     "the upload's, which is not sent again", taken[0])
                    return taken[0]
                if taken:
                    raise CanvasUploadUnconfirmedError(
                        f"An upload to Canvas got no clear answer, and Canvas now lists {len(taken)} SIS imports "
                        f"newer than {newest_before or 'none'} ({', '.join(map(str, taken))}) that could be it. It "
                        "is not sent again: check those imports in Canvas (Admin > SIS Import) before running "
                        "the task again."
                    )
            response = self._expect(self._send("POST", url, params=params, data=zip_bytes,
                                               headers={"Content-Type": "application/zip"}), 200)
            answer = response.json()
            self.log.info("Canvas took SIS import %s (%d bytes), %s", answer["id"], len(zip_bytes),
                          answer.get("workflow_state"))
            return int(answer["id"])

        try:
            return self._retries.call(attempt, "Canvas")
        except CanvasUnavailableError as error:
            raise CanvasUnavailableError(
                f"{error}. The last upload may still have reached Canvas: look for a SIS import newer than "
                f"{newest_before or 'none'} (Admin > SIS Import) before uploading again."
            ) from None

    def _newest_import_id(self) -> int:
        """The id of the root account's newest SIS import; 0 when it has none."""
        newest = next(self._records(self._imports_path, key="sis_imports", per_page=1), None)
        return int(newest["id"]) if newest else 0

    def _imports_newer_than(self, import_id: int, identifier: str | None) -> list[int]:
        """The ids of the imports newer than ``import_id`` (of data set ``identifier``, if given);
        the list is read newest first, only as far as ``import_id``."""
        newer = takewhile(lambda record: int(record["id"]) > import_id,
                          self._records(self._imports_path, key="sis_imports"))
        return [int(record["id"]) for record in newer
                if identifier is None or record.get("diffing_data_set_identifier") == identifier]

    def sis_import(self, import_id: int) -> wire.SisImportResult:
        """The import as Canvas reports it now."""
        response = self._get(self._url(f"{self._imports_path}/{int(import_id)}"))
        return wire.SisImportResult.from_answer(response.json())

    def wait_for_sis_import(self, import_id: int, timeout: float | None = None) -> wire.SisImportResult:
        """The import once it is in a final state (succeeded or not: the caller reads the result),
        its status read as :class:`ImportPace` says. After ``timeout`` seconds (default: the
        connection's ``import_timeout_seconds``) :class:`CanvasImportPendingError` says what state
        the import is still in, and carries its id for a retry to poll again."""
        timeout = self.settings.import_timeout_seconds if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pace = ImportPace(self.settings.poll_seconds)
        while True:
            status = self.sis_import(import_id)
            if status.finished:
                self.log.info("Canvas SIS import %s ended %s: %d warning(s), %d error(s)", status.id,
                              status.workflow_state, len(status.processing_warnings), len(status.processing_errors))
                return status
            left = deadline - time.monotonic()
            if left <= 0:
                raise CanvasImportPendingError(
                    f"Canvas SIS import {status.id} is still {status.workflow_state} ({status.progress}%) after "
                    f"{timeout:g} s. Clear the task once it has ended (Admin > SIS Import): a retry of the same "
                    "batch waits for it rather than upload another (Canvas runs one import at a time per account; "
                    "one queued behind a long or stuck import stays created).",
                    import_id=status.id, workflow_state=status.workflow_state,
                )
            self.log.info("Canvas SIS import %s is %s (%d%%)", status.id, status.workflow_state, status.progress)
            time.sleep(min(pace.next_wait(status.progress, time.monotonic()), left))

    # -- provisioning (include.lms.target.LmsTarget) --------------------------------

    def catalog(self, kind: CatalogKind) -> dict[str, str]:
        """What a district file may point at, by the SIS id an import names it with: the root
        account's sub-accounts (buildings), its terms (grading periods), Canvas's base roles."""
        account = quote(self.settings.account_id, safe=":")
        if kind == "building":
            return wire.sub_accounts(self._records(f"accounts/{account}/sub_accounts", {"recursive": "true"}))
        if kind == "grading_period":
            return wire.terms(self._records(f"accounts/{account}/terms", key="enrollment_terms"))
        if kind == "role":
            return dict(wire.BASE_ROLES)
        raise ValueError(f"no Canvas catalog of {kind}")

    # -- final grades (include.lms.target.LmsGradeSource) ---------------------------

    def final_grades(self, sections: Iterable[str], *, assignments: bool = False) -> Iterator[SectionGrades]:
        """Each section's (IC class's) final grades, read from its Canvas course
        (:func:`include.lms.canvas_grades.course_rows`, the hook's ``grade_score``), sections in the
        order given; with ``assignments``, its students' assignment scores too (its assignment groups
        with their assignments, and every student's submissions: two more paged lists per course).

        Reads the root account's courses (each course's Canvas id and term) and terms once, the
        grading periods once per term (a term's grading period set is its courses'), then per course
        its active student enrollments with their grades for the whole course and for each grading
        period: one paged list per course and period, a hundred students a page."""
        account = quote(self.settings.account_id, safe=":")
        courses = {str(course["sis_course_id"]): course for course in self._records(f"accounts/{account}/courses")
                   if course.get("sis_course_id")}
        sis_terms = {int(term["id"]): term.get("sis_term_id") or None
                     for term in self._records(f"accounts/{account}/terms", {"workflow_state[]": "all"},
                                               key="enrollment_terms")}
        periods_of_term: dict[int | None, list[dict]] = {}
        students = {"type[]": "StudentEnrollment", "state[]": "active"}
        for section in sections:
            course = courses.get(section)
            if course is None:
                yield grades.missing_course(section)
                continue
            term = course.get("enrollment_term_id")
            path = f"courses/{int(course['id'])}"
            if term not in periods_of_term:
                periods_of_term[term] = list(self._records(f"{path}/grading_periods", key="grading_periods"))
            periods = periods_of_term[term]
            yield grades.course_rows(grades.CourseGrades(
                course=section, term=sis_terms.get(term) if term is not None else None, grading_periods=periods,
                whole=list(self._records(f"{path}/enrollments", students)),
                by_period={int(period["id"]): list(self._records(
                    f"{path}/enrollments", {**students, "grading_period_id": int(period["id"])}))
                    for period in periods},
                assignment_groups=list(self._records(f"{path}/assignment_groups", {"include[]": "assignments"}))
                if assignments else None,
                submissions=list(self._records(f"{path}/students/submissions",
                                               {"student_ids[]": "all", "include[]": "user"})) if assignments else (),
            ), self.grade_score)

    def apply(self, action: Action, items: Sequence[LmsItem]) -> list[ItemResult]:
        """One SIS import of the items (one kind), waited for; one result per item, in order."""
        return self._import(action, list(items), None)

    def apply_batches(self, action: Action, batches: Iterable[Sequence[LmsItem]],
                      receipts: Receipts | None = None) -> Iterator[list[ItemResult]]:
        """One import per batch, one after the other (Canvas runs an account's imports one at a time).
        Each import's id goes into ``receipts`` before it is waited for, under a name made of the
        batch's zip (the same rows make the same bytes): a retried task whose batch is the same
        waits for that import again instead of uploading it once more behind it."""
        for batch in batches:
            yield self._import(action, list(batch), receipts)

    def _import(self, action: Action, items: list[LmsItem], receipts: Receipts | None) -> list[ItemResult]:
        refused = wire.unsendable(items)
        sendable = [item for item in items if item.key not in refused]
        if not sendable:
            return wire.item_results(items, None, refused)
        archive = wire.zipped(wire.import_files(action, sendable, dropped_enrollments=self.dropped_enrollments))
        receipt = f"sis-import-{hashlib.sha256(archive).hexdigest()[:32]}"
        noted = receipts.get(receipt) if receipts is not None else None
        if noted:
            import_id = int(noted)
            self.log.info("Waiting for Canvas SIS import %s, uploaded with this batch by an earlier try", import_id)
        else:
            import_id = self.start_sis_import(archive)
            if receipts is not None:
                receipts.put(receipt, str(import_id))
        return wire.item_results(items, self.wait_for_sis_import(import_id), refused)
