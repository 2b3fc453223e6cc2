"""The district DAGs as Airflow loads and runs them: DagBag, then dag.test() end to end."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV
from include.oneroster.models import COLLECTIONS
from include.staging import Manifest
from tests.support import ROOT, connection_uri_env, lms_connection_env

DEMO_DAGS = ("oneroster_demo", "oneroster_demo_v11")
PROVISIONING = {"halves": "provisioning"}  # no grade export waits on the SFTP server in these tests


def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_every_shipped_district_loads_as_a_dag():
    bag = dag_bag()
    assert bag.import_errors == {}
    assert set(DEMO_DAGS) <= set(bag.dag_ids)
    dag = bag.dags["oneroster_demo"]
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert {"oneroster", "infinite-campus", "district:demo"} <= set(dag.tags)
    assert "include/districts/demo.yaml" in dag.doc_md
    assert dag.timetable.expression == "0 6 * * *"
    assert dag.params["active_year"] is None and dag.params["dry_run"] is False
    assert sorted(task.task_id for task in dag.tasks if task.task_id.startswith("extract.")) == sorted(
        f"extract.{name}" for name in COLLECTIONS
    )
    provisioning = [task.task_id for task in dag.tasks if task.task_id.startswith("provision.")]
    assert provisioning == [
        "provision.buildings", "provision.grading_periods", "provision.users", "provision.guardian_links",
        "provision.courses", "provision.sections", "provision.enrollments", "provision.sync_report",
    ]
    for upstream, downstream in zip(provisioning, provisioning[1:]):
        assert dag.get_task(downstream).upstream_task_ids == {upstream}, "schools -> terms -> users -> ... in order"
    assert set(dag.get_task("provision.buildings").upstream_task_ids) == {f"extract.{name}" for name in COLLECTIONS}
    for task in dag.tasks:
        assert task.retries == 3
        assert task.retry_exponential_backoff == 2.0
        assert task.max_retry_delay == timedelta(minutes=30)
        if task.task_id.startswith(("extract.", "grades.post")):
            assert task.pool == "ic_demo"
        elif task.task_id.startswith("provision.") and task.task_id != "provision.sync_report":
            assert task.pool == "lms_demo"
        assert task.on_failure_callback, "failure emails after the last retry"
    grades = [task.task_id for task in dag.tasks if task.task_id.startswith("grades.")]
    assert grades == ["grades.wait_for_export", "grades.fetch_export", "grades.plan", "grades.post", "grades.reconcile"]
    assert dag.get_task("grades.plan").upstream_task_ids == {"grades.fetch_export", "provision.sync_report"}
    assert dag.params["halves"] == "both"
    assert bag.dags["oneroster_demo_v11"].deadline is None
    assert dag.deadline is not None


def test_extract_pool_slots_fit_the_pools_in_airflow_settings():
    """A task asking for more slots than its pool has would never be scheduled."""
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())
    pools = {pool["pool_name"]: pool["pool_slot"] for pool in settings["airflow"]["pools"]}
    for dag_id in DEMO_DAGS:
        for task in dag_bag().dags[dag_id].tasks:
            assert task.pool in {*pools, "default_pool"} and task.pool_slots <= pools.get(task.pool, 128)


def test_a_bad_district_file_is_an_import_error_and_the_others_still_load(tmp_path, monkeypatch):
    shutil.copy(DISTRICTS_DIR / "demo.yaml", tmp_path / "demo.yaml")
    (tmp_path / "broken.yaml").write_text(
        "district: broken\nname: Broken\ninfinite_campus:\n  conn_id: ic_broken\n  max_concurrency: 9\n"
    )
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(tmp_path))
    bag = dag_bag()
    assert "oneroster_demo" in bag.dag_ids
    assert "oneroster_broken" not in bag.dag_ids
    (error,) = bag.import_errors.values()
    assert str(tmp_path / "broken.yaml") in error
    assert "infinite_campus.max_concurrency" in error
    assert "less than or equal to 5" in error


def test_a_dags_docs_name_the_district_file_it_was_built_from(tmp_path, monkeypatch):
    shutil.copy(DISTRICTS_DIR / "demo.yaml", tmp_path / "demo.yaml")
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(tmp_path))
    dag = dag_bag().dags["oneroster_demo"]
    assert str(tmp_path / "demo.yaml") in dag.doc_md and "include/districts/demo.yaml" not in dag.doc_md
    assert dag.get_task("provision.buildings").config_file == str(tmp_path / "demo.yaml")


@pytest.fixture
def staged_run_env(ic, lms, monkeypatch, tmp_path, airflow_db):
    for dag_version, conn_id in (("1.2", "ic_demo"), ("1.1", "ic_demo_v11")):
        for key, value in connection_uri_env(conn_id, ic, dag_version).items():
            monkeypatch.setenv(key, value)
    for key, value in lms_connection_env("lms_demo", lms).items():
        monkeypatch.setenv(key, value)
    staging = tmp_path / "staging"
    monkeypatch.setenv("AIRFLOW_VAR_ONEROSTER_STAGING_ROOT", staging.as_uri())
    return staging


@pytest.mark.parametrize(("dag_id", "version"), [("oneroster_demo", "1.2"), ("oneroster_demo_v11", "1.1")])
def test_demo_dag_extracts_every_collection_end_to_end(staged_run_env, demo_district, dag_id, version):
    from include.sandbox.runner import run_dag

    outcome = run_dag(dag_id, logical_date=datetime(2026, 11, 2, 6, tzinfo=timezone.utc), run_conf=PROVISIONING)
    assert outcome.state == "success", outcome.task_states
    expected = demo_district.expected_counts(version)
    people = {
        value
        for record in demo_district.records("users", version)
        for key, value in record.items()
        if key in ("givenName", "familyName", "username", "email") and value
    }
    for collection in COLLECTIONS:
        returned = outcome.returned[f"extract.{collection}"]
        manifest = Manifest.model_validate(returned)
        assert set(returned) == set(Manifest.model_fields)
        assert not any(str(value) in people for value in returned.values()), "student data in XCom"
        assert manifest.row_count == expected[collection]
        assert manifest.quarantined_count == 0
        assert (manifest.oneroster_version, manifest.district) == (version, dag_id.removeprefix("oneroster_"))
        assert manifest.active_year == 2027
        staged = Path(manifest.uri.removeprefix("file://"))
        assert staged.is_file() and staged.is_relative_to(staged_run_env)
        assert pq.ParquetFile(staged).metadata.num_rows == expected[collection]
        import hashlib

        assert hashlib.sha256(staged.read_bytes()).hexdigest() == manifest.content_sha256
    users = pd.read_parquet(outcome.returned["extract.users"]["uri"])
    assert set(users["sourced_id"]) == {record["sourcedId"] for record in demo_district.records("users", version)}


def test_active_year_param_overrides_the_logical_date(staged_run_env):
    from include.sandbox.runner import run_dag

    outcome = run_dag(
        "oneroster_demo",
        logical_date=datetime(2027, 8, 3, 6, tzinfo=timezone.utc),  # school year 2028 by the July rule
        run_conf={"active_year": 2027, **PROVISIONING},
    )
    assert outcome.state == "success", outcome.task_states
    assert {manifest["active_year"] for manifest in outcome.returned.values()} == {2027}


def test_a_year_ic_does_not_serve_fails_instead_of_syncing_the_wrong_year(staged_run_env, lms):
    from include.sandbox.runner import run_dag

    outcome = run_dag("oneroster_demo", logical_date=datetime(2027, 8, 3, 6, tzinfo=timezone.utc),
                      run_conf=PROVISIONING)
    assert outcome.state == "failed"
    assert outcome.task_states["extract.academicSessions"] == "failed"
    assert outcome.task_states["provision.buildings"] == "upstream_failed"
    assert lms.write_requests == 0, "nothing of the wrong year reached the LMS"


def test_a_retried_extract_overwrites_its_own_output(staged_run_env):
    """Clearing a run re-runs it under the same run id: the staged files are replaced, not duplicated."""
    from include.sandbox.runner import run_dag

    when = datetime(2026, 11, 4, 6, tzinfo=timezone.utc)
    first = run_dag("oneroster_demo", logical_date=when, run_after=when, run_conf=PROVISIONING)
    second = run_dag("oneroster_demo", logical_date=when, run_after=when, run_conf=PROVISIONING)
    assert first.run_id == second.run_id and second.state == "success"
    for collection in COLLECTIONS:
        assert first.returned[f"extract.{collection}"]["uri"] == second.returned[f"extract.{collection}"]["uri"]
        assert (
            first.returned[f"extract.{collection}"]["content_sha256"]
            == second.returned[f"extract.{collection}"]["content_sha256"]
        )
    run_dir = Path(second.returned["extract.users"]["uri"].removeprefix("file://")).parent
    assert sorted(path.name for path in run_dir.iterdir() if path.is_file()) == sorted(
        [f"{name}.parquet" for name in COLLECTIONS] + [f"{name}.quarantine.parquet" for name in COLLECTIONS]
    ), "a re-run leaves no second copy and no temporary file behind"


@pytest.mark.parametrize(("peak_now", "allowed"), [(False, 3), (True, 1)])
def test_a_dag_run_never_exceeds_the_districts_concurrency(ic, monkeypatch, tmp_path, airflow_db, peak_now, allowed):
    """IC asks for serial calls at peak and at most 5 concurrent off-peak; the config says how many."""
    from include.sandbox.runner import run_dag

    now = datetime.now(timezone.utc)
    hours = {"start": (now - timedelta(hours=1)).strftime("%H:%M"), "end": (now + timedelta(hours=1)).strftime("%H:%M")}
    if not peak_now:
        hours = {"start": (now + timedelta(hours=2)).strftime("%H:%M"), "end": (now + timedelta(hours=3)).strftime("%H:%M")}
    (tmp_path / "districts").mkdir()
    (tmp_path / "districts" / "limits.yaml").write_text(
        yaml.safe_dump(
            {
                "district": "limits",
                "name": "Concurrency limits",
                "infinite_campus": {
                    "conn_id": "ic_limits",
                    "max_concurrency": 3,
                    "peak_concurrency": 1,
                    "peak_hours": hours,
                    "page_size": 10,
                },
            }
        )
    )
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(tmp_path / "districts"))
    monkeypatch.setenv("AIRFLOW_VAR_ONEROSTER_STAGING_ROOT", (tmp_path / "staging").as_uri())
    for key, value in connection_uri_env("ic_limits", ic, "1.2").items():
        monkeypatch.setenv(key, value)
    ic.latency = 0.02
    outcome = run_dag("oneroster_limits", logical_date=now)
    assert outcome.state == "success", outcome.task_states
    assert ic.max_in_flight == allowed
