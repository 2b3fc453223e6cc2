"""Schoology's REST v1 payloads: what each LmsItem becomes on the wire and what Schoology's answers become.

Pure functions, one job: the JSON object each :mod:`include.lms.target` item is sent as (buildings and
grading periods one per call, users, courses, sections, enrollments and parent links in bulk calls of
at most :data:`BATCH`), and how Schoology's answers are read back: a 207 entry per object becomes an
:class:`~include.lms.target.ItemResult`, a list's records the LMS ids by external key or a catalog
(LMS id -> title). No HTTP, no Airflow: the protocol (OAuth signing, pacing, retries, paging,
pipelining) is :class:`plugins.hooks.schoology.SchoologyHook`, which calls these.

A second LMS copies the shape: ``include/lms/<lms>.py`` for its payloads, ``plugins/hooks/<lms>.py``
for its protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from include.lms.target import (
    Building,
    Course,
    Enrollment,
    GradingPeriod,
    GuardianLink,
    ItemResult,
    Section,
    User,
)

BATCH = 50  # Schoology's bulk endpoints take at most 50 objects
# the fields of a bulk call's objects that name a person: masked in a whole-call error's message
PERSON_FIELDS = ("school_uid", "username", "primary_email", "name_first", "name_last", "name_first_preferred",
                 "student_school_uid", "parent_school_uid")


def batches(items: Sequence) -> list[list]:
    """``items`` in bulk calls' worth: consecutive lists of at most :data:`BATCH`, in order."""
    return [list(items[start:start + BATCH]) for start in range(0, len(items), BATCH)]


def people_in(payloads: Iterable[dict]) -> list[Any]:
    """The values of a bulk call's objects that name a person (:data:`PERSON_FIELDS`), to mask."""
    return [payload.get(field) for payload in payloads for field in PERSON_FIELDS]


# -- what each item becomes ---------------------------------------------------------------

def building_body(building: Building) -> dict:
    return {"title": building.title, "building_code": building.building_code}


def grading_period_body(period: GradingPeriod) -> dict:
    return {"title": period.title, "start": period.start.isoformat(), "end": period.end.isoformat()}


# A user's optional fields: sent only when IC has a value. Schoology's bulk update matched by school_uid
# (``update_existing=1``) keeps a field the object leaves out; an empty string may clear what a school set
# in Schoology (an email, a username, a preferred name).
OPTIONAL_USER_FIELDS = (("name_first_preferred", "preferred_first_name"), ("primary_email", "email"),
                        ("username", "username"))


def user_payload(user: User) -> dict:
    payload = {
        "school_uid": user.key,
        "name_first": user.given_name,
        "name_last": user.family_name,
        "role_id": user.role_id,
        "building_id": user.building_id,
        "additional_buildings": ",".join(user.additional_building_ids),
        "synced": 1,
    }
    for wire_field, field in OPTIONAL_USER_FIELDS:
        if value := getattr(user, field):
            payload[wire_field] = value
    return payload


def reactivation_payload(uids: Sequence[str]) -> dict:
    """``PUT users/reactivate``'s body: the inactive users by Schoology uid, placed back into the
    courses and groups they had (``option_reenroll``), as Schoology documents it."""
    return {"user": [{"uid": str(uid), "option_reenroll": "1"} for uid in uids]}


def course_payload(course: Course) -> dict:
    return {"title": course.title, "course_code": course.key, "building_id": course.building_id, "synced": 1}


def section_payload(section: Section) -> dict:
    """A section keyed by its external key alone. Schoology documents two rules that disagree when
    both codes are sent: ``update_existing`` matches on ``section_code`` + ``grading_periods``, and
    with both codes given ``section_code`` is ignored for ``section_school_code``. So both carry the
    key (the IC class's sourcedId, unique in the school): whichever rule Schoology applies, it finds
    this class's section and no other. IC's class code (``Section.section_code``) is not sent as
    ``section_code``: two IC classes may share it in one course and term, and would be merged."""
    return {
        "title": section.title,
        "section_code": section.key,
        "section_school_code": section.key,
        "grading_periods": [int(period) for period in section.grading_period_ids],
        "synced": 1,
    }


