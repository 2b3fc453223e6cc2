"""Builds the DAG of each district file in include/districts/: Infinite Campus OneRoster -> LMS.

Not a DAG file itself (``dags/.airflowignore``): the 16 files ``oneroster_districts_NN_of_16.py``
each call :func:`register_shard`, which builds the DAGs of its share of the districts
(``include.config.shard_of``), so the dag-processor parses 16 small files in parallel rather than one
that grows with every district. This module only wires DAGs from configuration; hooks and operators
live in plugins/, the logic in include/. A district file that does not validate still gets its DAG,
on the schedule the file gives if that much can be read, whose one task fails every run naming the
file and fields (and emails ``notifications.emails`` where those can be read); the error is also
listed among the UI's import errors, by ``oneroster_district_errors.py``. Never raised here:
Airflow marks every DAG of a file with an import error stale, so one district's typo would switch
off all the districts of its file.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import date, datetime, time, timedelta, timezone

from airflow.sdk import DAG, Param, TaskGroup, get_parsing_context

from include.config import (
    CanvasLms,
    DistrictConfig,
    InvalidDistrict,
    Notifications,
    TaskRetries,
    district_file,
    districts_dir,
    invalid_district,
    load_districts,
    shard_of_file,
)
from include.oneroster.models import COLLECTIONS
from include.provisioning.steps import STEP_BY_KIND, STEPS, steps_for
from plugins.notifications.alerts import deadline_alert, failure_notifier
from plugins.operators.extract import OneRosterExtractOperator
from plugins.operators.first_night import FirstNightGate
from plugins.operators.grades import (
    FetchExportOperator,
    FetchLmsGradesOperator,
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


def _doc(config: DistrictConfig, params: dict[str, Param], file: str) -> str:
    """The DAG's docs in the UI: what a night does, the params, a safe dry run, a broken file."""
    ic = config.infinite_campus
    night = [f"""
### {config.name} (`{config.district}`)

Nightly Infinite Campus ⇄ LMS sync for this district, built from
`{file}`. Schedule `{config.schedule}` (UTC); runs never overlap.
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
    if config.grade_passback is not None and reads_grades_from_lms(config):
        passback = config.grade_passback
        night.append(f"""
* **grades**: reads the final grades of the sections provisioned into {config.lms.target} from its
  API (connection `{config.lms.conn_id}`) once provisioning is done, keeps what may be posted
  (mapped terms, open grading windows{", opted-in sections" if passback.teacher_opt_in else ""},
  changed grades), posts it to IC's gradebook and reconciles every row; rows that need a
  person are emailed.""")
    elif config.grade_passback is not None:
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


# -- the tasks' docs (the task's "Task Docs" in the UI) -------------------------------------------
# Where things are staged, relative to the Variable oneroster_staging_root: a run's own folder,
# removed by staging_retention after retention_days, and the state that outlives runs.


def _run_folder(district: str) -> str:
    return f"<staging root>/{district}/<run id>/"


def _state_folder(district: str) -> str:
    return f"<staging root>/{district}/state/<school year>/"


def _first_night_doc(config: DistrictConfig, file: str) -> str:
    return f"""
**first_night**: lets a scheduled run through only from the district's first night,
{config.start_date.isoformat()} (`start_date` in `{file}`). A scheduled run
dated before it is skipped whole, every task with it, and the log says when the nights begin.
Manual runs and backfills of any date always go through.

Reads nothing but the run's type and date; writes and returns nothing.

**If it skips a run you wanted**: trigger the run by hand, or backfill the date. It has nothing to
fail on; if it does, clear it.
"""


def _extract_doc(config: DistrictConfig, collection: str) -> str:
    ic = config.infinite_campus
    run, state = _run_folder(config.district), _state_folder(config.district)
    year_check = """
It also fails for good when IC does not serve the run's school year: set the run's `active_year`
param to the year IC serves, or point the run at an IC serving that year.
""" if collection == "academicSessions" else ""
    return f"""
**extract.{collection}**: reads OneRoster `{collection}` from Infinite Campus (connection
`{ic.conn_id}`, pool `{ic.pool}`), {ic.page_size:,} records a page, and stages the whole collection
as Parquet. On a delta night it asks IC only for what changed since the last extract and merges
that into the last snapshot; every {ic.full_extract_every_days} day(s), or with the `full_run`
param, it reads the collection whole. A collection that changed while it was read is read again.

**Writes**: `{run}{collection}.parquet` (the collection) and `{collection}.quarantine.parquet`
(records that do not fit, with the reason); under `{state}extract/` the snapshot, its mark and
quarantine, the next delta's base.

**Returns** a manifest (where it is staged, row, quarantined and request counts, checksum), never
student data. **Logs** full or delta, the counts and the first reasons for quarantine (not whose).

**If it fails** after its retries: IC or the connection is the cause (credentials, URL, an outage);
the log says which. Fix the connection `{ic.conn_id}` or wait for IC, then clear the task: it
stages the whole collection again.
{year_check}"""


def _provision_doc(config: DistrictConfig, step) -> str:
    run, state = _run_folder(config.district), _state_folder(config.district)
    lms = config.lms
    reads = ", ".join(f"`extract.{collection}`" for collection in step.extracts)
    earlier = ", ".join(f"`provision.{STEP_BY_KIND[kind].task_id}`" for kind in step.needs)
    needs = f" and the LMS ids from the results of {earlier}," if earlier else ","
    checked = (
        "Before anything is written it checks the district file's maps (schools, terms, role ids) "
        "against IC's schools and the LMS; a map pointing at nothing fails the task for good, naming "
        "the fields: fix the district file, then clear the task."
        if step is STEPS[0] else
        "A map in the district file pointing at no such LMS object fails the task for good, naming the "
        "fields: fix the district file, then clear the task."
        if step.kind in ("grading_period", "user") else ""
    )
    return f"""
**provision.{step.task_id}**: makes the LMS's {step.kind.replace("_", " ")}s match IC: plans them from
{reads}{needs} through the district file's maps, compares them with what was provisioned before and
creates, updates or deactivates only what changed, in {lms.target} (connection `{lms.conn_id}`,
pool `{lms.pool}`). The `full_run` param re-sends everything; `dry_run` plans and reports but writes
nothing to the LMS or the state. Skipped in a grades-only run (`halves`).

**Writes**: the LMS; `{state}provisioned/{step.kind}.parquet` (what the LMS holds, for the next run);
under `{run}provision/`: `{step.kind}.errors`, `.skipped` and `.report` Parquet, the `{step.kind}.result`
when a later step reads it, and a journal of the LMS's answers.

**Returns** a manifest with the counts (create, update, deactivate, unchanged, removed in IC,
skipped, failed) and those locations. **Logs** the counts and the first records the LMS refused
(by row, not by name).
Records the LMS refuses do not fail the task: they are in the sync report and sent again next run.

**If it fails** after its retries: mostly the LMS or its connection (credentials, rate limit, an
outage). Fix it, then clear the task; the journal makes a cleared task send only what the LMS has
not taken yet. {checked}
"""


def _sync_report_doc(config: DistrictConfig) -> str:
    emails = ", ".join(config.notifications.emails) or "no one (notifications.emails is empty)"
    return f"""
**provision.sync_report**: gathers the provisioning steps' reports and what the extracts could not
stage whole into one sync report. Reads the steps' and the extracts' manifests (XCom) and the staged
report tables.

**Writes** `{_run_folder(config.district)}provision/sync_report.parquet` and `sync_report.csv`.
**Logs** the whole report (counts per kind and outcome). When records need a person (refused by the
LMS, quarantined, a collection that did not settle) it logs a warning and emails {emails} the counts,
never the records. **Returns** where the report is staged and the totals per outcome.

**If it fails**: usually the email (the SMTP connection `{config.notifications.smtp_conn_id}`) or the
staging root; fix it and clear the task. It writes nothing to the LMS, so clearing is safe.
"""


def _grades_docs(config: DistrictConfig) -> dict[str, str]:
    passback = config.grade_passback
    ic = config.infinite_campus
    run, state = _run_folder(config.district), _state_folder(config.district)
    pattern = f"{passback.export_title}*" if passback.export_title else "*.csv"
    emails = ", ".join(config.notifications.emails) or "no one (notifications.emails is empty)"
    lms = config.lms
    assignments = "" if passback.assignments is None else f"""
With `grade_passback.assignments`, every student's score of every assignment of those courses too
(their assignment groups, assignments and submissions), assigned from
{passback.assignments.start_date.isoformat()} on."""
    read_grades = "" if lms is None else f"""
**grades.read_grades**: reads the final grades of every section provisioned into {lms.target} this
school year from its API (connection `{lms.conn_id}`, pool `{lms.pool}`), once the night's
provisioning is done: a row per student and grading period of the course's term (a course whose term
has none: one row named after its term), the teacher's final grade override first, else the
`{getattr(lms, "grade_score", "current")}` score. What names no IC term (a course in no SIS term and
without grading periods), a course gone from {lms.target} or a student provisioned into a class whom
{lms.target} no longer lists as active there (the enrollment ended by hand) is kept aside with the
reason; students made in {lms.target} without an IC id are counted, not passed back.{assignments}
Skipped in a provisioning-only run.

