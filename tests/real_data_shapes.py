"""Shapes real districts' OneRoster data has that the synthetic district does not serve by default
(issue 17, "What else real data held"): each ``shape`` changes what ``district.records`` serves, on
that district object only (the generator's default output, which other tests count on, is left as
it is). Both the IC emulator and ``tests/expected_provisioning.py`` read the changed records.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tests.support import ServedRecords

DISTRICT_ORG = "1"  # the synthetic district's own org (generator: orgs[0])


class Reshaped(ServedRecords):
    """A collection with each record passed through ``change`` (on a fresh copy; returning None
    keeps it as changed in place) and ``extra`` records served after the rest."""

    def __init__(self, records: Sequence[dict], change: Callable[[dict], None], extra: list[dict]):
        self._records = records
        self._change = change
        self._extra = extra

    def __len__(self) -> int:
        return len(self._records) + len(self._extra)

    def _record(self, index: int) -> dict:
        if index >= len(self._records):
            return copy.deepcopy(self._extra[index - len(self._records)])
        record = copy.deepcopy(self._records[index])
        self._change(record)
        return record


def reshape(district, collection: str, change: Callable[[dict], None] = lambda record: None,
            extra: Callable[[Sequence[dict]], list[dict]] | None = None) -> None:
    """Serve ``collection`` of this district changed (in every version: ``change`` and ``extra``
    are given the records of the version asked for)."""
    served = district.records

    def records(name: str, version: str = "1.2", href_base: str = ""):
        records = served(name, version, href_base)
        if name != collection:
            return records
        return Reshaped(records, change, extra(records) if extra else [])

    district.records = records


def _ref(value) -> str | None:
    return value.get("sourcedId") if isinstance(value, dict) else None


# -- the shapes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistrictCourse:
    course: str  # the course now owned by the district org
    schools: tuple[str, ...]  # the schools whose classes use it


def district_owned_course(district) -> DistrictCourse:
    """School 100's first course is owned by the district org, and school 101's classes of the same
    subject use it too (school 101's own course of that subject is then left without classes)."""
    courses = list(district.records("courses"))
    course, other = courses[0]["sourcedId"], next(
        c["sourcedId"] for c in courses if _ref(c["org"]) == "101" and c["subjects"] == courses[0]["subjects"])

    def owned(record: dict) -> None:
        if record["sourcedId"] == course:
            record["org"] = {**record["org"], "sourcedId": DISTRICT_ORG}

    def taught(record: dict) -> None:
        if _ref(record.get("course")) == other:
            record["course"] = {**record["course"], "sourcedId": course}

    reshape(district, "courses", owned)
    reshape(district, "classes", taught)
    return DistrictCourse(course, ("100", "101"))


def district_course_without_classes(district) -> str:
    """A course of the district org that no class uses."""
    def extra(records):
        record = copy.deepcopy(records[0])
        record.update(sourcedId="59999", title="District Seminar", courseCode="D-01")
        record["org"] = {**record["org"], "sourcedId": DISTRICT_ORG}
        return [record]

    reshape(district, "courses", extra=extra)
    return "59999"


def school_without_identifier(district, school: str = "101") -> None:
    """The school's ``identifier`` is served empty."""
    def blank(record: dict) -> None:
        if record["sourcedId"] == school:
            record["identifier"] = ""

    reshape(district, "orgs", blank)


def _enrollment_of(records: Sequence[dict], role: str, school: str = "100") -> dict:
    return next(r for r in records if r["role"] == role and _ref(r["school"]) == school and r["status"] == "active")


def staff_enrollments(district, roles=("aide", "proctor")) -> dict[str, tuple[str, str]]:
    """One more enrollment per role: a teacher of school 100 in a class of that school they do not
    teach. Returns enrollment sourcedId -> (class, user sourcedId)."""
    records = list(district.records("enrollments"))
    trial = {c["sourcedId"] for c in district.records("classes") if (c.get("metadata") or {}).get("ic.trialSchedule")}
    records = [r for r in records if _ref(r["class"]) not in trial]
    taught = {(_ref(r["user"]), _ref(r["class"])) for r in records}
    teachers = [r for r in records if r["role"] == "teacher" and _ref(r["school"]) == "100"]
    classes = sorted({_ref(r["class"]) for r in teachers})
    added: dict[str, tuple[str, str]] = {}
    for number, role in enumerate(roles):
        teacher = _ref(teachers[number]["user"])
        klass = next(c for c in classes if (teacher, c) not in taught and c not in {k for k, _ in added.values()})
        added[str(29_000_000 + number)] = (klass, teacher)

    def extra(served):
        made = []
        for (sourced_id, (klass, user)), role in zip(added.items(), roles, strict=True):
            record = copy.deepcopy(_enrollment_of(served, "teacher"))
            record.update(sourcedId=sourced_id, role=role,
                          primary=False if isinstance(record["primary"], bool) else "false")
            record["class"] = {**record["class"], "sourcedId": klass}
            record["user"] = {**record["user"], "sourcedId": user}
            made.append(record)
        return made

    reshape(district, "enrollments", extra=extra)
    return added


def duplicate_enrollment(district) -> tuple[str, str]:
    """An active student enrollment served twice, the second with another (higher) sourcedId.
    Returns (the original's sourcedId, the duplicate's)."""
    original = _enrollment_of(list(district.records("enrollments")), "student")["sourcedId"]

    def extra(served):
        record = copy.deepcopy(next(r for r in served if r["sourcedId"] == original))
        record["sourcedId"] = "29999999"
        return [record]

    reshape(district, "enrollments", extra=extra)
    return original, "29999999"


def dated_enrollments(district, dates: dict[str, tuple[str | None, str | None]]) -> None:
    """Enrollments (by sourcedId) served with these (beginDate, endDate); None keeps the date."""
    def change(record: dict) -> None:
        begin, end = dates.get(record["sourcedId"], (None, None))
        if begin:
            record["beginDate"] = begin
        if end:
            record["endDate"] = end

    reshape(district, "enrollments", change)


def padded_username(district) -> tuple[str, str]:
    """An active student's username served with a space before and after it. Returns (sourcedId,
    the username as it was)."""
    student = next(u for u in district.records("users") if u["roles"][0]["role"] == "student"
                   and u["status"] == "active" and " " not in u["username"])

    def change(record: dict) -> None:
        if record["sourcedId"] == student["sourcedId"]:
            record["username"] = f" {record['username']} "

    reshape(district, "users", change)
    return student["sourcedId"], student["username"]
