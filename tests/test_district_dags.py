"""The district DAGs as Airflow loads and runs them: DagBag, then dag.test() end to end."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from include.config import (
    DAG_FILE_SHARDS,
    DISTRICTS_DIR,
    DISTRICTS_DIR_ENV,
    load_district,
    shard_file_name,
    shard_of,
)
from include.oneroster.models import COLLECTIONS
from include.staging import Manifest
from tests.support import ROOT, connection_uri_env, lms_connection_env

DEMO_DAGS = ("oneroster_demo", "oneroster_demo_v11")
PROVISIONING = {"halves": "provisioning"}  # no grade export waits on the SFTP server in these tests


def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def files_read_from(directory: Path, monkeypatch) -> list[Path]:
    """The files of ``directory`` read from now on, in order, as a list filled as they are read (the
    district files are read with ``Path.read_text``)."""
    opened: list[Path] = []
    read_text = Path.read_text

    def recorded(path: Path, *args, **kwargs) -> str:
        if path.parent == directory:
            opened.append(path)
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", recorded)
    return opened


def demo_dag_with(tmp_path, monkeypatch, groups: set[str], **settings):
    """The demo district's DAG with only the ``groups`` of lms, provisioning and grade_passback it names,
    and ``settings`` changed."""
    config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
    for group in {"lms", "provisioning", "grade_passback"} - groups:
        config.pop(group)
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump({**config, **settings}))
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(tmp_path))
    return dag_bag().dags["oneroster_demo"]


def test_every_shipped_district_loads_as_a_dag():
    bag = dag_bag()
    assert bag.import_errors == {}
    assert set(DEMO_DAGS) <= set(bag.dag_ids)
    dag = bag.dags["oneroster_demo"]
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert {"oneroster", "infinite-campus", "district:demo"} <= set(dag.tags)
    assert "include/districts/demo.yaml" in dag.doc_md
    for told in ("**extract**", "**provision**", "**grades**", "**staging_retention**", "30 day(s)", "`halves`",
                 "`dry_run`", "Unpause on trigger", "district_file_invalid"):
        assert told in dag.doc_md, told
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
    assert dag.get_task("first_night").upstream_task_ids == set()
    for task in (*(f"extract.{name}" for name in COLLECTIONS), "grades.wait_for_export"):
        assert dag.get_task(task).upstream_task_ids == {"first_night"}, task
    assert dag.params["halves"] == "both"
    assert bag.dags["oneroster_demo_v11"].deadline is None
    assert dag.deadline is not None


def test_a_canvas_district_reads_its_grades_from_canvas_once_provisioning_is_done():
    dag = dag_bag().dags["oneroster_demo_canvas"]
    grades = [task.task_id for task in dag.tasks if task.task_id.startswith("grades.")]
    assert grades == ["grades.read_grades", "grades.plan", "grades.post", "grades.reconcile"], "no export to wait for"
    read = dag.get_task("grades.read_grades")
    assert read.upstream_task_ids == {"first_night", "provision.sync_report"}
    assert read.pool == "lms_canvas_demo" and read.trigger_rule == "none_failed"
    assert dag.get_task("grades.plan").upstream_task_ids == {"grades.read_grades", "provision.sync_report"}
    assert "**grades.read_grades**" in read.doc_md and "from its\n  API" in dag.doc_md


@pytest.mark.parametrize("groups, offered", [
    ({"lms", "provisioning", "grade_passback"}, {"active_year", "full_run", "halves", "dry_run"}),
    ({"grade_passback"}, {"active_year", "full_run", "dry_run"}),
    (set(), {"active_year", "full_run"}),  # extract only: nothing to dry-run, no halves to choose
])
def test_the_trigger_form_offers_only_the_params_that_apply(tmp_path, monkeypatch, groups, offered):
    assert set(demo_dag_with(tmp_path, monkeypatch, groups).params) == offered


@pytest.mark.parametrize("groups", [{"lms", "provisioning", "grade_passback"}, {"lms", "provisioning"},
                                    {"grade_passback"}, set()])
def test_every_district_dag_ends_with_its_staging_retention(tmp_path, monkeypatch, groups):
    """Every valid district's night stages (its extracts at least): the retention task follows every
    other task, runs however they ended, and leaves the run's state to them (a teardown)."""
    dag = demo_dag_with(tmp_path, monkeypatch, groups, retention_days=9)
    retention = dag.get_task("staging_retention")
    assert retention.upstream_task_ids == {task.task_id for task in dag.tasks} - {"staging_retention"}
    assert retention.downstream_task_ids == set()
    assert retention.is_teardown and not retention.on_failure_fail_dagrun
    assert retention.trigger_rule == "all_done_setup_success"
    assert retention.retention_days == 9 and retention.district == "demo"
    assert "9 day(s)" in dag.doc_md


