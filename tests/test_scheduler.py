"""The district DAGs under a real Airflow: scheduler, dag-processor, triggerer and api-server
as separate processes (include/sandbox/airflow_stack.py), against the IC and Schoology
emulators and the SMTP sink on 127.0.0.1.

``dag.test()`` has no scheduler loop, so retries, ``max_active_runs``, backfills and deadline
callbacks are only seen here. The module starts everything once and sets the night's work
going in one go (the runs of different DAGs proceed side by side); each test then waits for
and checks one outcome.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV, ActiveYearRule, load_district
from include.oneroster.models import COLLECTIONS
from include.provisioning.steps import STEPS
from include.sandbox.airflow_stack import FINISHED, AirflowStack
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_emulator import ICEmulator
from include.sandbox.lms_emulator import SchoologyEmulator
from include.sandbox.sftp_server import SFTPServer
from include.sandbox.smtp_sink import ReceivedMail, SMTPSink
from include.grades.processed import mark_processed
from tests.expected_provisioning import KINDS, expected_provisioning, held_by_lms
from tests.fault_ledger import ScenarioLedger, record
from tests.support import (
    CLIENT_ID,
    CLIENT_SECRET,
    LMS_KEY,
    LMS_SECRET,
    connection_uri_env,
    lms_connection_env,
)

NOW = datetime.now(UTC).replace(microsecond=0)
EXTRACTS = [f"extract.{collection}" for collection in COLLECTIONS]
NIGHTLY, HISTORY, LATE, REVOKED, RENAMED, QUIET, LEFTOVER, BROKEN = (
    "oneroster_nightly", "oneroster_history", "oneroster_late", "oneroster_revoked", "oneroster_renamed",
    "oneroster_quiet", "oneroster_leftover", "oneroster_broken",
)
NIGHTLY_RUN, LATE_RUN, REVOKED_RUN, RENAMED_RUN = "e2e_nightly", "e2e_late", "e2e_revoked", "e2e_renamed"
QUIET_RUN, LEFTOVER_RUN, BROKEN_RUN = "e2e_quiet", "e2e_leftover", "e2e_broken"
# A dry run of the nightly district, triggered as from the UI's form with a note of the user's own;
# it waits for the nightly run (one run at a time).
DRY_RUN, TYPED_NOTE = "e2e_nightly_rehearsal", "Trying the new role map before tonight"
# A past school year asked for by hand, both ways the README gives: a past logical date, and the
# active_year param on a run dated now (before the district's start_date, like the past date).
PAST_DATE_RUN, PAST_DATE = "e2e_history_past_date", datetime(2025, 10, 3, 6, tzinfo=UTC)
ACTIVE_YEAR_RUN = "e2e_history_active_year"
YESTERDAYS_EXPORT = "final-grades-yesterday.csv"
BACKFILL_DATES = ("2025-10-01", "2025-10-02")  # school year 2025-26, "2026" with years starting 07-01
# --to-date is an instant: "2025-10-02" alone is its midnight, before that day's 06:00 run.
BACKFILL_TO = f"{BACKFILL_DATES[1]}T23:59:59+00:00"
BACKFILL_YEAR = 2026
# The late district's IC answers each API call after this many seconds; its six extracts take
# turns (each holds the whole IC pool), so its run outlasts a deadline this many hours after it.
# The deadline must fall after the run was created (`airflow dags trigger` takes seconds on a busy
# machine; a manual run whose deadline was over when it was triggered sends no email) and before
# the run ends (six extracts of at least two slow calls each).
SLOW_IC_SECONDS, LATE_WITHIN_HOURS = 5.0, 0.01


@dataclass
class Night:
    """The running stack and what stands in for IC, the LMS and the district's mail relay."""

    stack: AirflowStack
    ic: ICEmulator
    lms: SchoologyEmulator
    smtp: SMTPSink
    district: SyntheticDistrict
    sftp_root: Path
    late_deadline: datetime  # the late district's run must be done by then

    def mails(self, dag_id: str, about: str) -> list[ReceivedMail]:
        """The emails about ``dag_id`` whose subject contains ``about``."""
        return [mail for mail in self.smtp.messages
                if f"[oneroster {dag_id}]" in mail.subject and about in mail.subject]

    def wait_for_mails(self, dag_id: str, about: str, count: int, timeout: float = 60) -> list[ReceivedMail]:
        def enough() -> list[ReceivedMail] | None:
            found = self.mails(dag_id, about)
            return found if len(found) >= count else None

        return self.stack.wait_for(enough, timeout=timeout, what=f"{count} '{about}' email(s) for {dag_id}")


