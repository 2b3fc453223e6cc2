"""A seeded synthetic school district, served as OneRoster 1.1 and 1.2 records.

Every record is computed from its index in closed form, so a 1,000,000-student district
(about 1.3 M users and 8 M enrollments) costs no memory until a page of it is served,
and the same spec always yields the same records. The district has IC's habits and the
awkward cases real districts have:

- only the active school year's sessions (a school year, two semesters, four grading
  periods), and classes of that year only;
- 1.1 user ids carry a role prefix (``s`` student, ``t`` teacher, ``a`` administrator,
  ``p`` guardian); 1.2 ids do not and keep the 1.1 id in ``metadata["ic.legacysourceId"]``;
  1.2 spells booleans as "true"/"false";
- usernames with spaces, unicode names, preferred first names (1.2 only), guardians
  linked both ways through ``agents``, students and teachers in two schools,
  ``tobedeleted`` users and enrollments, year-long classes in two terms, cross-listed
  sections (``metadata["ic.crossListGroup"]``) and a trial-schedule course and section
  per school (``metadata["ic.trialSchedule"] = "true"``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np

from include.oneroster.models import COLLECTIONS

CLASS_SIZE = 25
PERIODS = 8  # every student takes one section per period
SEMESTER_PERIODS = {6: 1, 7: 2}  # periods 0-5 are year-long (both semesters)
CLASSES_PER_TEACHER = 6
ADMINS_PER_SCHOOL = 2
SUBJECTS = ("English", "Mathematics", "Science", "Social Studies", "World Language", "Physical Education",
            "Art", "Music")
GIVEN_NAMES = ("Olivia", "Liam", "José", "Zoë", "Chloé", "Łukasz", "Søren", "Aarav", "Mei", "Ngọc", "Fatima",
               "Mateo", "Amara", "Björn", "Siobhán", "Noah", "Emma", "Yusuf", "Inès", "Kai", "Anaïs", "Dmitri",
               "Priya", "Jalen")
FAMILY_NAMES = ("Smith", "García", "Nguyễn", "O'Brien", "Müller", "Kowalski", "Johnson", "Øvergård", "Martínez",
                "Chen", "Okafor", "Lefèvre", "Brown", "Van der Berg", "Haddad", "Kim", "Papadopoulos", "Núñez",
                "Williams", "Dubois", "Mbeki", "Schröder", "Lopez-Ruiz", "Patel")
PREFERRED_NAMES = ("Sam", "Alex", "Jo", "Max", "Lou", "Nico", "Bea")
TIMESTAMP = "%Y-%m-%dT%H:%M:%S.000Z"
MODIFIED_SPREAD = timedelta(days=40)  # base dateLastModified values fall in [year start, + spread)

_MASK = (1 << 64) - 1
_TAGS = {name: index + 1 for index, name in enumerate((*COLLECTIONS, "given", "family", "preferred", "drop"))}


def _mix_many(seed: int, tag: str, indexes: np.ndarray) -> np.ndarray:
    """:func:`_mix` over an array of indexes (uint64 arithmetic wraps as ``& _MASK`` does)."""
    with np.errstate(over="ignore"):
        value = np.uint64((seed * 0x9E3779B97F4A7C15 + _TAGS[tag] * 0xD1B54A32D192ED03) & _MASK) + indexes.astype(
            np.uint64) * np.uint64(0xBF58476D1CE4E5B9)
        value = (value ^ (value >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        value = (value ^ (value >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return value ^ (value >> np.uint64(31))


def _mix(seed: int, tag: str, index: int) -> int:
    """A 64-bit splitmix hash: deterministic across processes and Python versions."""
    value = (seed * 0x9E3779B97F4A7C15 + _TAGS[tag] * 0xD1B54A32D192ED03 + index * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


@dataclass(frozen=True)
class DistrictSpec:
    seed: int
    students: int
    school_year: int  # the ending year, e.g. 2027 for 2026-27
    schools: int | None = None  # default: one school per 1,000 students, at least 3
    # IC's habit in most districts: every school has its own semesters and quarters, titled alike
    # ("Semester 1 2026-27", "Q1"...); False: one set of terms for the whole district
    terms_per_school: bool = False
    # Prefixes every sourcedId, identifier, username and email, so that two synthetic districts can
    # share one LMS as two real ones do (their ids otherwise depend on the indexes only, not the seed)
    namespace: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z]{0,8}", self.namespace):
            raise ValueError("a namespace is up to 8 lowercase letters")
        if self.students < 1:
            raise ValueError("a district needs at least one student")
        if self.school_count < 1 or self.school_count > self.students:
            raise ValueError("a district needs between 1 and `students` schools")

    @property
    def school_count(self) -> int:
        return self.schools if self.schools is not None else max(3, self.students // 1000)


@dataclass(frozen=True)
class _School:
    """Where one school's records start in each collection (prefix sums over schools)."""

    index: int
    students: tuple[int, int]  # [first, end) student numbers
    sections: int  # sections per period
    classes: int  # PERIODS * sections + 1 trial class
    first_class: int
    teachers: int
    first_teacher: int
    first_enrollment: int

    @property
    def student_count(self) -> int:
        return self.students[1] - self.students[0]

    @property
    def enrollments(self) -> int:
        return self.classes + PERIODS * self.student_count


