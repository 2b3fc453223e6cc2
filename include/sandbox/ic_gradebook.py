"""IC's OneRoster gradebook as the emulator keeps it, in 1.2 (categories, lineItems, results,
scoreScales) and in 1.1 (categories, lineItems, results).

Pure logic, no HTTP (:class:`~include.sandbox.ic_emulator.ICEmulator` serves it), bound to
the :class:`~include.sandbox.generator.SyntheticDistrict` whose classes, sessions and
enrollments it checks against. It enforces what IC enforces on grade passback:

- request bodies follow the version's binding (``{"lineItem": {...}}``, the required fields
  of :data:`REQUIRED`, no field outside :data:`FIELDS`, GUIDRefs with the right ``type``),
  else 422 ``invaliddata``;
- a lineItem's class, school and gradingPeriod exist in the district and fit together,
  its category and scoreScale exist in the gradebook; a result's lineItem exists and its
  student is actively enrolled as a student in that lineItem's class (422 ``invaliddata``);
- a grade is accepted only while the grading window of the lineItem's gradingPeriod is
  open (:meth:`Gradebook.set_window` against the settable clock :attr:`Gradebook.today`;
  no window set means open), else 403 ``forbidden`` with a description starting with
  :data:`WINDOW_CLOSED`, or, before the window opens, with :data:`WINDOW_NOT_YET_OPEN` and the
  day it opens, so a client can tell "skipped: window closed" from a failure; a server of
  another make may refuse it as 400 ``invaliddata`` (``window_refusal_status``) and refuse the
  lineItem itself too (``windows_bind_line_items``), as the emulator's server profiles set;
- score groups: a percent alone (``score``) is mapped to the score of the lineItem's
  scoreScale with the highest minimum percent (``itemValueLHS``) not above it, written
  to ``textScore``; a score alone (``textScore``) must be one of the group's scores and
  ``score`` stays empty; both are kept as sent, as is a score above ``resultValueMax``.

1.1 differs in what its binding has: no scoreScales (404), no ``school``, ``scoreScale`` or
``academicSession`` on a lineItem, no ``textScore`` on a result, whose ``score`` is required
and kept as sent; and its student ids carry IC's role prefix (``s123456``), so a 1.1 result
is checked against the 1.1 rosters. Both versions share one store (a district uses one).

PUT answers "created" or "updated" (IC's 201 / 200) and counts both per sourcedId in
:attr:`Gradebook.writes`, so a retry that duplicated a write shows in tests; :meth:`Gradebook.refuse`
makes it refuse one record, as IC does by rules of its own this emulator does not model.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from include.sandbox.generator import SyntheticDistrict

COLLECTIONS = ("categories", "lineItems", "results", "scoreScales")  # what the store holds, either version
SINGULAR = {"categories": "category", "lineItems": "lineItem", "results": "result",
            "scoreScales": "scoreScale"}
WINDOW_CLOSED = "grading window closed"
WINDOW_NOT_YET_OPEN = "grading window not yet open"
SCORE_STATUSES = ("exempt", "fully graded", "not submitted", "partially graded", "submitted")

_BASE = ("sourcedId", "status", "dateLastModified", "metadata")
FIELDS = {  # by OneRoster version, the collections it has and their fields
    "1.2": {
        "categories": (*_BASE, "title", "weight"),
        "lineItems": (*_BASE, "title", "description", "assignDate", "dueDate", "class", "school", "category",
                      "gradingPeriod", "academicSession", "scoreScale", "resultValueMin", "resultValueMax",
                      "learningObjectiveSet"),
        "results": (*_BASE, "lineItem", "student", "class", "scoreScale", "scoreStatus", "score", "textScore",
                    "scoreDate", "comment", "learningObjectiveSet", "inProgress", "incomplete", "late",
                    "missing"),
        "scoreScales": (*_BASE, "title", "type", "course", "class", "scoreScaleValue"),
    },
    "1.1": {
        "categories": (*_BASE, "title"),
        "lineItems": (*_BASE, "title", "description", "assignDate", "dueDate", "class", "category",
                      "gradingPeriod", "resultValueMin", "resultValueMax"),
        "results": (*_BASE, "lineItem", "student", "scoreStatus", "score", "scoreDate", "comment"),
    },
}
# each binding's required fields, plus gradingPeriod in 1.2 (1.1 requires it itself):
# IC files every grade under a term
REQUIRED = {
    "1.2": {
        "categories": ("sourcedId", "status", "dateLastModified", "title"),
        "lineItems": ("sourcedId", "status", "dateLastModified", "title", "assignDate", "dueDate", "class",
                      "school", "category", "gradingPeriod"),
        "results": ("sourcedId", "status", "dateLastModified", "lineItem", "student", "scoreStatus",
                    "scoreDate"),
        "scoreScales": ("sourcedId", "status", "dateLastModified", "title", "type", "class",
                        "scoreScaleValue"),
    },
    "1.1": {
        "categories": ("sourcedId", "status", "dateLastModified", "title"),
        "lineItems": ("sourcedId", "status", "dateLastModified", "title", "assignDate", "dueDate", "class",
                      "category", "gradingPeriod"),
        "results": ("sourcedId", "status", "dateLastModified", "lineItem", "student", "scoreStatus", "score",
                    "scoreDate"),
    },
}
REFERENCES = {  # GUIDRef fields and the type they must name
    "class": "class", "school": "org", "category": "category", "gradingPeriod": "academicSession",
    "academicSession": "academicSession", "scoreScale": "scoreScale", "lineItem": "lineItem",
    "student": "user", "course": "course",
}
_EXTENSION_STATUS = re.compile(r"^ext:[a-zA-Z0-9.\-_]+$")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:-\s*\d+(?:\.\d+)?\s*)?$")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_datetime(value: Any) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _is_date(value: Any) -> bool:
    try:
        return isinstance(value, str) and bool(date.fromisoformat(value)) and len(value) == 10
    except ValueError:
        return False


_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "status": (lambda v: v in ("active", "tobedeleted"), "'active' or 'tobedeleted'"),
    "dateLastModified": (_is_datetime, "an ISO 8601 date-time in UTC"),
    "assignDate": (_is_datetime, "an ISO 8601 date-time in UTC"),
    "dueDate": (_is_datetime, "an ISO 8601 date-time in UTC"),
    "scoreDate": (_is_date, "a date YYYY-MM-DD"),
    "metadata": (lambda v: isinstance(v, dict), "an object"),
    "learningObjectiveSet": (lambda v: isinstance(v, list), "an array"),
    "scoreStatus": (lambda v: v in SCORE_STATUSES or bool(isinstance(v, str) and _EXTENSION_STATUS.match(v)),
                    f"one of {', '.join(SCORE_STATUSES)} or ext:..."),
    **{name: (lambda v: v in ("true", "false"), "'true' or 'false'")
       for name in ("inProgress", "incomplete", "late", "missing")},
    **{name: (_is_number, "a number") for name in ("weight", "resultValueMin", "resultValueMax", "score")},
    **{name: (lambda v: isinstance(v, str), "a string")
       for name in ("sourcedId", "title", "description", "textScore", "comment", "type")},
}


class GradebookError(Exception):
    """A refusal, answered by the emulator as a OneRoster status-info payload."""

    def __init__(self, status: int, code_minor: str, description: str):
        super().__init__(description)
        self.status = status
        self.code_minor = code_minor
        self.description = description


def _invalid(description: str) -> GradebookError:
    return GradebookError(422, "invaliddata", description)


@dataclass
class Writes:
    """What happened to one sourcedId: more than one create would be a duplicate."""

    created: int = 0
    updated: int = 0
    deleted: int = 0


def _now() -> str:
    now = datetime.now(UTC)
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}Z"


def _ref_id(record: dict, field: str) -> str | None:
    ref = record.get(field)
    return ref["sourcedId"] if ref else None


def _offered(collection: str, version: str) -> None:
    """A collection outside the version's binding is not there at all (1.1 has no scoreScales)."""
    if collection not in FIELDS[version]:
        raise GradebookError(404, "unknownobject", f"the OneRoster {version} gradebook has no {collection}")