@pytest.mark.parametrize("year, accepted", [(27, False), (1999, False), (2000, True), (2027, True), (2099, True),
                                            (2100, False), (None, True)])
def test_active_year_is_refused_outside_a_plausible_range_not_clamped(year, accepted):
    """As the scheduler and API check a new run's conf: the serialized DAG's params."""
    from airflow.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagSerialization.from_dict(DagSerialization.to_dict(dag_bag().dags["oneroster_demo"]))
    params = dag.params.deep_merge({"active_year": year})
    if accepted:
        assert params.validate()["active_year"] == year
    else:
        with pytest.raises(ParamValidationError, match="active_year"):
            params.validate()
    # the trigger form's number field clamps to minimum/maximum (27 became 2000): not given
    assert not {"minimum", "maximum"} & set(dag.params.get_param("active_year").schema)


def test_a_deadline_by_a_time_of_day_is_measured_from_the_scheduled_time(tmp_path):
    from plugins.notifications.alerts import deadline_alert

    def interval(schedule: str, deadline: dict) -> timedelta:
        config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
        config.update(schedule=schedule, notifications={"emails": ["team@demo.invalid"], "deadline": deadline})
        (tmp_path / "demo.yaml").write_text(yaml.safe_dump(config))
        return deadline_alert(load_district(tmp_path / "demo.yaml")).interval

    assert interval("0 6 * * *", {"by": "09:00"}) == timedelta(hours=3)
    assert interval("30 5 * * *", {"by": "09:00"}) == timedelta(hours=3, minutes=30)
    assert interval("0 22 * * *", {"by": "02:15"}) == timedelta(hours=4, minutes=15)  # across midnight
    assert interval("0 6 * * 1-5", {"by": "05:59"}) == timedelta(hours=23, minutes=59)
    assert interval("0 6 * * *", {"within_hours": 3}) == timedelta(hours=3)
    assert interval("0 6 * * *", {"within_hours": 0.5}) == timedelta(minutes=30)


@pytest.mark.parametrize("run_type, day, begun", [
    ("scheduled", "2026-06-30", False), ("scheduled", "2026-07-01", True), ("manual", "2025-10-01", True),
    ("backfill", "2025-10-01", True),
])
def test_only_scheduled_runs_wait_for_the_districts_first_night(run_type, day, begun):
    from types import SimpleNamespace

    from plugins.operators.first_night import scheduled_nights_have_begun

    logical_date = datetime.fromisoformat(day).replace(hour=6, tzinfo=timezone.utc)
    assert scheduled_nights_have_begun("2026-07-01", SimpleNamespace(run_type=run_type), logical_date) is begun


def test_extract_pool_slots_fit_the_pools_in_airflow_settings():
    """A task asking for more slots than its pool has would never be scheduled."""
    settings = yaml.safe_load((ROOT / "airflow_settings.yaml").read_text())
    pools = {pool["pool_name"]: pool["pool_slot"] for pool in settings["airflow"]["pools"]}
    for dag_id in DEMO_DAGS:
        for task in dag_bag().dags[dag_id].tasks:
            assert task.pool in {*pools, "default_pool"} and task.pool_slots <= pools.get(task.pool, 128)


def test_every_task_of_every_demo_dag_says_what_it_does_and_what_to_do_when_it_fails():
    """Each task's docs (the UI's Task Docs) name the task, what it does, reads, writes and returns,
    and what to do when it fails."""
    bag = dag_bag()
    for dag_id in DEMO_DAGS:
        for task in bag.dags[dag_id].tasks:
            doc = (task.doc_md or "").strip()
            assert doc, f"{dag_id}.{task.task_id} has no doc_md"
            assert doc.startswith(f"**{task.task_id}**"), f"{dag_id}.{task.task_id}: its docs name another task"
            assert "**If it fails" in doc or "**If it skips" in doc, f"{dag_id}.{task.task_id}: what to do"
            assert "{" not in doc and "}" not in doc, f"{dag_id}.{task.task_id}: an unformatted placeholder"
    docs = {task.task_id: task.doc_md for task in bag.dags["oneroster_demo"].tasks}
    assert "ic_demo" in docs["extract.users"] and "oneroster_grade_opt_in_demo" in docs["grades.plan"]
    assert "`<staging root>/demo/state/<school year>/provisioned/user.parquet`" in docs["provision.users"]


