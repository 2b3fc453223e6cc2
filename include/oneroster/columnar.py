"""A served page body straight to a normalised Arrow table: the extract's hot path.

A district's users, classes and enrollments are millions of records, and turning each into a
Python dict, a pydantic model and back costs more than IC takes to serve them. So their
pages are parsed by Arrow's JSON reader (C++, releases the GIL) and normalised with
column operations into exactly the table :func:`~include.oneroster.models.normalise_page`
would give. Any page the columnar path cannot vouch for — an unexpected type, a blank
or missing required field, a date that does not parse — goes through the record-by-record
path instead, which quarantines what does not fit with its reason. The small collections
always take that path. An optional field that no record of a page has (no guardian links on
a page of teachers) is absent, not of an unexpected type, and dates are read as the text they
were served as, so such pages stay on this path and give what the record path gives. What the
models decide is not decided again here: which fields are required is their schema's nullability
(:func:`_vouched`), and a date-time must be spelled as their ``DATE_TIME_PATTERN`` has it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timezone

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from include.oneroster.models import (
    DATE_TIME_PATTERN,
    V11_USER_ROLES,
    OneRosterVersion,
    Rejection,
    arrow_schema,
    normalise_page,
)


class BodyError(ValueError):
    """The body is not a OneRoster page of the collection (not JSON, or no list under its name)."""


@dataclass
class NormalisedPage:
    """One page: its rows as a table in the collection's schema and the records that did not fit."""

    table: pa.Table
    rejections: list[Rejection] = field(default_factory=list)

    def __len__(self) -> int:
        """Records served on the page, normalised or not (what paging counts)."""
        return self.table.num_rows + len(self.rejections)


class _NotColumnar(Exception):
    """This page needs the record-by-record path."""


def normalise_body(collection: str, version: OneRosterVersion, body: bytes) -> NormalisedPage:
    """Normalise a served page body; raises :class:`BodyError` if it is not a page at all."""
    columnar = _COLUMNAR.get(collection)
    if columnar is not None and body:
        try:
            records = _parse(collection, body)
            return NormalisedPage(_vouched(columnar(records, version), arrow_schema(collection)))
        except (_NotColumnar, pa.ArrowException, KeyError):
            pass
    return _record_by_record(collection, version, body)


def _vouched(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table in the model's schema, if no column the model requires has a null: which fields
    are required is the model's to say (a null there is a record the record path refuses)."""
    if any(table.column(field.name).null_count for field in schema if not field.nullable):
        raise _NotColumnar
    return table.cast(schema)


def raw_records(collection: str, body: bytes) -> list:
    """The served records of a page body, as they came."""
    try:
        payload = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise BodyError(f"the body is not JSON (truncated?): {error}") from None
    records = payload.get(collection) if isinstance(payload, dict) else None
    if not isinstance(records, list):
        raise BodyError(f"the body has no '{collection}' list")
    return records


def _record_by_record(collection: str, version: OneRosterVersion, body: bytes) -> NormalisedPage:
    rows, rejections = normalise_page(collection, version, raw_records(collection, body))
    return NormalisedPage(pa.Table.from_pylist(rows, schema=arrow_schema(collection)), rejections)


# Arrow's JSON reader takes a string that looks like a date for a timestamp, and with that loses
# how it was spelled (a time of day on a date, an offset): the dates are read as the text they are.
_DATES = {
    "users": ("dateLastModified",),
    "classes": ("dateLastModified",),
    "enrollments": ("dateLastModified", "beginDate", "endDate"),
}


def _parse(collection: str, body: bytes) -> pa.StructArray:
    dates = pa.struct([(name, pa.string()) for name in _DATES[collection]])
    parse_options = pa_json.ParseOptions(explicit_schema=pa.schema([(collection, pa.list_(dates))]),
                                         unexpected_field_behavior="infer")
    read_options = pa_json.ReadOptions(block_size=len(body) + 1, use_threads=False)
    table = pa_json.read_json(io.BytesIO(body), read_options=read_options, parse_options=parse_options)
    if table.num_rows != 1 or table.column_names != [collection]:
        raise _NotColumnar
    column = table.column(collection).combine_chunks()
    if column.null_count or not len(column.values):
        raise _NotColumnar  # no list under the collection's name, or an empty one
    return column.values


def _field(records: pa.StructArray, *path: str) -> pa.Array:
    """A (nested) field, null where absent. A field no record has (or only as null) is a column
    of Arrow's null type, which every reader below takes as absent, whatever the field's type."""
    value: pa.Array = records
    for name in path:
        if pa.types.is_null(value.type):
            return value
        if not pa.types.is_struct(value.type):
            raise _NotColumnar
        if value.type.get_field_index(name) < 0:
            return pa.nulls(len(value))
        value = pc.struct_field(value, name)
    return value


def _text_field(values: pa.Array) -> pa.Array:
    """A string field as text; numbers, booleans and objects are not text (pydantic refuses them too)."""
    if pa.types.is_string(values.type) or pa.types.is_null(values.type):
        return values.cast(pa.string())
    raise _NotColumnar


def _required(values: pa.Array, *, not_blank: bool = False) -> pa.Array:
    if values.null_count:
        raise _NotColumnar
    if not_blank and not pc.all(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)).as_py():
        raise _NotColumnar
    return values


