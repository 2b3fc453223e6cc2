"""The district DAG's extract against OneRoster servers that behave as other real servers do
(the IC emulator's profiles), end to end through Airflow: every record staged once, and what
the server served counted in the manifest. The expected records come from the generator."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from include.config import DISTRICTS_DIR_ENV
from include.oneroster.models import COLLECTIONS
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_emulator import PROFILES, ROSTER_CORE_READONLY, ICEmulator
from include.staging import Manifest, read_frame
from tests.fault_ledger import ScenarioLedger, record
from tests.support import CLIENT_ID, CLIENT_SECRET, Spoiled, connection_uri_env

NIGHT = datetime(2026, 11, 2, 6, tzinfo=timezone.utc)


@pytest.fixture
def extract_only(tmp_path, monkeypatch, airflow_db):
    """An extract-only district asking for IC's default page size of 10,000 records."""
    districts = tmp_path / "districts"
    districts.mkdir()
    (districts / "foreign.yaml").write_text(yaml.safe_dump({
        "district": "foreign", "name": "A district on another OneRoster server",
        "infinite_campus": {"conn_id": "ic_foreign", "max_concurrency": 2, "page_size": 10_000},
    }))
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(districts))
    monkeypatch.setenv("AIRFLOW_VAR_ONEROSTER_STAGING_ROOT", (tmp_path / "staging").as_uri())
    return monkeypatch


def serve(district: SyntheticDistrict, profile, monkeypatch, **extras) -> ICEmulator:
    emulator = ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo",
                          profile=profile)
    emulator.__enter__()
    for key, value in connection_uri_env("ic_foreign", emulator, "1.2", **extras).items():
        monkeypatch.setenv(key, value)
    return emulator


def run(when: datetime):
    from include.sandbox.runner import run_dag

    outcome = run_dag("oneroster_foreign", logical_date=when, run_after=when)
    assert outcome.state == "success", outcome.task_states
    return {collection: Manifest.model_validate(outcome.returned[f"extract.{collection}"])
            for collection in COLLECTIONS}


def ledger(scenario: str, faults: int, manifests: dict[str, Manifest], district: SyntheticDistrict,
           quarantined: set[str] = frozenset()) -> None:
    """The scenario's line in the fault ledger, from the far side (what was staged) against the
    generator's records: each record staged once, or quarantined; none lost."""
    rows_in = staged_rows = distinct = lost = 0
    for collection, manifest in manifests.items():
        expected = {record["sourcedId"] for record in district.records(collection, "1.2")}
        staged = read_frame(manifest.uri)["sourced_id"]
        held = set(read_frame(manifest.quarantine_uri)["sourced_id"]) if collection == "users" else set()
        rows_in += len(expected)
        staged_rows += len(staged)
        distinct += staged.nunique()
        lost += len(expected - set(staged) - held)
    record(ScenarioLedger(scenario, faults, rows_in, distinct, len(quarantined), 0, staged_rows - distinct, lost))


def assert_staged_as_served(manifests: dict[str, Manifest], district: SyntheticDistrict) -> None:
    """Each collection staged holds the generator's records, each once, as they are now."""
    for collection, manifest in manifests.items():
        records = district.records(collection, "1.2")
        staged = read_frame(manifest.uri)
        assert staged["sourced_id"].is_unique, collection
        assert set(staged["sourced_id"]) == {record["sourcedId"] for record in records}, collection
        assert manifest.row_count == len(records) and manifest.quarantined_count == 0, collection


