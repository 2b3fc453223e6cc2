"""One normalised shape per OneRoster entity, whether IC served it as 1.1 or 1.2.

IC's two versions differ in ways that matter downstream: 1.1 users carry one ``role``
and ``orgs[]`` with role-prefixed ids (``s123456``), 1.2 users carry ``roles[]`` with
unprefixed ids and keep the 1.1 id in ``metadata["ic.legacysourceId"]``; 1.2 spells
booleans as "true"/"false" strings; 1.1 roles are spelled the 1.2 way here. Everything
after the extract reads these models (or their Parquet columns), never the raw payloads.

A record that does not fit is not dropped: :func:`normalise_page` returns it as a
:class:`Rejection` with the reason, and the extract quarantines it. What is empty is absent,
not wrong: a list leaves out the entries that name nothing — null or "" in ``grades`` or
``periods``, a role or GUIDRef that is not an object, a GUIDRef without a sourcedId. The spec
has no null entries, but a null grade is no grade, and quarantining a student for it would
keep them out of the LMS over no data. A record is refused for what it has wrong: an array
that is not one, an entry of the wrong type (a number in ``grades``), a required field absent
or left empty (a 1.2 user with no roles has no primary role).

These rules are the shape; :mod:`include.oneroster.columnar` must give exactly what
:func:`normalise_page` gives, page for page.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

if TYPE_CHECKING:  # pyarrow is imported where a schema is built: the DAG file reads these models too
    import pyarrow as pa

OneRosterVersion = Literal["1.1", "1.2"]
# 1.1 user roles spelled the 1.2 way, so role maps need one vocabulary (1.2 has no plain "administrator").
V11_USER_ROLES = {"administrator": "siteAdministrator"}
COLLECTIONS = ("orgs", "academicSessions", "users", "courses", "classes", "enrollments")
SCHEMA_VERSION = "1"

# The one spelling of a date-time (dateLastModified) both paths take: a calendar date, optionally a
# time of day to the minute or the second (with any fraction), optionally a UTC offset, Z or ±hh:mm
# (±hhmm). No offset is UTC; a date alone is its midnight. Anything else — an hour without minutes,
# an offset of hours alone, a unix time, a number — is refused, whichever path reads the page.
# ASCII digits only (``[0-9]``, not ``\d``), so Python's re and Arrow's RE2 read it alike.
DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})?)?$"
)
_DATE_TIME = re.compile(DATE_TIME_PATTERN)


class _Entity(BaseModel):
    # a value that does not validate may be a person's data: errors name the field, not the value
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    sourced_id: str
    status: str
    date_last_modified: datetime

    @field_validator("sourced_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("sourcedId is blank")
        return value

    @field_validator("date_last_modified", mode="before")
    @classmethod
    def _date_time_spelling(cls, value: Any) -> Any:
        if value is not None and not (isinstance(value, str) and _DATE_TIME.fullmatch(value)):
            raise ValueError("not a date-time as OneRoster spells it")
        return value

    @field_validator("date_last_modified")
    @classmethod
    def _date_time_in_range(cls, value: datetime) -> datetime:
        # an instant that is no datetime in UTC (0001-01-01T00:00:00+01:00) could be staged but not read back
        try:
            (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
        except OverflowError:
            raise ValueError("date-time out of range") from None
        return value


class Org(_Entity):
    name: str
    type: str
    identifier: str | None
    parent_sourced_id: str | None


class AcademicSession(_Entity):
    title: str
    type: str
    start_date: date
    end_date: date
    parent_sourced_id: str | None
    school_year: int


class UserRole(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    role: str
    role_type: Literal["primary", "secondary"]
    org_sourced_id: str


class User(_Entity):
    legacy_sourced_id: str | None
    enabled_user: bool
    username: str | None
    given_name: str
    family_name: str
    middle_name: str | None
    preferred_first_name: str | None
    email: str | None
    identifier: str | None
    primary_role: str
    roles: list[UserRole]
    agent_sourced_ids: list[str]
    grades: list[str]


# The users extract's columns a message could name a person by: masked wherever a system's
# message about that person leaves the staged reports (include/privacy.py).
PERSON_FIELDS = ("sourced_id", "legacy_sourced_id", "username", "email", "identifier", "given_name", "family_name",
                 "middle_name", "preferred_first_name")


class Course(_Entity):
    title: str
    course_code: str | None
    school_year_sourced_id: str | None
    org_sourced_id: str | None
    trial_schedule: bool


class Class(_Entity):
    title: str
    class_code: str | None
    class_type: str | None
    location: str | None
    course_sourced_id: str
    school_sourced_id: str
    term_sourced_ids: list[str]
    periods: list[str]
    trial_schedule: bool
    cross_list_group: str | None


class Enrollment(_Entity):
    user_sourced_id: str
    class_sourced_id: str
    school_sourced_id: str
    role: str
    primary: bool
    begin_date: date | None
    end_date: date | None


MODELS: dict[str, type[_Entity]] = {
    "orgs": Org,
    "academicSessions": AcademicSession,
    "users": User,
    "courses": Course,
    "classes": Class,
    "enrollments": Enrollment,
}


class Rejection(BaseModel):
    """A served record that could not be normalised; no personal fields, only where and why."""

    model_config = ConfigDict(frozen=True)

    collection: str
    sourced_id: str | None
    reason: str


def _ref(value: Any) -> str | None:
    return value.get("sourcedId") if isinstance(value, dict) else None


def _array(record: dict, name: str) -> list:
    """The array under ``name``, absent or null being empty; anything else refuses the record."""
    values = record.get(name)
    if values is None:
        return []
    if not isinstance(values, list):
        error = {"type": "list_type", "loc": (name,), "input": values}
        raise ValidationError.from_exception_data(name, [error])
    return values


def _refs(values: list) -> list[str]:
    return [ref for ref in map(_ref, values) if ref]


def _texts(values: list) -> list:
    """A list of strings (grades, periods) without its null and empty entries."""
    return [value for value in values if value is not None and value != ""]


def _flag(value: Any, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def _metadata(record: dict) -> dict:
    metadata = record.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _common(record: dict) -> dict:
    return {
        "sourced_id": record.get("sourcedId"),
        "status": record.get("status"),
        "date_last_modified": record.get("dateLastModified"),
    }


def _org(record: dict, version: OneRosterVersion) -> dict:
    return {
        **_common(record),
        "name": record.get("name"),
        "type": record.get("type"),
        "identifier": record.get("identifier"),
        "parent_sourced_id": _ref(record.get("parent")),
    }


def _academic_session(record: dict, version: OneRosterVersion) -> dict:
    return {
        **_common(record),
        "title": record.get("title"),
        "type": record.get("type"),
        "start_date": record.get("startDate"),
        "end_date": record.get("endDate"),
        "parent_sourced_id": _ref(record.get("parent")),
        "school_year": record.get("schoolYear"),
    }


def _user(record: dict, version: OneRosterVersion) -> dict:
    if version == "1.1":
        org_ids = _refs(_array(record, "orgs"))
        role = record.get("role")
        role = V11_USER_ROLES.get(role, role) if isinstance(role, str) else role
        roles = [
            {"role": role, "role_type": "primary" if index == 0 else "secondary", "org_sourced_id": org}
            for index, org in enumerate(org_ids)
        ]
        legacy = record.get("sourcedId")
        preferred = None
        primary_role = role
    else:
        roles = [
            {"role": item.get("role"), "role_type": item.get("roleType"), "org_sourced_id": _ref(item.get("org"))}
            for item in _array(record, "roles")
            if isinstance(item, dict)
        ]
        legacy = _metadata(record).get("ic.legacysourceId")
        preferred = record.get("preferredFirstName") or None
        primary_role = next((item["role"] for item in roles if item["role_type"] == "primary"), None)
        if primary_role is None and roles:
            primary_role = roles[0]["role"]
    return {
        **_common(record),
        "legacy_sourced_id": legacy,
        "enabled_user": _flag(record.get("enabledUser"), default=True),
        "username": record.get("username") or None,
        "given_name": record.get("givenName"),
        "family_name": record.get("familyName"),
        "middle_name": record.get("middleName") or None,
        "preferred_first_name": preferred,
        "email": record.get("email") or None,
        "identifier": record.get("identifier") or None,
        "primary_role": primary_role,
        "roles": roles,
        "agent_sourced_ids": _refs(_array(record, "agents")),
        "grades": _texts(_array(record, "grades")),
    }


def _course(record: dict, version: OneRosterVersion) -> dict:
    return {
        **_common(record),
        "title": record.get("title"),
        "course_code": record.get("courseCode") or None,
        "school_year_sourced_id": _ref(record.get("schoolYear")),
        "org_sourced_id": _ref(record.get("org")),
        "trial_schedule": _flag(_metadata(record).get("ic.trialSchedule")),
    }


def _class(record: dict, version: OneRosterVersion) -> dict:
    metadata = _metadata(record)
    return {
        **_common(record),
        "title": record.get("title"),
        "class_code": record.get("classCode") or None,
        "class_type": record.get("classType") or None,
        "location": record.get("location") or None,
        "course_sourced_id": _ref(record.get("course")),
        "school_sourced_id": _ref(record.get("school")),
        "term_sourced_ids": _refs(_array(record, "terms")),
        "periods": [str(period) for period in _texts(_array(record, "periods"))],
        "trial_schedule": _flag(metadata.get("ic.trialSchedule")),
        "cross_list_group": metadata.get("ic.crossListGroup") or None,
    }


def _enrollment(record: dict, version: OneRosterVersion) -> dict:
    return {
        **_common(record),
        "user_sourced_id": _ref(record.get("user")),
        "class_sourced_id": _ref(record.get("class")),
        "school_sourced_id": _ref(record.get("school")),
        "role": record.get("role"),
        "primary": _flag(record.get("primary")),
        "begin_date": record.get("beginDate") or None,
        "end_date": record.get("endDate") or None,
    }


_MAPPERS: dict[str, Callable[[dict, OneRosterVersion], dict]] = {
    "orgs": _org,
    "academicSessions": _academic_session,
    "users": _user,
    "courses": _course,
    "classes": _class,
    "enrollments": _enrollment,
}


def _reason(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
        for item in error.errors(include_url=False, include_input=False)
    )


def normalise_page(
    collection: str, version: OneRosterVersion, records: Iterable[Any]
) -> tuple[list[dict], list[Rejection]]:
    """Normalise one page of served records into rows of the collection's model."""
    model = MODELS[collection]
    mapper = _MAPPERS[collection]
    rows: list[dict] = []
    rejections: list[Rejection] = []
    for record in records:
        if not isinstance(record, dict):
            rejections.append(Rejection(collection=collection, sourced_id=None, reason="not a JSON object"))
            continue
        try:
            rows.append(model.model_validate(mapper(record, version)).model_dump())
        except ValidationError as error:
            sourced_id = record.get("sourcedId")
            rejections.append(
                Rejection(
                    collection=collection,
                    sourced_id=sourced_id if isinstance(sourced_id, str) else None,
                    reason=_reason(error),
                )
            )
    return rows, rejections


def _arrow_type(annotation: Any) -> pa.DataType:
    import pyarrow as pa

    args = [arg for arg in get_args(annotation) if arg is not type(None)]
    origin = get_origin(annotation)
    if origin is list:
        return pa.list_(_arrow_type(args[0]))
    if origin is Literal:
        return pa.string()
    if args and len(args) == 1 and origin is not None:  # Optional[X]
        return _arrow_type(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct([pa.field(name, _arrow_type(field.annotation)) for name, field in annotation.model_fields.items()])
    return {
        str: pa.string(),
        int: pa.int64(),
        bool: pa.bool_(),
        date: pa.date32(),
        datetime: pa.timestamp("us", tz="UTC"),
    }[annotation]


def model_arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Parquet schema of a model's rows, derived from the model so the two cannot drift."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(name, _arrow_type(field.annotation), nullable=type(None) in get_args(field.annotation))
            for name, field in model.model_fields.items()
        ],
        metadata={"model": model.__name__, "schema_version": SCHEMA_VERSION},
    )


def arrow_schema(collection: str) -> pa.Schema:
    return model_arrow_schema(MODELS[collection])
