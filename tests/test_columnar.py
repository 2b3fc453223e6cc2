"""The columnar page path gives exactly what the record-by-record path gives, and hands a page
it cannot vouch for to that path, so nothing is dropped that would have been quarantined.

Besides the synthetic district's pages as served, random pages of every collection in both
versions, spoiled the ways served data is (keys left out, nulls in lists, empty strings,
booleans as strings, unknown fields, nulls, dates spelled otherwise), must stage the same rows
and quarantine the same records with the same reasons through either path."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from functools import cache

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from include.oneroster import columnar
from include.oneroster.columnar import BodyError, normalise_body
from include.oneroster.models import COLLECTIONS, arrow_schema, normalise_page
from include.sandbox.generator import DistrictSpec, SyntheticDistrict


@pytest.fixture(scope="module")
def district():
    district = SyntheticDistrict(DistrictSpec(seed=5, students=400, school_year=2027))
    for collection in ("users", "enrollments"):
        district.modify(collection, 30, datetime(2026, 11, 1, tzinfo=timezone.utc))
    return district


@pytest.fixture
def columnar_only(monkeypatch):
    """Fail the test if a page is handed to the record-by-record path."""
    def refuse(*args):
        raise AssertionError("the page fell back to the record-by-record path")
    monkeypatch.setattr(columnar, "normalise_page", refuse)


def body(district, collection: str, version: str) -> bytes:
    return json.dumps({collection: list(district.records(collection, version, "https://ic.example/api"))}).encode()


def record_by_record(collection: str, version: str, page: bytes):
    """What the record-by-record path makes of a page body: its table and its rejections."""
    rows, rejections = normalise_page(collection, version, json.loads(page)[collection])
    return pa.Table.from_pylist(rows, schema=arrow_schema(collection)), rejections


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("collection", ["users", "classes", "enrollments"])
def test_the_columnar_path_equals_the_record_path(district, collection, version, columnar_only):
    page = body(district, collection, version)
    fast = normalise_body(collection, version, page)
    table, rejections = record_by_record(collection, version, page)
    assert fast.table.num_rows == len(district.records(collection, version)) and not fast.rejections
    assert fast.table.equals(table) and not rejections


@pytest.mark.parametrize(
    "spoil, reason",
    [
        (lambda record: record.update(sourcedId="  "), "sourcedId is blank"),
        (lambda record: record.update(dateLastModified="last tuesday"), "date_last_modified"),
        (lambda record: record.update(givenName=None), "given_name"),
        (lambda record: record.update(roles=[]), "primary_role"),
        (lambda record: record.update(roles=[{"roleType": "tertiary", "role": "student",
                                              "org": {"sourcedId": "100"}}]), "role_type"),
    ],
)
def test_a_page_with_a_bad_record_quarantines_it_and_keeps_the_rest(district, spoil, reason):
    records = list(district.records("users", "1.2", "https://ic.example/api"))
    spoil(records[7])
    page = normalise_body("users", "1.2", json.dumps({"users": records}).encode())
    (rejection,) = page.rejections
    assert reason in rejection.reason
    assert page.table.num_rows == len(records) - 1 and len(page) == len(records)


def test_a_null_grade_is_left_out_whichever_path_its_page_takes(district):
    records = list(district.records("users", "1.2", "https://ic.example/api"))
    records[3]["grades"] = [None, "09", ""]
    clean = normalise_body("users", "1.2", json.dumps({"users": records}).encode())
    records[7]["sourcedId"] = " "  # a bad record sends its page record by record
    spoiled = normalise_body("users", "1.2", json.dumps({"users": records}).encode())
    assert [rejection.sourced_id for rejection in spoiled.rejections] == [" "] and not clean.rejections
    assert clean.table.slice(3, 1).to_pylist() == spoiled.table.slice(3, 1).to_pylist()
    assert clean.table.column("grades")[3].as_py() == ["09"]


@pytest.mark.parametrize(
    "collection, version, spoil",
    [
        ("users", "1.2", lambda record: record.pop("agents")),
        ("users", "1.2", lambda record: record.update(metadata=None, grades=None)),
        ("classes", "1.2", lambda record: record.pop("periods")),
        ("enrollments", "1.2", lambda record: record.update(dateLastModified="2026-11-02T08:15:00Z")),
    ],
    ids=["no-agents", "null-metadata", "no-periods", "whole-seconds"],
)
def test_a_page_where_no_record_has_an_optional_key_takes_the_columnar_path(
    district, collection, version, spoil, columnar_only
):
    records = list(district.records(collection, version, "https://ic.example/api"))
    for record in records:
        spoil(record)
    page = json.dumps({collection: records}).encode()
    table, rejections = record_by_record(collection, version, page)
    assert normalise_body(collection, version, page).table.equals(table) and not rejections


def test_a_begin_date_with_a_time_of_day_is_quarantined_on_either_path(district):
    records = list(district.records("enrollments", "1.2", "https://ic.example/api"))
    for record in records:
        record["beginDate"] += "T10:30:00Z"
    page = json.dumps({"enrollments": records}).encode()
    normalised = normalise_body("enrollments", "1.2", page)
    assert normalised.table.num_rows == 0 and len(normalised.rejections) == len(records)
    assert "begin_date" in normalised.rejections[0].reason
    assert normalised.rejections == record_by_record("enrollments", "1.2", page)[1]


def test_a_body_cut_short_is_an_error_not_an_empty_page(district):
    page = body(district, "enrollments", "1.2")
    with pytest.raises(BodyError, match="not JSON"):
        normalise_body("enrollments", "1.2", page[: len(page) // 2])
    with pytest.raises(BodyError, match="no 'enrollments' list"):
        normalise_body("enrollments", "1.2", b'{"users": []}')
    with pytest.raises(BodyError, match="no 'enrollments' list"):
        normalise_body("enrollments", "1.2", b"{}")


# -- random pages through both paths ------------------------------------------------------------

ODD_VALUES = (None, "", "true", "false", True, False, 7, [], {})
EXTRA_VALUES = (None, "", "x", 7, True, [], ["x"], {"x": "y"})
DATES = ("2026-08-15", "2026-08-15T00:00:00Z", "2026-08-15T10:30:00Z", "2026-08-15T10:30:00.5Z",
         "2026-08-15T10:30:00.123456789Z", "2026-08-15T10:30:00+05:00", "2026-08-15T10:30:00",
         "2026-08-15 10:30:00Z", "2026-08-15T10:30Z", "20260815T103000Z", "2026-8-15", "2026-08-15T24:00:00Z")


@cache
def served(collection: str, version: str) -> list[dict]:
    district = SyntheticDistrict(DistrictSpec(seed=3, students=60, schools=3, school_year=2027))
    return list(district.records(collection, version, "https://ic.example/api"))


def places(value, path=()):
    """The path to every value inside a record: object members and array entries, at any depth."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield (*path, key)
        yield from places(item, (*path, key))


