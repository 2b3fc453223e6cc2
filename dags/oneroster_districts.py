"""One DAG per district file in include/districts/: Infinite Campus OneRoster -> staging.

This file only wires DAGs from configuration; hooks and operators live in plugins/,
the logic in include/. A district file that does not validate still gets its DAG, on the
schedule the file gives if that much can be read, whose one task fails every run naming the
file and fields (and emails ``notifications.emails`` where those can be read); the error is
also listed among the UI's import errors, by ``oneroster_district_errors.py``. Never raised
here: Airflow marks every DAG of a file with an import error stale, so one district's typo
would switch off all districts.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from airflow.sdk import DAG, Param, TaskGroup, get_parsing_context

from include.config import (
    DistrictConfig,
    InvalidDistrict,
    Notifications,
    TaskRetries,
    district_file,
    districts_dir,
    invalid_district,
    load_districts,
)
from include.oneroster.models import COLLECTIONS
from include.provisioning.steps import STEPS
from plugins.notifications.alerts import deadline_alert, failure_notifier
from plugins.operators.extract import OneRosterExtractOperator
from plugins.operators.first_night import FirstNightGate
from plugins.operators.grades import (
    FetchExportOperator,
    PlanGradesOperator,
    PostGradesOperator,
    ReconcileGradesOperator,
)
from plugins.operators.invalid_district import InvalidDistrictFileOperator
from plugins.operators.provision import ProvisionOperator, SyncReportOperator
from plugins.operators.retention import StagingRetentionOperator
from plugins.sensors.export import ExportFileSensor

STAGING_ROOT = "{{ var.value.get('oneroster_staging_root', '') }}"
ANY_LOGICAL_DATE = datetime(1970, 1, 1, tzinfo=timezone.utc)



def _default_args(retries: TaskRetries, notifications: Notifications) -> dict:
    arguments = {
        "owner": "district-data",
        "retries": retries.count,
        "retry_delay": timedelta(seconds=retries.delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=retries.max_delay_seconds),
    }
    notifier = failure_notifier(notifications)
    if notifier is not None:
        arguments["on_failure_callback"] = notifier
    return arguments


def _nightly(dag_id: str, schedule: str, first_night: date, retries: TaskRetries,
             notifications: Notifications) -> dict:
    """What every district's DAG shares, valid file or not: its id and nightly schedule, no
    catch-up, runs that never overlap, retries and failure emails."""
    return {
        "dag_id": dag_id,
        "schedule": schedule,
        "start_date": datetime.combine(first_night, time(), tzinfo=timezone.utc),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": _default_args(retries, notifications),
    }


def _doc(config: DistrictConfig, params: dict[str, Param]) -> str:
    """The DAG's docs in the UI: what a night does, the params, a safe dry run, a broken file."""
    ic = config.infinite_campus
    night = [f"""
### {config.name} (`{config.district}`)

Nightly Infinite Campus ⇄ LMS sync for this district, built from
`{district_file(config.district)}`. Schedule `{config.schedule}` (UTC); runs never overlap.
The school year comes from the run's logical date (years start on {config.active_year.starts})
unless the `active_year` param is set; a past year can be asked for either way, or backfilled.

**What a night does**

* **extract**: the six OneRoster rostering collections ({", ".join(COLLECTIONS)}) from the
  IC connection `{ic.conn_id}`, paged {ic.page_size:,} records at a time, at most
  {ic.max_concurrency} concurrent calls ({ic.peak_concurrency} during peak hours), into
  Parquet under the Variable `oneroster_staging_root`; only what changed on delta nights.
  Each task returns a manifest (location, counts, checksum), never student data."""]
    if config.provisioning is not None and config.lms is not None:
        night.append(f"""
* **provision**: schools, terms, users, guardian links, courses, sections and enrollments
  into {config.lms.target} (connection `{config.lms.conn_id}`), in that order, through the
  district file's school, term and role maps; only what changed since the last run is sent.
  `sync_report` emails what needs a person (records the LMS refused, records IC served
  that were quarantined, a collection that did not settle).""")
    if config.grade_passback is not None:
        passback = config.grade_passback
        night.append(f"""
* **grades**: waits up to {passback.timeout_hours:g} h for the LMS's grade export on the SFTP
  connection `{passback.sftp_conn_id}` (`{passback.remote_dir}`), keeps what may be posted
  (mapped terms, open grading windows{", opted-in sections" if passback.teacher_opt_in else ""},
  changed grades), posts it to IC's gradebook and reconciles every row; rows that need a
  person are emailed. No export in time fails the wait for good and emails.""")
    night.append(f"""
* **staging_retention**: once every other task is done, however it ended, removes this district's
  run folders under the staging root that were last written more than {config.retention_days} day(s)
  ago (`retention_days`), never the state, a run not finished, this run's or the last successful
  run's.""")
    param_lines = "\n".join(f"* `{name}`: {param.description}" for name, param in params.items())
    safely = """
**Trying it safely**: trigger with `dry_run` ticked *and* "Unpause on trigger" unticked (an
unpaused DAG at once gets a real scheduled run); the run's note then starts "Dry run".
""" if "dry_run" in params else ""
    night.append(f"""

Failures are emailed to {", ".join(config.notifications.emails) or "no one (notifications.emails is empty)"}
after the last of {config.task_retries.count} retries.

**Params** (the trigger form):

{param_lines}
{safely}
**If the district file breaks**, this DAG is replaced by one whose only task,
`district_file_invalid`, fails every run naming the file and field, and emails them; other
districts keep running.
""")
    return "".join(night)


