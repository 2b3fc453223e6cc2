"""The grid shows a district's dry run as one: when the scheduler starts a run of a district DAG
whose conf asks for ``dry_run``, the run's note says it is a dry run, above any note typed in the
trigger form.

Tasks cannot set their run's note (Airflow 3's execution API offers no such call), so this is a
scheduler listener, registered by the plugin below. It only sets an attribute of the run the
scheduler already holds; the scheduler's own transaction writes it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun

DISTRICT_DAG_TAG = "oneroster"
DRY_RUN_NOTE = ("Dry run: writes nothing to the LMS, to IC or to the processed-exports state; "
                "its reports say what a real run would have done.")


def dry_run_note(note: str | None) -> str:
    """The run's note with the dry-run line first, kept as it is when it already has it."""
    if not note:
        return DRY_RUN_NOTE
    if note.startswith(DRY_RUN_NOTE):
        return note
    return f"{DRY_RUN_NOTE}\n\n{note}"


@hookimpl
def on_dag_run_running(dag_run: DagRun, msg: str) -> None:
    dag = getattr(dag_run, "dag", None)
    if dag is None or DISTRICT_DAG_TAG not in dag.tags or "dry_run" not in dag.params:
        return
    if (dag_run.conf or {}).get("dry_run") is not True:
        return
    note = dry_run_note(dag_run.note)
    if note != dag_run.note:
        dag_run.note = note


class OneRosterListenersPlugin(AirflowPlugin):
    """Registers this module's listener with the scheduler."""

    name = "oneroster_listeners"
    listeners = [sys.modules[__name__]]