# Unpausing a DAG creates a run for its latest past slot at once, catchup or not; only manual
# runs and backfills are wanted here, so the DAGs are scheduled on 29 February: that slot's run
# (2024) comes before the districts' start_date and is skipped whole by first_night.
NOT_DUE = "0 6 29 2 *"
RETRY_ONCE = {"count": 1, "delay_seconds": 1, "max_delay_seconds": 2}


def write_district(directory: Path, name: str, *, conn_id: str = "ic_test",
                   deadline_hours: float | None = None, **settings) -> None:
    """demo.yaml as district ``name``: its own IC pool, extract only, no retries, a schedule that
    is not due, failure emails (and deadline emails after ``deadline_hours``), then ``settings``."""
    config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
    config.pop("grade_passback", None)  # grade passback needs an SFTP export: not this module's subject
    config.pop("lms")
    config.pop("provisioning")
    notifications = {"emails": [f"team@{name}.invalid"], "smtp_conn_id": "smtp_test"}
    if deadline_hours is not None:
        notifications["deadline"] = {"within_hours": deadline_hours}
    config.update({"district": name, "schedule": NOT_DUE, "start_date": date(2025, 7, 1),
                   "task_retries": {"count": 0}, "notifications": notifications, **settings})
    config["infinite_campus"].update(conn_id=conn_id, pool=f"ic_{name}")
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(config))