def _params(config: DistrictConfig) -> dict[str, Param]:
    """The trigger form: only what applies to this district's groups."""
    writes = config.provisioning is not None or config.grade_passback is not None
    params = {
        # exclusiveMinimum/-Maximum, not minimum/maximum: the trigger form's number field clamps
        # to those (typing 27 gave 2000); these are checked when the run is created and refused
        # with the reason.
        "active_year": Param(
            None,
            type=["null", "integer"],
            exclusiveMinimum=1999,
            exclusiveMaximum=2100,
            title="Active school year",
            description="Ending year of the school year to sync, in full (2027 = 2026-27), 2000-2099. "
            "Empty: the year of the run's logical date.",
        ),
        "full_run": Param(
            False,
            type="boolean",
            title="Full run",
            description=(
                "Extract every collection whole and re-send every LMS object and every grade, ignoring "
                "what earlier runs recorded as sent."
                if writes else "Extract every collection whole instead of only what changed since the last run."
            ),
        ),
    }
    if config.provisioning is not None and config.grade_passback is not None:
        params["halves"] = Param(
            "both",
            type="string",
            enum=["both", "provisioning", "grades"],
            title="What to run",
            description="Provisioning (IC -> LMS), grade passback (LMS -> IC) or both.",
        )
    if writes:
        params["dry_run"] = Param(
            False,
            type="boolean",
            title="Dry run",
            description="Build and report the plans; write nothing to the LMS or to IC's gradebook, "
            "and leave the grade export unprocessed. To try a new district safely, untick "
            "'Unpause on trigger' below: an unpaused DAG also gets its scheduled run at once.",
        )
    return params


def build_district_dag(config: DistrictConfig) -> DAG:
    ic = config.infinite_campus
    params = _params(config)
    with DAG(
        **_nightly(config.dag_id, config.schedule, config.start_date, config.task_retries, config.notifications),
        description=f"Infinite Campus OneRoster sync for {config.name}",
        deadline=deadline_alert(config),
        tags=sorted({"oneroster", "infinite-campus", f"district:{config.district}", *config.tags}),
        doc_md=_doc(config, params),
        params=params,
    ) as dag:
        first_night = FirstNightGate(task_id="first_night", first_night=config.start_date)
        with TaskGroup("extract", tooltip="OneRoster rostering collections -> staging") as extract:
            for collection in COLLECTIONS:
                OneRosterExtractOperator(
                    task_id=collection,
                    collection=collection,
                    district=config.district,
                    infinite_campus=ic,
                    active_year_rule=config.active_year,
                    staging_root=STAGING_ROOT,
                    pool=ic.pool,
                    pool_slots=ic.max_concurrency,
                )
        first_night >> extract
        if config.provisioning is not None and config.lms is not None:
            with TaskGroup("provision", tooltip="map, plan and load the LMS, in dependency order"):
                previous = extract
                for step in STEPS:
                    task = ProvisionOperator(
                        task_id=step.task_id,
                        kind=step.kind,
                        district=config.district,
                        config_file=district_file(config.district),
                        provisioning=config.provisioning,
                        lms=config.lms,
                        active_year_rule=config.active_year,
                        staging_root=STAGING_ROOT,
                        pool=config.lms.pool,
                    )
                    previous >> task
                    previous = task
                provisioned = SyncReportOperator(
                    task_id="sync_report",
                    district=config.district,
                    step_task_ids=[f"provision.{step.task_id}" for step in STEPS],
                    extract_task_ids=[f"extract.{collection}" for collection in COLLECTIONS],
                    notifications=config.notifications,
                    active_year_rule=config.active_year,
                    staging_root=STAGING_ROOT,
                )
                previous >> provisioned
        else:
            provisioned = extract
        if config.grade_passback is not None:
            _grade_passback(config, after=provisioned, first_night=first_night)
        every_task = list(dag.tasks)
        every_task >> StagingRetentionOperator(
            task_id="staging_retention", district=config.district, retention_days=config.retention_days,
            staging_root=STAGING_ROOT,
        ).as_teardown()  # after every other task, however it ended; the run's state is theirs
    # A manual run dated before a task's start_date gets no instance of it (models/dagrun.py) and
    # ends green with nothing done, so every task accepts any date: a past school year asked for by
    # date syncs that year, or fails in extract.academicSessions when IC does not serve it. The
    # district's start_date still holds scheduled runs back: first_night skips them.
    for task in dag.tasks:
        task.start_date = ANY_LOGICAL_DATE
    return dag