def test_a_server_that_caps_pages_at_500_and_sends_no_total_is_staged_whole(extract_only, monkeypatch):
    district = SyntheticDistrict(DistrictSpec(seed=11, students=600, schools=3, school_year=2027))
    assert district.expected_counts()["enrollments"] > 2_000 and district.expected_counts()["users"] > 500
    ic = serve(district, "capped-no-total", monkeypatch)
    try:
        manifests = run(NIGHT)
        assert_staged_as_served(manifests, district)
        for collection, manifest in manifests.items():
            assert manifest.server_total is None and manifest.served_count == manifest.row_count
            offsets = [int(request.query["offset"]) for request in ic.requests
                       if request.path.endswith(f"/{collection}")]
            served = len(district.records(collection))
            assert offsets == [*range(0, served, 500), served], f"{collection}: read by what was served, to an empty page"
        capped = sum(max(0, -(-len(district.records(collection)) // 500) - 1) for collection in COLLECTIONS)
        ledger("server caps pages at 500, no total, no Link", capped, manifests, district)  # pages cut short
    finally:
        ic.__exit__(None, None, None)


def test_a_token_endpoint_that_requires_a_scope_gets_the_connections_scope(extract_only, monkeypatch):
    district = SyntheticDistrict(DistrictSpec(seed=12, students=60, schools=3, school_year=2027))
    ic = serve(district, "scope-required", monkeypatch, scope=ROSTER_CORE_READONLY)
    try:
        manifests = run(NIGHT)
        assert_staged_as_served(manifests, district)
        assert ic.token_requests >= 1
        ledger("token endpoint requires a scope", 1, manifests, district)
    finally:
        ic.__exit__(None, None, None)


@pytest.mark.parametrize("total_count", [True, False], ids=["with a total", "without a total"])
def test_a_collection_that_changes_while_it_is_paged_is_read_again_and_staged_once(
        extract_only, monkeypatch, total_count):
    """The server orders by change: the first record, edited once the first page was served,
    moves to the end, so paging by offset serves it twice and skips the record after page 1."""
    district = SyntheticDistrict(DistrictSpec(seed=13, students=60, schools=3, school_year=2027))
    profile = replace(PROFILES["changing"], total_count=total_count, links=total_count, max_limit=20)
    ic = serve(district, profile, monkeypatch)
    try:
        manifests = run(NIGHT)
        assert_staged_as_served(manifests, district)
        for collection, manifest in manifests.items():
            if len(district.records(collection)) <= 20:
                assert manifest.reads == 1, f"{collection} is one page, edited after it was read"
                continue
            moved = district.records(collection)[0]["sourcedId"]
            assert district.modified_indexes(collection), f"{collection} was edited while it was paged"
            assert manifest.reads == 2 and manifest.duplicate_count == 0, collection
            assert manifest.server_total == (len(district.records(collection)) if total_count else None)
            staged = read_frame(manifest.uri)
            newest = staged[staged["sourced_id"] == moved]["date_last_modified"].iloc[0]
            assert newest.strftime("%Y-%m-%dT%H:%M:%S.000Z") == district.modified_indexes(collection)[0], \
                f"{collection}: the record served twice is staged in its newest version"
        users = read_frame(manifests["users"].uri)
        assert users[users["sourced_id"] == district.records("users")[0]["sourcedId"]]["family_name"].iloc[0] \
            .endswith("-Lee"), "the edited user is staged as it is now"
        ledger(f"collection edited while paged ({'with' if total_count else 'no'} total)",
               sum(1 for collection in COLLECTIONS if district.modified_indexes(collection)), manifests, district)
    finally:
        ic.__exit__(None, None, None)


def test_quarantined_records_stay_quarantined_and_counted_on_delta_nights(extract_only, monkeypatch):
    district = SyntheticDistrict(DistrictSpec(seed=14, students=60, schools=3, school_year=2027))
    spoiled = {3, 17, 29, 41}
    records = district.records
    monkeypatch.setattr(district, "records", lambda collection, version="1.2", href_base="": Spoiled(
        records(collection, version, href_base), spoiled if collection == "users" else set()))
    ids = [record["sourcedId"] for record in records("users")]
    ic = serve(district, "ic", monkeypatch)
    try:
        full = run(NIGHT)["users"]
        assert (full.extract_mode, full.quarantined_count, full.row_count) == ("full", 4, len(ids) - 4)
        quiet = run(NIGHT + timedelta(days=1))["users"]
        assert (quiet.extract_mode, quiet.quarantined_count, quiet.row_count) == ("delta", 4, len(ids) - 4)
        assert set(read_frame(quiet.quarantine_uri)["sourced_id"]) == {ids[index] for index in spoiled}

        spoiled.discard(17)  # fixed in IC: edited, so tonight's delta serves it
        district.edit("users", [17], NIGHT + timedelta(days=1, hours=19))
        fixed = run(NIGHT + timedelta(days=2))["users"]
        assert (fixed.extract_mode, fixed.quarantined_count, fixed.row_count) == ("delta", 3, len(ids) - 3)
        staged = set(read_frame(fixed.uri)["sourced_id"])
        assert ids[17] in staged and not staged & {ids[index] for index in spoiled}

        spoiled.add(5)  # broken in IC tonight: a record the snapshot holds leaves it
        district.edit("users", [5], NIGHT + timedelta(days=2, hours=19))
        nights = run(NIGHT + timedelta(days=3))
        broken = nights["users"]
        assert (broken.quarantined_count, broken.row_count) == (4, len(ids) - 4)
        assert ids[5] not in set(read_frame(broken.uri)["sourced_id"])
        ledger("records quarantined, carried over delta nights", 5, nights, district,
               quarantined={ids[index] for index in spoiled})
    finally:
        ic.__exit__(None, None, None)