def write_districts(directory: Path) -> dict[str, int]:
    """One district per scenario; returns the pools they need (name -> slots)."""
    demo = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
    write_district(directory, "nightly", deadline_hours=3, provisioning=demo["provisioning"],
                   lms={**demo["lms"], "conn_id": "lms_test", "pool": "lms_test"})
    # Daily, to backfill two days; starting ahead so that unpausing schedules nothing (backfill
    # runs get their tasks before the start date, other runs get none: models/dagrun.py).
    write_district(directory, "history", conn_id="ic_history", deadline_hours=3, schedule="0 6 * * *",
                   start_date=date.today() + timedelta(days=30))
    write_district(directory, "late", conn_id="ic_slow", deadline_hours=LATE_WITHIN_HOURS)
    write_district(directory, "revoked", conn_id="ic_revoked", task_retries=RETRY_ONCE)
    write_district(directory, "renamed", conn_id="ic_renamed", task_retries=RETRY_ONCE)
    # grade passback waiting on an SFTP folder where no export ever arrives, with a retry left
    write_district(directory, "quiet", task_retries=RETRY_ONCE,
                   grade_passback={**demo["grade_passback"], "sftp_conn_id": "sftp_test", "timeout_hours": 0.002})
    # grade passback whose folder holds yesterday's export, processed already; today's comes late
    write_district(directory, "leftover", grade_passback={
        **demo["grade_passback"], "sftp_conn_id": "sftp_test", "remote_dir": "/exports/leftover",
        "timeout_hours": 0.1})
    # a typo in one district's file: more concurrent calls than IC allows
    write_district(directory, "broken")
    broken = yaml.safe_load((directory / "broken.yaml").read_text())
    broken["infinite_campus"]["max_concurrency"] = 9
    (directory / "broken.yaml").write_text(yaml.safe_dump(broken))
    slots = demo["infinite_campus"]["max_concurrency"]
    pools = {f"ic_{name}": slots for name in ("nightly", "history", "late", "revoked", "renamed", "quiet",
                                              "leftover")}
    return {**pools, "lms_test": 1}


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Night:
    root = tmp_path_factory.mktemp("scheduler")
    districts = root / "districts"
    districts.mkdir()
    pools = write_districts(districts)
    (root / "pools.json").write_text(json.dumps({name: {"slots": slots, "description": "e2e"}
                                                 for name, slots in pools.items()}))
    year = ActiveYearRule().school_year_of(NOW)
    district = SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=year))
    with (
        ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as ic,
        ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as revoked_ic,
        ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as slow_ic,
        # IC serves only its active school year: the backfilled year's IC (a restored copy, say)
        ICEmulator(SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=BACKFILL_YEAR)),
                   client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as history_ic,
        SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms,
        SMTPSink() as smtp,
        SFTPServer(root / "sftp", username="exporter", password="sftp-test-secret") as sftp,
    ):
        (root / "sftp" / "exports" / "grades").mkdir(parents=True)
        (root / "sftp" / "exports" / "leftover").mkdir(parents=True)
        yesterday = root / "sftp" / "exports" / "leftover" / YESTERDAYS_EXPORT
        yesterday.write_text("section_id,student_id\n")
        stamp = (NOW - timedelta(days=1)).timestamp()
        os.utime(yesterday, (stamp, stamp))
        mark_processed((root / "staging").as_uri(), "leftover", {"name": YESTERDAYS_EXPORT, "mtime": stamp},
                       "yesterdays_run")
        revoked_ic.revoke_credentials()
        slow_ic.latency = SLOW_IC_SECONDS
        env = {
            DISTRICTS_DIR_ENV: str(districts),
            "AIRFLOW_VAR_ONEROSTER_STAGING_ROOT": (root / "staging").as_uri(),
            "AIRFLOW_CONN_SMTP_TEST": json.dumps(smtp.connection("oneroster@localhost")),
            "AIRFLOW_CONN_SFTP_TEST": json.dumps(sftp.connection()),
            **connection_uri_env("ic_test", ic, "1.2"),
            **connection_uri_env("ic_revoked", revoked_ic, "1.2"),
            **connection_uri_env("ic_slow", slow_ic, "1.2"),
            **connection_uri_env("ic_history", history_ic, "1.2"),
            # IC's OneRoster application renamed: the token is granted, every API path answers 404.
            **connection_uri_env("ic_renamed", ic, "1.2", app_name="retired", token_url=ic.token_url),
            **lms_connection_env("lms_test", lms),
        }
        with AirflowStack(root / "airflow", env=env) as stack:
            with stack.logs_on_failure():
                stack.airflow("pools", "import", str(root / "pools.json"))
                stack.wait_for_dags([NIGHTLY, HISTORY, LATE, REVOKED, RENAMED, QUIET, LEFTOVER, BROKEN])
                stack.airflow("dags", "unpause", "--treat-dag-id-as-regex", "--yes", "^oneroster_")
                # Unpausing makes each DAG a run for its latest slot at once; the backfill waits for them
                # to end, so that it is made while the scheduler writes nothing (see below).
                # (the broken district's DAG may get none)
                scheduled = [NIGHTLY, HISTORY, LATE, REVOKED, RENAMED, QUIET, LEFTOVER]
                stack.wait_for(lambda: all(runs and all(run["state"] in FINISHED for run in runs)
                                           for runs in map(stack.dag_runs, scheduled))
                               and all(run["state"] in FINISHED for run in stack.dag_runs(BROKEN)),
                               timeout=180, what="the runs unpausing made to finish")
                # The backfill first, while the scheduler is idle. Its runs' deadlines are over when
                # they are made; on SQLite (no row locks) a backfill that meets a busy writer deletes
                # what it made and is run again, and a scheduler handling one of those deadlines at
                # that moment dies (StaleDataError on table 'deadline', Airflow 3.3.2).
                # Without --max-active-runs a backfill runs up to 10 runs at once, whatever the
                # DAG's max_active_runs (airflow/jobs/scheduler_job_runner.py).
                stack.airflow("backfill", "create", "--dag-id", HISTORY, "--from-date", BACKFILL_DATES[0],
                              "--to-date", BACKFILL_TO, "--max-active-runs", "1")
                trigger = {
                    NIGHTLY: (NIGHTLY_RUN, NOW),
                    REVOKED: (REVOKED_RUN, NOW),
                    RENAMED: (RENAMED_RUN, NOW),
                    BROKEN: (BROKEN_RUN, NOW),
                }
                for dag_id, (run_id, logical_date) in trigger.items():
                    stack.airflow("dags", "trigger", dag_id, "--run-id", run_id,
                                  "--logical-date", logical_date.isoformat())
                stack.trigger(NIGHTLY, DRY_RUN, NOW + timedelta(seconds=1), conf={"dry_run": True},
                              note=TYPED_NOTE)
                stack.airflow("dags", "trigger", HISTORY, "--run-id", PAST_DATE_RUN,
                              "--logical-date", PAST_DATE.isoformat())
                stack.airflow("dags", "trigger", HISTORY, "--run-id", ACTIVE_YEAR_RUN, "--logical-date",
                              NOW.isoformat(), "--conf", json.dumps({"active_year": BACKFILL_YEAR}))
                for dag_id, run_id in ((QUIET, QUIET_RUN), (LEFTOVER, LEFTOVER_RUN)):
                    stack.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--logical-date", NOW.isoformat())
                # a night that starts on time and runs past its deadline
                late_start = datetime.now(UTC).replace(microsecond=0)
                stack.airflow("dags", "trigger", LATE, "--run-id", LATE_RUN, "--logical-date", late_start.isoformat())
            late_deadline = late_start + timedelta(hours=LATE_WITHIN_HOURS)
            yield Night(stack, ic, lms, smtp, district, root / "sftp", late_deadline)


