"""Canvas SIS import files: what each LmsItem becomes in a SIS CSV, and what Canvas's answer makes of it.

Pure functions, one job: the CSV files (Canvas's "SIS CSV Format") a batch of one kind of
:mod:`include.lms.target` items is imported as, zipped, and the import's final state and messages
read back as one :class:`~include.lms.target.ItemResult` per item. No HTTP, no Airflow: the protocol
(upload, polling, throttling, paging) is :class:`plugins.hooks.canvas.CanvasHook`, which calls these.

How IC's roster lands in Canvas (every id is a SIS id, so an item's LMS id is its key):

- building -> a sub-account of the root account (``accounts.csv``); deactivated: ``deleted``.
- grading period -> a term (``terms.csv``, with its days); deactivated: ``deleted``.
- user -> a user (``users.csv``) whose login is IC's username; a user with none is refused here
  (Canvas needs a ``login_id``). Deactivated: ``suspended``, never deleted (a deleted Canvas user
  loses every enrollment and their submissions' owner). Canvas users belong to the root account:
  the user's building and role are not sent (Canvas gives roles per enrollment).
- course (IC's course per school): no Canvas object (:data:`~include.lms.target.KINDS_HELD_BY`).
- section (an IC class) -> a Canvas course in the sub-account of its school (``courses.csv``: short
  name the class code, long name its title) with one section (``sections.csv``) of the same SIS id.
  Its term: the class's grading period when it has one; a class in several (terms kept as they come,
  a year-long class over two semesters) goes in no term (Canvas's default term, which never ends a
  course), not in the first, which would close it half-way. Deactivated: the course ``completed``
  (read-only, grades kept), the section left.
- enrollment -> ``enrollments.csv``: section admins are ``teacher``, members ``student``;
  deactivated (IC dropped it): ``deleted`` or ``completed``, as the district file says.
- guardian link -> ``user_observers.csv``: the guardian observes the student, and Canvas enrols them
  as an observer in each of the student's courses; deactivated: ``deleted``.

Canvas reports problems per import, not per row: ``processing_warnings`` and ``processing_errors``,
each ``[file, message]``, at most 24 listed and then ``and N more ...``. A message is the refusal of
the rows of the batch it names by id (an enrollment: its user and its course). What cannot be
placed that way (a message naming no row, the list cut short, an import that failed or was aborted)
leaves every row no message names unconfirmed: a refusal saying so, so the row is not recorded as
provisioned and is sent again next run (a SIS import upserts by SIS id, so a row applied twice
changes nothing). Messages keep Canvas's words, the ids in them masked: they may name other people.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from include.lms.target import (
    Action,
    Building,
    Enrollment,
    GradingPeriod,
    GuardianLink,
    ItemResult,
    LmsItem,
    Section,
    User,
)

FINAL_STATES = frozenset({"imported", "imported_with_messages", "aborted", "failed", "failed_with_messages",
                          "partially_restored", "restored"})
SUCCEEDED_STATES = frozenset({"imported", "imported_with_messages"})
TRUNCATED = re.compile(r"^and \d+ more", re.IGNORECASE)
ID_TOKEN = re.compile(r"[^\s,()\"'`\[\]]*[\d@][^\s,()\"'`\[\]]*")  # a word with a digit or an @: an id
NO_LOGIN = "no username in IC: Canvas needs one as the user's login_id"
# the base roles Canvas enrols people as (its Roles API's base_role_type, lower-cased)
BASE_ROLES = {"student": "Student", "teacher": "Teacher", "ta": "TA", "designer": "Designer", "observer": "Observer"}

HEADERS = {
    "accounts.csv": ("account_id", "parent_account_id", "name", "status"),
    "terms.csv": ("term_id", "name", "status", "start_date", "end_date"),
    "users.csv": ("user_id", "login_id", "first_name", "last_name", "short_name", "email", "status"),
    "courses.csv": ("course_id", "short_name", "long_name", "account_id", "term_id", "status"),
    "sections.csv": ("section_id", "course_id", "name", "status"),
    "enrollments.csv": ("course_id", "section_id", "user_id", "role", "status"),
    "user_observers.csv": ("observer_id", "student_id", "status"),
}


FileMessage = tuple[str | None, str]  # (the file of the import, Canvas's message)


@dataclass(frozen=True)
class SisImportResult:
    """A SIS import as Canvas reports it (``GET sis_imports/:id``): its final state and messages are
    what :func:`item_results` reads."""

    id: int
    workflow_state: str
    progress: int
    processing_warnings: list[FileMessage]
    processing_errors: list[FileMessage]
    counts: dict[str, int]  # rows processed per kind (users, courses, ...), error_count, warning_count

    @classmethod
    def from_answer(cls, answer: dict[str, Any]) -> SisImportResult:
        def messages(name: str) -> list[FileMessage]:
            return [(entry[0], str(entry[1])) for entry in answer.get(name) or []]

        return cls(id=int(answer["id"]), workflow_state=str(answer["workflow_state"]),
                   progress=int(answer.get("progress") or 0),
                   processing_warnings=messages("processing_warnings"),
                   processing_errors=messages("processing_errors"),
                   counts=dict((answer.get("data") or {}).get("counts") or {}))

    @property
    def finished(self) -> bool:
        return self.workflow_state in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        """Imported, with or without messages (rows Canvas skipped are in the warnings)."""
        return self.workflow_state in SUCCEEDED_STATES


def unsendable(items: Sequence[LmsItem]) -> dict[str, str]:
    """Items Canvas would refuse whatever the import: key -> why (a user with no username)."""
    return {item.key: NO_LOGIN for item in items if isinstance(item, User) and not item.username}


def import_files(action: Action, items: Sequence[LmsItem], *,
                 dropped_enrollments: str = "deleted") -> dict[str, list[tuple[str, ...]]]:
    """The SIS CSV files (name -> rows, header first) one batch of one kind is imported as."""
    rows: dict[str, list[tuple[str, ...]]] = {}

    def add(name: str, row: Iterable[str]) -> None:
        rows.setdefault(name, [HEADERS[name]]).append(tuple(row))

    active = action != "deactivate"
    for item in items:
        if isinstance(item, Building):
            add("accounts.csv", (item.key, "", item.title, "active" if active else "deleted"))
        elif isinstance(item, GradingPeriod):
            add("terms.csv", (item.key, item.title, "active" if active else "deleted",
                              item.start.isoformat(), item.end.isoformat()))
        elif isinstance(item, User):
            shown = " ".join(filter(None, (item.preferred_first_name or item.given_name, item.family_name)))
            add("users.csv", (item.key, item.username or "", item.given_name, item.family_name, shown,
                              item.email or "", "active" if active else "suspended"))
        elif isinstance(item, Section):
            term = item.grading_period_ids[0] if len(item.grading_period_ids) == 1 else ""
            add("courses.csv", (item.key, item.section_code, item.title, item.building_id, term,
                                "active" if active else "completed"))
            if active:
                add("sections.csv", (item.key, item.key, item.title, "active"))
        elif isinstance(item, Enrollment):
            add("enrollments.csv", (item.section_key, item.section_key, item.user_key,
                                    "teacher" if item.admin else "student",
                                    "active" if active else dropped_enrollments))
        elif isinstance(item, GuardianLink):
            add("user_observers.csv", (item.guardian_key, item.student_key, "active" if active else "deleted"))
        else:
            raise ValueError(f"Canvas holds no {item.kind}: it is not a kind a Canvas import carries")
    return rows


def zipped(files: dict[str, list[tuple[str, ...]]]) -> bytes:
    """The files as one zip, UTF-8 CSV (Canvas recognises each file by its header row); the same
    files make the same bytes (no clock in the zip), so a batch sent again is known by them."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, rows in files.items():
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows(rows)
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, text.getvalue().encode("utf-8"))
    return buffer.getvalue()


