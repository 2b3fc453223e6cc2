"""Delta nights: when a night may ask IC for changes only, and how changes merge into the snapshot."""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq

from include.oneroster.models import SCHEMA_VERSION
from include.oneroster.snapshot import ExtractMark, carried_quarantine, holds_already, merge_changes, plan_extract

NOW = datetime(2026, 11, 20, 6, tzinfo=timezone.utc)
MARK = ExtractMark(high_water=NOW - timedelta(days=1), full_at=NOW - timedelta(days=3),
                   schema_version=SCHEMA_VERSION, oneroster_version="1.2")


def plan(mark=MARK, **changes):
    settings = dict(now=NOW, oneroster_version="1.2", force_full=False, deltas_enabled=True,
                    overlap=timedelta(minutes=60), full_every=timedelta(days=7))
    return plan_extract(mark, **{**settings, **changes})


def test_a_night_after_a_full_extract_asks_for_changes_since_its_high_water_less_the_overlap():
    delta = plan()
    assert delta.mode == "delta"
    assert delta.filter == "dateLastModified>'2026-11-19T05:00:00.000Z'"


def test_a_full_extract_is_forced_by_the_param_a_version_change_the_weekly_rule_or_no_base():
    assert plan(force_full=True).reason == "the full_run param is set"
    assert "version changed" in plan(oneroster_version="1.1").reason
    assert "version changed" in plan(MARK.model_copy(update={"schema_version": "0"})).reason
    assert "older than 7 day(s)" in plan(MARK.model_copy(update={"full_at": NOW - timedelta(days=7)})).reason
    assert "no earlier extract" in plan(None).reason
    assert plan(deltas_enabled=False).mode == "full"


def snapshot(table: pa.Table, row_group_size: int) -> pq.ParquetFile:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=row_group_size)
    buffer.seek(0)
    return pq.ParquetFile(buffer)


def stamped(ids: list[str], statuses: list[str], minutes: list[int]) -> pa.Table:
    return pa.table({"sourced_id": ids, "status": statuses,
                     "date_last_modified": pa.array([NOW + timedelta(minutes=m) for m in minutes], pa.timestamp("us", "UTC"))})


def test_changes_replace_records_in_place_and_new_ones_follow():
    base = stamped([f"u{n}" for n in range(10)], ["active"] * 10, [0] * 10)
    changes = stamped(["u3", "u12", "u7", "u3", "u5", "u5"], ["x", "new", "tobedeleted", "y", "older", "newer"],
                      [2, 1, 1, 2, 3, 4])
    written: list[pa.Table] = []
    assert merge_changes(snapshot(base, 4), changes, written.append) == 11
    merged = pa.concat_tables(written).to_pydict()
    assert merged["sourced_id"] == [f"u{n}" for n in range(10)] + ["u12"]
    assert merged["status"][3] == "y", "a record served twice with one date keeps its last copy"
    assert merged["status"][5] == "newer", "a record served twice keeps its newest version"
    assert merged["status"][7] == "tobedeleted" and merged["status"][10] == "new"


def test_a_record_served_twice_keeps_its_newest_version_whichever_came_last():
    base = stamped([f"u{n}" for n in range(4)], ["active"] * 4, [0] * 4)
    changes = stamped(["u1", "u1"], ["newest", "stale copy served later"], [9, 5])
    written: list[pa.Table] = []
    merge_changes(snapshot(base, 4), changes, written.append)
    assert pa.concat_tables(written).to_pydict()["status"] == ["active", "newest", "active", "active"]


def test_records_quarantined_tonight_leave_the_snapshot():
    base = stamped([f"u{n}" for n in range(6)], ["active"] * 6, [0] * 6)
    written: list[pa.Table] = []
    assert merge_changes(snapshot(base, 4), base.slice(0, 0), written.append, removed=pa.array(["u1", "u4"])) == 4
    assert pa.concat_tables(written).to_pydict()["sourced_id"] == ["u0", "u2", "u3", "u5"]


