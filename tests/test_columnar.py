"""The columnar page path gives exactly what the record-by-record path gives, and hands a page
it cannot vouch for to that path, so nothing is dropped that would have been quarantined.

Besides the synthetic district's pages as served, random pages of every collection in both
versions, spoiled the ways served data is (keys left out, nulls in lists, empty strings,
booleans as strings, unknown fields, nulls, dates spelled otherwise, whitespace around or instead
of a string, status values, metadata of every shape, roles[] empty or odd, grades and periods with
nulls, GUIDRefs null or blank, a record of the other version), must stage the same rows and
quarantine the same records with the same reasons (naming no value) through either path. Some
variations are made to every record of a page, so that the columnar path still reads it as
columns and has to give the record path's answer rather than hand the page over."""

from __future__ import annotations

import copy
import json
import os
import random
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


@pytest.mark.parametrize("collection", ["users", "classes", "enrollments"])
@pytest.mark.parametrize("spelling", ["2026-08-15T10:30:00+05", "2026-08-15T10Z", "1786789800",
                                      "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_date_time_the_rule_refuses_is_quarantined_on_either_path(district, collection, spelling):
    """Arrow reads an offset of hours alone or an hour without minutes; the models' one rule
    (DATE_TIME_PATTERN) does not, so the columnar path may not stage what the record path refuses."""
    records = list(district.records(collection, "1.2", "https://ic.example/api"))
    for record in records:
        record["dateLastModified"] = spelling
    page = json.dumps({collection: records}).encode()
    normalised = normalise_body(collection, "1.2", page)
    assert normalised.table.num_rows == 0 and len(normalised.rejections) == len(records)
    assert "date_last_modified" in normalised.rejections[0].reason and spelling not in normalised.rejections[0].reason
    assert normalised.rejections == record_by_record(collection, "1.2", page)[1]


@pytest.mark.parametrize("spelling", ["2026-08-15T10:30:00+05:30", "2026-08-15T10:30:00.123+0530",
                                      "2026-08-15 10:30:00Z", "2026-08-15T10:30Z", "2026-08-15T10:30:00-00:00"])
def test_a_date_time_the_rule_takes_stays_on_the_columnar_path(district, spelling, columnar_only):
    records = list(district.records("users", "1.2", "https://ic.example/api"))
    for record in records:
        record["dateLastModified"] = spelling
    page = json.dumps({"users": records}).encode()
    table, rejections = record_by_record("users", "1.2", page)
    assert normalise_body("users", "1.2", page).table.equals(table) and not rejections


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
         "2026-08-15 10:30:00Z", "2026-08-15T10:30Z", "20260815T103000Z", "2026-8-15", "2026-08-15T24:00:00Z",
         "2026-08-15T10:30:00+05", "2026-08-15T10Z", "2026-08-15T10:30:00.5+05", "2026-08-15T10:30:00+0530",
         "2026-08-15T10:30:00-00:00", "2026-08-15T10:30:00z", "2026-08-15t10:30:00Z", "2026-08-15T10:30:00,5Z",
         "2026-08-15T00:00:00", "2026-08-15T00:00:00.000Z", " 2026-08-15", "2026-08-15 ", "1786789800", "",
         "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-08-15T10:30:00+23:59")
STATUSES = ("active", "tobedeleted", "inactive", "Active", " active", "", "x-custom")
WHITESPACE = (" ", "\t", "\u00a0", "\n", "  ")
METADATA = (None, {}, [], "x", 7, {"x-extra": "y"}, {"ic.legacysourceId": ""}, {"ic.legacysourceId": None},
            {"ic.legacysourceId": 7}, {"ic.trialSchedule": True}, {"ic.trialSchedule": " TRUE "},
            {"ic.trialSchedule": "yes"}, {"ic.trialSchedule": None}, {"ic.trialSchedule": 1},
            {"ic.crossListGroup": ""}, {"ic.crossListGroup": 12}, {"ic.crossListGroup": "XL-1"},
            {"ic.legacysourceId": {"nested": "x"}}, {"nested": {"deeper": [1, None]}})
TEXT_LISTS = (None, [], [None], [""], ["09", None, ""], ["KG", "09"], [" "], [9], ["09", 9], [{}], [[]], [True], "09")
ROLE_ENTRIES = ({"roleType": "primary", "role": "student", "org": {"sourcedId": "101"}},
                {"roleType": "secondary", "role": "teacher", "org": {"sourcedId": "102", "type": "org"}},
                {"roleType": "primary", "role": "administrator", "org": {"sourcedId": "101"}},
                {"roleType": "tertiary", "role": "student", "org": {"sourcedId": "101"}},
                {"roleType": "secondary", "role": "student", "org": {"sourcedId": ""}},
                {"roleType": "secondary", "role": "student", "org": None},
                {"roleType": "secondary", "role": "student"},
                {"roleType": "primary", "role": None, "org": {"sourcedId": "101"}},
                {"roleType": "primary", "role": "", "org": {"sourcedId": "101"}},
                {"roleType": "primary", "role": "student", "org": {"sourcedId": "101"}, "beginDate": "2026-08-15"},
                None, "student", 7)
GUIDREFS = (None, {}, {"sourcedId": ""}, {"sourcedId": None}, {"sourcedId": " "}, {"sourcedId": 7},
            {"sourcedId": "101", "type": "org", "x-extra": 1}, "101", [])


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


# A spoiler changes one record the way served data varies; it makes its choices with ``pick``
# (one of a sequence), so the same choices can be replayed on every record of a page.

def leave_out(pick, record: dict) -> None:
    *parent, key = pick(list(places(record)))
    del at(record, parent)[key]


def replace(pick, record: dict) -> None:
    *parent, key = pick(list(places(record)))
    at(record, parent)[key] = copy.deepcopy(pick(ODD_VALUES))


def null_in_list(pick, record: dict) -> None:
    lists = containers(record, list)
    if lists:
        entries = at(record, pick(lists))
        entries.insert(pick(range(len(entries) + 1)), None)


def unknown_field(pick, record: dict) -> None:
    where = at(record, pick(containers(record, dict)))
    where[pick(("x-extra", "userMasterIdentifier", "pronouns"))] = copy.deepcopy(pick(EXTRA_VALUES))


def respell_a_date(pick, record: dict) -> None:
    dated = [name for name in ("dateLastModified", "startDate", "endDate", "beginDate") if name in record]
    if dated:
        record[pick(dated)] = pick(DATES)


def status(pick, record: dict) -> None:
    record["status"] = pick(STATUSES)


def pad_with_whitespace(pick, record: dict) -> None:
    """A string anywhere in the record with whitespace around it, or nothing but whitespace."""
    texts = [path for path in places(record) if isinstance(at(record, path), str)]
    if texts:
        *parent, key = pick(texts)
        space, value = pick(WHITESPACE), at(record, parent)[key]
        at(record, parent)[key] = pick((space + value, value + space, space))


def metadata(pick, record: dict) -> None:
    record["metadata"] = copy.deepcopy(pick(METADATA))


def text_list(pick, record: dict) -> None:
    record[pick(("grades", "periods", "subjects"))] = copy.deepcopy(pick(TEXT_LISTS))


def roles(pick, record: dict) -> None:
    """1.2's roles[] (or 1.1's role) as servers send them: empty, several primaries, odd entries."""
    record["roles"] = [copy.deepcopy(pick(ROLE_ENTRIES)) for _ in range(pick(range(4)))]
    if pick((False, True)):
        record["role"] = pick(("student", "administrator", "teacher", "", None))


def a_reference(pick, record: dict) -> None:
    """A GUIDRef (or an entry of a list of them) null, empty, blank or of the wrong type."""
    names = [name for name in ("user", "class", "school", "course", "org", "parent", "schoolYear", "agents",
                               "orgs", "terms") if name in record]
    if names:
        name, ref = pick(names), copy.deepcopy(pick(GUIDREFS))
        if isinstance(record[name], list):
            record[name].insert(pick(range(len(record[name]) + 1)), ref)
        else:
            record[name] = ref


SPOILERS = (leave_out, replace, null_in_list, unknown_field, respell_a_date, status, pad_with_whitespace,
            metadata, text_list, roles, a_reference)


def replaying(seed: int):
    """A ``pick`` that makes the same choices for every record it is made anew for."""
    choices = random.Random(seed)
    return lambda options: options[choices.randrange(len(options))]


@st.composite
def pages(draw, collection: str, version: str) -> bytes:
    # now and then a record of the other version: 1.1 field names served as 1.2, or the reverse
    other = "1.2" if version == "1.1" else "1.1"
    records = served(collection, version) + served(collection, other) * draw(st.sampled_from((0, 0, 0, 1)))
    indexes = draw(st.lists(st.integers(0, len(records) - 1), min_size=1, max_size=8))
    page = [copy.deepcopy(records[index]) for index in indexes]

    def pick(options):
        return draw(st.sampled_from(options))

    for _ in range(draw(st.integers(0, 4))):
        pick(SPOILERS)(pick, pick(page))
    # the same variation on every record: a page the columnar path can still read as columns
    for _ in range(draw(st.integers(0, 2))):
        spoil, seed = pick(SPOILERS), draw(st.integers(0, 2**16))
        for record in page:
            spoil(replaying(seed), record)
    return json.dumps({collection: page}).encode()


def values_in(record) -> set[str]:
    """The strings a record was served with that could name a person (no short codes or words)."""
    if not isinstance(record, dict):
        return set()
    return {value.strip() for name in ("sourcedId", "givenName", "familyName", "username", "email", "identifier")
            if isinstance(value := record.get(name), str) and len(value.strip()) >= 4}


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("collection", COLLECTIONS)
@settings(max_examples=int(os.environ.get("COLUMNAR_EXAMPLES", "100")), derandomize=True, database=None,
          deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
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
    # a reason says which field and why, never what it held
    served_values = set().union(*map(values_in, json.loads(page)[collection]))
    for rejection in rejections:
        assert not [value for value in served_values if value in rejection.reason], rejection.reason
