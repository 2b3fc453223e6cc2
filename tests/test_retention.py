"""Staging retention: which run folders a night removes (table-driven), and the task on a real
staging directory, run by Airflow at the end of a night that failed."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from include.retention import RunFolder, folders_in, plan_retention
from tests.support import connection_uri_env

NOW = datetime(2026, 12, 7, 6, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def folders(ages: dict[str, timedelta | None]) -> list[RunFolder]:
    return [RunFolder(name, None if age is None else NOW - age, 100) for name, age in ages.items()]


@pytest.mark.parametrize(("ages", "runs", "current", "removed"), [
    pytest.param({"old": 40 * DAY, "young": 3 * DAY}, {"old": "success", "young": "success"},
                 "tonight", {"old"}, id="an old finished run goes, a young one stays"),
    pytest.param({"state": 900 * DAY, "old": 40 * DAY, "young": 1 * DAY},
                 {"old": "failed", "young": "success"}, "tonight", {"old"},
                 id="the state stays however old"),
    pytest.param({"tonight": 40 * DAY}, {"tonight": "running"}, "tonight", set(),
                 id="the current run's folder stays however old"),
    pytest.param({"tonight": 40 * DAY}, {}, "tonight", set(),
                 id="the current run's folder stays even unknown to Airflow"),
    pytest.param({"queued": 40 * DAY, "running": 50 * DAY, "retry": 60 * DAY, "young": 1 * DAY},
                 {"queued": "queued", "running": "running", "retry": "up_for_retry", "young": "success"},
                 "tonight", set(),
                 id="runs not finished stay (queued, cleared, running)"),
    pytest.param({"ok1": 90 * DAY, "ok2": 60 * DAY, "bad1": 45 * DAY, "bad2": 35 * DAY, "bad3": 2 * DAY},
                 {"ok1": "success", "ok2": "success", "bad1": "failed", "bad2": "failed", "bad3": "failed"},
                 "tonight", {"ok1", "bad1", "bad2"},
                 id="the last successful run stays when older than the cutoff"),
    pytest.param({"ok": 60 * DAY, "bad": 10 * DAY}, {"ok": "success", "bad": "failed", "cur": "running"},
                 "cur", set(), id="a run still going is not the last successful one"),
    pytest.param({"forgotten": 40 * DAY, "young": 1 * DAY}, {"young": "success"}, "tonight", {"forgotten"},
                 id="a folder of a run Airflow no longer holds is a finished run's"),
    pytest.param({"unknown": None, "old": 40 * DAY, "young": 1 * DAY}, {"old": "failed", "young": "success"},
                 "tonight", {"old"},
                 id="a folder without a modification time stays"),
    pytest.param({"edge": 30 * DAY, "past": 30 * DAY + timedelta(seconds=1), "young": 1 * DAY},
                 {"edge": "failed", "past": "failed", "young": "success"}, "tonight", {"past"},
                 id="written exactly at the cutoff stays, a second before it goes"),
    pytest.param({"manual__2026-10-01T06_00_00_00_00": 60 * DAY, "young": 1 * DAY},
                 {"manual__2026-10-01T06:00:00+00:00": "queued", "young": "success"}, "tonight", set(),
                 id="a run's folder is found from its run id as it is staged"),
    pytest.param({"night_1": 60 * DAY, "young": 1 * DAY},
                 {"night:1": "success", "night+1": "queued", "young": "success"}, "tonight", set(),
                 id="run ids sharing a folder keep it while either is not finished"),
    pytest.param({}, {"young": "success"}, "tonight", set(), id="nothing staged"),
])
def test_which_run_folders_a_night_removes(ages, runs, current, removed):
    plan = plan_retention(folders(ages), run_states=runs, current_run_id=current, now=NOW, retention_days=30)
    assert {folder.name for folder in plan.remove} == removed
    assert sum(plan.kept.values()) + len(plan.remove) == len(ages)


def test_the_plan_counts_what_it_keeps_and_why_and_the_cutoff():
    ages = {"state": 400 * DAY, "tonight": 0 * DAY, "cleared": 50 * DAY, "last_ok": 60 * DAY,
            "older_ok": 90 * DAY, "failed": 45 * DAY, "recent": 2 * DAY, "unknown": None}
    runs = {"tonight": "running", "cleared": "queued", "last_ok": "success", "older_ok": "success",
            "failed": "failed", "recent": "failed"}
    plan = plan_retention(folders(ages), run_states=runs, current_run_id="tonight", now=NOW, retention_days=7)
    assert plan.cutoff == datetime(2026, 11, 30, 6, tzinfo=timezone.utc)
    assert [folder.name for folder in plan.remove] == ["older_ok", "failed"]
    assert plan.kept == {"the project's folder": 1, "the current run": 1, "a run not finished": 1,
                         "the last successful run": 1, "no modification time": 1, "within retention": 1}


def test_a_listing_is_grouped_into_the_folders_under_the_district():
    """An fsspec find(detail=True): local files give a POSIX ``mtime``, S3 objects a ``LastModified``."""
    early = datetime(2026, 10, 1, 6, tzinfo=timezone.utc)
    late = datetime(2026, 10, 2, 7, 30, tzinfo=timezone.utc)
    listing = {
        "/srv/staging/demo/night1/users.parquet": {"size": 10, "mtime": early.timestamp()},
        "/srv/staging/demo/night1/provision/journal/user.create/000000.parquet": {
            "size": 5, "mtime": late.timestamp()},
        "/srv/staging/demo/night2/users.parquet": {"size": 3, "LastModified": late},
        "/srv/staging/demo/night3/users.parquet": {"size": 4, "LastModified": datetime(2026, 10, 1, 6)},
        "/srv/staging/demo/night4/users.parquet": {"size": 1, "mtime": early.timestamp()},
        "/srv/staging/demo/night4/.users.parquet.1f2e.tmp": {"size": 2},
        "/srv/staging/demo/state/2027/extract/users.parquet": {"size": 7, "mtime": early.timestamp()},
        "/srv/staging/demo/loose.parquet": {"size": 9, "mtime": early.timestamp()},
    }
    assert folders_in(listing, "/srv/staging/demo") == [
        RunFolder("night1", late, 15),
        RunFolder("night2", late, 3),
        RunFolder("night3", early, 4),  # an object store's time without a zone is UTC
        RunFolder("night4", None, 3),  # an object without a time leaves the folder's age unknown
        RunFolder("state", early, 7),
    ]


# -- the task, on a real staging directory -------------------------------------------------------

DISTRICT = "keep"
DAG_ID = f"oneroster_{DISTRICT}"


def run_folder_of(logical_date: datetime) -> str:
    """How a dag.test() run of ``logical_date`` (run id manual__<ISO date>) names its folder."""
    return "manual__" + logical_date.strftime("%Y-%m-%dT%H_%M_%S") + "_00_00"


def age(folder: Path, days: int) -> None:
    """Every file in ``folder`` as if last written ``days`` ago."""
    when = (datetime.now(timezone.utc) - timedelta(days=days)).timestamp()
    for path in folder.rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


def files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}


@pytest.fixture
def keep_district(ic, monkeypatch, tmp_path, airflow_db) -> Path:
    (tmp_path / "districts").mkdir()
    (tmp_path / "districts" / f"{DISTRICT}.yaml").write_text(yaml.safe_dump({
        "district": DISTRICT, "name": "Retention", "retention_days": 30,
        "infinite_campus": {"conn_id": "ic_keep", "max_attempts": 1},
    }))
    monkeypatch.setenv("ONEROSTER_DISTRICTS_DIR", str(tmp_path / "districts"))
    staging = tmp_path / "staging"
    monkeypatch.setenv("AIRFLOW_VAR_ONEROSTER_STAGING_ROOT", staging.as_uri())
    for key, value in connection_uri_env("ic_keep", ic, "1.2").items():
        monkeypatch.setenv(key, value)
    return staging / DISTRICT


def test_a_night_removes_old_finished_runs_and_keeps_the_state_and_what_runs_still_need(keep_district):
    """Earlier nights: two that succeeded (school year 2027, which IC serves), two that failed
    (2028, which it does not: academicSessions fails, the other extracts stage), one of those then
    cleared, and two folders of runs Airflow no longer holds. Tonight fails the same way, and its
    retention still runs."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import clear_task_instances
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from include.sandbox.runner import run_dag

    nights = {name: datetime(*day, 6, tzinfo=timezone.utc) for name, day in {
        "succeeded_long_ago": (2026, 11, 2), "last_success": (2026, 11, 3), "failed": (2027, 8, 2),
        "cleared": (2027, 8, 3), "tonight": (2027, 8, 4)}.items()}
    outcomes = {name: run_dag(DAG_ID, logical_date=nights[name])
                for name in ("succeeded_long_ago", "last_success", "failed", "cleared")}
    assert [outcome.state for outcome in outcomes.values()] == ["success", "success", "failed", "failed"]
    with create_session() as session:
        cleared = session.scalar(select(DagRun).where(DagRun.dag_id == DAG_ID,
                                                      DagRun.run_id == outcomes["cleared"].run_id))
        clear_task_instances(cleared.get_task_instances(session=session), session)
    folder = {name: keep_district / run_folder_of(when) for name, when in nights.items()}
    folder.update(forgotten=keep_district / "scheduled__2025-09-01T06_00_00_00_00",
                  forgotten_recently=keep_district / "scheduled__2026-09-01T06_00_00_00_00")
    for name in ("forgotten", "forgotten_recently"):
        (folder[name] / "provision").mkdir(parents=True)
        (folder[name] / "provision" / "user.report.parquet").write_bytes(b"x" * 1234)
    for name, days in {"succeeded_long_ago": 90, "last_success": 60, "failed": 45, "cleared": 50,
                       "forgotten": 100, "forgotten_recently": 2}.items():
        age(folder[name], days)
    state = keep_district / "state"
    age(state, 400)
    state_before = files(state)
    going = ("succeeded_long_ago", "failed", "forgotten")
    going_bytes = sum(path.stat().st_size for name in going for path in folder[name].rglob("*")
                      if path.is_file())
    assert state_before and all(files(folder[name]) for name in going)

    tonight = run_dag(DAG_ID, logical_date=nights["tonight"])
    assert tonight.state == "failed", "the night's failure is the run's, whatever its retention did"
    assert tonight.task_states["extract.academicSessions"] == "failed"
    assert tonight.task_states["staging_retention"] == "success"
    staying = {"state", *(folder[name].name
                          for name in ("tonight", "last_success", "cleared", "forgotten_recently"))}
    assert {path.name for path in keep_district.iterdir()} == staying
    assert state_before <= files(state), "the state is never removed"
    assert files(folder["last_success"]) >= {"users.parquet", "academicSessions.parquet"}
    assert tonight.returned["staging_retention"]["removed"] == len(going)
    assert tonight.returned["staging_retention"]["removed_bytes"] == going_bytes
    assert tonight.returned["staging_retention"]["kept"] == {
        "the project's folder": 1, "the current run": 1, "a run not finished": 1, "the last successful run": 1,
        "no modification time": 0, "within retention": 1}

    again = run_dag(DAG_ID, logical_date=nights["tonight"])  # the night cleared and run again
    assert again.run_id == tonight.run_id and again.task_states["staging_retention"] == "success"
    assert again.returned["staging_retention"]["removed"] == 0
    assert {path.name for path in keep_district.iterdir()} == staying
    assert state_before <= files(state)