class Gradebook:
    """The gradebook of one district; thread-safe, as the emulator's handler threads share it."""

    def __init__(self, district: SyntheticDistrict, *, today: date | None = None,
                 window_refusal_status: int = 403, windows_bind_line_items: bool = False) -> None:
        self.district = district
        self.today = today or date.today()
        self.window_refusal_status = window_refusal_status  # 403 ``forbidden`` (IC), or 400 ``invaliddata``
        self.windows_bind_line_items = windows_bind_line_items
        self.writes: dict[str, dict[str, Writes]] = {name: defaultdict(Writes) for name in COLLECTIONS}
        self._store: dict[str, dict[str, dict]] = {name: {} for name in COLLECTIONS}
        self._windows: dict[str, tuple[date, date]] = {}
        self._refused: dict[tuple[str, str], str] = {}  # (collection, sourcedId) -> IC's description
        self._sessions = {row["id"]: row for row in district.sessions}
        self._classes: dict[str, int] | None = None
        self._rosters: dict[str, dict[str, set[str]]] = {}  # by version: user ids differ
        self._lock = threading.RLock()

    # -- grading windows --------------------------------------------------------------

    def set_window(self, session_id: str, opens: date, closes: date) -> None:
        """Grades filed under ``session_id`` are accepted from ``opens`` to ``closes`` inclusive."""
        if session_id not in self._sessions:
            raise KeyError(f"no academicSession {session_id} in the district")
        if opens > closes:
            raise ValueError("a grading window opens before it closes")
        with self._lock:
            self._windows[session_id] = (opens, closes)

    def window_open(self, session_id: str) -> bool:
        window = self._windows.get(session_id)
        return window is None or window[0] <= self.today <= window[1]

    def refuse(self, collection: str, sourced_id: str, description: str) -> None:
        """PUTs of this record are refused from now on, 422 ``invaliddata`` with ``description``."""
        with self._lock:
            self._refused[(collection, sourced_id)] = description

    # -- the ledger -------------------------------------------------------------------

    def stored(self, collection: str) -> dict[str, dict]:
        """A snapshot of what is stored, by sourcedId."""
        with self._lock:
            return {key: dict(record) for key, record in self._store[collection].items()}

    def duplicates(self) -> dict[tuple[str, str], list[str]]:
        """(lineItem, student) pairs holding more than one result: what a non-idempotent retry leaves."""
        pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
        with self._lock:
            for key, result in self._store["results"].items():
                pairs[(_ref_id(result, "lineItem"), _ref_id(result, "student"))].append(key)
        return {pair: keys for pair, keys in pairs.items() if len(keys) > 1}

    # -- operations -------------------------------------------------------------------

    def put(self, collection: str, sourced_id: str, payload: Any, *,
            version: str = "1.2") -> tuple[bool, dict]:
        """Create or replace one record; returns (created, the record as stored)."""
        _offered(collection, version)
        singular = SINGULAR[collection]
        wrapped = isinstance(payload, dict) and set(payload) == {singular}
        if not (wrapped and isinstance(payload[singular], dict)):
            raise _invalid(f'the body must be {{"{singular}": {{...}}}}')
        record = dict(payload[singular])
        self._check_shape(collection, record, version)
        if record["sourcedId"] != sourced_id:
            raise _invalid(f"sourcedId {record['sourcedId']!r} in the body differs from {sourced_id!r} "
                           "in the URL")
        with self._lock:
            if (collection, sourced_id) in self._refused:
                raise _invalid(self._refused[(collection, sourced_id)])
            getattr(self, f"_check_{singular}")(record, version)
            previous = self._store[collection].get(sourced_id)
            kept = previous and previous["dateLastModified"]
            unchanged = kept and {**record, "dateLastModified": kept} == previous
            record["dateLastModified"] = kept if unchanged else _now()
            self._store[collection][sourced_id] = record
            writes = self.writes[collection][sourced_id]
            if previous is None:
                writes.created += 1
            else:
                writes.updated += 1
            return previous is None, dict(record)

    def get(self, collection: str, sourced_id: str, *, version: str = "1.2") -> dict:
        _offered(collection, version)
        with self._lock:
            return dict(self._existing(collection, sourced_id))

    def delete(self, collection: str, sourced_id: str, *, version: str = "1.2") -> None:
        """Remove a record; what other records still point at cannot go (422 ``deletefailure``)."""
        _offered(collection, version)
        with self._lock:
            record = self._existing(collection, sourced_id)
            kind = SINGULAR[collection]
            users = [key for name in ("lineItems", "results") for key, other in self._store[name].items()
                     if _ref_id(other, kind) == sourced_id]
            if users:
                raise GradebookError(422, "deletefailure",
                                     f"{kind} {sourced_id} is still used by {len(users)} record(s)")
            if collection == "results":
                self._check_window(self._store["lineItems"][_ref_id(record, "lineItem")])
            del self._store[collection][sourced_id]
            self.writes[collection][sourced_id].deleted += 1

    def select(self, collection: str, *, class_id: str | None = None, line_item_id: str | None = None,
               student_id: str | None = None, version: str = "1.2") -> list[dict]:
        """A collection, optionally as seen from a class (and one of its lineItems or students)."""
        _offered(collection, version)
        with self._lock:
            records = list(self._store[collection].values())
            if class_id is None:
                return [dict(record) for record in records]
            if class_id not in self._class_index():
                raise GradebookError(404, "unknownobject", f"no class with sourcedId {class_id}")
            items = {key for key, item in self._store["lineItems"].items()
                     if _ref_id(item, "class") == class_id}
            if line_item_id is not None and line_item_id not in items:
                raise GradebookError(404, "unknownobject", f"no lineItem {line_item_id} in class {class_id}")
            if student_id is not None and not self._enrolled(student_id, class_id, version):
                raise GradebookError(404, "unknownobject", f"no student {student_id} in class {class_id}")
            if collection == "lineItems":
                kept = [record for record in records if record["sourcedId"] in items]
            elif collection == "categories":
                used = {_ref_id(self._store["lineItems"][key], "category") for key in items}
                kept = [record for record in records if record["sourcedId"] in used]
            elif collection == "scoreScales":
                kept = [record for record in records if _ref_id(record, "class") == class_id]
            else:
                kept = [record for record in records if _ref_id(record, "lineItem") in items
                        and line_item_id in (None, _ref_id(record, "lineItem"))
                        and student_id in (None, _ref_id(record, "student"))]
            return [dict(record) for record in kept]

    def build_indexes(self, *, version: str = "1.2") -> None:
        """The district's classes and ``version``'s rosters, indexed now rather than on the first
        PUT, which would otherwise hold every call behind it (a benchmark builds them before it
        measures)."""
        with self._lock:
            self._class_index()
            self._rosters_index(version)

    # -- validation -------------------------------------------------------------------

    def _existing(self, collection: str, sourced_id: str) -> dict:
        record = self._store[collection].get(sourced_id)
        if record is None:
            raise GradebookError(404, "unknownobject",
                                 f"no {SINGULAR[collection]} with sourcedId {sourced_id}")
        return record

    @staticmethod
    def _check_shape(collection: str, record: dict, version: str) -> None:
        """The version's binding's shape: required fields, no unknown ones, types and GUIDRefs."""
        label = f"{SINGULAR[collection]} {record.get('sourcedId', '?')}"
        unknown = sorted(set(record) - set(FIELDS[version][collection]))
        if unknown:
            raise _invalid(f"{label}: unknown field(s) {', '.join(unknown)}")
        missing = [name for name in REQUIRED[version][collection] if record.get(name) in (None, "")]
        if missing:
            raise _invalid(f"{label}: missing required field(s) {', '.join(missing)}")
        for name, value in record.items():
            if name in REFERENCES:
                if not (isinstance(value, dict) and set(value) == {"href", "sourcedId", "type"}
                        and isinstance(value["href"], str) and isinstance(value["sourcedId"], str)
                        and value["type"] == REFERENCES[name]):
                    raise _invalid(f"{label}: {name} must be a GUIDRef "
                                   f'{{"href", "sourcedId", "type": "{REFERENCES[name]}"}}')
            elif name in _CHECKS and not _CHECKS[name][0](value):
                raise _invalid(f"{label}: {name} must be {_CHECKS[name][1]}, got {value!r}")

    # the checks beyond the shape, one per kind, each given the version (only a result's depends on it)

    def _check_category(self, record: dict, version: str) -> None:
        """Categories stand alone."""

    def _check_scoreScale(self, record: dict, version: str) -> None:
        self._district_class(record, "scoreScale")
        values = record["scoreScaleValue"]
        if not isinstance(values, list) or not values:
            raise _invalid(f"scoreScale {record['sourcedId']}: scoreScaleValue needs at least one value")
        for value in values:
            if not (isinstance(value, dict) and set(value) == {"itemValueLHS", "itemValueRHS"}
                    and isinstance(value["itemValueRHS"], str) and value["itemValueRHS"]
                    and _minimum_percent(value["itemValueLHS"]) is not None):
                raise _invalid(f"scoreScale {record['sourcedId']}: each value maps a minimum percent "
                               f"(itemValueLHS) to a score (itemValueRHS), got {value!r}")

    def _check_lineItem(self, record: dict, version: str) -> None:
        label = f"lineItem {record['sourcedId']}"
        class_record = self._district_class(record, "lineItem")
        school = _ref_id(record, "school")  # required in 1.2, absent from 1.1
        if school is not None and school != class_record["school"]["sourcedId"]:
            raise _invalid(f"{label}: school {school} is not the school of class {class_record['sourcedId']}")
        for field, collection in (("category", "categories"), ("scoreScale", "scoreScales")):
            ref = _ref_id(record, field)
            if ref is not None and ref not in self._store[collection]:
                raise _invalid(f"{label}: {field} {ref} does not exist")
        for field in ("gradingPeriod", "academicSession"):
            ref = _ref_id(record, field)
            if ref is not None and ref not in self._sessions:
                raise _invalid(f"{label}: {field} {ref} is not an academicSession of the district")
        period = self._sessions[_ref_id(record, "gradingPeriod")]
        terms = [self._sessions[term["sourcedId"]] for term in class_record["terms"]]
        if not any(period["start"] <= term["end"] and term["start"] <= period["end"] for term in terms):
            raise _invalid(f"{label}: gradingPeriod {period['id']} is outside the terms of class "
                           f"{class_record['sourcedId']}")
        low, high = record.get("resultValueMin"), record.get("resultValueMax")
        if low is not None and high is not None and low > high:
            raise _invalid(f"{label}: resultValueMin {low} is above resultValueMax {high}")
        if self.windows_bind_line_items:
            self._check_window(record)

    def _check_result(self, record: dict, version: str) -> None:
        label = f"result {record['sourcedId']}"
        item_id = _ref_id(record, "lineItem")
        item = self._store["lineItems"].get(item_id)
        if item is None:
            raise _invalid(f"{label}: lineItem {item_id} does not exist")
        class_id = _ref_id(item, "class")
        if _ref_id(record, "class") not in (None, class_id):
            raise _invalid(f"{label}: class {_ref_id(record, 'class')} is not the class of "
                           f"lineItem {item_id}")
        student = _ref_id(record, "student")
        if not self._enrolled(student, class_id, version):
            raise _invalid(f"{label}: student {student} is not actively enrolled as a student "
                           f"in class {class_id}")
        scale_id = _ref_id(record, "scoreScale") or _ref_id(item, "scoreScale")
        if scale_id is not None and scale_id not in self._store["scoreScales"]:
            raise _invalid(f"{label}: scoreScale {scale_id} does not exist")
        self._check_window(item)
        if scale_id is None:
            return
        scale = self._store["scoreScales"][scale_id]
        values = [(_minimum_percent(value["itemValueLHS"]), value["itemValueRHS"])
                  for value in scale["scoreScaleValue"]]
        percent, score = record.get("score"), record.get("textScore")
        if percent is not None and score is None:
            reached = [value for value in values if value[0] <= percent]
            if not reached:
                raise _invalid(f"{label}: percent {percent:g} is below every score of score group {scale_id}")
            record["textScore"] = max(reached)[1]
        elif score is not None and percent is None and score not in {rhs for _, rhs in values}:
            raise _invalid(f"{label}: score {score!r} is not in score group {scale_id} "
                           f"({', '.join(rhs for _, rhs in values)})")

    def _check_window(self, item: dict) -> None:
        session_id = _ref_id(item, "gradingPeriod")
        if self.window_open(session_id):
            return
        opens, closes = self._windows[session_id]
        title = self._sessions[session_id]["title"]
        if self.today < opens:
            description = (f"{WINDOW_NOT_YET_OPEN} for {title} ({session_id}): it opens on {opens} and "
                           f"closes on {closes}, today is {self.today}")
        else:
            description = (f"{WINDOW_CLOSED} for {title} ({session_id}): grades are accepted from {opens} to "
                           f"{closes}, today is {self.today}")
        status = self.window_refusal_status
        raise GradebookError(status, "forbidden" if status == 403 else "invaliddata", description)

    def _district_class(self, record: dict, kind: str) -> dict:
        class_id = _ref_id(record, "class")
        position = self._class_index().get(class_id)
        if position is None:
            raise _invalid(f"{kind} {record['sourcedId']}: class {class_id} does not exist")
        return self.district.records("classes")[position]

    def _class_index(self) -> dict[str, int]:
        if self._classes is None:
            self._classes = {cls["sourcedId"]: n for n, cls in enumerate(self.district.records("classes"))}
        return self._classes

    def _enrolled(self, student_id: str, class_id: str, version: str) -> bool:
        """Actively enrolled as a student in the class, by ``version``'s user id."""
        return student_id in self._rosters_index(version).get(class_id, set())

    def _rosters_index(self, version: str) -> dict[str, set[str]]:
        """Active student enrollments by class, in ``version``'s user ids (1.1 prefixes them), each
        version's built once on first use."""
        if version not in self._rosters:
            rosters: dict[str, set[str]] = defaultdict(set)
            for enrollment in self.district.records("enrollments", version):
                if enrollment["role"] == "student" and enrollment["status"] == "active":
                    rosters[enrollment["class"]["sourcedId"]].add(enrollment["user"]["sourcedId"])
            self._rosters[version] = dict(rosters)
        return self._rosters[version]


def _minimum_percent(lhs: Any) -> float | None:
    """IC score groups give each score a minimum percent: ``"90"`` or the range ``"90 - 100"``."""
    match = _PERCENT.match(lhs) if isinstance(lhs, str) else None
    return float(match[1]) if match else None