def _or_none(values: pa.Array) -> pa.Array:
    """IC's empty strings as nulls, like ``record.get(name) or None``."""
    return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)


def _flag(values: pa.Array, default: bool) -> pa.Array:
    """1.2 spells booleans "true"/"false"; 1.1 sends JSON booleans; absent is the default."""
    if pa.types.is_boolean(values.type):
        flags = values
    elif pa.types.is_string(values.type) or pa.types.is_null(values.type):
        flags = pc.equal(pc.utf8_lower(pc.utf8_trim_whitespace(values.cast(pa.string()))), "true")
    else:
        raise _NotColumnar
    return pc.fill_null(flags, default)


def _empty_lists(count: int) -> pa.Array:
    return pa.nulls(count, pa.list_(pa.string())).fill_null(pa.scalar([], pa.list_(pa.string())))


def _non_empty(lists: pa.Array, items: pa.Array) -> pa.ListArray:
    """Each list's ``items`` (its flattened entries, as text) without the null and empty ones."""
    keep = pc.fill_null(pc.greater(pc.utf8_length(items), 0), False)
    per_row = np.bincount(pc.list_parent_indices(lists).filter(keep).to_numpy(), minlength=len(lists))
    offsets = pa.array(np.concatenate([[0], per_row.cumsum()]), pa.int32())
    return pa.ListArray.from_arrays(offsets, items.filter(keep))


def _ref_ids(values: pa.Array) -> pa.Array:
    """A list of GUIDRefs as the list of their non-empty sourcedIds; absent is empty."""
    if pa.types.is_null(values.type):
        return _empty_lists(len(values))
    if not pa.types.is_list(values.type) or not pa.types.is_struct(values.type.value_type):
        raise _NotColumnar
    lists = values.fill_null(pa.scalar([], values.type)) if values.null_count else values
    return _non_empty(lists, _text_field(_field(lists.flatten(), "sourcedId")))


def _texts(values: pa.Array) -> pa.Array:
    """A list of strings (grades, periods) without its null and empty entries; absent is empty."""
    if pa.types.is_null(values.type):
        return _empty_lists(len(values))
    if not pa.types.is_list(values.type) or not (
        pa.types.is_string(values.type.value_type) or pa.types.is_null(values.type.value_type)
    ):
        raise _NotColumnar
    lists = values.cast(pa.list_(pa.string())).fill_null(pa.scalar([], pa.list_(pa.string())))
    return _non_empty(lists, lists.flatten())


def _date_time(values: pa.Array) -> pa.Array:
    """dateLastModified: spelled as the models' one rule has it, read by Arrow as that instant. Arrow
    reads more spellings than the rule (an offset of hours alone), so the rule is checked first; what
    it allows but Arrow does not read (no offset, a date alone) raises and goes record by record."""
    values = _required(_text_field(values))
    if not pc.all(pc.match_substring_regex(values, DATE_TIME_PATTERN)).as_py():
        raise _NotColumnar
    stamps = values.cast(pa.timestamp("us", tz="UTC"))
    bounds = pc.min_max(stamps.view(pa.int64())).as_py()
    if bounds["min"] < _INSTANTS[0] or bounds["max"] > _INSTANTS[1]:
        raise _NotColumnar  # an instant that is no datetime in UTC: the record path refuses it
    return stamps


# the instants a datetime can be in UTC, in microseconds since the epoch
_INSTANTS = pa.array([datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc)],
                     pa.timestamp("us", tz="UTC")).view(pa.int64()).to_pylist()


def _common(records: pa.StructArray) -> dict[str, pa.Array]:
    return {
        "sourced_id": _required(_text_field(_field(records, "sourcedId")), not_blank=True),
        "status": _text_field(_field(records, "status")),
        "date_last_modified": _date_time(_field(records, "dateLastModified")),
    }