**Reads** `{state}provisioned/section`, `{state}provisioned/enrollment` and the LMS. **Writes**
under `{run}grades/`: `export.rows.parquet`, `export.quarantine.parquet` and
`assignments.rows.parquet`. **Returns** a manifest (counts, checksum, when it read). **Logs** the
counts.

**If it fails** after its retries: the LMS or its connection (token, permissions, an outage); the
message says which. Fix it and clear the task: it only reads.
"""
    return {
        "read_grades": read_grades,
        "wait_for_export": f"""
**grades.wait_for_export**: waits for the LMS's final-grade export: the newest file named
`{pattern}` in `{passback.remote_dir}` on the SFTP connection `{passback.sftp_conn_id}` that is newer
than the last export processed, once its size has stayed the same for {passback.stable_seconds:g} s.
It waits in the triggerer, holding no worker. Skipped in a provisioning-only run (`halves`).

**Reads** the directory listing and `<staging root>/{config.district}/state/grades/last_export` (the
exports processed). **Writes** its deadline and the file it is watching under `{run}grades/`.
**Returns** the file's path, name, size and time, never its contents.

**If it fails**: no export within {passback.timeout_hours:g} h fails it for good, without a retry:
check the LMS's auto-export job and the directory, then clear the task to wait
{passback.timeout_hours:g} h afresh. A refused login or host key fails at once: fix the connection
(its `host_key`), then clear. An SFTP server that is down is waited out.
""",
        "fetch_export": f"""
