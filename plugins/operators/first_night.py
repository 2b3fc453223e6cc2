"""The root task of a district's DAG: a scheduled run dated before the district's
``start_date`` is skipped whole, saying when the district's nights begin.

Every task of a district's DAG accepts any logical date, so that a past school year asked for
by hand syncs (Airflow gives a manual run dated before a task's start date no task at all, and
ends it green with nothing done). That also lowers the DAG's earliest scheduled run, which
Airflow takes from its tasks' start dates, so the district's first night is kept here, for
scheduled runs only: manual runs and backfills of any date go through.
"""

from __future__ import annotations

from datetime import date, datetime

from airflow.providers.standard.operators.python import ShortCircuitOperator


def scheduled_nights_have_begun(first_night: str, dag_run, logical_date: datetime | None) -> bool:
    """False for a scheduled run dated before ``first_night`` (ISO date); True for any other run."""
    if getattr(dag_run, "run_type", None) != "scheduled" or logical_date is None:
        return True
    return logical_date.date() >= date.fromisoformat(first_night)


class FirstNightGate(ShortCircuitOperator):
    """Skips every task of a scheduled run dated before the district's ``start_date``."""

    def __init__(self, *, first_night: date, **kwargs) -> None:
        super().__init__(python_callable=self._begun, do_xcom_push=False, **kwargs)
        self.first_night = first_night.isoformat()

    def _begun(self, dag_run, logical_date=None) -> bool:
        begun = scheduled_nights_have_begun(self.first_night, dag_run, logical_date)
        if not begun:
            self.log.warning("This district's scheduled nights begin on %s (start_date in its district file): "
                             "the run dated %s is skipped. Trigger it by hand or backfill to sync an earlier date.",
                             self.first_night, logical_date.date())
        return begun
