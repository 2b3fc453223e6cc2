"""A Canvas LMS server on 127.0.0.1 that takes SIS imports, for the tests of a future Canvas adapter.

It speaks the part of Canvas's REST API a roster sync through SIS imports needs, under
``/api/v1`` (a ``.json`` suffix on a path is accepted, as Canvas accepts it), and follows what
Canvas documents (the SIS Imports API and SIS CSV Format pages, and the Canvas source behind them:
``sis_imports_api_controller.rb``, ``sis_batch.rb``, ``lib/sis/csv/*``, ``lib/sis/*_importer.rb``):

- ``POST accounts/:id/sis_imports`` on the root account only (a sub-account answers 400
  ``{"errors": ["SIS imports can only be executed on root accounts"]}``). The data comes either as a
  multipart form whose ``attachment`` field is the file (its name's extension says zip or csv; a
  multipart form without one answers 400 ``Missing attachment``), or as the raw body, whose kind is
  the ``extension`` parameter, else the Content-Type (``application/zip`` zip, ``text/csv`` and
  ``text/plain`` csv), else zip; a charset other than UTF-8 answers 400. ``import_type`` defaults to
  ``instructure_csv``; ``batch_mode`` needs ``batch_mode_term_id`` (a Canvas id or
  ``sis_term_id:X``) of an active term, else 400; batch mode and diffing exclude each other (batch
  mode wins); ``diffing_drop_status`` is deleted|completed|inactive and
  ``diffing_user_remove_status`` deleted|suspended, else 400; ``override_sis_stickiness``,
  ``add_sis_stickiness``, ``clear_sis_stickiness`` and ``skip_deletes`` are accepted and echoed
  (``skip_deletes`` acts on user_observers.csv only, whose importer checks it: a ``deleted`` row is
  skipped, neither counted nor warned of).
  The answer is the SisImport object, ``workflow_state`` ``created``.
- The import runs later, one at a time per account, as Canvas's job does: ``created``, then
  ``importing`` with ``progress`` 0-100, then ``imported`` (clean), ``imported_with_messages``
  (rows skipped, messages) or ``failed_with_messages`` (an error that fails the import), or
  ``aborted`` (the batch-mode change threshold). ``processing_warnings`` and
  ``processing_errors`` are lists of ``[file, message]``, present once the import is complete and
  non-empty, at most 24 of each plus an ``and N more ...`` entry; ``data`` carries
  ``import_type``, ``supplied_batches`` and ``counts`` (rows processed per file kind,
  ``error_count``, ``warning_count``, and ``batch_*_deleted`` in batch mode).
- Files are recognised by their header row (case-insensitive), in Canvas's import order:
  accounts.csv (account_id + parent_account_id), terms.csv (term_id + name), courses.csv
  (course_id + short_name), sections.csv (section_id + name), users.csv (user_id + login_id),
  enrollments.csv (course_id or section_id, + user_id), then, last of all as in Canvas's
  ``IMPORTERS`` list, user_observers.csv (observer_id + student_id; counted as
  ``user_observers``, supplied as ``user_observer``). A file with another header row is skipped
  with the error ``Couldn't find Canvas CSV import headers``, which fails the import (the other
  files are still applied); bytes that are not UTF-8: ``Invalid UTF-8``; a file in the zip that is
  not .csv: the warning ``Skipping unknown file type``; an upload that is not a zip: ``Error while
  importing CSV. Please contact support. (Error report N)``, failed.
- Each row is checked as Canvas's importers check it and, when wrong, skipped with Canvas's
  warning: ``No login_id given for user U``, ``Improper status for user U`` (active|suspended|
  deleted), ``No short_name given for course C``, ``Improper status "x" for course C``
  (active|deleted|completed|unpublished|published), ``Section S references course C which
  doesn't exist``, ``User not found for enrollment (User ID: ..., Course ID: ..., Section ID:
  ...)``, ``Neither course nor section existed for user enrollment (...)``, ``An enrollment
  referenced a non-existent section S`` / ``course C``, ``Improper role "r" for an enrollment``
  (student|teacher|ta|observer|designer), ``Improper status "x" for an enrollment``
  (active|deleted|completed|inactive), ``An enrollment referenced a non-existent associated user
  U`` (observers), ``user U has already claimed V's requested login information, skipping``;
  user_observers.csv (``SIS::UserObserverImporter``, in its order): ``No observer_id given for a
  user observer``, ``No user_id given for a user observer`` (no student_id), ``Can't observe
  yourself user S``, ``Improper status "x" for a user_observer`` (exactly active|deleted, any
  case), ``An observer referenced a non-existent user O`` / ``A student referenced a non-existent
  user S`` (unknown or deleted user; a suspended one is found), ``Can't delete a non-existent
  observer for observer: O, student: S`` (a deleted row for a pair never linked).
  A row applies as Canvas applies it: ``active`` creates or updates, ``deleted`` marks the object
  deleted (nothing is ever removed), a deleted user's enrollments are deleted too.
- Observers (``UserObservationLink`` and ``Enrollment``'s linked-enrollment callbacks): an active
  user_observers row links (or relinks) the observer to the student and gives the observer, in each
  of the student's ``active`` student enrollments, an observer enrollment keyed
  ``course_id:section_id:observer_id:observer:student_id`` (as an enrollments.csv observer row of
  that student is keyed: the same record), its status copied from the student's, unless one that
  is neither deleted nor inactive is there already; ``sis_import_id`` None (Canvas made it, not
  SIS). A deleted row deletes the link and every observer enrollment of the observer whose
  associated user is the student (those of enrollments.csv too). Later, a student enrollment of a
  linked student that is created gets its observer enrollment (copying its status, whatever it
  is); one that is updated carries its status to its observer enrollment, except that a deleted
  observer enrollment stays deleted unless the student's was deleted too, and a student
  enrollment coming back from inactive, deleted or completed makes the observer enrollment again.
- Diffing (``diffing_data_set_identifier``): the import is compared, file kind by file kind, with
  the data set of the previous successful import of the same identifier (the latest one that was
  diffed or remastered, else the first), and only new and changed rows are applied; a row of the
  previous data set missing now is applied with status ``deleted`` (enrollments:
  ``diffing_drop_status``; users: ``diffing_user_remove_status``). ``diffing_remaster_data_set``
  applies the whole import and still joins the data set. A user_observers row is identified by
  observer_id and student_id together (a lost pair is applied ``deleted``). With
  ``change_threshold``, diffing is not performed when the files' size differs from the previous
  data set's by more than that percentage (``|1 - size / previous size| * 100``): the whole import
  is applied with the warning
  ``Diffing not performed because file size difference exceeded threshold`` and
  ``diffing_threshold_exceeded`` true. An import whose diff is empty ends ``imported``.
- Batch mode: after the rows, courses, sections and enrollments of the batch term that this import
  did not name are deleted, each kind only when its file was supplied (state ``cleanup_batch``);
  enrollments without an SIS import (the observer enrollments a link made) are not counted or
  deleted.
  With ``change_threshold``, when the deletions of any kind would exceed that percentage of the
  kind's objects in the term, nothing is deleted and the import ends ``aborted`` with ``N courses
  would be deleted and exceeds the set threshold of T%``.
- ``GET accounts/:id/sis_imports/:id`` and ``GET accounts/:id/sis_imports`` (newest first,
  ``{"sis_imports": [...]}``, ``workflow_state``), ``GET accounts/:id/courses`` (the account's
  and its sub-accounts' courses that are not deleted), ``GET courses/:id`` and
  ``GET courses/:id/sections``.
- ``GET accounts/:id/sub_accounts`` (AccountsController#sub_accounts): the account's direct
  sub-accounts by id, or with ``recursive`` true every account below it (a list Canvas does not
  count: no ``last`` link); deleted accounts left out; each ``{"id", "name", "parent_account_id",
  "root_account_id", "sis_account_id", "workflow_state", "sis_import_id"}`` (a child of the root
  account has the root's id as ``parent_account_id``).
- ``GET accounts/:id/terms`` (TermsApiController#index), root account only (a sub-account answers
  400 ``{"message": "Terms only belong to root_accounts."}``): ``{"enrollment_terms": [...]}``,
  each ``{"id", "name", "start_at", "end_at", "workflow_state", "sis_term_id", "sis_import_id"}``,
  the default term (``sis_term_id`` null) included; ``workflow_state[]`` active (the default),
  deleted or all; ordered ``start_at DESC, end_at DESC, id ASC`` with PostgreSQL's NULLs first.
- ``GET accounts/:id/roles`` (RoleOverridesController#api_index): the visible built-in roles
  (``AccountAdmin``, ``StudentEnrollment``, ``TeacherEnrollment``, ``TaEnrollment``,
  ``DesignerEnrollment``, ``ObserverEnrollment``: labels Account Admin, Student, Teacher, TA,
  Designer, Observer; ``workflow_state`` ``built_in``; the built-in account role's
  ``base_role_type`` shows ``AccountMembership``, as Canvas's role_json has it) when ``state[]``
  asks for active (the default; ``inactive`` alone lists none), then the account's custom roles by
  id; each ``{"id", "role", "label", "base_role_type", "workflow_state", "is_account_role",
  "permissions"}`` (``permissions`` left empty).
- The gradebook's read side, what a grade passback reads (the Enrollments, Grading Periods,
  Assignment Groups, Assignments and Submissions APIs). No SIS import carries grades: tests set them
  as admins and teachers do in Canvas's UI (:meth:`CanvasEmulator.add_grading_period`,
  :meth:`~CanvasEmulator.set_grades`, :meth:`~CanvasEmulator.add_enrollment_made_in_canvas`,
  :meth:`~CanvasEmulator.end_enrollment`, :meth:`~CanvasEmulator.add_assignment_group`,
  :meth:`~CanvasEmulator.add_assignment`, :meth:`~CanvasEmulator.update_assignment`,
  :meth:`~CanvasEmulator.delete_assignment`, :meth:`~CanvasEmulator.grade`).
- ``GET courses/:id/grading_periods`` (GradingPeriodsController#index): the grading periods of the
  set the course's term has (the default term for a course naming none), by start date, as
  ``{"grading_periods": [...], "meta": {"primaryCollection": "grading_periods"}}``, each ``{"id",
  "title", "start_date", "end_date", "close_date", "weight", "is_closed", "is_last"}`` (closed once the
  close date has passed; last: the period of the set ending last); none when the term has no set.
- ``GET courses/:id/enrollments`` (EnrollmentsApiController#index): ``type[]`` (or ``role[]``),
  ``state[]`` (one workflow_state: active, inactive, completed, deleted; without it all but completed
  and deleted ones, inactive included, as Canvas's code gives an admin, though its docs say active and
  invited; with ``user_id`` active ones), ``user_id`` (a Canvas id or ``sis_user_id:X``, 404 when
  nobody has it), ``grading_period_id`` (one of the course's periods, else 400 ``{"error": "invalid
  grading_period_id"}``); ordered by type, the user's sortable name and id, and paged by bookmark in
  Canvas (no ``last`` link). Each is Canvas's Enrollment: ``id``, ``course_id``, ``sis_course_id``,
  ``course_section_id``, ``sis_section_id``, ``user_id``, ``sis_user_id``, ``type``, ``role``,
  ``enrollment_state``, ``root_account_id``, ``associated_user_id``, ``created_for_sis_id`` (made by an
  import), ``sis_import_id``, ``html_url``, ``user`` (``id``, ``name``, ``sortable_name``,
  ``short_name``, ``sis_user_id``, ``login_id``) and, for a student, ``grades`` (``html_url``, the
  current, final, unposted and override scores and grades) of the whole course, or of the grading
  period asked for.
- ``GET courses/:id/assignment_groups`` (by position; with ``include[]=assignments`` their
  assignments), ``GET courses/:id/assignments`` (ordered by the group's position, the assignment's
  position and id; unpublished ones too, the token being an admin's) and ``GET
  courses/:id/assignments/:id``; a deleted assignment is neither listed nor found (404).
- ``GET courses/:id/students/submissions`` (SubmissionsApiController#for_students, not grouped):
  ``student_ids[]`` ``all`` (the course's students: a student enrollment that is not deleted,
  ``enrollment_state`` active or concluded narrowing them) or one id (401 when not the course's
  student), without it none (the caller's own, an admin's); submissions of published assignments
  only, one per student and assignment (``unsubmitted`` until graded), filtered by
  ``assignment_ids[]``, ``grading_period_id`` (404 for an unknown period), ``workflow_state`` and
  ``graded_since`` (graded at or after it); ordered by id; with ``include[]=user`` each has its
  ``user``. ``posted_at`` is null for a grade not posted (hidden from the student).
- Ids may be SIS ids: ``sis_account_id:X``, ``sis_course_id:X``. Lists are paged by ``page`` and
  ``per_page`` (10 by default) with a ``Link`` header naming the ``current``, ``next``, ``prev``,
  ``first`` and ``last`` pages when relevant; the SIS import list and the recursive sub-account
  list leave ``last`` out, as Canvas does for lists it does not count (``total_entries: nil``).
- ``Authorization: Bearer <token>`` (or ``access_token`` in the query, which the links leave out):
  none answers 401 ``{"status": "unauthenticated", "errors": [{"message": "user authorization
  required"}]}``. Every authenticated answer carries ``X-Request-Cost``; with a rate limit, also
  ``X-Rate-Limit-Remaining``, and a token whose quota is spent gets ``403 Forbidden (Rate Limit
  Exceeded)`` (a leaky bucket per token: each request adds its cost, the bucket drains at a steady
  rate).

Where Canvas's documentation is silent, or its pages disagree, the emulator chooses: a wrong token
answers 401 ``{"errors": [{"message": "Invalid access token."}]}``; a missing object 404
``{"errors": [{"message": "The specified resource does not exist."}]}``; another ``import_type`` 400;
the throttle status is 403 (one docs page says 429: ``throttle_status`` switches); ``per_page`` is
capped at 100 (the docs say "an unspecified limit"); a duplicate id within one import skips the later
row with ``Duplicate <kind> id X``; a course naming an unknown account or term goes to the root
account or the default term; a sub-account whose parent is unknown is skipped with ``Parent account
didn't exist for A``; an ``active`` course keeps ``available`` if it was published, else shows
``unpublished`` (``published``: ``available``); enrollments are keyed
``course_id:section_id:user_id:role`` (``:associated_user_id`` added for an observer of a student),
section_id empty for the course's default section, which the emulator does not list; an upload
with no CSV file at all fails with ``No CSV files were found in the import``; a file kind present in
the previous data set but absent now is left as it is by diffing. Canvas's user_observers importer
declares only ``observer_id`` as its identifying field; the emulator identifies a row by the pair,
so that a parent of two students keeps both rows in a diff. The default term is id 1, named
``Default Term`` (Canvas's EnrollmentTerm default name); built-in roles have the ids a fresh Canvas
gives them (Role::BASE_TYPES created in order: AccountAdmin 1, StudentEnrollment 3 ... ObserverEnrollment
7) and custom roles 9 on; custom roles belong to the root account, so a sub-account lists them only
with ``show_inherited``; a recursive sub-account list is ordered by id (Canvas's recursive query
names no order); the other Account, EnrollmentTerm and Role fields Canvas serialises are left out.
A user deleted by users.csv loses its enrollments as before, and its links are left as they are
(the emulator does not follow Canvas's user deletion into observer links); batch mode's deletions
are not carried to linked observer enrollments.
The gradebook's choices: an enrollment made in Canvas's UI is kept apart from SIS's keys (keyed
``canvas:<id>``) and is enrolled in the course's default section, which has no id here
(``course_section_id`` null); SIS imports never update it, diffing and batch mode never drop it, but a
user deleted by users.csv loses it, as Canvas deletes all of the user's enrollments. Grades are the
scores the test sets, not computed from submissions; a grading period's ``close_date`` defaults to its
``end_date``; a submission exists once graded or listed (Canvas makes one per student and
assignment up front; its id is given when the emulator first needs it); a score given without a
grade is written as Canvas writes a points or percent grade (``"8.5"``, ``"85%"``); a posted grade is
posted when graded; an assignment's grading period is the one it is given, else the one its due
date falls in, else (no due date) the last; an unparseable ``graded_since`` is ignored; the other
Enrollment, Assignment and Submission fields Canvas serialises are left out.

Knobs: ``upload_seconds`` (an import stays ``created`` that long) and ``seconds_per_row`` (an import's
rows take that long each, the emulator's own work included: it waits only for what its work has
not used), Canvas's modelled time for the imports it ran adding up in :attr:`modelled_seconds`; the rate
limit (``rate_limit_quota``, ``rate_limit_drain``, ``request_cost``, off by default);
``custom_roles`` (label -> base_role_type, a course enrollment type; a reserved or built-in name or
another base type raises ValueError, as Canvas's Role validations refuse them). Faults are
switched on with :meth:`CanvasEmulator.inject`: ``throttle``, ``500``, ``refuse_zip`` (the upload
answers 400), ``taken_then_500`` (the upload is taken as an import, then answered 500: the answer
lost, the import Canvas's), ``import_fails`` (the next import ends ``failed_with_messages`` having
applied nothing), ``stuck`` (the next import stays ``importing`` and, as in Canvas, holds the imports
queued after it in ``created``, until :meth:`CanvasEmulator.release_stuck`). Each import's upload is
kept (:attr:`uploads`). What was imported stays inspectable as copies keyed by SIS id (:attr:`accounts`,
:attr:`terms`, :attr:`users`, :attr:`courses`, :attr:`sections`, :attr:`enrollments`, and the
observer links as :attr:`user_observers`, keyed ``observer_id:student_id``), the imports by id
(:attr:`imports`), the gradebook by Canvas id (:attr:`canvas_users`, :attr:`grading_periods`,
:attr:`assignment_groups`, :attr:`assignments`; :attr:`grades` and :attr:`submissions` by tuple), and
every request, its body included, in :attr:`requests`.
"""

