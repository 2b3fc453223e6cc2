"""What a run's params ask of every task: the school year it syncs and which halves it runs.

Read from the task's context the same way by the extracts, the provisioning steps, the grade
passback and the export sensor.
"""

from __future__ import annotations

from datetime import date, timezone

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from include.config import ActiveYearRule


def resolve_active_year(context: Context, rule: ActiveYearRule) -> int:
    """The run's school year: the ``active_year`` param if given, else the one the
    run's logical date falls in by the district's year-start rule."""
    override = context["params"].get("active_year")
    if override:
        return int(override)
    moment = context.get("logical_date") or context["dag_run"].run_after
    return rule.school_year_of(moment)


def run_date(context: Context) -> date:
    """The day a run provisions for (what is current in IC's dates, e.g. an enrollment's end): the
    day of its logical date (a backfilled night sees its own day), UTC like the schedule."""
    moment = context.get("logical_date") or context["dag_run"].run_after
    return moment.astimezone(timezone.utc).date() if moment.tzinfo else moment.date()


def skip_unless_running(context: Context, half: str) -> None:
    """The ``halves`` param runs provisioning, grade passback or both; the other half is skipped."""
    chosen = context["params"].get("halves") or "both"
    if chosen not in ("both", half):
        raise AirflowSkipException(f"this run does {chosen} only")