**grades.fetch_export**: downloads the export the wait found from `{passback.sftp_conn_id}` and parses
it. Rows that cannot be read are quarantined with the reason; they do not fail the task.

**Writes** under `{run}grades/`: `export.raw.parquet` (the file as downloaded), `export.rows.parquet`
and `export.quarantine.parquet`. **Returns** a manifest (the file, row and quarantined counts,
checksum). **Logs** the file's name, size and counts.

**If it fails**: a file without the required columns fails for good naming what is missing: fix the
LMS's export, or `grade_passback.columns` in the district file, then clear this task (the same file),
or `grades.wait_for_export` with its downstream tasks to take the newest export. A download cut
short is retried.
""",
        "plan": f"""
**grades.plan**: decides what may be posted: rows of mapped terms, open grading windows, opted-in
sections where opt-in is on, and grades changed since last posted (all of them with `full_run`).
Runs after the night's provisioning, or without it in a grades-only run.

**Reads** the parsed export, the run's `users`, `classes` and `academicSessions` extracts, the
provisioned sections and grading periods and the posted grades under `{state}`, the opt-in Variable
`oneroster_grade_opt_in_{config.district}` when opt-in is on. **Writes** `{run}grades/postings.parquet`.
**Returns** a manifest with the counts per action; **logs** them.

**If it fails**: an invalid opt-in Variable fails for good, naming the problem: fix the Variable and
clear. A school year posted over one OneRoster version and now read over the other fails for good:
the message says what to do (set the connection's version back, or start the year's postings over).
""",
        "post": f"""
**grades.post**: sends the planned grades to IC's gradebook (connection `{ic.conn_id}`, pool
`{ic.pool}`): the grading category, score scales and lineItems they need (an assignment's: a category
per assignment group and a lineItem per assignment), then the results. What IC
refuses holds back what needs it; refusals do not fail the task. In a dry run it sends nothing and
is skipped, saying what would have been posted.