class _Records(Sequence):
    """The records of one collection, computed on access; slicing serves a page."""

    def __init__(self, district: SyntheticDistrict, collection: str, version: str, href_base: str):
        self._make = getattr(district, f"_{collection}")
        self._collection = collection
        self._edited = district._modified[collection]
        self._count = district.expected_counts(version)[collection]
        self._version = version
        self._href_base = href_base

    def __len__(self) -> int:
        return self._count

    def _record(self, index: int) -> dict:
        record = self._make(index, self._version, self._href_base)
        if index in self._edited:
            _edit(self._collection, record)
        return record

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._record(i) for i in range(*index.indices(self._count))]
        if index < 0:
            index += self._count
        if not 0 <= index < self._count:
            raise IndexError(index)
        return self._record(index)


def _edit(collection: str, record: dict) -> None:
    """What an edit in IC looks like: a new surname, a renamed course or class, a dropped enrollment."""
    if collection == "users":
        record["familyName"] += "-Lee"
    elif collection == "orgs":
        record["name"] += " (renamed)"
    elif collection in ("academicSessions", "courses", "classes"):
        record["title"] += " (revised)"
    else:
        record["status"] = "tobedeleted"


@dataclass
class SyntheticDistrict:
    spec: DistrictSpec
    _modified: dict[str, dict[int, str]] = field(default_factory=lambda: {name: {} for name in COLLECTIONS})
    revision: int = 0  # bumped by every modify(), so a server's cached pages know they are stale

    def __post_init__(self) -> None:
        spec = self.spec
        year = spec.school_year
        self.year_start = date(year - 1, 8, 15)
        self.year_end = date(year, 6, 5)
        self._base_modified = datetime(year - 1, 7, 1, tzinfo=timezone.utc)
        self.sessions = self._session_table(f"{spec.namespace}{year}", year,
                                            spec.school_count if spec.terms_per_school else 0)
        schools: list[_School] = []
        first_class = first_teacher = first_enrollment = 0
        count = spec.school_count
        for index in range(count):
            first, end = index * spec.students // count, (index + 1) * spec.students // count
            sections = -(-(end - first) // CLASS_SIZE)
            classes = PERIODS * sections + 1
            # the trial class is taught by a teacher of the previous school (a teacher in two schools)
            teachers = -(-(PERIODS * sections) // CLASSES_PER_TEACHER)
            school = _School(index, (first, end), sections, classes, first_class, teachers, first_teacher,
                             first_enrollment)
            schools.append(school)
            first_class += classes
            first_teacher += teachers
            first_enrollment += school.enrollments
        self.schools = schools
        self._class_starts = [school.first_class for school in schools]
        self._teacher_starts = [school.first_teacher for school in schools]
        self._enrollment_starts = [school.first_enrollment for school in schools]
        self._student_ends = [school.students[1] for school in schools]
        self.teacher_count = first_teacher
        self.class_count = first_class
        self.enrollment_count = first_enrollment
        self.admin_count = ADMINS_PER_SCHOOL * count
        self.guardian_count = spec.students // 4
        self.user_count = spec.students + self.teacher_count + self.admin_count + self.guardian_count

    # -- public surface -------------------------------------------------------------

    def expected_counts(self, version: str = "1.2") -> dict[str, int]:
        """Records per collection; the same in 1.1 and 1.2 (only their shapes differ)."""
        return {
            "orgs": 1 + len(self.schools),
            "academicSessions": len(self.sessions),
            "users": self.user_count,
            "courses": (len(SUBJECTS) + 1) * len(self.schools),
            "classes": self.class_count,
            "enrollments": self.enrollment_count,
        }

    def records(self, collection: str, version: str = "1.2", href_base: str = "") -> Sequence[dict]:
        """The collection as served by IC in ``version``; ``href_base`` prefixes GUIDRef hrefs."""
        if collection not in COLLECTIONS:
            raise KeyError(collection)
        if version not in ("1.1", "1.2"):
            raise ValueError(f"unknown OneRoster version {version!r}")
        return _Records(self, collection, version, href_base)

    def modified_indexes(self, collection: str) -> dict[int, str]:
        """Indexes changed by :meth:`modify`, with their new dateLastModified."""
        return dict(self._modified[collection])

    def changed_since(self, collection: str, value: str, inclusive: bool = False) -> list[int]:
        """Indexes whose dateLastModified is after ``value`` (or equal, if ``inclusive``), in order,
        found without building the records: what IC's index on dateLastModified gives it."""
        since = datetime.strptime(value[:19], TIMESTAMP[:17]).replace(tzinfo=timezone.utc)
        threshold = (since - self._base_modified).total_seconds()
        total = self.expected_counts()[collection]
        offsets = _mix_many(self.spec.seed, collection, np.arange(total, dtype=np.uint64)) % np.uint64(
            int(MODIFIED_SPREAD.total_seconds()))
        offsets = offsets.astype(np.float64)
        after = offsets >= threshold if inclusive else offsets > threshold
        edited = self._modified[collection]
        if edited:
            after[list(edited)] = False
        changed = {index for index, stamp in edited.items() if (stamp >= value if inclusive else stamp > value)}
        return sorted(changed.union(np.flatnonzero(after).tolist()))

    @property
    def last_base_modified(self) -> str:
        """No record is older than this unless :meth:`modify` touched it (for delta filters)."""
        return (self._base_modified + MODIFIED_SPREAD).strftime(TIMESTAMP)

    def modify(self, collection: str, count: int, at: datetime) -> list[str]:
        """Edit ``count`` records (spread evenly) at ``at``, see :func:`_edit`; return their 1.2 sourcedIds."""
        total = self.expected_counts()[collection]
        count = min(count, total)
        return self.edit(collection, sorted({i * total // count for i in range(count)}) if count else [], at)

    def edit(self, collection: str, indexes: list[int], at: datetime) -> list[str]:
        """Edit the records at ``indexes`` at ``at``, see :func:`_edit`; return their 1.2 sourcedIds."""
        stamp = at.astimezone(timezone.utc).strftime(TIMESTAMP)
        for index in indexes:
            self._modified[collection][index] = stamp
        self.revision += 1
        records = self.records(collection)
        return [records[index]["sourcedId"] for index in indexes]

    # -- shared pieces ----------------------------------------------------------------

    def _stamp(self, collection: str, index: int) -> str:
        changed = self._modified[collection].get(index)
        if changed:
            return changed
        offset = _mix(self.spec.seed, collection, index) % int(MODIFIED_SPREAD.total_seconds())
        return (self._base_modified + timedelta(seconds=offset)).strftime(TIMESTAMP)

    @staticmethod
    def _ref(href_base: str, collection: str, kind: str, sourced_id: str) -> dict:
        return {"href": f"{href_base}/{collection}/{sourced_id}", "sourcedId": sourced_id, "type": kind}

    def _school_of_student(self, student: int) -> _School:
        return self.schools[bisect.bisect_right(self._student_ends, student)]

    def _org_id(self, school: int) -> str:
        return f"{self.spec.namespace}{100 + school}"

    def _session_table(self, ids: str, year: int, schools: int) -> list[dict]:
        """IC exposes only the active school year: the year, two semesters, four grading periods,
        for the district (``schools`` 0) or for each of ``schools`` schools, titled alike; their
        sourcedIds start with ``ids``."""
        first, second = year - 1, year

        def terms(prefix: str) -> list[dict]:
            def row(number, title, kind, start, end, parent=0):
                return {"id": f"{prefix}{number:02d}", "title": title, "type": kind, "start": start, "end": end,
                        "parent": f"{prefix}{parent:02d}" if parent else f"{ids}00"}

            return [
                row(1, f"Semester 1 {first}-{second % 100:02d}", "semester", date(first, 8, 15), date(first, 12, 20)),
                row(2, f"Semester 2 {first}-{second % 100:02d}", "semester", date(second, 1, 5), date(second, 6, 5)),
                row(11, "Q1", "gradingPeriod", date(first, 8, 15), date(first, 10, 17), 1),
                row(12, "Q2", "gradingPeriod", date(first, 10, 20), date(first, 12, 20), 1),
                row(13, "Q3", "gradingPeriod", date(second, 1, 5), date(second, 3, 13), 2),
                row(14, "Q4", "gradingPeriod", date(second, 3, 16), date(second, 6, 5), 2),
            ]

        school_year = {"id": f"{ids}00", "title": f"{first}-{second % 100:02d}", "type": "schoolYear",
                       "start": date(first, 8, 15), "end": date(second, 6, 5), "parent": None}
        if not schools:
            return [school_year, *terms(ids)]
        return [school_year, *(row for school in range(schools) for row in terms(f"{ids}{school + 1:02d}"))]

    def _term_rows(self, period: int, school: int) -> list[dict]:
        """The semesters a class of ``period`` in ``school`` is scheduled in."""
        first = 1 + (6 * school if self.spec.terms_per_school else 0)
        semester = SEMESTER_PERIODS.get(period)
        return ([self.sessions[first + semester - 1]] if semester
                else [self.sessions[first], self.sessions[first + 1]])

    # -- orgs and sessions ----------------------------------------------------------

    def _orgs(self, index: int, version: str, href_base: str) -> dict:
        district_id = f"{self.spec.namespace}1"
        if index == 0:
            record = {"name": f"Synthetic Unified School District {self.spec.seed}", "type": "district",
                      "identifier": f"{self.spec.namespace}D{self.spec.seed}", "sourcedId": district_id,
                      "children": [self._ref(href_base, "orgs", "org", self._org_id(s.index)) for s in self.schools]
                      if len(self.schools) <= 50 else []}
        else:
            school = index - 1
            level = ("Elementary", "Middle", "High")[school % 3]
            record = {"name": f"{FAMILY_NAMES[school % len(FAMILY_NAMES)]} {level} School {school + 1}",
                      "type": "school", "identifier": f"{self.spec.namespace}{1000 + school}", "sourcedId": self._org_id(school),
                      "parent": self._ref(href_base, "orgs", "org", district_id)}
        return {"sourcedId": record.pop("sourcedId"), "status": "active",
                "dateLastModified": self._stamp("orgs", index), **record}

    def _academicSessions(self, index: int, version: str, href_base: str) -> dict:
        session = self.sessions[index]
        record = {
            "sourcedId": session["id"],
            "status": "active",
            "dateLastModified": self._stamp("academicSessions", index),
            "title": session["title"],
            "type": session["type"],
            "startDate": session["start"].isoformat(),
            "endDate": session["end"].isoformat(),
            "schoolYear": str(self.spec.school_year),
        }
        if session["parent"]:
            record["parent"] = self._ref(href_base, "academicSessions", "academicSession", session["parent"])
        children = [row["id"] for row in self.sessions if row["parent"] == session["id"]]
        if children:
            record["children"] = [self._ref(href_base, "academicSessions", "academicSession", child)
                                  for child in children]
        return record

    # -- users ------------------------------------------------------------------------

    def _person(self, kind: str, number: int) -> tuple[str, str]:
        """(1.2 sourcedId, 1.1 sourcedId) of a person: IC prefixes 1.1 ids by role."""
        base = {"s": 1_000_000, "t": 3_000_000, "a": 4_000_000, "p": 5_000_000}[kind]
        person = f"{self.spec.namespace}{base + number}"
        return person, f"{kind}{person}"

    def _user_id(self, kind: str, number: int, version: str) -> str:
        modern, legacy = self._person(kind, number)
        return legacy if version == "1.1" else modern

    def _names(self, kind: str, number: int) -> tuple[str, str]:
        person = number * 4 + "stap".index(kind)
        seed = self.spec.seed
        return (GIVEN_NAMES[_mix(seed, "given", person) % len(GIVEN_NAMES)],
                FAMILY_NAMES[_mix(seed, "family", person) % len(FAMILY_NAMES)])

    def _users(self, index: int, version: str, href_base: str) -> dict:
        students, teachers, admins = self.spec.students, self.teacher_count, self.admin_count
        if index < students:
            return self._student(index, version, href_base)
        index -= students
        if index < teachers:
            return self._teacher(index, version, href_base)
        index -= teachers
        if index < admins:
            return self._admin(index, version, href_base)
        return self._guardian(index - admins, version, href_base)

    def _user_record(self, kind: str, number: int, version: str, href_base: str, *, role: str, roles_v12: list,
                     orgs: list[str], username: str | None, email: str | None, status: str,
                     agents: list[str], grades: list[str], identifier: str, preferred: str | None,
                     user_index: int) -> dict:
        modern, legacy = self._person(kind, number)
        given, family = self._names(kind, number)
        record: dict[str, Any] = {
            "sourcedId": legacy if version == "1.1" else modern,
            "status": status,
            "dateLastModified": self._stamp("users", user_index),
            "username": username or "",
            "enabledUser": status == "active" if version == "1.1" else ("true" if status == "active" else "false"),
            "givenName": given,
            "familyName": family,
            "middleName": "",
            "identifier": identifier,
            "email": email or "",
            "agents": [self._ref(href_base, "users", "user", agent) for agent in agents],
            "grades": grades,
        }
        if version == "1.1":
            record["role"] = role
            record["orgs"] = [self._ref(href_base, "orgs", "org", org) for org in orgs]
        else:
            record["metadata"] = {"ic.legacysourceId": legacy}
            record["roles"] = [
                {"roleType": "primary" if position == 0 else "secondary", "role": role_v12,
                 "org": self._ref(href_base, "orgs", "org", org)}
                for position, (role_v12, org) in enumerate(zip(roles_v12, orgs))
            ]
            record["primaryOrg"] = self._ref(href_base, "orgs", "org", orgs[0])
            if preferred:
                record["preferredFirstName"] = preferred
        return record

    def _student(self, student: int, version: str, href_base: str) -> dict:
        school = self._school_of_student(student)
        orgs = [self._org_id(school.index)]
        if student == school.students[0] and len(self.schools) > 1:  # attends a second school too
            orgs.append(self._org_id((school.index + 1) % len(self.schools)))
        given, family = self._names("s", student)
        username = f"{given} {family}".lower() if student % 97 == 13 else f"{self.spec.namespace}stu{1_000_000 + student}"
        agents = [self._user_id("p", student // 4, version)] if student % 4 < 2 and student // 4 < self.guardian_count else []
        preferred = None
        if student % 13 == 5:
            preferred = PREFERRED_NAMES[_mix(self.spec.seed, "preferred", student) % len(PREFERRED_NAMES)]
        grade = f"{9 + (student % 4):02d}"
        return self._user_record(
            "s", student, version, href_base, role="student", roles_v12=["student"] * len(orgs), orgs=orgs,
            username=username, email=f"{self.spec.namespace}stu{1_000_000 + student}@students.example.org",
            status="tobedeleted" if student % 53 == 52 else "active", agents=agents, grades=[grade],
            identifier=f"{self.spec.namespace}{1_000_000 + student}", preferred=preferred, user_index=student,
        )

    def _teacher(self, teacher: int, version: str, href_base: str) -> dict:
        school = self.schools[bisect.bisect_right(self._teacher_starts, teacher) - 1]
        orgs = [self._org_id(school.index)]
        if teacher == school.first_teacher and len(self.schools) > 1:  # also teaches the next school's trial class
            orgs.append(self._org_id((school.index + 1) % len(self.schools)))
        return self._user_record(
            "t", teacher, version, href_base, role="teacher", roles_v12=["teacher"] * len(orgs), orgs=orgs,
            username=f"{self.spec.namespace}tch{3_000_000 + teacher}", email=f"{self.spec.namespace}tch{3_000_000 + teacher}@staff.example.org",
            status="tobedeleted" if teacher % 41 == 40 else "active", agents=[], grades=[],
            identifier=f"{self.spec.namespace}T{3_000_000 + teacher}", preferred=None, user_index=self.spec.students + teacher,
        )

    def _admin(self, admin: int, version: str, href_base: str) -> dict:
        school = admin // ADMINS_PER_SCHOOL
        return self._user_record(
            "a", admin, version, href_base, role="administrator", roles_v12=["siteAdministrator"],
            orgs=[self._org_id(school)], username=f"{self.spec.namespace}adm{4_000_000 + admin}",
            email=f"{self.spec.namespace}adm{4_000_000 + admin}@staff.example.org", status="active", agents=[], grades=[],
            identifier=f"{self.spec.namespace}A{4_000_000 + admin}", preferred=None,
            user_index=self.spec.students + self.teacher_count + admin,
        )

    def _guardian(self, guardian: int, version: str, href_base: str) -> dict:
        children = [child for child in (4 * guardian, 4 * guardian + 1) if child < self.spec.students]
        school = self._school_of_student(children[0])
        return self._user_record(
            "p", guardian, version, href_base, role="guardian", roles_v12=["guardian"],
            orgs=[self._org_id(school.index)], username=f"{self.spec.namespace}par{5_000_000 + guardian}",
            email=f"{self.spec.namespace}par{5_000_000 + guardian}@family.example.org",
            status="tobedeleted" if guardian % 47 == 46 else "active",
            agents=[self._user_id("s", child, version) for child in children], grades=[],
            identifier=f"{self.spec.namespace}P{5_000_000 + guardian}", preferred=None,
            user_index=self.spec.students + self.teacher_count + self.admin_count + guardian,
        )

    # -- courses, classes, enrollments ------------------------------------------------------

    def _course_id(self, school: int, subject: int) -> str:
        return f"{self.spec.namespace}{50_000 + school * (len(SUBJECTS) + 1) + subject}"

    def _courses(self, index: int, version: str, href_base: str) -> dict:
        school, subject = divmod(index, len(SUBJECTS) + 1)
        trial = subject == len(SUBJECTS)
        title = f"{'Trial ' if trial else ''}{SUBJECTS[subject % len(SUBJECTS)]} {1 + school % 4}"
        record = {
            "sourcedId": self._course_id(school, subject),
            "status": "active",
            "dateLastModified": self._stamp("courses", index),
            "title": title,
            "schoolYear": self._ref(href_base, "academicSessions", "academicSession", self.sessions[0]["id"]),
            "courseCode": f"{1000 + school}-{subject:02d}",
            "grades": [],
            "subjects": [SUBJECTS[subject % len(SUBJECTS)]],
            "org": self._ref(href_base, "orgs", "org", self._org_id(school)),
        }
        if trial:
            record["metadata"] = {"ic.trialSchedule": "true"}
        return record

    def _class_position(self, index: int) -> tuple[_School, int]:
        school = self.schools[bisect.bisect_right(self._class_starts, index) - 1]
        return school, index - school.first_class

    def _class_id(self, index: int) -> str:
        return f"{self.spec.namespace}{600_000 + index}"

    def _teacher_of_class(self, school: _School, local: int) -> int:
        if local == school.classes - 1 and len(self.schools) > 1:  # trial class: the previous school's teacher
            return self.schools[school.index - 1].first_teacher
        return school.first_teacher + min(local // CLASSES_PER_TEACHER, school.teachers - 1)

    def _classes(self, index: int, version: str, href_base: str) -> dict:
        school, local = self._class_position(index)
        trial = local == school.classes - 1
        period, section = (0, 0) if trial else divmod(local, school.sections)
        subject = len(SUBJECTS) if trial else period
        terms = [self.sessions[0]] if trial else self._term_rows(period, school.index)
        metadata: dict[str, str] = {}
        if trial:
            metadata["ic.trialSchedule"] = "true"
        elif section == 0 and period in (2, 3):  # two courses taught together in one room
            metadata["ic.crossListGroup"] = f"XL-{self._org_id(school.index)}-1"
        record = {
            "sourcedId": self._class_id(index),
            "status": "active",
            "dateLastModified": self._stamp("classes", index),
            "title": f"{'Trial ' if trial else ''}{SUBJECTS[subject % len(SUBJECTS)]} - Section {section + 1}",
            "classCode": f"{1000 + school.index}-{subject:02d}-{section + 1:02d}",
            "classType": "scheduled",
            "location": f"Room {100 + (local % 60)}",
            "grades": [],
            "subjects": [SUBJECTS[subject % len(SUBJECTS)]],
            "course": self._ref(href_base, "courses", "course", self._course_id(school.index, subject)),
            "school": self._ref(href_base, "orgs", "org", self._org_id(school.index)),
            "terms": [self._ref(href_base, "academicSessions", "academicSession", term["id"]) for term in terms],
            "periods": [str(period + 1)],
        }
        if metadata:
            record["metadata"] = metadata
        return record

    def _enrollments(self, index: int, version: str, href_base: str) -> dict:
        school = self.schools[bisect.bisect_right(self._enrollment_starts, index) - 1]
        local = index - school.first_enrollment
        if local < school.classes:
            class_local, role = local, "teacher"
            user = self._user_id("t", self._teacher_of_class(school, local), version)
            status = "active"
        else:
            offset = local - school.classes
            student_local, period = divmod(offset, PERIODS)
            section = ((student_local + 7 * period) % school.student_count) // CLASS_SIZE
            class_local, role = period * school.sections + section, "student"
            user = self._user_id("s", school.students[0] + student_local, version)
            status = "tobedeleted" if _mix(self.spec.seed, "drop", index) % 97 == 0 else "active"
        trial = class_local == school.classes - 1
        terms = [self.sessions[0]] if trial else self._term_rows(class_local // school.sections, school.index)
        flag = "true" if role == "teacher" else "false"
        return {
            "sourcedId": f"{self.spec.namespace}{20_000_000 + index}",
            "status": status,
            "dateLastModified": self._stamp("enrollments", index),
            "user": self._ref(href_base, "users", "user", user),
            "class": self._ref(href_base, "classes", "class", self._class_id(school.first_class + class_local)),
            "school": self._ref(href_base, "orgs", "org", self._org_id(school.index)),
            "role": role,
            "primary": flag == "true" if version == "1.1" else flag,
            "beginDate": terms[0]["start"].isoformat(),
            "endDate": terms[-1]["end"].isoformat(),
        }