def test_a_triggered_run_provisions_the_lms_through_the_scheduler(night):
    stack = night.stack
    with stack.logs_on_failure():
        run = stack.wait_for_run(NIGHTLY, NIGHTLY_RUN, timeout=150)
        states = {task: ti["state"] for task, ti in stack.task_instances(NIGHTLY, NIGHTLY_RUN).items()}
        assert run["state"] == "success", states
        assert run["run_type"] == "manual"
        assert set(states.values()) == {"success"} and len(states) == 1 + len(EXTRACTS) + len(STEPS) + 2, states
        expected = night.district.expected_counts("1.2")
        for task in EXTRACTS:
            manifest = stack.returned(NIGHTLY, NIGHTLY_RUN, task)
            assert manifest["row_count"] == expected[manifest["dataset"]], manifest
        served = {request.path.rsplit("/", 1)[-1] for request in night.ic.requests if request.status == 200}
        assert set(COLLECTIONS) <= served
        report = stack.returned(NIGHTLY, NIGHTLY_RUN, "provision.sync_report")
        assert report["totals"].get("created", 0) > 0 and not report["totals"].get("failed"), report
        assert night.lms.users and night.lms.enrollments and night.lms.buildings
        assert not [mail.subject for mail in night.mails(NIGHTLY, "deadline")], "the run finished well within its deadline"


def test_a_dry_run_reads_as_one_in_the_grid(night):
    """What a dry run writes (nothing) is tested in test_provisioning_dag and test_grades_dag; here,
    that the scheduler marks it in its note."""
    stack = night.stack
    with stack.logs_on_failure():
        run = stack.wait_for_run(NIGHTLY, DRY_RUN, timeout=300)
        assert run["state"] == "success"
        note = run["note"] or ""
        assert note.startswith("Dry run:") and note.endswith(f"\n\n{TYPED_NOTE}"), note
        real = stack.api(f"/api/v2/dags/{NIGHTLY}/dagRuns/{NIGHTLY_RUN}")
        assert real["note"] is None, "only the dry run is marked as one"
        report = stack.returned(NIGHTLY, DRY_RUN, "provision.sync_report")
        assert report["dry_run"] is True, report


def test_a_backfill_runs_each_past_date_once_in_order_without_deadline_emails(night):
    stack = night.stack
    with stack.logs_on_failure():
        def backfilled() -> list[dict] | None:
            runs = [run for run in stack.dag_runs(HISTORY) if run["run_type"] == "backfill"]
            return runs if len(runs) >= 2 and all(run["state"] in FINISHED for run in runs) else None

        runs = sorted(stack.wait_for(backfilled, timeout=180, what="both backfill runs finished"),
                      key=lambda run: run["logical_date"])
        assert [run["logical_date"][:10] for run in runs] == list(BACKFILL_DATES)
        assert [run["state"] for run in runs] == ["success", "success"]
        # unpausing made a scheduled run for today's slot, before the district's start_date: skipped whole
        for run in [run for run in stack.dag_runs(HISTORY) if run["run_type"] == "scheduled"]:
            finished = stack.wait_for_run(HISTORY, run["dag_run_id"], timeout=60)
            states = {task: ti["state"] for task, ti in stack.task_instances(HISTORY, run["dag_run_id"]).items()}
            assert finished["state"] == "success" and states == {"first_night": "success",
                                                                  **dict.fromkeys(EXTRACTS, "skipped"),
                                                                  "staging_retention": "success"}, states
        first, second = runs
        assert first["end_date"] <= second["start_date"], "backfill runs overlapped"
        for run in runs:
            for task in EXTRACTS:
                manifest = stack.returned(HISTORY, run["dag_run_id"], task)
                assert manifest["active_year"] == 2026 and manifest["run_id"] == run["dag_run_id"], manifest
        outputs = stack.wait_for(lambda: _deadline_callbacks(stack, [run["dag_run_id"] for run in runs]),
                                 timeout=60, what="the backfill runs' deadline callbacks")
        assert outputs == ["backfill run: no deadline email"] * 2
        assert not night.mails(HISTORY, "deadline")