def test_a_bad_district_file_keeps_a_failing_dag_and_an_import_error_of_its_own_file(tmp_path, monkeypatch):
    """The DagBag view; the dag-processor's (stale DAGs, the email) is in test_scheduler.py."""
    shutil.copy(DISTRICTS_DIR / "demo.yaml", tmp_path / "demo.yaml")
    (tmp_path / "broken.yaml").write_text(
        "district: broken\nname: Broken\nschedule: '30 4 * * *'\n"
        "notifications: {emails: [team@broken.invalid]}\n"
        "infinite_campus:\n  conn_id: ic_broken\n  max_concurrency: 9\n"
    )
    (tmp_path / "unreadable.yaml").write_text("district: [\n")
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(tmp_path))
    bag = dag_bag()
    assert {"oneroster_demo", "oneroster_broken", "oneroster_unreadable"} <= set(bag.dag_ids)
    assert [task.task_id for task in bag.dags["oneroster_demo"].tasks if task.task_id.startswith("extract.")]
    (errors_file, error), = bag.import_errors.items()
    assert errors_file.endswith("dags/oneroster_district_errors.py"), "the districts' own file must not fail"
    for expected in (str(tmp_path / "broken.yaml"), "infinite_campus.max_concurrency", "less than or equal to 5",
                     str(tmp_path / "unreadable.yaml"), "cannot be read as YAML"):
        assert expected in error
    broken = bag.dags["oneroster_broken"]
    assert [task.task_id for task in broken.tasks] == ["district_file_invalid"]
    assert broken.schedule == "30 4 * * *", "the file's schedule, where it can be read"
    (task,) = broken.tasks
    assert task.retries == 0
    assert "infinite_campus.max_concurrency" in broken.doc_md and "team@broken.invalid" in broken.doc_md
    assert "**district_file_invalid**" in task.doc_md and "Fix the file" in task.doc_md
    assert [task.task_id for task in bag.dags["oneroster_unreadable"].tasks] == ["district_file_invalid"]


@pytest.mark.parametrize("parsing_for, built, read", [
    ("oneroster_demo", ["oneroster_demo"], ["demo.yaml"]),
    ("oneroster_broken", ["oneroster_broken"], ["broken.yaml"]),
    ("oneroster_odd_name", ["oneroster_odd_name"], ["odd name.yaml"]),  # an invalid file's id: its name's
    ("oneroster_nobody", [], []),
    ("some_other_dag", [], []),
])
def test_a_task_builds_its_own_dag_from_its_own_district_file_only(tmp_path, monkeypatch, parsing_for, built,
                                                                    read):
    """A task's start-up parses the DAG file with Airflow's parsing context naming its DAG: the other
    district files are listed, never opened (here they would not even validate)."""
    from airflow.dag_processing.dagbag import DagBag

    shutil.copy(DISTRICTS_DIR / "demo.yaml", tmp_path / "demo.yaml")
    (tmp_path / "broken.yaml").write_text("district: broken\nname: Broken\n"
                                          "infinite_campus: {max_concurrency: 9}\n")
    (tmp_path / "odd name.yaml").write_text("district: [\n")
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", parsing_for)  # what Airflow's task runner sets
    opened = files_read_from(tmp_path, monkeypatch)
    own_file = shard_file_name(shard_of(parsing_for.removeprefix("oneroster_")))  # the DAG's fileloc
    bag = DagBag(dag_folder=str(ROOT / "dags" / own_file))
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == built
    assert [path.name for path in opened] == read
    if parsing_for == "oneroster_broken":
        assert [task.task_id for task in bag.dags[parsing_for].tasks] == ["district_file_invalid"]
        assert "infinite_campus.max_concurrency" in bag.dags[parsing_for].doc_md