def enrollment_payload(enrollment: Enrollment, *, drop: bool = False) -> dict:
    """An enrollment import's object; ``drop`` removes the enrollment instead."""
    payload = {"course_code": enrollment.course_key, "section_school_code": enrollment.section_key,
               "school_uid": enrollment.user_key, "admin": int(enrollment.admin)}
    if drop:
        payload["delete"] = 1
    return payload


def guardian_link_payload(link: GuardianLink, *, drop: bool = False) -> dict:
    """A parent association import's object; ``drop`` removes the link instead."""
    payload = {"student_school_uid": link.student_key, "parent_school_uid": link.guardian_key}
    if drop:
        payload["delete"] = 1
    return payload


# -- what Schoology's answers become ----------------------------------------------------------

def bulk_entries(answer: Any, path: Sequence[str]) -> Any:
    """The entries of a bulk call's answer, found by following ``path`` (the keys the objects
    were sent under); ``None`` where a step is missing. The caller checks there is one per object."""
    entries = answer
    for step in path:
        entries = (entries or {}).get(step)
    return entries


def entry_id(entry: dict) -> str | None:
    """The LMS id of a bulk entry: its ``id``, else the last segment of its ``location``."""
    if entry.get("id") not in (None, ""):
        return str(entry["id"])
    location = entry.get("location")
    return str(location).rstrip("/").rsplit("/", 1)[-1] if location else None


def guardian_link_id(entry: dict) -> str:
    """The id a parent association's entry stands for: ``<parent uid>:<student uid>``."""
    return f"{entry.get('parent_uid')}:{entry.get('student_uid')}"


def created_id(answer: dict) -> str:
    """The LMS id in the answer to a single-object create (a building, a grading period)."""
    return str(answer.get("id"))


def result_of_entry(key: str, entry: dict, lms_id: str | None, *, gone_is_ok: bool = False) -> ItemResult:
    """A bulk entry as the result for the item ``key``: ok with ``lms_id`` on 200/201 (and, with
    ``gone_is_ok``, on 404: a removal of what is already gone); else Schoology's message."""
    code = int(entry.get("response_code") or 0)
    if code in (200, 201):
        return ItemResult(key=key, ok=True, lms_id=lms_id)
    if gone_is_ok and code == 404:
        return ItemResult(key=key, ok=True)
    return ItemResult(key=key, ok=False, error=str(entry.get("message") or f"response_code {code}"))


def created_result(key: str, entry: dict) -> ItemResult:
    """A user's, course's or section's bulk entry (created or updated) as its result."""
    return result_of_entry(key, entry, entry_id(entry))


def enrollment_result(enrollment: Enrollment, entry: dict, *, drop: bool = False) -> ItemResult:
    return result_of_entry(enrollment.key, entry, None if drop else entry_id(entry), gone_is_ok=drop)


def guardian_link_result(link: GuardianLink, entry: dict, *, drop: bool = False) -> ItemResult:
    return result_of_entry(link.key, entry, None if drop else guardian_link_id(entry), gone_is_ok=drop)


def ids_by(records: Iterable[dict], external_field: str, id_field: str = "id") -> dict[str, str]:
    """A list's records as LMS id by the external key each must carry (title, course_code,
    school_uid, section_school_code)."""
    return {record[external_field]: str(record[id_field]) for record in records}


def buildings_by_code(records: Iterable[dict]) -> dict[str | None, str]:
    """A building list's records as LMS id by building_code (a building without one under ``None``)."""
    return {record.get("building_code"): str(record["id"]) for record in records}


def role_records(answer: dict) -> list[dict]:
    """The roles of a ``roles`` answer: the school's and the building roles."""
    return (answer.get("role") or []) + (answer.get("building_role") or [])


def catalog_of(records: Iterable[dict]) -> dict[str, str]:
    """A list's records as a catalog: LMS id -> title."""
    return {str(record["id"]): str(record["title"]) for record in records}
