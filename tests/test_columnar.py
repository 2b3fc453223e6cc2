"""The columnar page path gives exactly what the record-by-record path gives, and hands a page
it cannot vouch for to that path, so nothing is dropped that would have been quarantined."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from include.oneroster import columnar
from include.oneroster.columnar import BodyError, normalise_body
from include.sandbox.generator import DistrictSpec, SyntheticDistrict


@pytest.fixture(scope="module")
def district():
    district = SyntheticDistrict(DistrictSpec(seed=5, students=400, school_year=2027))
    for collection in ("users", "enrollments"):
        district.modify(collection, 30, datetime(2026, 11, 1, tzinfo=timezone.utc))
    return district


def body(district, collection: str, version: str) -> bytes:
    return json.dumps({collection: list(district.records(collection, version, "https://ic.example/api"))}).encode()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
@pytest.mark.parametrize("collection", ["users", "classes", "enrollments"])
def test_the_columnar_path_equals_the_record_path(district, collection, version, monkeypatch):
    page = body(district, collection, version)
    columnar._COLUMNAR[collection](columnar._parse(collection, page), version)  # taken, not fallen back from
    fast = normalise_body(collection, version, page)
    monkeypatch.setattr(columnar, "_COLUMNAR", {})
    slow = normalise_body(collection, version, page)
    assert fast.table.num_rows == len(district.records(collection, version)) and not fast.rejections
    assert fast.table.equals(slow.table)


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


def test_a_body_cut_short_is_an_error_not_an_empty_page(district):
    page = body(district, "enrollments", "1.2")
    with pytest.raises(BodyError, match="not JSON"):
        normalise_body("enrollments", "1.2", page[: len(page) // 2])
    with pytest.raises(BodyError, match="no 'enrollments' list"):
        normalise_body("enrollments", "1.2", b'{"users": []}')
