"""Run a district DAG in-process with ``dag.test()`` and read back what its tasks returned.

Used by the demo and by the end-to-end tests. The caller must have pointed Airflow at a
migrated metadata database and at this project's dags/ folder before importing this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow.dag_processing.dagbag import DagBag
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select


@dataclass(frozen=True)
class RunOutcome:
    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str]
    returned: dict[str, Any]  # task_id -> the task's return value (a manifest)


def load_dag(dag_id: str):
    bag = DagBag()
    if dag_id not in bag.dags:
        problems = "; ".join(f"{path}: {error}" for path, error in bag.import_errors.items())
        raise LookupError(f"DAG {dag_id} did not load{': ' + problems if problems else ''}")
    return bag.dags[dag_id]


def run_dag(
    dag_id: str,
    *,
    logical_date: datetime | None = None,
    run_after: datetime | None = None,
    run_conf: dict | None = None,
    retries: int | None = 0,
) -> RunOutcome:
    """Run the DAG once; the same ``logical_date`` and ``run_after`` re-run the same run id.

    ``dag.test()`` waits out retry delays in real time, so tasks get ``retries`` retries here
    (none by default: fail fast); ``None`` keeps the DAG's own.
    """
    dag = load_dag(dag_id)
    if retries is not None:
        for task in dag.tasks:
            task.retries = retries
    logical_date = logical_date or datetime.now(timezone.utc)
    run = dag_test(dag, logical_date, run_after or logical_date, run_conf)
    with create_session() as session:
        task_states = {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_id, XComModel.run_id == run.run_id, XComModel.key == "return_value"
            )
        )
        returned = {row.task_id: XComModel.deserialize_value(row) for row in rows}
    return RunOutcome(dag_id, run.run_id, str(run.state), task_states, returned)


def dag_test(dag, logical_date: datetime, run_after: datetime, run_conf: dict | None) -> DagRun:
    """``dag.test()`` as the demo and the tests need it."""
    # dag.test() crashes after a run of a DAG with a deadline (apache/airflow#73428) and never
    # fires deadline callbacks anyway; deadlines are tested through the scheduler.
    dag.deadline = None
    # A grades-only run skips the provision chain; dag.test() sleeps a second per skipped task it
    # propagates, so those tasks (which would only skip) are marked done instead.
    skip = r"provision\..*" if (run_conf or {}).get("halves") == "grades" else None
    return dag.test(logical_date=logical_date, run_after=run_after, run_conf=run_conf, mark_success_pattern=skip)