@pytest.mark.parametrize("run_id", [PAST_DATE_RUN, ACTIVE_YEAR_RUN])
def test_a_past_school_year_asked_for_by_hand_syncs_that_year(night, run_id):
    """Airflow gives a manual run dated before a task's start_date no task instances, and the
    run ends green with nothing done; both ways must run every task for the year asked for."""
    stack = night.stack
    with stack.logs_on_failure():
        run = stack.wait_for_run(HISTORY, run_id, timeout=300)
        instances = stack.task_instances(HISTORY, run_id)
        assert {task: ti["state"] for task, ti in instances.items()} == dict.fromkeys(
            ["first_night", *EXTRACTS, "staging_retention"], "success")
        assert run["state"] == "success"
        for task in EXTRACTS:
            manifest = stack.returned(HISTORY, run_id, task)
            assert (manifest["active_year"], manifest["run_id"]) == (BACKFILL_YEAR, run_id), manifest
            assert manifest["row_count"] > 0, manifest
        if run_id == PAST_DATE_RUN:  # its deadline was over when it was triggered
            outputs = stack.wait_for(lambda: _deadline_callbacks(stack, [run_id]), timeout=60,
                                     what="the past-date run's deadline callback")
            assert outputs == ["manual run of a past date, its deadline over before it was triggered: "
                               "no deadline email"]
            assert not night.mails(HISTORY, "deadline")


def test_a_run_past_its_deadline_emails_the_district_within_minutes(night):
    """Triggered on time; its IC is slow, so the deadline passes while it runs."""
    stack = night.stack
    with stack.logs_on_failure():
        (mail,) = night.wait_for_mails(LATE, "missed its deadline", 1, timeout=240)
        deadline = night.late_deadline.timestamp()
        assert deadline <= mail.received_at < deadline + 120, (
            f"emailed {mail.received_at - deadline:.0f} s after the deadline")
        assert mail.envelope_to == ("team@late.invalid",)
        assert LATE_RUN in mail.subject and LATE_RUN in mail.body
        assert "district <b>late</b>" in mail.body
        run = stack.wait_for_run(LATE, LATE_RUN, timeout=420)
        assert run["state"] == "success"
        assert datetime.fromisoformat(run["end_date"]).timestamp() > deadline, "the run was not late after all"
        assert len(night.mails(LATE, "missed its deadline")) == 1


def test_refused_credentials_fail_each_extract_once_and_email_why(night):
    stack = night.stack
    with stack.logs_on_failure():
        run = stack.wait_for_run(REVOKED, REVOKED_RUN, timeout=120)
        instances = stack.task_instances(REVOKED, REVOKED_RUN)
        assert run["state"] == "failed"
        # A refused key/secret raises AirflowFailException: no retry, though the district allows one.
        assert {task: (instances[task]["state"], instances[task]["try_number"]) for task in EXTRACTS} == {
            task: ("failed", 1) for task in EXTRACTS}
        mails = night.wait_for_mails(REVOKED, "failed in run", len(EXTRACTS))
        assert Counter(map(_task_of, mails)) == Counter(EXTRACTS)
        for mail in mails:
            assert mail.envelope_to == ("team@revoked.invalid",)
            assert REVOKED in mail.body and REVOKED_RUN in mail.body
            assert "refused the OneRoster client key/secret" in mail.body, mail.body


def test_a_failure_email_is_sent_only_after_the_last_retry(night):
    stack = night.stack
    with stack.logs_on_failure():
        run = stack.wait_for_run(RENAMED, RENAMED_RUN, timeout=150)
        instances = stack.task_instances(RENAMED, RENAMED_RUN)
        assert run["state"] == "failed"
        assert {task: (instances[task]["state"], instances[task]["try_number"]) for task in EXTRACTS} == {
            task: ("failed", 2) for task in EXTRACTS}
        mails = night.wait_for_mails(RENAMED, "failed in run", len(EXTRACTS))
        assert Counter(map(_task_of, mails)) == Counter(EXTRACTS), "one email per task, not one per try"
        for mail in mails:
            assert RENAMED in mail.body and "failed after 2 tries" in mail.body, mail.body
            assert "IC answered 404" in mail.body, mail.body