**Writes** IC's gradebook; under `{state}grades/` what IC took (`posted`, so the next run sends only
changes) and the OneRoster version posted over; under `{run}grades/` the journal of IC's answers
and `outcomes.parquet`. **Returns** a manifest with the counts per status. **Logs** the counts and
IC's refusals per lineItem with the export rows (not the students).

**If it fails** after its retries: IC or the connection (credentials, an outage). Fix it and clear
the task: the journal and fixed ids mean nothing is posted twice.
""",
        "reconcile": f"""
**grades.reconcile**: accounts for every export row: posted, unchanged, skipped (why) or failed (IC's
message); the counts add up to the export. Then marks the export processed, so the wait takes only
a newer one. Skipped in a dry run, with `grades.post`: the export stays unprocessed.

**Reads** the parsed export, its quarantine, the postings and the outcomes. **Writes**
`{run}grades/reconciliation.parquet` and `reconciliation.csv`, and the processed exports under
`<staging root>/{config.district}/state/grades/`. **Logs** the reconciliation; **emails** {emails} the
rows IC refused, the rows to fix in the export or in IC, or an export without rows. **Returns** the
counts and the report's location.

**If it fails**: usually the email (SMTP connection `{config.notifications.smtp_conn_id}`) or the
staging root; fix it and clear the task. Until it succeeds the export is not marked processed.
""",
    }


def _retention_doc(config: DistrictConfig) -> str:
    return f"""
**staging_retention**: the night's last task, a teardown: once every other task is done, however
it ended, it removes this district's run folders under `<staging root>/{config.district}/` last
written more than {config.retention_days} day(s) ago (`retention_days`), never the `state` folder,
this run's folder, an unfinished run's or the last successful run's.

**Reads** the folder listing and the DAG's runs' states in Airflow. **Logs** and **returns** the
folders and bytes removed, what was kept and why, and the cutoff; never a folder's contents.

**If it fails**: the run's outcome is still the other tasks'. Check the staging root (permissions,
the Variable `oneroster_staging_root`) and clear the task, or let tomorrow's run remove what is due.
"""


def _invalid_doc(invalid: InvalidDistrict) -> str:
    return f"""