def at(record: dict, path) -> object:
    for key in path:
        record = record[key]
    return record


def containers(record: dict, kind: type) -> list[tuple]:
    """The paths to the objects (the record itself too) or to the arrays in a record."""
    return [()] * (kind is dict) + [path for path in places(record) if isinstance(at(record, path), kind)]


def leave_out(draw, record: dict) -> None:
    *parent, key = draw(st.sampled_from(list(places(record))))
    del at(record, parent)[key]


def replace(draw, record: dict) -> None:
    *parent, key = draw(st.sampled_from(list(places(record))))
    at(record, parent)[key] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))


def null_in_list(draw, record: dict) -> None:
    lists = containers(record, list)
    if lists:
        entries = at(record, draw(st.sampled_from(lists)))
        entries.insert(draw(st.integers(0, len(entries))), None)


def unknown_field(draw, record: dict) -> None:
    where = at(record, draw(st.sampled_from(containers(record, dict))))
    name = draw(st.sampled_from(("x-extra", "userMasterIdentifier", "pronouns")))
    where[name] = copy.deepcopy(draw(st.sampled_from(EXTRA_VALUES)))


def respell_a_date(draw, record: dict) -> None:
    dated = [name for name in ("dateLastModified", "startDate", "endDate", "beginDate") if name in record]
    if dated:
        record[draw(st.sampled_from(dated))] = draw(st.sampled_from(DATES))


SPOILERS = (leave_out, replace, null_in_list, unknown_field, respell_a_date)


@st.composite
def pages(draw, collection: str, version: str) -> bytes:
    records = served(collection, version)
    indexes = draw(st.lists(st.integers(0, len(records) - 1), min_size=1, max_size=8))
    page = [copy.deepcopy(records[index]) for index in indexes]
    for _ in range(draw(st.integers(0, 4))):
        draw(st.sampled_from(SPOILERS))(draw, draw(st.sampled_from(page)))
    return json.dumps({collection: page}).encode()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("collection", COLLECTIONS)
@settings(max_examples=60, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_both_paths_give_one_answer_for_random_pages(collection, version, data):
    page = data.draw(pages(collection, version))
    table, rejections = record_by_record(collection, version, page)
    taken = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(columnar, "normalise_page", lambda *args: taken.append(1) or normalise_page(*args))
        normalised = normalise_body(collection, version, page)
    event("record by record" if taken else "columnar")
    assert normalised.table.to_pylist() == table.to_pylist()
    assert normalised.table.equals(table)
    assert normalised.rejections == rejections