def test_a_delta_nights_quarantine_keeps_what_was_not_served_fixed():
    schema = pa.schema([("collection", pa.string()), ("sourced_id", pa.string()), ("reason", pa.string())])
    kept = pa.table({"collection": ["users"] * 3, "sourced_id": ["u1", "u2", None], "reason": ["a", "b", "c"]},
                    schema=schema)
    tonight = pa.table({"collection": ["users"], "sourced_id": ["u2"], "reason": ["b again"]}, schema=schema)
    carried = carried_quarantine(kept, tonight, pa.chunked_array([["u1", "u7"]]))
    assert sorted(zip(carried.column("sourced_id").to_pylist(), carried.column("reason").to_pylist()),
                  key=str) == sorted([(None, "c"), ("u2", "b again")], key=str), \
        "u1 was served fixed; u2 again, with tonight's reason; one without an id stays until a full night"


def test_a_night_without_changes_writes_the_snapshot_as_it_was():
    base = pa.table({"sourced_id": [f"u{n}" for n in range(10)], "status": ["active"] * 10})
    written: list[pa.Table] = []
    merge_changes(snapshot(base, 3), base.slice(0, 0), written.append)
    assert pa.concat_tables(written).equals(base)


def test_records_served_again_by_the_overlap_leave_the_snapshot_standing():
    dates = [NOW - timedelta(days=2, minutes=n) for n in range(10)]
    base = pa.table({"sourced_id": [f"u{n}" for n in range(10)], "date_last_modified": dates,
                     "status": ["active"] * 10})
    held = snapshot(base, 4)
    high_water = max(dates)
    assert holds_already(held, base.slice(0, 0), high_water)
    assert holds_already(held, base.take([0, 2, 0]), high_water), "the newest, served again (twice)"
    edited = base.take([2]).set_column(1, "date_last_modified", pa.array([dates[2] + timedelta(seconds=1)],
                                                                          base.schema.field(1).type))
    assert not holds_already(held, edited, high_water), "an edit dated inside the overlap"
    assert not holds_already(held, edited, dates[2]), "newer than the high water"
    new = pa.table({"sourced_id": ["u99"], "date_last_modified": [dates[5]], "status": ["active"]})
    assert not holds_already(held, new, high_water), "a record the snapshot lacks"


def test_a_delta_night_fetches_only_changes_and_stages_the_whole_collection(airflow_db, lms, monkeypatch, tmp_path):
    from include.sandbox.generator import DistrictSpec, SyntheticDistrict
    from include.sandbox.ic_emulator import ICEmulator
    from include.sandbox.runner import run_dag
    from include.staging import read_frame
    from tests.support import CLIENT_ID, CLIENT_SECRET, connection_uri_env, lms_connection_env

    district = SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))
    night = datetime(2026, 11, 2, 6, tzinfo=timezone.utc)
    with ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as ic:
        for key, value in {**connection_uri_env("ic_demo", ic, "1.2"), **lms_connection_env("lms_demo", lms),
                           "AIRFLOW_VAR_ONEROSTER_STAGING_ROOT": (tmp_path / "staging").as_uri()}.items():
            monkeypatch.setenv(key, value)

        def run(when, **conf):
            ic.reset_stats()
            outcome = run_dag("oneroster_demo", logical_date=when, run_after=when,
                              run_conf={"halves": "provisioning", **conf})
            assert outcome.state == "success", outcome.task_states
            users = [request for request in ic.requests if request.path.endswith("/users")]
            return outcome, users

        full, requests = run(night)
        assert requests and not any("filter" in request.query for request in requests)
        changed = set(district.modify("users", 5, night + timedelta(hours=12)))
        delta, requests = run(night + timedelta(days=1))
        assert requests and all("dateLastModified>" in request.query["filter"] for request in requests)
        staged = read_frame(delta.returned["extract.users"]["uri"])
        assert len(staged) == len(district.records("users")) == delta.returned["extract.users"]["row_count"]
        assert staged["sourced_id"].is_unique
        renamed = staged[staged["family_name"].str.endswith("-Lee")]["sourced_id"]
        assert set(renamed) == changed
        quiet = delta.returned["extract.courses"]  # nothing changed: the snapshot staged as it stands
        assert quiet["extract_mode"] == "delta"
        assert quiet["content_sha256"] == full.returned["extract.courses"]["content_sha256"]
        assert quiet["uri"] != full.returned["extract.courses"]["uri"]
        assert len(read_frame(quiet["uri"])) == quiet["row_count"] == len(district.records("courses"))

        forced, requests = run(night + timedelta(days=2), full_run=True)
        assert requests and not any("filter" in request.query for request in requests)
        assert forced.returned["extract.users"]["content_sha256"] == delta.returned["extract.users"]["content_sha256"]