def _grade_passback(config: DistrictConfig, after, first_night) -> None:
    """LMS export on SFTP -> parse -> plan -> post to IC -> reconcile; planning waits for the
    night's provisioning, whose state maps LMS sections and grading periods to IC."""
    common = {
        "district": config.district,
        "passback": config.grade_passback,
        "active_year_rule": config.active_year,
        "staging_root": STAGING_ROOT,
    }
    with TaskGroup("grades", tooltip="final grades from the LMS export to IC's gradebook"):
        sensor = ExportFileSensor(
            task_id="wait_for_export", district=config.district, passback=config.grade_passback,
            staging_root=STAGING_ROOT,
        )
        fetch = FetchExportOperator(task_id="fetch_export", sensor_task_id="grades.wait_for_export", **common)
        plan = PlanGradesOperator(
            task_id="plan", export_task_id="grades.fetch_export", config_dir=str(districts_dir()),
            trigger_rule="none_failed",  # provisioning skipped in a grades-only run is fine
            **common,
        )
        post = PostGradesOperator(
            task_id="post", plan_task_id="grades.plan", infinite_campus=config.infinite_campus,
            pool=config.infinite_campus.pool, pool_slots=config.infinite_campus.max_concurrency, **common,
        )
        reconcile = ReconcileGradesOperator(
            task_id="reconcile", export_task_id="grades.fetch_export", plan_task_id="grades.plan",
            post_task_id="grades.post", notifications=config.notifications, **common,
        )
        first_night >> sensor >> fetch >> plan >> post >> reconcile
        after >> plan


def build_invalid_district_dag(invalid: InvalidDistrict) -> DAG:
    """The DAG of a district whose file does not validate: same id, the file's schedule where
    it can be read, one task that fails for good with the file's problems."""
    with DAG(
        **_nightly(invalid.dag_id, invalid.schedule, invalid.start_date, TaskRetries(count=0),
                   invalid.notifications),
        description=f"INVALID district file {invalid.file}: not syncing",
        tags=["oneroster", f"district:{invalid.district}", "invalid-district-file"],
        doc_md=f"""
### {invalid.name} (`{invalid.district}`): the district file is invalid

`{invalid.file}` does not validate, so this district is **not being synced**. Each run fails
in `district_file_invalid` with the problems below and emails
{", ".join(invalid.notifications.emails) or "no one (notifications.emails cannot be read)"}.
Fix the file; the dag-processor picks it up and the district's usual DAG returns.

""" + "\n".join(f"* {problem}" for problem in invalid.problems),
    ) as dag:
        InvalidDistrictFileOperator(task_id="district_file_invalid", file=invalid.file, problems=invalid.problems)
    return dag


def _register() -> None:
    configs, errors = load_districts()
    parsing_for = get_parsing_context().dag_id
    built = [(config.dag_id, build_district_dag, config) for config in configs]
    built += [(invalid.dag_id, build_invalid_district_dag, invalid) for invalid in map(invalid_district, errors)]
    for dag_id, build, settings in built:
        if (parsing_for is None or parsing_for == dag_id) and dag_id not in globals():
            globals()[dag_id] = build(settings)


_register()