**district_file_invalid**: `{invalid.file}` does not validate, so this district is not synced. The
task reads and writes nothing: it fails for good, without retries, naming the file and fields (also
in the DAG's docs), and the failure email carries them.

**Fix the file**; the dag-processor picks it up and the district's usual DAG returns. Clearing
this task changes nothing.
"""


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
    file = district_file(config.district)
    with DAG(
        **_nightly(config.dag_id, config.schedule, config.start_date, config.task_retries, config.notifications),
        description=f"Infinite Campus OneRoster sync for {config.name}",
        deadline=deadline_alert(config),
        tags=sorted({"oneroster", "infinite-campus", f"district:{config.district}", *config.tags}),
        doc_md=_doc(config, params, file),
        params=params,
    ) as dag:
        first_night = FirstNightGate(task_id="first_night", first_night=config.start_date,
                                     doc_md=_first_night_doc(config, file))
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
                    doc_md=_extract_doc(config, collection),
                )
        first_night >> extract
        if config.provisioning is not None and config.lms is not None:
            with TaskGroup("provision", tooltip="map, plan and load the LMS, in dependency order"):
                previous = extract
                steps = steps_for(config.lms.target)
                for step in steps:
                    task = ProvisionOperator(
                        task_id=step.task_id,
                        kind=step.kind,
                        district=config.district,
                        config_file=file,
                        provisioning=config.provisioning,
                        lms=config.lms,
                        active_year_rule=config.active_year,
                        staging_root=STAGING_ROOT,
                        pool=config.lms.pool,
                        doc_md=_provision_doc(config, step),
                    )
                    previous >> task
                    previous = task
                provisioned = SyncReportOperator(
                    task_id="sync_report",
                    district=config.district,
                    step_task_ids=[f"provision.{step.task_id}" for step in steps],
                    extract_task_ids=[f"extract.{collection}" for collection in COLLECTIONS],
                    notifications=config.notifications,
                    active_year_rule=config.active_year,
                    staging_root=STAGING_ROOT,
                    doc_md=_sync_report_doc(config),
                )
                previous >> provisioned
        else:
            provisioned = extract
        if config.grade_passback is not None:
            _grade_passback(config, after=provisioned, first_night=first_night)
        every_task = list(dag.tasks)
        every_task >> StagingRetentionOperator(
            task_id="staging_retention", district=config.district, retention_days=config.retention_days,
            staging_root=STAGING_ROOT, doc_md=_retention_doc(config),
        ).as_teardown()  # after every other task, however it ended; the run's state is theirs
    # A manual run dated before a task's start_date gets no instance of it (models/dagrun.py) and
    # ends green with nothing done, so every task accepts any date: a past school year asked for by
    # date syncs that year, or fails in extract.academicSessions when IC does not serve it. The
    # district's start_date still holds scheduled runs back: first_night skips them.
    for task in dag.tasks:
        task.start_date = ANY_LOGICAL_DATE
    return dag


def reads_grades_from_lms(config: DistrictConfig) -> bool:
    """Whether the district's final grades are read from its LMS's API (Canvas) rather than from an
    export file on SFTP (Schoology, or a district without provisioning)."""
    return isinstance(config.lms, CanvasLms)


def _grade_passback(config: DistrictConfig, after, first_night) -> None:
    """LMS export on SFTP -> parse (or the LMS's API read) -> plan -> post to IC -> reconcile;
    planning waits for the night's provisioning, whose state maps LMS sections and grading periods
    to IC (and reading the LMS's grades waits for it too: it reads the sections provisioned)."""
    common = {
        "district": config.district,
        "passback": config.grade_passback,
        "active_year_rule": config.active_year,
        "staging_root": STAGING_ROOT,
    }
    docs = _grades_docs(config)
    from_lms = reads_grades_from_lms(config)
    with TaskGroup("grades", tooltip=f"final grades from the LMS {'API' if from_lms else 'export'} to IC's gradebook"):
        if from_lms:
            fetch = FetchLmsGradesOperator(
                task_id="read_grades", lms=config.lms, pool=config.lms.pool,
                trigger_rule="none_failed",  # provisioning skipped in a grades-only run is fine
                doc_md=docs["read_grades"], **common,
            )
            first_night >> fetch
            after >> fetch
        else:
            sensor = ExportFileSensor(
                task_id="wait_for_export", district=config.district, passback=config.grade_passback,
                staging_root=STAGING_ROOT, doc_md=docs["wait_for_export"],
            )
            fetch = FetchExportOperator(task_id="fetch_export", sensor_task_id="grades.wait_for_export",
                                        doc_md=docs["fetch_export"], **common)
            first_night >> sensor >> fetch
        plan = PlanGradesOperator(
            task_id="plan", export_task_id=fetch.task_id, config_dir=str(districts_dir()),
            trigger_rule="none_failed",  # provisioning skipped in a grades-only run is fine
            doc_md=docs["plan"], **common,
        )
        post = PostGradesOperator(
            task_id="post", plan_task_id="grades.plan", infinite_campus=config.infinite_campus,
            pool=config.infinite_campus.pool, pool_slots=config.infinite_campus.max_concurrency,
            doc_md=docs["post"], **common,
        )
        reconcile = ReconcileGradesOperator(
            task_id="reconcile", export_task_id=fetch.task_id, plan_task_id="grades.plan",
            post_task_id="grades.post", notifications=config.notifications, doc_md=docs["reconcile"],
            **common,
        )
        fetch >> plan >> post >> reconcile
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
        InvalidDistrictFileOperator(
            task_id="district_file_invalid", file=invalid.file, problems=invalid.problems,
            doc_md=_invalid_doc(invalid),
        )
    return dag


def register_shard(dag_file: str, namespace: MutableMapping[str, object]) -> None:
    """Into ``namespace`` (the globals of ``dag_file``, one of the shard files): for the dag-processor,
    the DAG of every district of that file's shard; for a task, only its own DAG, from its own
    district file (Airflow names the DAG it runs a task of in the parsing context)."""
    configs, errors = load_districts(dag_id=get_parsing_context().dag_id, shard=shard_of_file(dag_file))
    built = [(config.dag_id, build_district_dag, config) for config in configs]
    built += [(invalid.dag_id, build_invalid_district_dag, invalid) for invalid in map(invalid_district, errors)]
    for dag_id, build, settings in built:
        if dag_id not in namespace:  # a valid file before an invalid one whose name gives the same id
            namespace[dag_id] = build(settings)