def test_importing_the_dag_files_imports_no_dataframe_arrow_or_ssh_library():
    """The dag-processor imports the DAG files for every parse: pandas, pyarrow, numpy and paramiko (with
    the SFTP and SSH hooks) are imported inside the tasks that use them, not by the operators' modules."""
    import json
    import subprocess
    import sys

    heavy = ["pandas", "pyarrow", "numpy", "paramiko", "airflow.providers.sftp.hooks.sftp",
             "airflow.providers.ssh.hooks.ssh"]
    dag_files = [str(ROOT / "dags" / shard_file_name(shard)) for shard in range(DAG_FILE_SHARDS)]
    script = (f"import json, runpy, sys; built = [name for file in {dag_files!r} for name in runpy.run_path(file)]; "
              "print(json.dumps({'dags': sorted(name for name in built if name.startswith('oneroster_')), "
              "'modules': sorted(sys.modules)}))")
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True,
                            cwd=ROOT)
    parsed = json.loads(loaded.stdout.splitlines()[-1])
    modules = set(parsed["modules"])
    assert set(DEMO_DAGS) <= set(parsed["dags"])
    assert [module for module in heavy if module in modules] == []
    assert {"plugins.operators.extract", "plugins.operators.grades", "plugins.sensors.export"} <= modules


def test_each_district_dag_is_built_by_one_dag_file_which_reads_only_its_own_districts(tmp_path, monkeypatch):
    """The dag-processor parses each of the DAG files in a process of its own: the districts are spread
    over them by a hash of their names, each DAG built by exactly one file, which opens only the
    district files of its own DAGs (a file's parse does not grow with every district)."""
    from airflow.dag_processing.dagbag import DagBag

    demo = (DISTRICTS_DIR / "demo.yaml").read_text()
    names = [f"district_{number:03d}" for number in range(64)]
    for name in names:
        (tmp_path / f"{name}.yaml").write_text(demo.replace("\ndistrict: demo\n", f"\ndistrict: {name}\n", 1))
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(tmp_path))
    opened = files_read_from(tmp_path, monkeypatch)
    built_by: dict[str, list[str]] = {}
    for shard in range(DAG_FILE_SHARDS):
        opened.clear()
        bag = DagBag(dag_folder=str(ROOT / "dags" / shard_file_name(shard)))
        assert bag.import_errors == {}
        for dag_id, dag in bag.dags.items():
            built_by.setdefault(dag_id, []).append(Path(dag.fileloc).name)
        assert sorted(path.stem for path in opened) == sorted(dag_id.removeprefix("oneroster_") for dag_id in bag.dag_ids)
        assert len(bag.dag_ids) < len(names) / 4, "the districts are spread over the files"
    assert built_by == {f"oneroster_{name}": [shard_file_name(shard_of(name))] for name in names}
    assert {path.read_text() for path in (ROOT / "dags").glob("oneroster_districts_*.py")} == {
        (ROOT / "dags" / shard_file_name(0)).read_text()}, "the DAG files are alike but for their names"
    assert sorted(path.name for path in (ROOT / "dags").glob("oneroster_districts_*.py")) == [
        shard_file_name(shard) for shard in range(DAG_FILE_SHARDS)]


def test_a_dag_file_missing_is_an_import_error_naming_the_districts_left_without_a_dag(tmp_path, monkeypatch):
    """A deployment that copied only some of the DAG files: the districts of a missing one would
    have no DAG and no error; the import errors' file names the file and those districts."""
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    shutil.copytree(ROOT / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    (dags / shard_file_name(shard_of("demo"))).unlink()
    bag = DagBag(dag_folder=str(dags))
    (errors_file, error), = bag.import_errors.items()
    assert errors_file.endswith("oneroster_district_errors.py")
    assert f"dags/{shard_file_name(shard_of('demo'))} is missing, so these districts have no DAG: demo" in error
    assert "oneroster_demo" not in bag.dag_ids
    assert ("oneroster_demo_v11" in bag.dag_ids) == (shard_of("demo_v11") != shard_of("demo"))


def test_a_dag_file_of_another_shard_count_fails_alone_naming_itself(tmp_path):
    """A folder that kept an old DAG file beside the 16 (say, of an upgrade that changed their number)
    would build some districts twice: that file fails to import, saying to remove it; the 16 still
    build every district once."""
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    shutil.copytree(ROOT / "dags", dags, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(dags / shard_file_name(0), dags / "oneroster_districts_00_of_08.py")
    bag = DagBag(dag_folder=str(dags))
    (stale, error), = bag.import_errors.items()
    assert stale.endswith("oneroster_districts_00_of_08.py") and "remove it" in error
    assert set(DEMO_DAGS) <= set(bag.dag_ids)


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
    assert {manifest["active_year"] for task, manifest in outcome.returned.items()
            if task != "staging_retention"} == {2027}


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
