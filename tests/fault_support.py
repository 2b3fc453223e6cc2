"""What the grade-passback tests share: the demo district's settings, the connections to the
emulators, a DAG runner that also tells try numbers, and the far-side ledger of a passback run
(what IC's gradebook holds against what the run's reconciliation says)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from include.config import DISTRICTS_DIR, load_district
from include.grades.export import decode
from include.staging import read_frame
from tests.fault_ledger import ScenarioLedger
from tests.support import connection_uri_env, lms_connection_env

NIGHT = datetime(2026, 12, 1, 6, tzinfo=timezone.utc)  # semester 1's window is open, semester 2's is not
VENDOR = {"vendor_key": "test-vendor", "vendor_secret": "test-vendor-secret"}
CONFIG = load_district(DISTRICTS_DIR / "demo.yaml")
EXPORT_DIR = CONFIG.grade_passback.remote_dir.strip("/")
DAG_ID = "oneroster_demo"


def grade_environment(*, ic, lms, sftp, smtp, staging_uri: str, **ic_extras) -> dict[str, str]:
    """The demo's connection ids pointed at the emulators and servers, as Airflow reads them."""
    return {
        **connection_uri_env("ic_demo", ic, "1.2", **VENDOR, **ic_extras),
        **lms_connection_env("lms_demo", lms),
        "AIRFLOW_CONN_SFTP_DEMO": json.dumps(sftp.connection()),
        "AIRFLOW_CONN_SMTP_DEMO": json.dumps(smtp.connection("oneroster-tests@localhost")),
        "AIRFLOW_VAR_ONEROSTER_STAGING_ROOT": staging_uri,
    }


def export_rows(data: bytes) -> int:
    """The grade records in an export file, counted independently of the parser under test."""
    if not data:
        return 0
    records = [record for record in csv.reader(io.StringIO(decode(data), newline="")) if record]
    return max(0, len(records) - 1)


@dataclass(frozen=True)
class Run:
    """A finished ``dag.test()`` run: its state, each task's state and try number, what tasks returned."""

    run_id: str
    state: str
    task_states: dict[str, str]
    tries: dict[str, int]
    returned: dict[str, Any]
    started: dict[str, datetime | None]

    def counts(self) -> dict[str, int]:
        return self.returned["grades.reconcile"]["counts"]


def run_dag(when: datetime, *, retries: int = 0, tweak=None, **conf) -> Run:
    """Run the demo DAG once at ``when`` (the same ``when`` re-runs the same run id, as a clear does).

    Tasks get ``retries`` retries with no delay (``dag.test()`` waits delays in real time);
    ``tweak(dag)`` may adjust tasks of this run only (the DAG is loaded afresh each time).
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from include.sandbox.runner import dag_test, load_dag

    dag = load_dag(DAG_ID)
    for task in dag.tasks:
        task.retries = retries
        task.retry_delay = timedelta(0)
        task.retry_exponential_backoff = 0
    if tweak is not None:
        tweak(dag)
    run = dag_test(dag, when, when, conf or None)
    with create_session() as session:
        instances = run.get_task_instances(session=session)
        states = {ti.task_id: str(ti.state) for ti in instances}
        tries = {ti.task_id: int(ti.try_number) for ti in instances}
        started = {ti.task_id: ti.start_date for ti in instances}
        rows = session.scalars(select(XComModel).where(
            XComModel.dag_id == DAG_ID, XComModel.run_id == run.run_id, XComModel.key == "return_value"))
        returned = {row.task_id: XComModel.deserialize_value(row) for row in rows}
    return Run(run.run_id, str(run.state), states, tries, returned, started)


# -- the far side -------------------------------------------------------------------------------


def duplicates_at_ic(gradebook) -> int:
    """Objects IC holds twice: (lineItem, student) pairs with two results, and any sourcedId created twice."""
    twice = sum(entry.created - 1 for collection in ("lineItems", "results")
                for entry in gradebook.writes[collection].values() if entry.created > 1)
    return len(gradebook.duplicates()) + twice


def _stored_value(result: dict) -> tuple[float | None, str | None]:
    score = result.get("score")
    return (None if score is None else float(score)), result.get("textScore")


def far_side_ledger(scenario: str, *, faults: int, rows_in: int, reconciled: dict, postings: pd.DataFrame,
                    gradebook) -> ScenarioLedger:
    """The ledger of a passback whose reconciliation ran, checked against what IC stores.

    A row counts as posted only if every result planned for it is in IC's gradebook with the
    planned value ("unchanged" rows too: an earlier run posted them); skipped and failed rows
    must carry a reason; every planned post is either stored or on a failed/skipped row with a
    reason. ``lost`` is whatever the far side and the report together cannot account for.
    """
    report = read_frame(reconciled["uri"])
    stored = gradebook.stored("results")
    planned = postings[postings["action"].isin(["post", "unchanged"])]
    on_far_side = {
        result_id: result_id in stored
        and _stored_value(stored[result_id])[0] == (None if pd.isna(percent) else float(percent))
        and (not isinstance(score, str) or _stored_value(stored[result_id])[1] == score)
        for result_id, percent, score in zip(planned["result_id"], planned["percent"], planned["score"],
                                             strict=True)
    }
    outcome = report.set_index("row")["outcome"]
    for row in planned.itertuples():
        if not on_far_side[row.result_id]:
            assert outcome.get(row.row) in ("failed", "skipped"), (
                f"{scenario}: result {row.result_id} of row {row.row} is neither at IC nor failed/skipped")
    unresolved = report[report["outcome"].isin(["skipped", "failed"]) & (report["reason"].fillna("") == "")]
    assert unresolved.empty, f"{scenario}: rows skipped/failed without a reason: {unresolved['row'].tolist()}"

    claimed = report[report["outcome"].isin(["posted", "unchanged"])]
    rows_at_ic = planned.groupby("row")["result_id"].agg(lambda ids: all(on_far_side[i] for i in ids))
    posted = int(claimed["row"].map(rows_at_ic).fillna(False).astype(bool).sum())
    counts = reconciled["counts"]
    assert posted == counts.get("posted", 0) + counts.get("unchanged", 0), (
        f"{scenario}: the report says {counts} but IC holds the results of {posted} posted/unchanged rows")
    skipped, failed = int((report["outcome"] == "skipped").sum()), int((report["outcome"] == "failed").sum())
    return ScenarioLedger(scenario, faults, rows_in, posted, skipped, failed, duplicates_at_ic(gradebook),
                          rows_in - (posted + skipped + failed))