def test_no_grade_export_ends_the_run_with_an_email_saying_so(night):
    """The export sensor waits in the triggerer; its timeout fails the run for good (the retry the
    district allows is not spent on a wait that is over) with a clear email."""
    stack = night.stack
    with stack.logs_on_failure():
        run = stack.wait_for_run(QUIET, QUIET_RUN, timeout=150)
        instances = stack.task_instances(QUIET, QUIET_RUN)
        assert run["state"] == "failed"
        assert instances["grades.wait_for_export"]["state"] == "failed"
        assert instances["grades.wait_for_export"]["try_number"] == 1, "a sensor timeout is not retried"
        assert all(instances[task]["state"] == "success" for task in EXTRACTS)
        (mail,) = night.wait_for_mails(QUIET, "grades.wait_for_export", 1)
        assert "No grade export arrived" in mail.body, mail.body
        # nothing to post arrived; the one wait is reported failed (and emailed), never waited twice
        wait = instances["grades.wait_for_export"]
        record(ScenarioLedger("sensor times out with retries left", faults=1, rows_in=0, posted=0, skipped=0,
                              failed=int(wait["state"] == "failed"), duplicates=wait["try_number"] - 1, lost=0))


def test_yesterdays_export_left_in_place_is_waited_past_and_todays_is_taken(night):
    """The auto-export leaves yesterday's file beside today's. The sensor defers once and waits in
    the triggerer; it does not resume and defer again and again on the file it processed."""
    stack = night.stack
    with stack.logs_on_failure():
        def waiting() -> bool:
            instance = stack.task_instances(LEFTOVER, LEFTOVER_RUN).get("grades.wait_for_export") or {}
            return instance.get("state") == "deferred" or None

        stack.wait_for(waiting, timeout=120, what="the leftover district's sensor deferred")
        time.sleep(20)  # ten of its 2-second poke intervals
        assert stack.task_instances(LEFTOVER, LEFTOVER_RUN)["grades.wait_for_export"]["state"] == "deferred"
        today = night.sftp_root / "exports" / "leftover" / "final-grades-today.csv"
        today.write_text("section_id,student_id\n")

        def sensed() -> dict | None:
            instance = stack.task_instances(LEFTOVER, LEFTOVER_RUN)["grades.wait_for_export"]
            return instance if instance["state"] in FINISHED else None

        instance = stack.wait_for(sensed, timeout=90, what="the leftover district's sensor finished")
        assert instance["state"] == "success", instance
        assert stack.returned(LEFTOVER, LEFTOVER_RUN, "grades.wait_for_export")["name"] == "final-grades-today.csv"
        log = next((stack.home / "logs").glob(
            f"dag_id={LEFTOVER}/run_id={LEFTOVER_RUN}/task_id=grades.wait_for_export/attempt=1.log")).read_text()
        assert log.count("waiting for an export matching") == 1, "the sensor deferred again and again"

        # The triggerer writes the trigger's lines (JSON) beside the task's log, in
        # attempt=1.log.trigger.<triggerer job id>.log.
        from plugins.sensors.export import TRIGGER_WAITING

        task_logs = stack.home / "logs" / f"dag_id={LEFTOVER}/run_id={LEFTOVER_RUN}/task_id=grades.wait_for_export"
        trigger_logs = sorted(task_logs.glob("attempt=1.log.trigger.*.log"))
        lines = [json.loads(line) for path in trigger_logs for line in path.read_text().splitlines()
                 if line.startswith("{")]
        assert lines, f"no trigger log: {trigger_logs}"
        chatter = [line for line in lines if str(line.get("logger", "")).split(".")[0] == "asyncssh"
                   and line.get("level") in ("debug", "info")]
        assert chatter == [], f"asyncssh's connection chatter is in the trigger log: {chatter[:3]}"
        said = [line["event"] for line in lines if str(line.get("event", "")).startswith(TRIGGER_WAITING)]
        stamps = [datetime.fromisoformat(line["timestamp"]) for line in lines if "timestamp" in line]
        poke = load_district(DISTRICTS_DIR / "demo.yaml").grade_passback.poke_interval_seconds
        intervals = (max(stamps) - min(stamps)).total_seconds() / poke
        assert 1 <= len(said) <= intervals + 1, f"{len(said)} waiting lines in {intervals:.1f} poke intervals"
        since = (NOW - timedelta(days=1) + timedelta(seconds=1)).isoformat()  # yesterday's export + 1 s
        awaited = f"final-grades* in /exports/leftover on sftp_test, modified at or after {since} "
        assert awaited in said[0], said[0]
        # one export awaited; yesterday's, processed already, must never be taken again
        taken = [stack.returned(LEFTOVER, LEFTOVER_RUN, "grades.wait_for_export")["name"]]
        record(ScenarioLedger("previous export left in place", faults=1, rows_in=1,
                              posted=taken.count("final-grades-today.csv"), skipped=0, failed=0,
                              duplicates=taken.count(YESTERDAYS_EXPORT),
                              lost=1 - taken.count("final-grades-today.csv")))


