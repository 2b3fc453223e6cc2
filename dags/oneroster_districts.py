"""One DAG per district file in include/districts/: Infinite Campus OneRoster -> staging.

This file only wires DAGs from configuration; hooks and operators live in plugins/,
the logic in include/. A district file that does not validate is reported as an import
error of this file (naming the district file and field) while every other district's
DAG still loads.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from airflow.sdk import DAG, Param, TaskGroup, get_parsing_context

from include.config import DistrictConfig, DistrictConfigError, district_file, districts_dir, load_districts
from include.oneroster.models import COLLECTIONS
from include.provisioning.steps import STEPS
from plugins.notifications.alerts import deadline_alert, failure_notifier
from plugins.operators.extract import OneRosterExtractOperator
from plugins.operators.grades import (
    FetchExportOperator,
    PlanGradesOperator,
    PostGradesOperator,
    ReconcileGradesOperator,
)
from plugins.operators.provision import ProvisionOperator, SyncReportOperator
from plugins.sensors.export import ExportFileSensor

STAGING_ROOT = "{{ var.value.get('oneroster_staging_root', '') }}"



def _default_args(config: DistrictConfig) -> dict:
    retries = config.task_retries
    arguments = {
        "owner": "district-data",
        "retries": retries.count,
        "retry_delay": timedelta(seconds=retries.delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(seconds=retries.max_delay_seconds),
    }
    notifier = failure_notifier(config)
    if notifier is not None:
        arguments["on_failure_callback"] = notifier
    return arguments


class DistrictConfigErrors(DAG):
    """Stands in for the district files that failed validation: Airflow calls
    ``validate()`` on every DAG of a file and records what it raises as that file's
    import error, while the file's other DAGs are still loaded."""

    def __init__(self, errors: list[DistrictConfigError]):
        super().__init__(dag_id="oneroster_district_config_errors", schedule=None)
        self.config_errors = errors

    def validate(self) -> None:
        raise ValueError("Invalid district configuration: " + " | ".join(map(str, self.config_errors)))


def _doc(config: DistrictConfig) -> str:
    ic = config.infinite_campus
    return f"""
### {config.name} (`{config.district}`)

Nightly Infinite Campus ⇄ LMS sync for this district, built from
`{district_file(config.district)}`.

* **extract**: the six OneRoster rostering collections ({", ".join(COLLECTIONS)}) from the
  IC connection `{ic.conn_id}`, paged {ic.page_size:,} records at a time, at most
  {ic.max_concurrency} concurrent calls ({ic.peak_concurrency} during peak hours), into
  Parquet under the Variable `oneroster_staging_root`. Each task returns a manifest
  (location, row count, checksum), never student data.
* Schedule `{config.schedule}` (UTC); runs never overlap. The school year comes from the
  run's logical date (years start on {config.active_year.starts}) unless the
  `active_year` param is set.
"""


def build_district_dag(config: DistrictConfig) -> DAG:
    ic = config.infinite_campus
    with DAG(
        dag_id=config.dag_id,
        description=f"Infinite Campus OneRoster sync for {config.name}",
        schedule=config.schedule,
        start_date=datetime.combine(config.start_date, time(), tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        default_args=_default_args(config),
        deadline=deadline_alert(config),
        tags=sorted({"oneroster", "infinite-campus", f"district:{config.district}", *config.tags}),
        doc_md=_doc(config),
        params={
            "active_year": Param(
                None,
                type=["null", "integer"],
                minimum=2000,
                maximum=2100,
                title="Active school year",
                description="Ending year of the school year to sync (2027 = 2026-27). "
                "Empty: the year of the run's logical date.",
            ),
            "halves": Param(
                "both",
                type="string",
                enum=["both", "provisioning", "grades"],
                title="What to run",
                description="Provisioning (IC -> LMS), grade passback (LMS -> IC) or both.",
            ),
            "full_run": Param(
                False,
                type="boolean",
                title="Full run",
                description="Re-send every LMS object and every grade, ignoring what earlier runs recorded as sent.",
            ),
            "dry_run": Param(
                False,
                type="boolean",
                title="Dry run",
                description="Build and report the plans; write nothing to the LMS or to IC's gradebook, "
                "and leave the grade export unprocessed.",
            ),
        },
    ) as dag:
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
            _grade_passback(config, after=provisioned)
    return dag


def _grade_passback(config: DistrictConfig, after) -> None:
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
        sensor >> fetch >> plan >> post >> reconcile
        after >> plan


def _register() -> None:
    configs, errors = load_districts()
    parsing_for = get_parsing_context().dag_id
    for config in configs:
        if parsing_for is None or parsing_for == config.dag_id:
            globals()[config.dag_id] = build_district_dag(config)
    if errors and parsing_for is None:
        globals()["oneroster_district_config_errors"] = DistrictConfigErrors(errors)


_register()