def _named_ids(item: LmsItem) -> tuple[str, ...]:
    """The SIS ids a Canvas message about this item's row names, all of them."""
    if isinstance(item, Enrollment):
        return item.user_key, item.section_key
    if isinstance(item, GuardianLink):
        return item.guardian_key, item.student_key
    return (item.key,)


def _tokens(message: str) -> set[str]:
    return {token.rstrip(".;:") for token in re.split(r"[\s,()\"'`\[\]]+", message) if token}


def masked(message: str) -> str:
    """Canvas's message with the ids in it replaced: it may name people other than the row's."""
    return ID_TOKEN.sub("<id>", message)


def item_results(items: Sequence[LmsItem], outcome: SisImportResult | None,
                 refused: dict[str, str] | None = None) -> list[ItemResult]:
    """One result per item, in order, from the import's outcome (None: nothing was imported) and the
    refusals made before it (:func:`unsendable`)."""
    refused = dict(refused or {})
    named: dict[str, str] = {}
    placed_all = True
    if outcome is not None:
        by_id: dict[str, list[LmsItem]] = {}
        for item in items:
            if item.key not in refused:
                for value in _named_ids(item):
                    by_id.setdefault(value, []).append(item)
        for _, message in [*outcome.processing_errors, *outcome.processing_warnings]:
            if TRUNCATED.match(message):
                placed_all = False
                continue
            tokens = _tokens(message)
            rows = {item.key for value in tokens for item in by_id.get(value, ())
                    if all(named_id in tokens for named_id in _named_ids(item))}
            if not rows:
                placed_all = False
            for key in rows:
                named.setdefault(key, f"Canvas SIS import {outcome.id}: {masked(message)}")
    confirmed = outcome is not None and outcome.succeeded and placed_all
    unconfirmed = (None if outcome is None or confirmed else
                   f"Canvas SIS import {outcome.id} ended {outcome.workflow_state}"
                   + ("" if not outcome.succeeded else
                      " with messages it could not all list or that name no row")
                   + ": not confirmed for this row, sent again next run (the import's messages: Admin > "
                     "SIS Import)")
    results = []
    for item in items:
        error = refused.get(item.key) or named.get(item.key) or unconfirmed
        results.append(ItemResult(key=item.key, ok=False, error=error) if error else
                       ItemResult(key=item.key, ok=True, lms_id=item.key))
    return results


def sub_accounts(records: Iterable[dict]) -> dict[str, str]:
    """The root account's sub-accounts as a catalog: SIS id -> name (those with no SIS id cannot be
    named in an import, so a district file cannot point at them)."""
    return {str(record["sis_account_id"]): str(record.get("name") or "") for record in records
            if record.get("sis_account_id") and record.get("workflow_state", "active") != "deleted"}


def terms(records: Iterable[dict]) -> dict[str, str]:
    """The root account's terms as a catalog: SIS id -> name."""
    return {str(record["sis_term_id"]): str(record.get("name") or "") for record in records
            if record.get("sis_term_id") and record.get("workflow_state", "active") != "deleted"}