def _user_roles(records: pa.StructArray, version: OneRosterVersion) -> tuple[pa.Array, pa.Array]:
    """(roles, primary_role): 1.1's one role over its orgs, 1.2's roles[] with their orgs."""
    if version == "1.1":
        orgs = _ref_ids(_field(records, "orgs"))
        role = _required(_text_field(_field(records, "role")))
        for old, new in V11_USER_ROLES.items():
            role = pc.if_else(pc.equal(role, old), new, role)
        owners = pc.list_parent_indices(orgs)
        positions = pc.subtract(pa.array(range(len(owners)), pa.int64()),
                                pc.take(orgs.offsets.cast(pa.int64()), owners))
        entries = pa.StructArray.from_arrays(
            [role.take(owners), pc.if_else(pc.equal(positions, 0), "primary", "secondary"), orgs.flatten()],
            ["role", "role_type", "org_sourced_id"],
        )
        return pa.ListArray.from_arrays(orgs.offsets, entries), role
    roles = _field(records, "roles")
    if pa.types.is_null(roles.type) or not pa.types.is_list(roles.type) or roles.null_count:
        raise _NotColumnar
    flat = roles.flatten()
    entries = pa.StructArray.from_arrays(
        [
            _required(_text_field(_field(flat, "role"))),
            _required(_text_field(_field(flat, "roleType"))),
            _required(_text_field(_field(flat, "org", "sourcedId"))),
        ],
        ["role", "role_type", "org_sourced_id"],
    )
    if not pc.all(pc.is_in(entries.field("role_type"), pa.array(["primary", "secondary"]))).as_py():
        raise _NotColumnar
    owners = pc.list_parent_indices(roles)
    primary = pc.equal(entries.field("role_type"), "primary")
    # the first primary role, else the first role: the earliest entry ranked primary-first
    rank = pc.add(pc.multiply(pc.cast(pc.invert(primary), pa.int64()), len(flat) + 1),
                  pa.array(range(len(flat)), pa.int64()))
    chosen = pa.table({"owner": owners, "rank": rank}).group_by("owner").aggregate([("rank", "min")])
    if len(chosen) != len(records):
        raise _NotColumnar  # a user without roles has no primary role
    order = pc.sort_indices(chosen.column("owner"))
    first = pc.take(chosen.column("rank_min"), order)
    position = pc.if_else(pc.greater(first, len(flat)), pc.subtract(first, len(flat) + 1), first)
    return pa.ListArray.from_arrays(roles.offsets, entries), entries.field("role").take(position)


def _users(records: pa.StructArray, version: OneRosterVersion) -> pa.Table:
    roles, primary_role = _user_roles(records, version)
    legacy = _text_field(_field(records, "sourcedId")) if version == "1.1" else _text_field(
        _field(records, "metadata", "ic.legacysourceId"))
    preferred = (pa.nulls(len(records), pa.string()) if version == "1.1"
                 else _or_none(_text_field(_field(records, "preferredFirstName"))))
    return pa.table({
        **_common(records),
        "legacy_sourced_id": legacy,
        "enabled_user": _flag(_field(records, "enabledUser"), default=True),
        "username": _or_none(_text_field(_field(records, "username"))),
        "given_name": _text_field(_field(records, "givenName")),
        "family_name": _text_field(_field(records, "familyName")),
        "middle_name": _or_none(_text_field(_field(records, "middleName"))),
        "preferred_first_name": preferred,
        "email": _or_none(_text_field(_field(records, "email"))),
        "identifier": _or_none(_text_field(_field(records, "identifier"))),
        "primary_role": primary_role,
        "roles": roles,
        "agent_sourced_ids": _ref_ids(_field(records, "agents")),
        "grades": _texts(_field(records, "grades")),
    })


def _date(values: pa.Array) -> pa.Array:
    """beginDate/endDate: a date, empty or absent is null."""
    return _or_none(_text_field(values)).cast(pa.date32())


def _enrollments(records: pa.StructArray, version: OneRosterVersion) -> pa.Table:
    return pa.table({
        **_common(records),
        "user_sourced_id": _text_field(_field(records, "user", "sourcedId")),
        "class_sourced_id": _text_field(_field(records, "class", "sourcedId")),
        "school_sourced_id": _text_field(_field(records, "school", "sourcedId")),
        "role": _text_field(_field(records, "role")),
        "primary": _flag(_field(records, "primary"), default=False),
        "begin_date": _date(_field(records, "beginDate")),
        "end_date": _date(_field(records, "endDate")),
    })


def _classes(records: pa.StructArray, version: OneRosterVersion) -> pa.Table:
    return pa.table({
        **_common(records),
        "title": _text_field(_field(records, "title")),
        "class_code": _or_none(_text_field(_field(records, "classCode"))),
        "class_type": _or_none(_text_field(_field(records, "classType"))),
        "location": _or_none(_text_field(_field(records, "location"))),
        "course_sourced_id": _text_field(_field(records, "course", "sourcedId")),
        "school_sourced_id": _text_field(_field(records, "school", "sourcedId")),
        "term_sourced_ids": _ref_ids(_field(records, "terms")),
        "periods": _texts(_field(records, "periods")),
        "trial_schedule": _flag(_field(records, "metadata", "ic.trialSchedule"), default=False),
        "cross_list_group": _or_none(_text_field(_field(records, "metadata", "ic.crossListGroup"))),
    })


_COLUMNAR = {"users": _users, "classes": _classes, "enrollments": _enrollments}