from __future__ import annotations

import csv
import hmac
import io
import json
import math
import queue
import re
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import Message
from email.parser import BytesHeaderParser
from functools import cached_property
from itertools import count
from typing import Any, Self
from urllib.parse import unquote, urlencode

from include.sandbox.loopback import Fault, FaultQueue, LoopbackHandler, LoopbackService, Reply

FAULTS = ("throttle", "500", "refuse_zip", "taken_then_500", "import_fails", "stuck")
IMPORT_FAULTS = ("import_fails", "stuck")  # met by the next import, not by a request
UPLOAD_FAULTS = ("refuse_zip", "taken_then_500")  # met by uploads only
DEFAULT_PER_PAGE, MAX_PER_PAGE = 10, 100
DEFAULT_TERM_ID = 1  # the root account's default term, for courses that name none
PACE_GRANULARITY = 0.002  # seconds_per_row: the emulator waits once it is this far ahead of the model
MESSAGES_SHOWN = 24  # processing_warnings / processing_errors entries before "and N more"
# Canvas's import order (lib/sis/csv/import_refactored.rb IMPORTERS: user_observer comes last)
KINDS = ("account", "term", "course", "section", "user", "enrollment", "user_observer")
IDENTIFYING_FIELDS = {
    "account": ("account_id",), "term": ("term_id",), "course": ("course_id",), "section": ("section_id",),
    "user": ("user_id",),
    "enrollment": ("course_id", "section_id", "user_id", "role", "role_id", "associated_user_id"),
    "user_observer": ("observer_id", "student_id"),
}
UNCHECKED_DUPLICATES = ("enrollment", "user_observer")  # kinds whose repeated rows simply apply again
BATCH_KINDS = ("course", "section", "enrollment")
DEFAULT_TERM_NAME = "Default Term"
# Canvas's built-in roles (Role::BASE_TYPES, created in that order, so listed by id in it) that the
# Roles API shows: AccountMembership and NoPermissions are not visible. (id, name, label, base_role_type)
BUILT_IN_ROLES = (
    (1, "AccountAdmin", "Account Admin", "AccountMembership"),
    (3, "StudentEnrollment", "Student", "StudentEnrollment"),
    (4, "TeacherEnrollment", "Teacher", "TeacherEnrollment"),
    (5, "TaEnrollment", "TA", "TaEnrollment"),
    (6, "DesignerEnrollment", "Designer", "DesignerEnrollment"),
    (7, "ObserverEnrollment", "Observer", "ObserverEnrollment"),
)
FIRST_CUSTOM_ROLE_ID = 9  # after the eight built-in roles
COURSE_ROLE_TYPES = ("StudentEnrollment", "TeacherEnrollment", "TaEnrollment", "DesignerEnrollment",
                     "ObserverEnrollment")
RESERVED_ROLE_NAMES = frozenset({"AccountAdmin", "AccountMembership", "NoPermissions", *COURSE_ROLE_TYPES,
                                 "StudentViewEnrollment", "NilEnrollment", "teacher", "ta", "designer",
                                 "student", "observer", *(label for _, _, label, _ in BUILT_IN_ROLES)})
ACTIVE_OR_PENDING = ("active",)  # the emulator's enrollment statuses Canvas's all_active_or_pending keeps
RESTORABLE = ("inactive", "deleted", "completed")  # Enrollment#update_linked_enrollments' restorable_states
# an enrollments.csv role's enrollment type (a built-in role's name is its type)
ENROLLMENT_TYPES = {"student": "StudentEnrollment", "teacher": "TeacherEnrollment", "ta": "TaEnrollment",
                    "designer": "DesignerEnrollment", "observer": "ObserverEnrollment"}
# EnrollmentsApiController#index without state[]: an admin gets all_active_or_pending (inactive included),
# a user_id query workflow_state active or invited (the emulator stores no invited enrollment)
ROSTER_DEFAULT_STATES = ("active", "inactive")
USER_DEFAULT_STATES = ("active",)
GRADE_FIELDS = ("current_score", "final_score", "current_grade", "final_grade", "unposted_current_score",
                "unposted_final_score", "unposted_current_grade", "unposted_final_grade", "override_score",
                "override_grade")
ASSIGNMENT_FIELDS = ("name", "assignment_group_id", "points_possible", "due_at", "unlock_at", "lock_at",
                     "published", "omit_from_final_grade", "grading_type", "submission_types", "position",
                     "grading_period_id")  # what update_assignment may change
SUBMISSION_FIELDS = ("score", "grade", "entered_score", "entered_grade", "excused", "late", "missing",
                     "late_policy_status", "workflow_state", "graded_at", "posted_at", "submitted_at")
ENROLLMENT_DROP_STATUSES = ("deleted", "completed", "inactive")
USER_REMOVE_STATUSES = ("deleted", "suspended")
RAW_EXTENSIONS = {"application/zip": "zip", "text/xml": "xml", "text/plain": "csv", "text/csv": "csv"}
IGNORED_FILES = re.compile(r"__macosx|desktop d[bf]|\A\.", re.IGNORECASE)
COUNT_NAMES = ("accounts", "terms", "abstract_courses", "courses", "sections", "xlists", "users",
               "enrollments", "groups", "group_memberships", "grade_publishing_results", "user_observers")
FINAL_STATES = frozenset({"imported", "imported_with_messages", "aborted", "failed", "failed_with_messages"})
SUCCEEDED = frozenset({"imported", "imported_with_messages"})
ECHOED_OPTIONS = ("override_sis_stickiness", "add_sis_stickiness", "clear_sis_stickiness", "skip_deletes",
                  "diffing_data_set_identifier", "diffing_drop_status", "diffing_user_remove_status",
                  "change_threshold")
TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
SIS_IMPORTS = re.compile(r"^/api/v1/accounts/(?P<account>[^/]+)/sis_imports(?:\.json)?/?$")
NOT_FOUND = {"errors": [{"message": "The specified resource does not exist."}]}
SUPPORT_ERROR = "Error while importing CSV. Please contact support. (Error report {number})"
DIFF_THRESHOLD_EXCEEDED = "Diffing not performed because file size difference exceeded threshold"


class CanvasError(Exception):
    """An answer other than success: the reply the client gets."""

    def __init__(self, reply: Reply):
        super().__init__(reply.status)
        self.reply = reply

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> CanvasError:
        return cls(Reply.json(status, _encode(payload), headers))