def test_an_invalid_district_file_fails_its_own_dag_and_emails_while_the_others_run(night):
    """The real dag-processor marks every DAG of a file with an import error stale: one district's
    typo must not switch the other districts off, nor quietly stop its own nights."""
    stack = night.stack
    with stack.logs_on_failure():
        dags = {dag["dag_id"]: dag for dag in stack.api("/api/v2/dags?limit=100&exclude_stale=false")["dags"]}
        every = [NIGHTLY, HISTORY, LATE, REVOKED, RENAMED, QUIET, LEFTOVER, BROKEN]
        assert {dag_id: dags[dag_id]["is_stale"] for dag_id in every} == dict.fromkeys(every, False)
        assert "INVALID district file" in dags[BROKEN]["description"]
        (error,) = stack.api("/api/v2/importErrors")["import_errors"]
        assert error["filename"].endswith("oneroster_district_errors.py"), error["filename"]
        assert "broken.yaml" in error["stack_trace"] and "infinite_campus.max_concurrency" in error["stack_trace"]

        run = stack.wait_for_run(BROKEN, BROKEN_RUN, timeout=120)
        instances = stack.task_instances(BROKEN, BROKEN_RUN)
        assert run["state"] == "failed"
        assert {task: (ti["state"], ti["try_number"]) for task, ti in instances.items()} == {
            "district_file_invalid": ("failed", 1)}
        (mail,) = night.wait_for_mails(BROKEN, "district_file_invalid failed", 1)
        assert mail.envelope_to == ("team@broken.invalid",)
        assert "broken.yaml" in mail.body and "infinite_campus.max_concurrency" in mail.body, mail.body
        # the other districts' runs went on (each is checked by its own test above)
        assert stack.wait_for_run(NIGHTLY, NIGHTLY_RUN, timeout=150)["state"] == "success"
        # ... and the LMS holds exactly what the rules say the valid district's night must put there
        expected = expected_provisioning(night.district, load_district(DISTRICTS_DIR / "demo.yaml").provisioning)
        held = held_by_lms(night.lms, night.district, expected)
        record(ScenarioLedger(
            "one district file invalid", faults=1,
            rows_in=sum(len(expected.rows(kind)) for kind in KINDS),
            posted=sum(len(expected.present[kind] & set(held[kind])) for kind in KINDS),
            skipped=sum(len(expected.skipped[kind]) for kind in KINDS), failed=0,
            duplicates=sum(count - 1 for kind in KINDS for count in held[kind].values() if count > 1),
            lost=sum(len(expected.present[kind] - set(held[kind])) for kind in KINDS),
        ))


def _task_of(mail: ReceivedMail) -> str:
    """The task id in a failure subject: ``[oneroster DAG] TASK failed in run RUN``."""
    return mail.subject.split("] ", 1)[1].split(" failed in run ", 1)[0]


def _deadline_callbacks(stack: AirflowStack, run_ids: list[str]) -> list[str] | None:
    """What the deadline callback of each of ``run_ids`` returned, once all have finished."""
    with closing(sqlite3.connect(f"file:{stack.database}?mode=ro", uri=True, timeout=10)) as db:
        rows = db.execute(
            "SELECT dag_run.run_id, callback.state, callback.output FROM deadline"
            " JOIN callback ON deadline.callback_id = callback.id"
            " JOIN dag_run ON deadline.dagrun_id = dag_run.id",
        ).fetchall()
    done = {run_id: output for run_id, state, output in rows if state in ("success", "failed")}
    return [done[run_id] for run_id in run_ids] if set(run_ids) <= set(done) else None