def _encode(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _flag(value: Any) -> bool:
    return str(value or "").strip().lower() in TRUE


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _descending(value: str | None) -> tuple[int, float, str]:
    """A sort key ordering dates as PostgreSQL's ``DESC`` does: NULLs first, then latest first
    (a value that is not an ISO date sorts last)."""
    if value is None:
        return (0, 0.0, "")
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return (2, 0.0, value)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return (1, -stamp.timestamp(), "")


def _instant(value: str | None) -> datetime | None:
    """An ISO time (``Z`` or an offset; UTC when it names none) as an aware datetime; None for
    None or a value that is not one."""
    try:
        stamp = datetime.fromisoformat((value or "").replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _sortable_name(user: dict) -> str:
    """User#sortable_name as Canvas derives it: ``Last, First``, or the name when there is no split."""
    return ", ".join(filter(None, (user["last_name"], user["first_name"]))) or user["full_name"]


def _grade_text(assignment: dict, score: float) -> str | None:
    """Assignment#score_to_grade for the grading types that need no grading scheme: ``points`` the
    score, ``percent`` its share of points_possible, rounded to 2 places and whole numbers without
    decimals (``"8.5"``, ``"85%"``); None for the others (the test gives their grade)."""
    def written(value: float) -> str:
        return f"{round(value, 2):.2f}".rstrip("0").rstrip(".")

    if assignment["grading_type"] == "points":
        return written(score)
    if assignment["grading_type"] == "percent" and assignment["points_possible"]:
        return written(score * 100 / assignment["points_possible"]) + "%"
    return None


def _status(value: str, allowed: str) -> str | None:
    """The status a CSV value names, matched at its start and case-insensitively as Canvas's
    importers match it (``/\\A(active|deleted)/i``); None when it names none."""
    match = re.match(f"({allowed})", value, re.IGNORECASE)
    return sys.intern(match.group(1).lower()) if match else None  # one copy of each, held by every row


@dataclass
class CsvFile:
    """One recognised CSV file of an import: its name, its kind and its rows (lower-cased headers,
    stripped values)."""

    name: str
    kind: str
    rows: list[dict[str, str]]


@dataclass
class Upload:
    """What an import's attachment holds: the recognised files, the file-level messages
    (``(file, message, fails)``) and the uncompressed size Canvas's diffing threshold compares."""

    files: list[CsvFile] = field(default_factory=list)
    messages: list[tuple[str, str, bool]] = field(default_factory=list)
    size: int = 0


def _kind_of(header: set[str]) -> str | None:
    """The file kind a header row names, tried in Canvas's import order."""
    if {"account_id", "parent_account_id"} <= header:
        return "account"
    if {"term_id", "name"} <= header:
        return "term"
    if {"course_id", "short_name"} <= header:
        return "course"
    if {"section_id", "name"} <= header:
        return "section"
    if {"user_id", "login_id"} <= header:
        return "user"
    if header & {"course_id", "section_id"} and header & {"user_id", "user_integration_id"}:
        return "enrollment"
    if {"observer_id", "student_id"} <= header:
        return "user_observer"
    return None


def read_upload(payload: bytes, extension: str, file_name: str) -> Upload:
    """The files of an attachment (a zip, or one CSV); raises :class:`zipfile.BadZipFile` for a zip
    that is not one."""
    if extension == "csv":
        entries = [(file_name, payload)]
    else:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            entries = [(info.filename, archive.read(info)) for info in archive.infolist()
                       if not info.is_dir() and not IGNORED_FILES.search(info.filename)]
    upload = Upload(size=sum(len(content) for _, content in entries))
    for name, content in entries:
        if not name.lower().endswith(".csv"):
            upload.messages.append((name, "Skipping unknown file type", False))
            continue
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError:
            upload.messages.append((name, "Invalid UTF-8", True))
            continue
        try:
            lines = [line for line in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in line)]
        except csv.Error:
            upload.messages.append((name, "Malformed CSV", True))
            continue
        if not lines:
            continue
        header = [cell.strip().lower() for cell in lines[0]]
        kind = _kind_of(set(header))
        if kind is None:
            upload.messages.append((name, "Couldn't find Canvas CSV import headers", True))
            continue
        rows = [{column: (line[i].strip() if i < len(line) else "") for i, column in enumerate(header)}
                for line in lines[1:]]
        upload.files.append(CsvFile(name, kind, rows))
    return upload


def _row_key(kind: str, row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row.get(name, "") for name in IDENTIFYING_FIELDS[kind])


@dataclass
class SisImport:
    """One SIS import (Canvas's SisBatch): its options, its progress and its outcome."""

    id: int
    payload: bytes
    extension: str
    file_name: str
    options: dict[str, Any]
    fault: str | None
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    ended_at: str | None = None
    updated_at: str = field(default_factory=_now)
    workflow_state: str = "created"
    progress: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNT_NAMES, 0))
    supplied_batches: list[str] = field(default_factory=list)
    warnings: list[list[Any]] = field(default_factory=list)
    errors: list[list[Any]] = field(default_factory=list)
    data_set: dict[str, CsvFile] = field(default_factory=dict)  # the whole import by kind, for later diffs
    data_size: int = 0
    diffed_against: int | None = None
    diffing_threshold_exceeded: bool | None = None

    def touch(self, state: str | None = None) -> None:
        if state:
            self.workflow_state = state
        self.updated_at = _now()

    def as_json(self, batch_term_id: int | None) -> dict[str, Any]:
        options = self.options
        answer: dict[str, Any] = {
            "id": self.id, "created_at": self.created_at, "started_at": self.started_at,
            "ended_at": self.ended_at, "updated_at": self.updated_at, "progress": self.progress,
            "workflow_state": self.workflow_state,
            "data": {"import_type": options["import_type"], "supplied_batches": list(self.supplied_batches),
                     "counts": dict(self.counts)},
            "batch_mode": options["batch_mode"] or None, "batch_mode_term_id": batch_term_id,
            "multi_term_batch_mode": None,
            **{name: options[name] for name in ECHOED_OPTIONS},
            "diffing_remaster": options["diffing_remaster"] if options["diffing_data_set_identifier"]
            else None,
            "diffed_against_import_id": self.diffed_against, "diff_row_count_threshold": None,
        }
        if self.workflow_state in FINAL_STATES:
            for name, messages, noun in (("processing_errors", self.errors, "errors"),
                                         ("processing_warnings", self.warnings, "warnings")):
                if messages:
                    shown = [list(message) for message in messages[:MESSAGES_SHOWN]]
                    if len(messages) > MESSAGES_SHOWN:
                        left_out = len(messages) - MESSAGES_SHOWN
                        shown.append([f"and {left_out} more {noun} that were not included",
                                      f"Download the error file to see all {noun}."])
                    answer[name] = shown
        if options["diffing_data_set_identifier"]:
            answer["diffing_threshold_exceeded"] = self.diffing_threshold_exceeded
        return answer


class CanvasEmulator(LoopbackService):
    """The Canvas emulator as a context manager: ``with CanvasEmulator(token=...) as canvas:``."""

    def __init__(
        self,
        *,
        token: str,
        account_id: str = "1",
        upload_seconds: float = 0.0,
        seconds_per_row: float = 0.0,
        rate_limit_quota: float | None = None,
        rate_limit_drain: float = 10.0,
        request_cost: float = 1.0,
        throttle_status: int = 403,
        port: int = 0,
        max_recorded: int = 100_000,
        custom_roles: dict[str, str] | None = None,
    ) -> None:
        super().__init__(port=port, max_recorded=max_recorded)
        self.token = token
        self.account_id = str(account_id)
        self.custom_roles = self._check_custom_roles(custom_roles or {})
        self.upload_seconds = upload_seconds
        self.seconds_per_row = seconds_per_row
        self.rate_limit_quota = rate_limit_quota
        self.rate_limit_drain = rate_limit_drain
        self.request_cost = request_cost
        self.throttle_status = throttle_status
        self.imports_received = 0
        self.bytes_received = 0  # the imports' uploads (zip or CSV), as taken
        self.rows_applied = 0
        self.modelled_seconds = 0.0  # upload_seconds per import run + seconds_per_row per row processed
        self.rate_limited = 0
        self._lock = threading.Lock()
        self._ids = count(101)  # Canvas ids of what imports create
        self._import_ids = count(1)
        self._error_reports = count(1)
        self._faults = FaultQueue(FAULTS)
        self._buckets: dict[str, tuple[float, float]] = {}  # token -> (bucket level, when)
        self._accounts: dict[str, dict] = {}
        self._terms: dict[str, dict] = {}
        self._users: dict[str, dict] = {}
        self._courses: dict[str, dict] = {}
        self._sections: dict[str, dict] = {}
        self._enrollments: dict[str, dict] = {}
        self._user_observers: dict[str, dict] = {}
        # indexes, so that a row costs the same in a large account as in a small one
        self._login_holders: dict[str, str] = {}  # lower-cased login_id -> the SIS user id holding it
        self._enrollments_of: dict[str, list[dict]] = {}  # SIS user id -> that user's enrollments
        self._links_of_student: dict[str, list[dict]] = {}  # SIS user id -> the observer links naming them
        self._canvas_users: dict[int, dict] = {}  # users made in Canvas, not by SIS: by Canvas id
        # the gradebook (set by the tests, as teachers and admins set it in Canvas's UI), by Canvas id
        self._grading_periods: dict[int, dict] = {}
        self._grades: dict[tuple[str, int, int | None], dict] = {}  # (course_id, user id, grading period id)
        self._assignment_groups: dict[int, dict] = {}
        self._assignments: dict[int, dict] = {}
        self._submissions: dict[tuple[int, int], dict] = {}  # (assignment id, user id)
        self._imports: dict[int, SisImport] = {}
        self._queue: queue.Queue[SisImport | None] = queue.Queue()
        self._stopping = threading.Event()
        self._released = threading.Event()  # release_stuck(): a stuck import goes on
        self._this_request = threading.local()  # taken_then_500: this upload is taken, then answered 500
        self._worker: threading.Thread | None = None

    @staticmethod
    def _check_custom_roles(roles: dict[str, str]) -> list[dict[str, Any]]:
        """The custom course roles (label -> base_role_type) as Canvas would have them, with ids after
        the built-in roles; Canvas's own validations raise ValueError (a base type that is not a course
        enrollment type, a reserved or built-in name)."""
        made = []
        for number, (label, base_type) in enumerate(roles.items(), FIRST_CUSTOM_ROLE_ID):
            if base_type not in COURSE_ROLE_TYPES:
                raise ValueError(f"base_role_type {base_type!r} of custom role {label!r} is invalid")
            if not label or label in RESERVED_ROLE_NAMES:
                raise ValueError(f"custom role name {label!r} is reserved")
            made.append({"id": number, "name": label, "base_role_type": base_type})
        return made

    # -- running ----------------------------------------------------------------------

    def start(self) -> Self:
        super().start()
        self._stopping.clear()
        self._worker = threading.Thread(target=self._work, name="CanvasSisImports", daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        if self._worker:
            self._worker.join(timeout=5)
            self._worker = None
        super().stop()

    # -- controls ---------------------------------------------------------------------

    def inject(self, fault: str, *, times: int = 1, path_contains: str | None = None, after: int = 0) -> None:
        """Meet ``times`` requests (or imports, for ``import_fails`` and ``stuck``) with ``fault``
        after letting ``after`` through. ``throttle`` answers as a spent rate limit, ``500`` as a
        server error, ``refuse_zip`` meets uploads only and answers 400."""
        self._faults.add(Fault(fault, times, path_contains, after))

    def clear_faults(self) -> None:
        self._faults.clear()

    def release_stuck(self) -> None:
        """Let the import that is ``stuck`` go on: it is imported as any other, and those queued
        behind it follow (as a stuck import in Canvas eventually ends, or an admin aborts it)."""
        self._released.set()

    # -- the gradebook: what admins and teachers set in Canvas's UI (no SIS import carries grades) --

    def add_grading_period(self, term_sis_id: str | None, title: str, start_date: str, end_date: str,
                           close_date: str | None = None, weight: float | None = None) -> int:
        """A grading period in the grading period set of the term ``term_sis_id`` (None: the default
        term, which the courses naming no term are in), as an admin makes one; ``close_date`` defaults
        to ``end_date`` (Canvas's GradingPeriod sets it so when none is given). Dates are ISO
        ``YYYY-MM-DDTHH:MM:SSZ``. Returns its Canvas id."""
        with self._lock:
            if term_sis_id is not None and term_sis_id not in self._terms:
                raise KeyError(f"no term {term_sis_id!r}")
            if any(_instant(date) is None for date in (start_date, end_date, close_date or end_date)):
                raise ValueError("grading period dates are ISO times")
            number = self._new_id()
            self._grading_periods[number] = {"id": number, "term_id": term_sis_id or "", "title": title,
                                             "start_date": start_date, "end_date": end_date,
                                             "close_date": close_date or end_date, "weight": weight}
            return number

    def set_grades(self, course_sis_id: str, user_sis_id: str, *, grading_period_id: int | None = None,
                   current_score: float | None = None, final_score: float | None = None,
                   current_grade: str | None = None, final_grade: str | None = None,
                   unposted_current_score: float | None = None, unposted_final_score: float | None = None,
                   unposted_current_grade: str | None = None, unposted_final_grade: str | None = None,
                   override_score: float | None = None, override_grade: str | None = None) -> None:
        """The scores Canvas computed for a student in a course, for the whole course or for one of its
        grading periods (an enrollment's Score rows); the grades are null when the course has no
        grading scheme, and the unposted ones (what counts grades hidden from students) default to the
        posted ones."""
        with self._lock:
            course, user = self._courses[course_sis_id], self._users[user_sis_id]
            if grading_period_id is not None and \
                    grading_period_id not in {p["id"] for p in self._course_periods(course)}:
                raise KeyError(f"grading period {grading_period_id} is not course {course_sis_id}'s")
            self._grades[(course_sis_id, user["id"], grading_period_id)] = {
                "current_score": current_score, "final_score": final_score,
                "current_grade": current_grade, "final_grade": final_grade,
                "unposted_current_score": current_score if unposted_current_score is None
                else unposted_current_score,
                "unposted_final_score": final_score if unposted_final_score is None else unposted_final_score,
                "unposted_current_grade": current_grade if unposted_current_grade is None
                else unposted_current_grade,
                "unposted_final_grade": final_grade if unposted_final_grade is None else unposted_final_grade,
                "override_score": override_score, "override_grade": override_grade}

    def add_enrollment_made_in_canvas(self, course_sis_id: str, user_sis_id: str | None,
                                      role: str = "student", *, name: str = "Test Student") -> int:
        """An active enrollment a teacher made in Canvas's UI, in the course's default section: no SIS
        import (``created_for_sis_id`` false), keyed ``canvas:<id>`` so that no enrollments.csv row, diff
        or batch-mode clean-up names it (those touch only what an import made; a user deleted by
        users.csv still loses it, as Canvas deletes all of that user's enrollments). ``user_sis_id``
        None enrolls a user made in Canvas too, named ``name``, with no SIS id and no login
        (:attr:`canvas_users`). Returns the enrollment's Canvas id."""
        if role not in ENROLLMENT_TYPES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ENROLLMENT_TYPES)}")
        with self._lock:
            if course_sis_id not in self._courses:
                raise KeyError(f"no course {course_sis_id!r}")
            if user_sis_id is None:
                first, _, last = name.rpartition(" ")
                user = {"id": self._new_id(), "user_id": None, "login_id": "", "first_name": first,
                        "last_name": last, "full_name": name, "email": "", "status": "active",
                        "sis_import_id": None}
                self._canvas_users[user["id"]] = user
            else:
                user = self._users[user_sis_id]
            number = self._new_id()
            self._add_enrollment(f"canvas:{number}", {
                "id": number, "course_id": course_sis_id, "section_id": "", "user_id": user_sis_id,
                "canvas_user_id": user["id"], "role": role, "associated_user_id": "", "status": "active",
                "sis_import_id": None})
            return number

    def end_enrollment(self, course_sis_id: str, user_sis_id: str, task: str = "conclude") -> None:
        """What a teacher or admin does to a student in a course's People page, Canvas's
        ``DELETE /api/v1/courses/:course_id/enrollments/:id`` with ``task``: ``conclude`` (the
        enrollment ``completed``), ``deactivate``/``inactivate`` (``inactive``) or ``delete``
        (``deleted``); the student's observers' linked enrollments follow, as Canvas's callbacks do.
        No SIS import is involved: the enrollment keeps the ``sis_import_id`` it had."""
        status = {"conclude": "completed", "deactivate": "inactive", "inactivate": "inactive",
                  "delete": "deleted"}.get(task)
        if status is None:
            raise ValueError(f"task {task!r} is not one of conclude, deactivate, inactivate, delete")
        with self._lock:
            found = [enrollment for enrollment in self._enrollments_of.get(user_sis_id, ())
                     if enrollment["course_id"] == course_sis_id and enrollment["role"] == "student"
                     and enrollment["status"] == "active"]
            if not found:
                raise KeyError(f"no active student enrollment of {user_sis_id!r} in {course_sis_id!r}")
            for enrollment in found:
                enrollment["status"] = status
                self._update_linked_enrollments(enrollment, False, "active")

    def add_assignment_group(self, course_sis_id: str, name: str, *, position: int | None = None,
                             group_weight: float = 0.0) -> int:
        """An assignment group of the course (last when ``position`` is None); returns its Canvas id."""
        with self._lock:
            if course_sis_id not in self._courses:
                raise KeyError(f"no course {course_sis_id!r}")
            number = self._new_id()
            if position is None:
                position = 1 + sum(g["course_id"] == course_sis_id for g in self._assignment_groups.values())
            self._assignment_groups[number] = {"id": number, "course_id": course_sis_id, "name": name,
                                               "position": position, "group_weight": group_weight}
            return number

    def add_assignment(self, course_sis_id: str, name: str, *, assignment_group_id: int,
                       points_possible: float | None, due_at: str | None = None, unlock_at: str | None = None,
                       created_at: str | None = None, published: bool = True,
                       omit_from_final_grade: bool = False, grading_type: str = "points",
                       grading_period_id: int | None = None) -> int:
        """An assignment of the course in one of its groups, last in the group; ``created_at`` defaults
        to now. Canvas puts an assignment in the grading period its due date falls in (no due date: the
        last period); ``grading_period_id`` says which, else the emulator works it out so. Returns its
        Canvas id."""
        with self._lock:
            group = self._assignment_groups[assignment_group_id]
            if group["course_id"] != course_sis_id:
                raise KeyError(f"assignment group {assignment_group_id} is not course {course_sis_id}'s")
            number, now = self._new_id(), _now()
            position = 1 + sum(a["assignment_group_id"] == assignment_group_id
                               for a in self._assignments.values())
            self._assignments[number] = {
                "id": number, "course_id": course_sis_id, "name": name,
                "assignment_group_id": assignment_group_id,
                "points_possible": points_possible, "due_at": due_at, "unlock_at": unlock_at, "lock_at": None,
                "created_at": created_at or now, "updated_at": now, "published": published,
                "workflow_state": "published" if published else "unpublished",
                "omit_from_final_grade": omit_from_final_grade, "grading_type": grading_type,
                "submission_types": ["none"], "position": position, "grading_period_id": grading_period_id}
            return number

    def update_assignment(self, assignment_id: int, **fields: Any) -> None:
        """Change an assignment as a teacher edits it (``name``, ``points_possible``, ``due_at``,
        ``published`` ...: :data:`ASSIGNMENT_FIELDS`); ``updated_at`` becomes now."""
        unknown = set(fields) - set(ASSIGNMENT_FIELDS)
        if unknown:
            raise TypeError(f"update_assignment cannot change {', '.join(sorted(unknown))}")
        with self._lock:
            assignment = self._assignments[assignment_id]
            group_id = fields.get("assignment_group_id", assignment["assignment_group_id"])
            group = self._assignment_groups[group_id]
            if group["course_id"] != assignment["course_id"]:
                raise KeyError(f"assignment group {group['id']} is not course {assignment['course_id']}'s")
            assignment.update(fields, updated_at=_now())
            if assignment["workflow_state"] != "deleted":
                assignment["workflow_state"] = "published" if assignment["published"] else "unpublished"

    def delete_assignment(self, assignment_id: int) -> None:
        """Delete an assignment: ``workflow_state`` deleted; Canvas lists it no more, nor its submissions."""
        with self._lock:
            self._assignments[assignment_id].update(workflow_state="deleted", updated_at=_now())

    def grade(self, course_sis_id: str, assignment_id: int, user_sis_id: str, *, score: float | None = None,
              grade: str | None = None, excused: bool = False, late: bool = False, missing: bool = False,
              late_policy_status: str | None = None, graded_at: str | None = None, posted: bool = True,
              submitted_at: str | None = None) -> None:
        """A teacher's grading of a student's submission: ``score`` and/or ``grade`` (when not given, a
        points or percent assignment's grade is its score as Canvas writes it: ``"8.5"``, ``"85%"``), or
        ``excused`` (score and grade null). The submission is then ``graded``, at ``graded_at`` (default
        now), else ``submitted`` when ``submitted_at`` is given, else ``unsubmitted``. ``posted`` False
        is a grade hidden from the student (a manually posted, once "muted", assignment): ``posted_at``
        null; a posted grade is posted when graded."""
        with self._lock:
            assignment = self._assignments[assignment_id]
            if assignment["course_id"] != course_sis_id:
                raise KeyError(f"assignment {assignment_id} is not course {course_sis_id}'s")
            submission = self._submission(assignment, self._users[user_sis_id]["id"])
            graded = score is not None or grade is not None or excused
            if excused:
                score = grade = None
            elif grade is None and score is not None:
                grade = _grade_text(assignment, score)
            graded_at = (graded_at or _now()) if graded else None
            state = "graded" if graded else "submitted" if submitted_at else "unsubmitted"
            submission.update(score=score, grade=grade, entered_score=score, entered_grade=grade,
                              excused=excused, late=late, missing=missing,
                              late_policy_status=late_policy_status, workflow_state=state,
                              graded_at=graded_at, posted_at=graded_at if posted else None,
                              submitted_at=submitted_at)

    # -- what was imported (copies, keyed by SIS id) ----------------------------------

    def _snapshot(self, store: dict) -> dict:
        with self._lock:
            return {key: dict(value) for key, value in store.items()}

    def held(self) -> dict[str, int]:
        """How many of each kind imports made Canvas hold, whatever their state: a count, where the
        copies below would copy a large district whole."""
        with self._lock:
            return {"accounts": len(self._accounts), "terms": len(self._terms), "users": len(self._users),
                    "courses": len(self._courses), "sections": len(self._sections),
                    "enrollments": len(self._enrollments), "user_observers": len(self._user_observers)}

    @property
    def accounts(self) -> dict[str, dict]:
        """Sub-accounts of the root account (``parent_account_id`` empty: the root's children)."""
        return self._snapshot(self._accounts)

    @property
    def terms(self) -> dict[str, dict]:
        return self._snapshot(self._terms)

    @property
    def users(self) -> dict[str, dict]:
        return self._snapshot(self._users)

    @property
    def courses(self) -> dict[str, dict]:
        return self._snapshot(self._courses)

    @property
    def sections(self) -> dict[str, dict]:
        return self._snapshot(self._sections)

    @property
    def enrollments(self) -> dict[str, dict]:
        """Keyed ``course_id:section_id:user_id:role`` (plus ``:associated_user_id`` for an observer
        of a student); those made in Canvas's UI (:meth:`add_enrollment_made_in_canvas`) are keyed
        ``canvas:<id>``, their ``user_id`` None for a user made in Canvas (``canvas_user_id`` names it)."""
        return self._snapshot(self._enrollments)

    @property
    def canvas_users(self) -> dict[int, dict]:
        """Users made in Canvas's UI, with no SIS id and no login, by Canvas id."""
        return self._snapshot(self._canvas_users)

    @property
    def grading_periods(self) -> dict[int, dict]:
        """By Canvas id: ``term_id`` (the SIS id, "" for the default term), ``title``, the dates and
        ``weight``."""
        return self._snapshot(self._grading_periods)

    @property
    def grades(self) -> dict[tuple[str, int, int | None], dict]:
        """What :meth:`set_grades` set, keyed (course SIS id, user's Canvas id, grading period id or None)."""
        return self._snapshot(self._grades)

    @property
    def assignment_groups(self) -> dict[int, dict]:
        return self._snapshot(self._assignment_groups)

    @property
    def assignments(self) -> dict[int, dict]:
        return self._snapshot(self._assignments)

    @property
    def submissions(self) -> dict[tuple[int, int], dict]:
        """Keyed (assignment id, user's Canvas id); a student's unsubmitted one appears once listed."""
        return self._snapshot(self._submissions)

    @property
    def user_observers(self) -> dict[str, dict]:
        """Observer links (Canvas's UserObservationLink), keyed ``observer_id:student_id``:
        ``id``, ``observer_id``, ``student_id``, ``workflow_state`` (active|deleted), ``sis_import_id``."""
        return self._snapshot(self._user_observers)

    @property
    def uploads(self) -> dict[int, bytes]:
        """Each SIS import's data as uploaded (a zip or a CSV), by import id."""
        with self._lock:
            return {number: job.payload for number, job in self._imports.items()}

    @property
    def imports(self) -> dict[int, dict]:
        """Each SIS import as ``GET sis_imports/:id`` answers it."""
        with self._lock:
            return {number: self._import_json(job) for number, job in self._imports.items()}

    # -- gatekeeping (handler threads) ------------------------------------------------

    def _authenticate(self, headers, query: dict[str, str]) -> str:
        authorization = headers.get("Authorization") or ""
        scheme, _, credential = authorization.partition(" ")
        token = credential.strip() if scheme.lower() == "bearer" else query.get("access_token", "")
        if not token:
            raise CanvasError.json(401, {"status": "unauthenticated",
                                         "errors": [{"message": "user authorization required"}]})
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise CanvasError.json(401, {"errors": [{"message": "Invalid access token."}]})
        return token

    def _meter(self, token: str) -> dict[str, str]:
        """Charge the request to the token's bucket: the headers every answer carries; raises the
        throttled answer when the quota is spent."""
        if self.rate_limit_quota is None:
            return {"X-Request-Cost": f"{self.request_cost:g}"}
        with self._lock:
            now = time.monotonic()
            level, since = self._buckets.get(token, (0.0, now))
            level = max(0.0, level - (now - since) * self.rate_limit_drain)
            throttled = level + self.request_cost > self.rate_limit_quota
            if not throttled:
                level += self.request_cost
            self._buckets[token] = (level, now)
            if throttled:
                self.rate_limited += 1
        remaining = self.rate_limit_quota - level
        if throttled:
            raise self._throttled(remaining)
        return {"X-Request-Cost": f"{self.request_cost:g}", "X-Rate-Limit-Remaining": f"{remaining:g}"}

    def _throttled(self, remaining: float) -> CanvasError:
        body = f"{self.throttle_status} Forbidden (Rate Limit Exceeded)\n".encode()
        return CanvasError(Reply(self.throttle_status, {"Content-Type": "text/plain; charset=utf-8",
                                                        "X-Request-Cost": "0",
                                                        "X-Rate-Limit-Remaining": f"{remaining:g}"}, body))

    def _request_fault(self, method: str, path: str) -> None:
        """Answer as the request's fault, if it meets one."""
        self._this_request.answer_lost = False
        upload = method == "POST" and bool(SIS_IMPORTS.match(path))
        fault = self._faults.take(path, lambda fault: fault.kind not in IMPORT_FAULTS
                                  and (fault.kind not in UPLOAD_FAULTS or upload))
        if fault is None:
            return
        if fault.kind == "taken_then_500":
            self._this_request.answer_lost = True
            return
        if fault.kind == "throttle":
            with self._lock:
                self.rate_limited += 1
            raise self._throttled(0.0)
        if fault.kind == "500":
            raise CanvasError.json(500, {"errors": [{"message": "An error occurred."}]})
        raise CanvasError.json(400, {"errors": [{"message": "The uploaded file could not be accepted"}]})

    # -- the API ----------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, headers,
               url: str) -> tuple[int, Any, dict[str, str]]:
        """Route one authenticated call: the status, the JSON payload and extra headers (Link)."""
        for route_method, pattern, action in self._routes:
            match = pattern.match(path)
            if match and route_method == method:
                return action({key: unquote(value) for key, value in match.groupdict().items()},
                              query, body, headers, url)
        raise CanvasError.json(404, NOT_FOUND)

    @cached_property
    def _routes(self) -> list[tuple[str, re.Pattern, Callable]]:
        table = [
            ("POST", SIS_IMPORTS.pattern, self._create_import),
            ("GET", SIS_IMPORTS.pattern, self._list_imports),
            ("GET", r"^/api/v1/accounts/(?P<account>[^/]+)/sis_imports/(?P<id>\d+)(?:\.json)?/?$",
             self._get_import),
            ("GET", r"^/api/v1/accounts/(?P<account>[^/]+)/courses(?:\.json)?/?$", self._list_courses),
            ("GET", r"^/api/v1/courses/(?P<course>[^/]+?)(?:\.json)?/?$", self._get_course),
            ("GET", r"^/api/v1/courses/(?P<course>[^/]+)/sections(?:\.json)?/?$", self._list_sections),
            ("GET", r"^/api/v1/accounts/(?P<account>[^/]+)/sub_accounts(?:\.json)?/?$",
             self._list_sub_accounts),
            ("GET", r"^/api/v1/accounts/(?P<account>[^/]+)/terms(?:\.json)?/?$", self._list_terms),
            ("GET", r"^/api/v1/accounts/(?P<account>[^/]+)/roles(?:\.json)?/?$", self._list_roles),
            ("GET", r"^/api/v1/courses/(?P<course>[^/]+)/grading_periods(?:\.json)?/?$",
             self._list_grading_periods),
            ("GET", r"^/api/v1/courses/(?P<course>[^/]+)/enrollments(?:\.json)?/?$", self._list_enrollments),
            ("GET", r"^/api/v1/courses/(?P<course>[^/]+)/assignment_groups(?:\.json)?/?$",
             self._list_assignment_groups),
            ("GET", r"^/api/v1/courses/(?P<course>[^/]+)/assignments(?:\.json)?/?$", self._list_assignments),
            ("GET", r"^/api/v1/courses/(?P<course>[^/]+)/assignments/(?P<id>\d+)(?:\.json)?/?$",
             self._get_assignment),
            ("GET", r"^/api/v1/courses/(?P<course>[^/]+)/students/submissions(?:\.json)?/?$",
             self._list_submissions),
        ]
        return [(method, re.compile(pattern), action) for method, pattern, action in table]

    def _root_account(self, reference: str) -> None:
        """SIS imports are the root account's: ``:id`` or ``self``."""
        if reference in (self.account_id, "self"):
            return
        with self._lock:
            self._account(reference)
        raise CanvasError.json(400, {"errors": ["SIS imports can only be executed on root accounts"]})

    def _account(self, reference: str) -> str:
        """The SIS id of the account ``reference`` names ("" for the root account), under the lock."""
        if reference in (self.account_id, "self"):
            return ""
        if reference.startswith("sis_account_id:"):
            account = self._accounts.get(reference.removeprefix("sis_account_id:"))
        else:
            account = next((a for a in self._accounts.values() if str(a["id"]) == reference), None)
        if account is None or account["status"] == "deleted":
            raise CanvasError.json(404, NOT_FOUND)
        return account["account_id"]

    def _create_import(self, match, query, body, headers, url):
        self._root_account(match["account"])
        params, payload, extension, file_name = self._attachment(query, body, headers)
        options = self._import_options(params)
        with self._lock:
            job = SisImport(next(self._import_ids), payload, extension, file_name, options,
                            fault=self._take_import_fault(url))
            self._imports[job.id] = job
            self.imports_received += 1
            self.bytes_received += len(payload)
            answer = self._import_json(job)
        self._queue.put(job)
        if getattr(self._this_request, "answer_lost", False):  # taken_then_500: the import is Canvas's
            self._this_request.answer_lost = False
            raise CanvasError.json(500, {"errors": [{"message": "An error occurred."}]})
        return 200, answer, {}

    def _take_import_fault(self, url: str) -> str | None:
        fault = self._faults.take(url, lambda fault: fault.kind in IMPORT_FAULTS)
        return fault.kind if fault else None

    @staticmethod
    def _attachment(query: dict[str, str], body: bytes, headers) -> tuple[dict[str, str], bytes, str, str]:
        """The parameters (query and form fields), the data, its extension and its file name."""
        params = dict(query)
        content_type = Message()
        content_type["Content-Type"] = headers.get("Content-Type") or ""
        media = content_type.get_content_type() if headers.get("Content-Type") else ""
        if media == "multipart/form-data":
            fields, files = _multipart(body, content_type.get_param("boundary") or "")
            params.update(fields)
            if "attachment" not in files:
                raise CanvasError.json(400, {"error": True, "error_message": "Missing attachment"})
            file_name, payload = files["attachment"]
            extension = "csv" if file_name.lower().endswith(".csv") else "zip"
            return params, payload, extension, file_name
        charset = content_type.get_content_charset()
        if charset and charset.lower() != "utf-8":
            raise CanvasError.json(400, {"error": "Invalid content type, UTF-8 required"})
        extension = params.get("extension") or RAW_EXTENSIONS.get(media, "zip")
        return params, body, extension, f"sis_import.{extension}"

    def _import_options(self, params: dict[str, str]) -> dict[str, Any]:
        import_type = params.get("import_type") or "instructure_csv"
        if import_type != "instructure_csv":
            raise CanvasError.json(400, {"errors": [{"message": "invalid import type parameter"}]})
        batch_mode = _flag(params.get("batch_mode"))
        batch_term = self._batch_term(params.get("batch_mode_term_id", "")) if batch_mode else None
        identifier = None if batch_mode else (params.get("diffing_data_set_identifier") or None)
        override = _flag(params.get("override_sis_stickiness"))
        threshold = str(params.get("change_threshold", ""))
        options = {
            "import_type": import_type, "batch_mode": batch_mode, "batch_term": batch_term,
            "diffing_data_set_identifier": identifier,
            "diffing_remaster": _flag(params.get("diffing_remaster_data_set")),
            "override_sis_stickiness": override or None,
            "add_sis_stickiness": (override and _flag(params.get("add_sis_stickiness"))) or None,
            "clear_sis_stickiness": (override and _flag(params.get("clear_sis_stickiness"))) or None,
            "skip_deletes": _flag(params.get("skip_deletes")),
            "change_threshold": int(threshold) if threshold.isdigit() else None,
        }
        for name, allowed in (("diffing_drop_status", ENROLLMENT_DROP_STATUSES),
                              ("diffing_user_remove_status", USER_REMOVE_STATUSES)):
            value = params.get(name) or None
            if value is not None and value not in allowed:
                raise CanvasError.json(400, {"message": f"Invalid {name}"})
            options[name] = value
        return options

    def _batch_term(self, reference: str) -> str:
        """The SIS id of the active term ``batch_mode_term_id`` names (a Canvas id or ``sis_term_id:X``)."""
        with self._lock:
            if reference.startswith("sis_term_id:"):
                term = self._terms.get(reference.removeprefix("sis_term_id:"))
            else:
                term = next((t for t in self._terms.values() if str(t["id"]) == reference), None)
        if term is None or term["status"] != "active":
            raise CanvasError.json(400, {"message": "Batch mode specified, but the given batch_mode_term_id "
                                                    "cannot be found."})
        return term["term_id"]

    def _import_json(self, job: SisImport) -> dict[str, Any]:
        term = self._terms.get(job.options["batch_term"] or "")
        return job.as_json(term["id"] if term else None)

    def _get_import(self, match, query, body, headers, url):
        self._root_account(match["account"])
        with self._lock:
            job = self._imports.get(int(match["id"]))
            if job is None:
                raise CanvasError.json(404, NOT_FOUND)
            return 200, self._import_json(job), {}

    def _list_imports(self, match, query, body, headers, url):
        self._root_account(match["account"])
        wanted = query.get("workflow_state[]") or query.get("workflow_state")
        with self._lock:
            jobs = sorted(self._imports.values(), key=lambda job: job.id, reverse=True)
            records = [self._import_json(job) for job in jobs if not wanted or job.workflow_state == wanted]
        page, link = _page(records, query, url, counted=False)
        return 200, {"sis_imports": page}, link

    def _list_courses(self, match, query, body, headers, url):
        with self._lock:
            account = self._account(match["account"])
            under = self._accounts_under(account)
            records = [self._course_json(course) for course in self._courses.values()
                       if course["account_id"] in under and course["status"] != "deleted"]
        page, link = _page(records, query, url)
        return 200, page, link

    def _get_course(self, match, query, body, headers, url):
        with self._lock:
            return 200, self._course_json(self._course(match["course"])), {}

    def _list_sections(self, match, query, body, headers, url):
        with self._lock:
            course = self._course(match["course"])
            records = [self._section_json(section) for section in self._sections.values()
                       if section["course_id"] == course["course_id"] and section["status"] != "deleted"]
        page, link = _page(records, query, url)
        return 200, page, link

    def _list_sub_accounts(self, match, query, body, headers, url):
        """Canvas's AccountsController#sub_accounts: the direct sub-accounts by id (a counted list), or
        with ``recursive`` every descendant (not counted: no ``last`` link); deleted ones left out."""
        recursive = _flag(query.get("recursive"))
        with self._lock:
            account = self._account(match["account"])
            below = self._accounts_under(account) - {account} if recursive else \
                {a["account_id"] for a in self._accounts.values() if a["parent_account_id"] == account}
            records = [self._account_json(a) for a in sorted(self._accounts.values(), key=lambda a: a["id"])
                       if a["account_id"] in below and a["status"] != "deleted"]
        page, link = _page(records, query, url, counted=not recursive)
        return 200, page, link

    def _account_json(self, account: dict) -> dict:
        parent = self._accounts.get(account["parent_account_id"])
        root = int(self.account_id)
        return {"id": account["id"], "name": account["name"],
                "parent_account_id": parent["id"] if parent else root, "root_account_id": root,
                "sis_account_id": account["account_id"],
                "workflow_state": "deleted" if account["status"] == "deleted" else "active",
                "sis_import_id": account["sis_import_id"]}

    def _list_terms(self, match, query, body, headers, url):
        """Canvas's TermsApiController#index: root account only; ``workflow_state`` active (default),
        deleted or all; ordered ``start_at DESC, end_at DESC, id`` with PostgreSQL's NULLS FIRST."""
        reference = match["account"]
        if reference not in (self.account_id, "self"):
            with self._lock:
                self._account(reference)
            raise CanvasError.json(400, {"message": "Terms only belong to root_accounts."})
        wanted = query.get("workflow_state[]") or query.get("workflow_state") or ""
        states = {"active": ("active",), "deleted": ("deleted",), "all": ("active", "deleted")}.get(
            wanted, ("active",))
        with self._lock:
            terms = [{"id": DEFAULT_TERM_ID, "name": DEFAULT_TERM_NAME, "start_at": None, "end_at": None,
                      "workflow_state": "active", "sis_term_id": None, "sis_import_id": None}]
            terms += [{"id": term["id"], "name": term["name"], "start_at": term["start_date"] or None,
                       "end_at": term["end_date"] or None,
                       "workflow_state": "deleted" if term["status"] == "deleted" else "active",
                       "sis_term_id": term["term_id"], "sis_import_id": term["sis_import_id"]}
                      for term in self._terms.values()]
        records = sorted((term for term in terms if term["workflow_state"] in states),
                         key=lambda term: (_descending(term["start_at"]), _descending(term["end_at"]),
                                           term["id"]))
        page, link = _page(records, query, url)
        return 200, {"enrollment_terms": page}, link

    def _list_roles(self, match, query, body, headers, url):
        """Canvas's RoleOverridesController#api_index: the visible built-in roles (when ``state[]``
        asks for active, the default), then the account's own custom roles by id (with
        ``show_inherited``, the root account's too)."""
        with self._lock:
            account = self._account(match["account"])
        wanted = query.get("state[]") or query.get("state") or ""
        states = {wanted} & {"active", "inactive"} or {"active"}
        records: list[dict] = []
        if "active" in states:
            records += [{"id": number, "role": name, "label": label, "base_role_type": base_type,
                         "workflow_state": "built_in", "is_account_role": base_type == "AccountMembership",
                         "permissions": {}} for number, name, label, base_type in BUILT_IN_ROLES]
            if account == "" or _flag(query.get("show_inherited")):
                records += [{"id": role["id"], "role": role["name"], "label": role["name"],
                             "base_role_type": role["base_role_type"], "workflow_state": "active",
                             "is_account_role": False, "permissions": {}} for role in self.custom_roles]
        page, link = _page(records, query, url)
        return 200, page, link

    def _accounts_under(self, account: str) -> set[str]:
        """``account`` and the SIS ids of the accounts below it ("" is the root account)."""
        found, frontier = {account}, [account]
        while frontier:
            parent = frontier.pop()
            for child in self._accounts.values():
                if child["parent_account_id"] == parent and child["account_id"] not in found:
                    found.add(child["account_id"])
                    frontier.append(child["account_id"])
        return found

    def _course(self, reference: str) -> dict:
        if reference.startswith("sis_course_id:"):
            course = self._courses.get(reference.removeprefix("sis_course_id:"))
        else:
            course = next((c for c in self._courses.values() if str(c["id"]) == reference), None)
        if course is None or course["status"] == "deleted":
            raise CanvasError.json(404, NOT_FOUND)
        return course

    def _course_json(self, course: dict) -> dict:
        account = self._accounts.get(course["account_id"])
        term = self._terms.get(course["term_id"])
        return {"id": course["id"], "sis_course_id": course["course_id"], "name": course["long_name"],
                "course_code": course["short_name"], "workflow_state": course["workflow_state"],
                "account_id": account["id"] if account else int(self.account_id),
                "root_account_id": int(self.account_id),
                "enrollment_term_id": term["id"] if term else DEFAULT_TERM_ID,
                "sis_import_id": course["sis_import_id"]}

    def _section_json(self, section: dict) -> dict:
        course = self._courses[section["course_id"]]
        return {"id": section["id"], "name": section["name"], "sis_section_id": section["section_id"],
                "course_id": course["id"], "sis_course_id": course["course_id"],
                "start_at": section["start_date"] or None, "end_at": section["end_date"] or None,
                "integration_id": None, "sis_import_id": section["sis_import_id"]}

    # -- the gradebook's read side (grading periods, enrollments with grades, assignments, submissions)

    def _list_grading_periods(self, match, query, body, headers, url):
        """Canvas's GradingPeriodsController#index for a course: the grading periods of its term's set
        by start date, in Canvas's JSON API shape (``meta.primaryCollection``); none when the term has
        no set."""
        with self._lock:
            periods = self._course_periods(self._course(match["course"]))
            records = [self._grading_period_json(period, periods) for period in periods]
        page, link = _page(records, query, url)
        return 200, {"grading_periods": page, "meta": {"primaryCollection": "grading_periods"}}, link

    def _course_periods(self, course: dict) -> list[dict]:
        """The course's grading periods (its term's set) by start date, under the lock."""
        return sorted((period for period in self._grading_periods.values()
                       if period["term_id"] == course["term_id"]),
                      key=lambda period: (_instant(period["start_date"]), period["id"]))

    @staticmethod
    def _grading_period_json(period: dict, periods: list[dict]) -> dict:
        """Canvas's GradingPeriod: ``is_closed`` once its close date has passed, ``is_last`` for the
        period of the set that ends last."""
        last = max(periods, key=lambda other: _instant(other["end_date"]))
        return {"id": period["id"], "title": period["title"], "start_date": period["start_date"],
                "end_date": period["end_date"], "close_date": period["close_date"],
                "weight": period["weight"],
                "is_closed": _instant(period["close_date"]) < datetime.now(timezone.utc),
                "is_last": period is last}

    def _list_enrollments(self, match, query, body, headers, url):
        """Canvas's EnrollmentsApiController#index for a course: ``type[]`` (or ``role[]``, a built-in
        role's name being its type), ``state[]`` (a workflow_state; without it what an admin sees, all
        but completed and deleted ones, inactive included; with ``user_id`` active and invited ones),
        ``user_id`` (a Canvas id or ``sis_user_id:X``, 404 when nobody has it); ``grading_period_id``
        (one of the course's, else 400 ``{"error": "invalid grading_period_id"}``) makes a student's
        ``grades`` that period's instead of the whole course's. Ordered by type, the user's sortable
        name and id; Canvas pages it by bookmark, which has no ``last`` link."""
        kind = query.get("role[]") or query.get("type[]") or query.get("type")
        state = query.get("state[]") or query.get("state")
        with self._lock:
            course = self._course(match["course"])
            user = None
            if query.get("user_id"):
                user = self._user_by_reference(query["user_id"])
                if user is None:
                    raise CanvasError.json(404, NOT_FOUND)
            period = None
            if query.get("grading_period_id"):
                period = next((p["id"] for p in self._course_periods(course)
                               if str(p["id"]) == query["grading_period_id"]), None)
                if period is None:
                    raise CanvasError.json(400, {"error": "invalid grading_period_id"})
            states = (state,) if state else USER_DEFAULT_STATES if user else ROSTER_DEFAULT_STATES
            chosen = [(enrollment, self._enrollment_user(enrollment))
                      for enrollment in self._enrollments.values()
                      if enrollment["course_id"] == course["course_id"] and enrollment["status"] in states
                      and kind in (None, ENROLLMENT_TYPES[enrollment["role"]])]
            chosen.sort(key=lambda pair: (ENROLLMENT_TYPES[pair[0]["role"]],
                                          _sortable_name(pair[1]).casefold(), pair[0]["id"]))
            records = [self._enrollment_json(enrollment, member, course, period)
                       for enrollment, member in chosen if user is None or member is user]
        page, link = _page(records, query, url, counted=False)
        return 200, page, link

    def _enrollment_user(self, enrollment: dict) -> dict:
        """The enrolled user: an SIS user, or one made in Canvas (``user_id`` None)."""
        if enrollment["user_id"] is None:
            return self._canvas_users[enrollment["canvas_user_id"]]
        return self._users[enrollment["user_id"]]

    def _user_by_reference(self, reference: str) -> dict | None:
        """The user a Canvas id or ``sis_user_id:X`` names, under the lock; None when nobody."""
        if reference.startswith("sis_user_id:"):
            return self._users.get(reference.removeprefix("sis_user_id:"))
        return next((user for user in (*self._users.values(), *self._canvas_users.values())
                     if str(user["id"]) == reference), None)

    @staticmethod
    def _user_json(user: dict) -> dict:
        """Canvas's abbreviated User as an enrollment or a submission includes it (short_name is the
        name: nobody set another)."""
        return {"id": user["id"], "name": user["full_name"], "sortable_name": _sortable_name(user),
                "short_name": user["full_name"], "sis_user_id": user["user_id"],
                "login_id": user["login_id"] or None}

    def _enrollment_json(self, enrollment: dict, user: dict, course: dict, period: int | None) -> dict:
        """Canvas's Enrollment; a student's has ``grades``, for the whole course or for ``period``. An
        enrollment in the course's default section (not modelled) has no section ids."""
        kind = ENROLLMENT_TYPES[enrollment["role"]]
        section = self._sections.get(enrollment["section_id"])
        associated = self._users.get(enrollment["associated_user_id"])
        answer = {"id": enrollment["id"], "course_id": course["id"], "sis_course_id": course["course_id"],
                  "course_section_id": section["id"] if section else None,
                  "sis_section_id": section["section_id"] if section else None, "user_id": user["id"],
                  "sis_user_id": user["user_id"], "type": kind, "role": kind,
                  "enrollment_state": enrollment["status"], "root_account_id": int(self.account_id),
                  "associated_user_id": associated["id"] if associated else None,
                  "created_for_sis_id": enrollment["sis_import_id"] is not None,
                  "sis_import_id": enrollment["sis_import_id"],
                  "html_url": f"{self.base_url}/courses/{course['id']}/users/{user['id']}",
                  "user": self._user_json(user)}
        if kind == "StudentEnrollment":
            grades = self._grades.get((course["course_id"], user["id"], period), {})
            answer["grades"] = {"html_url": f"{self.base_url}/courses/{course['id']}/grades/{user['id']}",
                                **{name: grades.get(name) for name in GRADE_FIELDS}}
        return answer

    def _list_assignment_groups(self, match, query, body, headers, url):
        """Canvas's AssignmentGroupsController#index: the course's groups by position (then id); with
        ``include[]=assignments`` each has its assignments that are not deleted."""
        included = (query.get("include[]") or query.get("include")) == "assignments"
        with self._lock:
            course = self._course(match["course"])
            assignments = self._course_assignments(course)
            groups = sorted((group for group in self._assignment_groups.values()
                             if group["course_id"] == course["course_id"]),
                            key=lambda group: (group["position"], group["id"]))
            records = []
            for group in groups:
                record = {"id": group["id"], "name": group["name"], "position": group["position"],
                          "group_weight": group["group_weight"], "rules": {}}
                if included:
                    record["assignments"] = [self._assignment_json(assignment, course)
                                             for assignment in assignments
                                             if assignment["assignment_group_id"] == group["id"]]
                records.append(record)
        page, link = _page(records, query, url)
        return 200, page, link

    def _list_assignments(self, match, query, body, headers, url):
        """Canvas's AssignmentsApiController#index: the course's assignments that are not deleted,
        unpublished ones included (the token is an admin's)."""
        with self._lock:
            course = self._course(match["course"])
            records = [self._assignment_json(assignment, course)
                       for assignment in self._course_assignments(course)]
        page, link = _page(records, query, url)
        return 200, page, link

    def _get_assignment(self, match, query, body, headers, url):
        """An assignment of the course; 404 when deleted or not the course's."""
        with self._lock:
            course = self._course(match["course"])
            assignment = next((a for a in self._course_assignments(course) if str(a["id"]) == match["id"]),
                              None)
            if assignment is None:
                raise CanvasError.json(404, NOT_FOUND)
            return 200, self._assignment_json(assignment, course), {}

    def _course_assignments(self, course: dict) -> list[dict]:
        """The course's assignments that are not deleted, in Canvas's default order (``position``: the
        group's position, the assignment's, then id), under the lock."""
        groups = self._assignment_groups
        return sorted((a for a in self._assignments.values()
                       if a["course_id"] == course["course_id"] and a["workflow_state"] != "deleted"),
                      key=lambda a: (groups[a["assignment_group_id"]]["position"], a["position"], a["id"]))

    def _assignment_json(self, assignment: dict, course: dict) -> dict:
        """Canvas's Assignment (the fields a grade passback reads)."""
        fields = ("id", "name", "assignment_group_id", "points_possible", "due_at", "unlock_at", "lock_at",
                  "created_at", "updated_at", "published", "workflow_state", "omit_from_final_grade",
                  "grading_type", "position")
        return {**{name: assignment[name] for name in fields}, "course_id": course["id"],
                "submission_types": list(assignment["submission_types"]),
                "html_url": f"{self.base_url}/courses/{course['id']}/assignments/{assignment['id']}"}

    @staticmethod
    def _assignment_period(assignment: dict, periods: list[dict]) -> int | None:
        """The grading period an assignment counts in: the one it was given, else the one its due date
        falls in (GradingPeriod#in_date_range?: after the start, up to the end), else, with no due
        date, the last one."""
        if assignment["grading_period_id"] is not None or not periods:
            return assignment["grading_period_id"]
        due = _instant(assignment["due_at"])
        if due is None:
            return max(periods, key=lambda period: _instant(period["end_date"]))["id"]
        return next((period["id"] for period in periods
                     if _instant(period["start_date"]) < due <= _instant(period["end_date"])), None)

    def _list_submissions(self, match, query, body, headers, url):
        """Canvas's SubmissionsApiController#for_students, not grouped: ``student_ids[]=all`` is the
        course's students (a student enrollment that is not deleted; ``enrollment_state`` active or
        concluded narrows them), one id (a Canvas id or ``sis_user_id:X``) one student (401 when not
        the course's, none when nobody has it), and none the caller's own (an admin's: none). Only
        published assignments count (``assignment_ids[]`` one of them; ``grading_period_id`` those of
        that period, 404 when no period has that id); a student has a submission of each, ``unsubmitted``
        until graded; ``workflow_state`` and ``graded_since`` (graded at or after it) filter them.
        Ordered by id."""
        wanted = query.get("student_ids[]") or query.get("student_ids") or ""
        state = query.get("workflow_state")
        since = _instant(query.get("graded_since"))
        with self._lock:
            course = self._course(match["course"])
            students = self._course_students(course, query.get("enrollment_state"))
            if wanted != "all":
                named = self._user_by_reference(wanted) if wanted else None
                if named is not None and named["id"] not in students:
                    raise CanvasError.json(401, {"status": "unauthorized", "errors": [
                        {"message": "user not authorized to perform that action"}]})
                students = {named["id"]: named} if named else {}
            assignments = [a for a in self._course_assignments(course) if a["workflow_state"] == "published"]
            if query.get("assignment_ids[]"):
                assignments = [a for a in assignments if str(a["id"]) == query["assignment_ids[]"]]
            if query.get("grading_period_id"):
                period = self._grading_periods.get(int(query["grading_period_id"])) \
                    if query["grading_period_id"].isdigit() else None
                if period is None:
                    raise CanvasError.json(404, NOT_FOUND)
                periods = self._course_periods(course)
                assignments = [a for a in assignments if self._assignment_period(a, periods) == period["id"]]
            rows = sorted((self._submission(assignment, user_id)
                           for assignment in assignments for user_id in students),
                          key=lambda submission: submission["id"])
            include_user = (query.get("include[]") or query.get("include")) == "user"
            records = [{"id": s["id"], "assignment_id": s["assignment_id"], "user_id": s["user_id"],
                        **{name: s[name] for name in SUBMISSION_FIELDS},
                        **({"user": self._user_json(students[s["user_id"]])} if include_user else {})}
                       for s in rows if (not state or s["workflow_state"] == state)
                       and (since is None or (s["graded_at"] is not None
                                              and _instant(s["graded_at"]) >= since))]
        page, link = _page(records, query, url)
        return 200, page, link

    def _course_students(self, course: dict, enrollment_state: str | None) -> dict[int, dict]:
        """The course's students by Canvas id (Course#all_student_enrollments: not deleted;
        ``enrollment_state`` active: active ones, concluded: completed ones), under the lock."""
        states = {"active": ("active",), "concluded": ("completed",)}.get(enrollment_state or "",
                                                                          ("active", "inactive", "completed"))
        students = {}
        for enrollment in self._enrollments.values():
            if enrollment["course_id"] == course["course_id"] and enrollment["role"] == "student" \
                    and enrollment["status"] in states:
                user = self._enrollment_user(enrollment)
                students[user["id"]] = user
        return students

    def _submission(self, assignment: dict, user_id: int) -> dict:
        """The student's submission of the assignment, under the lock: Canvas keeps one for each student
        and assignment (``unsubmitted`` until the student submits or is graded); the emulator makes it
        when first needed."""
        key = (assignment["id"], user_id)
        if key not in self._submissions:
            self._submissions[key] = {
                "id": self._new_id(), "assignment_id": assignment["id"], "user_id": user_id, "score": None,
                "grade": None, "entered_score": None, "entered_grade": None, "excused": False, "late": False,
                "missing": False, "late_policy_status": None, "workflow_state": "unsubmitted",
                "graded_at": None, "posted_at": None, "submitted_at": None}
        return self._submissions[key]

    # -- the import job (worker thread) -----------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            job = self._queue.get()
            if job is None:
                return
            self._run(job)

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False when the emulator is stopping."""
        return not (seconds and self._stopping.wait(seconds))

    def _run(self, job: SisImport) -> None:
        if not self._pause(self.upload_seconds):
            return
        self.modelled_seconds += self.upload_seconds
        with self._lock:
            job.started_at = _now()
            job.touch("importing")
        if job.fault == "stuck":
            while not self._released.wait(0.05):
                if self._stopping.is_set():
                    return
            self._released.clear()
        if job.fault == "import_fails":
            self._fail(job, SUPPORT_ERROR.format(number=next(self._error_reports)))
            return
        try:
            upload = read_upload(job.payload, job.extension, job.file_name)
        except zipfile.BadZipFile:
            self._fail(job, SUPPORT_ERROR.format(number=next(self._error_reports)))
            return
        with self._lock:
            for name, message, fails in upload.messages:
                (job.errors if fails else job.warnings).append([name, message])
            if not upload.files and not job.errors:
                job.errors.append([None, "No CSV files were found in the import"])
            job.data_set = {file.kind: file for file in upload.files}
            job.data_size = upload.size
            job.supplied_batches = [kind for kind in KINDS if kind in job.data_set]
            files = self._diffed(job, upload)
        if files is not None and self._apply_files(job, files) and job.options["batch_mode"]:
            self._clean_up_batch(job)
        with self._lock:
            if not job.options["diffing_data_set_identifier"]:
                job.data_set = {}  # only a data set's imports are diffed against later: its rows are not kept
            self._finish(job)

    def _fail(self, job: SisImport, message: str) -> None:
        with self._lock:
            job.errors.append([None, message])
            self._finish(job)

    def _finish(self, job: SisImport) -> None:
        """Canvas's end of a batch: an error that fails the import makes it failed_with_messages,
        any other message imported_with_messages; an aborted import stays aborted."""
        if job.workflow_state != "aborted":
            job.workflow_state = ("failed_with_messages" if job.errors
                                  else "imported_with_messages" if job.warnings else "imported")
        if job.workflow_state in SUCCEEDED:
            job.progress = 100
        job.counts["error_count"], job.counts["warning_count"] = len(job.errors), len(job.warnings)
        job.ended_at = _now()
        job.touch()

    def _diffed(self, job: SisImport, upload: Upload) -> list[CsvFile] | None:
        """The files to apply: the upload's, or only their difference from the previous data set of
        the import's diffing identifier; None when the difference is empty (nothing to apply)."""
        identifier = job.options["diffing_data_set_identifier"]
        if not identifier or job.options["diffing_remaster"] or not upload.files:
            return upload.files
        previous = self._previous_data_set(identifier, job.id)
        if previous is None:
            return upload.files
        threshold = job.options["change_threshold"]
        if threshold is not None and previous.data_size and \
                abs(1 - upload.size / previous.data_size) * 100 > threshold:
            job.diffing_threshold_exceeded = True
            job.warnings.append([None, DIFF_THRESHOLD_EXCEEDED])
            return upload.files
        job.diffing_threshold_exceeded = False
        job.diffed_against = previous.id
        drop = {"enrollment": job.options["diffing_drop_status"] or "deleted",
                "user": job.options["diffing_user_remove_status"] or "deleted"}
        files = []
        for file in upload.files:
            before = previous.data_set.get(file.kind)
            if before is None:
                files.append(file)
                continue
            old = {_row_key(file.kind, row): row for row in before.rows}
            new_keys = {_row_key(file.kind, row) for row in file.rows}
            rows = [row for row in file.rows if old.get(_row_key(file.kind, row)) != row]
            rows += [{**row, "status": drop.get(file.kind, "deleted")} for key, row in old.items()
                     if key not in new_keys]
            if rows:
                files.append(CsvFile(file.name, file.kind, rows))
        return files or None

    def _previous_data_set(self, identifier: str, before: int) -> SisImport | None:
        """Canvas's choice: the latest successful import of the identifier that was diffed or
        remastered, else the first successful one."""
        earlier = [job for number, job in sorted(self._imports.items())
                   if number < before and job.workflow_state in SUCCEEDED
                   and job.options["diffing_data_set_identifier"] == identifier]
        chained = [job for job in earlier
                   if job.diffed_against is not None or job.options["diffing_remaster"]]
        return chained[-1] if chained else (earlier[0] if earlier else None)

    def _apply_files(self, job: SisImport, files: list[CsvFile]) -> bool:
        """Apply the rows in Canvas's file order, one at a time; False when the emulator stops."""
        rows = [(file, row) for kind in KINDS for file in files if file.kind == kind for row in file.rows]
        seen: set[tuple[str, tuple[str, ...]]] = set()
        started = time.monotonic()
        for done, (file, row) in enumerate(rows, 1):
            with self._lock:
                key = (file.kind, _row_key(file.kind, row))
                if file.kind not in UNCHECKED_DUPLICATES and key in seen and key[1][0]:
                    message = f"Duplicate {file.kind} id {key[1][0]}"
                elif file.kind == "user_observer":
                    message = self._apply_user_observer(row, job.id, job.options["skip_deletes"])
                else:
                    seen.add(key)
                    message = getattr(self, f"_apply_{file.kind}")(row, job.id)
                if message:
                    job.warnings.append([file.name, message])
                elif message is None:  # "" is a row skipped silently, neither counted nor warned of
                    job.counts[f"{file.kind}s"] += 1
                    self.rows_applied += 1
                job.progress = min(99, done * 100 // len(rows))
                job.touch()
                self.modelled_seconds += self.seconds_per_row
            ahead = started + done * self.seconds_per_row - time.monotonic()  # the model's time not yet used
            if ahead > PACE_GRANULARITY and not self._pause(ahead):
                return False
        return True

    def _new_id(self) -> int:
        return next(self._ids)

    def _apply_account(self, row: dict[str, str], import_id: int) -> str | None:
        account_id, parent = row.get("account_id", ""), row.get("parent_account_id", "")
        if not account_id:
            return "No account_id given for an account"
        if not row.get("name"):
            return f"No name given for account {account_id}, skipping"
        status = _status(row.get("status", ""), "active|deleted")
        if status is None:
            return f'Improper status "{row.get("status", "")}" for account {account_id}, skipping'
        if parent and (parent == account_id or parent not in self._accounts):
            return f"Parent account didn't exist for {account_id}"
        account = self._accounts.setdefault(account_id, {"id": self._new_id(), "account_id": account_id})
        account.update(parent_account_id=parent, name=row["name"], status=status, sis_import_id=import_id)
        return None

    def _apply_term(self, row: dict[str, str], import_id: int) -> str | None:
        term_id = row.get("term_id", "")
        if not term_id:
            return "No term_id given for a term"
        if not row.get("name"):
            return f"No name given for term {term_id}"
        status = _status(row.get("status", ""), "active|deleted")
        if status is None:
            return f'Improper status "{row.get("status", "")}" for term {term_id}'
        term = self._terms.setdefault(term_id, {"id": self._new_id(), "term_id": term_id})
        term.update(name=row["name"], status=status, start_date=row.get("start_date", ""),
                    end_date=row.get("end_date", ""), sis_import_id=import_id)
        return None

    def _apply_course(self, row: dict[str, str], import_id: int) -> str | None:
        course_id = row.get("course_id", "")
        if not course_id:
            return "No course_id given for a course"
        if not row.get("short_name"):
            return f"No short_name given for course {course_id}"
        if not row.get("long_name"):
            return f"No long_name given for course {course_id}"
        status = _status(row.get("status", ""), "active|deleted|completed|unpublished|published")
        if status is None:
            return f'Improper status "{row.get("status", "")}" for course {course_id}'
        existing = self._courses.get(course_id)
        workflow = {"deleted": "deleted", "completed": "completed", "published": "available",
                    "unpublished": "unpublished"}.get(status)
        if workflow is None:  # active: a published course stays published
            published = existing is not None and existing["workflow_state"] == "available"
            workflow = "available" if published else "unpublished"
        account, term = row.get("account_id", ""), row.get("term_id", "")
        course = self._courses.setdefault(course_id, {"id": self._new_id(), "course_id": course_id})
        course.update(short_name=row["short_name"], long_name=row["long_name"],
                      account_id=account if account in self._accounts else "",
                      term_id=term if term in self._terms else "", status=status, workflow_state=workflow,
                      sis_import_id=import_id)
        return None

    def _apply_section(self, row: dict[str, str], import_id: int) -> str | None:
        section_id, course_id = row.get("section_id", ""), row.get("course_id", "")
        if not section_id:
            return f"No section_id given for a section in course {course_id}"
        if not course_id:
            return f"No course_id given for a section {section_id}"
        raw_status = row.get("status", "")
        status = _status(raw_status, "active|deleted")
        if not row.get("name") and status == "active":
            return f"No name given for section {section_id} in course {course_id}"
        if status is None:
            return f'Improper status "{raw_status}" for section {section_id} in course {course_id}'
        if course_id not in self._courses:
            return f"Section {section_id} references course {course_id} which doesn't exist"
        section = self._sections.setdefault(section_id, {"id": self._new_id(), "section_id": section_id})
        section.update(course_id=course_id, name=row.get("name") or section.get("name", ""), status=status,
                       start_date=row.get("start_date", ""), end_date=row.get("end_date", ""),
                       sis_import_id=import_id)
        return None

    def _apply_user(self, row: dict[str, str], import_id: int) -> str | None:
        user_id, login_id = row.get("user_id", ""), row.get("login_id", "")
        if not user_id:
            return "No user_id given for a user"
        if not login_id:
            return f"No login_id given for user {user_id}"
        if not row.get("status"):
            return f"No status given for user {user_id}"
        status = _status(row["status"], "active|suspended|deleted")
        if status is None:
            return f"Improper status for user {user_id}"
        holder = self._login_holders.get(login_id.lower())
        if holder is not None and holder != user_id:
            return f"user {holder} has already claimed {user_id}'s requested login information, skipping"
        first, last = row.get("first_name", ""), row.get("last_name", "")
        user = self._users.setdefault(user_id, {"id": self._new_id(), "user_id": user_id})
        if user.get("login_id"):
            self._login_holders.pop(user["login_id"].lower(), None)
        self._login_holders[login_id.lower()] = user_id
        user.update(login_id=login_id, first_name=first, last_name=last,
                    full_name=row.get("full_name") or " ".join(filter(None, (first, last))),
                    email=row.get("email", ""), status=status, sis_import_id=import_id)
        if status == "deleted":  # "When a student is 'deleted' all of its enrollments will also be deleted"
            for enrollment in self._enrollments_of.get(user_id, ()):
                enrollment["status"] = "deleted"
        return None

    def _apply_enrollment(self, row: dict[str, str], import_id: int) -> str | None:
        course_id, section_id = row.get("course_id", ""), row.get("section_id", "")
        user_id = row.get("user_id", "")
        course_id, section_id, user_id = sys.intern(course_id), sys.intern(section_id), sys.intern(user_id)
        if not (course_id or section_id):
            return "No course_id or section_id given for an enrollment"
        if not user_id:
            return "No user_id given for an enrollment"
        raw_status = row.get("status", "")
        status = _status(raw_status, "active|deleted|completed|inactive")
        if status is None:
            return f'Improper status "{raw_status}" for an enrollment'
        if user_id not in self._users:
            return (f"User not found for enrollment (User ID: {user_id}, Course ID: {course_id}, "
                    f"Section ID: {section_id})")
        course, section = self._courses.get(course_id), self._sections.get(section_id)
        if course is None and section is None:
            return (f"Neither course nor section existed for user enrollment (Course ID: {course_id}, "
                    f"Section ID: {section_id}, User ID: {user_id})")
        if section_id and section is None:
            return f"An enrollment referenced a non-existent section {section_id}"
        if course_id and course is None:
            return f"An enrollment referenced a non-existent course {course_id}"
        if section is not None and course_id and section["course_id"] != course_id:
            return (f"An enrollment listed a section ({section_id}) and a course ({course_id}) that are "
                    f"unrelated for user ({user_id})")
        raw_role = row.get("role", "")
        role = _status(raw_role, "teacher$|student|ta$|observer$|designer$")  # /\Ateacher\z/i, /\Astudent/i
        if role is None:
            return f'Improper role "{raw_role}" for an enrollment'
        associated = row.get("associated_user_id", "") if role == "observer" else ""
        if associated and associated not in self._users:
            return f"An enrollment referenced a non-existent associated user {associated}"
        course_id = course_id or section["course_id"]
        key = f"{course_id}:{section_id}:{user_id}:{role}" + (f":{associated}" if associated else "")
        created = key not in self._enrollments
        enrollment = self._enrollments[key] if not created else self._add_enrollment(
            key, {"id": self._new_id(), "user_id": user_id})
        before = enrollment.get("status")
        enrollment.update(course_id=course_id, section_id=section_id, user_id=user_id, role=role,
                          associated_user_id=associated, status=status, sis_import_id=import_id)
        if role == "student":
            self._update_linked_enrollments(enrollment, created, before)
        return None

    # -- observers (Canvas's UserObservationLink and an enrollment's linked observer enrollments) --

    def _apply_user_observer(self, row: dict[str, str], import_id: int, skip_deletes: bool) -> str | None:
        """One user_observers.csv row, checked and applied as Canvas's SIS::UserObserverImporter does;
        "" when ``skip_deletes`` skips a deleted row (Canvas returns without counting it)."""
        observer_id, student_id = row.get("observer_id", ""), row.get("student_id", "")
        raw_status = row.get("status", "")
        if not observer_id:
            return "No observer_id given for a user observer"
        if not student_id:
            return "No user_id given for a user observer"
        if student_id == observer_id:
            return f"Can't observe yourself user {student_id}"
        if not re.fullmatch("active|deleted", raw_status, re.IGNORECASE):  # /\A(active|deleted)\z/i
            return f'Improper status "{raw_status}" for a user_observer'
        status = raw_status.lower()
        if skip_deletes and status == "deleted":
            return ""
        observer = self._users.get(observer_id)
        if observer is None or observer["status"] == "deleted":  # pseudonyms.active: not deleted
            return f"An observer referenced a non-existent user {observer_id}"
        student = self._users.get(student_id)
        if student is None or student["status"] == "deleted":
            return f"A student referenced a non-existent user {student_id}"
        key = f"{observer_id}:{student_id}"
        link = self._user_observers.get(key)
        if status == "deleted":
            if link is None:  # Canvas looks the link up whatever its state: deleting it again is no error
                return (f"Can't delete a non-existent observer for observer: {observer_id}, "
                        f"student: {student_id}")
            link.update(workflow_state="deleted", sis_import_id=import_id)
            for enrollment in self._enrollments_of.get(observer_id, ()):  # remove_linked_enrollments
                if enrollment["role"] == "observer" and enrollment["associated_user_id"] == student_id:
                    enrollment["status"] = "deleted"
            return None
        if link is None:
            link = self._user_observers[key] = {"id": self._new_id(), "observer_id": observer_id,
                                                "student_id": student_id}
            self._links_of_student.setdefault(student_id, []).append(link)
        link.update(workflow_state="active", sis_import_id=import_id)
        for enrollment in list(self._enrollments_of.get(student_id, ())):  # create_linked_enrollments
            if enrollment["role"] == "student" and enrollment["status"] in ACTIVE_OR_PENDING:
                self._create_linked_enrollment(enrollment, observer_id)
        return None

    def _add_enrollment(self, key: str, enrollment: dict) -> dict:
        """A new enrollment, kept by its key and under its SIS user."""
        self._enrollments[key] = enrollment
        if enrollment["user_id"]:
            self._enrollments_of.setdefault(enrollment["user_id"], []).append(enrollment)
        return enrollment

    def _linked_key(self, student_enrollment: dict, observer_id: str) -> str:
        e = student_enrollment
        return f"{e['course_id']}:{e['section_id']}:{observer_id}:observer:{e['user_id']}"

    def _create_linked_enrollment(self, student_enrollment: dict, observer_id: str) -> None:
        """Enrollment#create_linked_enrollment_for: the observer's enrollment in the student's course
        and section, its state copied from the student's, unless one that is neither deleted nor
        inactive is already there."""
        linked = self._enrollments.get(self._linked_key(student_enrollment, observer_id))
        if linked is not None and linked["status"] not in ("deleted", "inactive"):
            return
        self._copy_linked(student_enrollment, observer_id, linked)

    def _copy_linked(self, student_enrollment: dict, observer_id: str, linked: dict | None) -> None:
        """Enrollment#update_from: the linked enrollment takes the student enrollment's state; a new one
        has no SIS import (Canvas copies sis_batch_id only onto one that already has one)."""
        if linked is None:
            linked = self._add_enrollment(self._linked_key(student_enrollment, observer_id), {
                "id": self._new_id(), "course_id": student_enrollment["course_id"],
                "section_id": student_enrollment["section_id"], "user_id": observer_id, "role": "observer",
                "associated_user_id": student_enrollment["user_id"], "sis_import_id": None})
        elif linked["sis_import_id"] is not None:
            linked["sis_import_id"] = student_enrollment["sis_import_id"]
        linked["status"] = student_enrollment["status"]

    def _update_linked_enrollments(self, enrollment: dict, created: bool, before: str | None) -> None:
        """A student enrollment's callbacks: ``after_create :create_linked_enrollments`` and
        ``after_save :update_linked_enrollments``, for each observer actively linked to the student."""
        observers = [link["observer_id"] for link in self._links_of_student.get(enrollment["user_id"], ())
                     if link["workflow_state"] == "active"
                     and self._users.get(link["observer_id"], {}).get("status") != "deleted"]
        for observer_id in observers:
            if created:
                self._create_linked_enrollment(enrollment, observer_id)
            linked = self._enrollments.get(self._linked_key(enrollment, observer_id))
            if linked is not None and (linked["status"] != "deleted" or before == "deleted" or created):
                self._copy_linked(enrollment, observer_id, linked)  # active_linked_enrollment_for
            elif before != enrollment["status"] and before in RESTORABLE:
                self._create_linked_enrollment(enrollment, observer_id)

    def _clean_up_batch(self, job: SisImport) -> None:
        """Batch mode's end: delete the batch term's courses, sections and enrollments this import
        did not name (each kind when its file was supplied), unless a kind would lose more than
        ``change_threshold`` percent of its objects in the term: then abort."""
        with self._lock:
            job.touch("cleanup_batch")
            term = job.options["batch_term"]
            in_term = {course_id for course_id, course in self._courses.items() if course["term_id"] == term}
            scopes = {
                "course": [c for c in self._courses.values() if c["course_id"] in in_term],
                "section": [s for s in self._sections.values() if s["course_id"] in in_term],
                # only SIS enrollments: not the observer enrollments an observer link made
                "enrollment": [e for e in self._enrollments.values()
                               if e["course_id"] in in_term and e["sis_import_id"] is not None],
            }
            stale = {}
            for kind in BATCH_KINDS:
                if kind not in job.supplied_batches:
                    continue
                active = [item for item in scopes[kind] if item["status"] != "deleted"]
                stale[kind] = [item for item in active if item["sis_import_id"] != job.id]
                threshold = job.options["change_threshold"]
                if threshold is not None and active and len(stale[kind]) * 100 / len(active) > threshold:
                    job.errors.append([None, f"{len(stale[kind])} {kind}s would be deleted and exceeds the "
                                             f"set threshold of {threshold}%"])
                    job.touch("aborted")
                    return
            for kind in ("enrollment", "section", "course"):
                if kind in stale:
                    for item in stale[kind]:
                        item["status"] = "deleted"
                        if kind == "course":
                            item["workflow_state"] = "deleted"
                    job.counts[f"batch_{kind}s_deleted"] = len(stale[kind])
            job.touch("importing")


def _multipart(body: bytes, boundary: str) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """The form fields and the files (name -> (file name, bytes)) of a multipart/form-data body."""
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    if not boundary:
        return fields, files
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = BytesHeaderParser().parsebytes(head + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        if not name:
            continue
        file_name = headers.get_filename()
        if file_name is None:
            fields[str(name)] = content.decode("utf-8", "replace")
        else:
            files[str(name)] = (file_name, content)
    return fields, files


def _page(records: list, query: dict[str, str], url: str,
          counted: bool = True) -> tuple[list, dict[str, str]]:
    """One page of ``records`` and its ``Link`` header, as Canvas pages lists (``page``,
    ``per_page`` ≤ 100); ``counted`` False leaves out ``last``, as for lists Canvas does not count."""
    try:
        per_page = int(query.get("per_page") or DEFAULT_PER_PAGE)
        page = max(1, int(query.get("page") or 1))
    except ValueError:
        per_page, page = DEFAULT_PER_PAGE, 1
    per_page = min(MAX_PER_PAGE, per_page if per_page > 0 else DEFAULT_PER_PAGE)
    last = max(1, math.ceil(len(records) / per_page))
    kept = {key: value for key, value in query.items() if key not in ("page", "per_page", "access_token")}

    def link(number: int, rel: str) -> str:
        return f'<{url}?{urlencode({**kept, "page": number, "per_page": per_page})}>; rel="{rel}"'

    links = [link(page, "current")]
    if page < last:
        links.append(link(page + 1, "next"))
    if page > 1:
        links.append(link(page - 1, "prev"))
    links.append(link(1, "first"))
    if counted:
        links.append(link(last, "last"))
    start = (page - 1) * per_page
    return records[start:start + per_page], {"Link": ",".join(links)}


class _Handler(LoopbackHandler):
    server_version = "CanvasEmulator/1.0"
    emulator: CanvasEmulator

    def serve(self, method: str) -> None:
        started = time.monotonic()
        path, query, body = self.read_request()
        reply = self._respond(method, path, query, body)
        self.record(method, path, query, body, reply, started)
        self.answer(reply)

    def _respond(self, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
        emulator = self.emulator
        metered: dict[str, str] = {}
        try:
            token = emulator._authenticate(self.headers, query)
            metered = emulator._meter(token)
            emulator._request_fault(method, path)
            status, payload, extra = emulator.handle(method, path, query, body, self.headers,
                                                     f"{emulator.base_url}{path}")
            return Reply.json(status, _encode(payload), {**metered, **extra})
        except CanvasError as error:
            return Reply(error.reply.status, {**metered, **error.reply.headers}, error.reply.body)


CanvasEmulator.handler_class = _Handler  # defined after the emulator it serves
