"""Emails to a district's data team: a task that failed after its last retry, a run that
missed its deadline. Sent through the smtp provider and an Airflow SMTP connection."""

from __future__ import annotations

import copy
from datetime import datetime
from html import escape
from typing import Any

from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DeadlineAlert, DeadlineReference
from airflow.sdk.definitions.deadline import AsyncCallback

from include.config import DistrictConfig, Notifications
from include.privacy import redacted

FAILURE_SUBJECT = "[oneroster {{ dag.dag_id }}] {{ ti.task_id }} failed in run {{ run_id }}"
# Every value is HTML-escaped (``| e``): a run id or a system's message is text, not markup.
FAILURE_BODY = """\
<p>Task <b>{{ ti.task_id | e }}</b> of <b>{{ dag.dag_id | e }}</b> failed after {{ ti.try_number }} tries
in run <b>{{ run_id | e }}</b> (logical date {{ logical_date | e }}).</p>
{% if ti.task_id.endswith("wait_for_export") %}<p><b>No grade export arrived</b> on the SFTP server in
time: check the LMS's auto-export job and the export directory.</p>{% endif %}
<p>What went wrong (email addresses masked): <pre>{{ exception | e }}</pre></p>
<p>Logs: {{ ti.log_url | e }}</p>
<p>A cleared task re-runs safely: nothing it already did is done twice.</p>
"""
EXCEPTION_LIMIT = 2000  # characters of the exception an email shows


class TaskFailureNotifier(SmtpNotifier):
    """Renders a copy per failure: Airflow renders a notifier's templates in place, so one
    notifier shared by every task through ``default_args`` would otherwise keep sending the
    first failed task's subject wherever tasks share a process (``dag.test``, the demo)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1:  # a task's context: its exception leaves Airflow without email addresses
            # (the project's own exceptions carry no student data, and the systems' messages in them are
            # redacted where they are raised; masking every long number would garble dates and file names)
            context = args[0]
            args = ({**context, "exception": redacted(context.get("exception"), limit=EXCEPTION_LIMIT,
                                                      unknown_people=False)},)
        return SmtpNotifier.__call__(copy.copy(self), *args, **kwargs)


def failure_notifier(notifications: Notifications) -> SmtpNotifier | None:
    """``on_failure_callback`` for every task: it fires once retries are exhausted."""
    if not notifications.emails:
        return None
    return TaskFailureNotifier(
        to=notifications.emails,
        subject=FAILURE_SUBJECT,
        html_content=FAILURE_BODY,
        smtp_conn_id=notifications.smtp_conn_id,
    )


async def email_deadline_missed(*, to: list[str], smtp_conn_id: str, district: str, context: dict[str, Any],
                                first_night: str | None = None) -> str:
    """Runs in the triggerer when a run misses its deadline. Runs for past dates are skipped:
    backfills, manual runs whose deadline was over before they were triggered (a past school
    year asked for by date), and scheduled runs dated before the district's ``first_night``
    (skipped whole); a scheduled run that started late still emails."""
    run = context.get("dag_run") or {}
    if run.get("run_type") == "backfill":
        return "backfill run: no deadline email"
    if run.get("run_type") == "scheduled" and first_night and str(run.get("logical_date") or "")[:10] < first_night:
        return f"scheduled run before the district's first night {first_night}: no deadline email"
    deadline = context.get("deadline") or {}
    if run.get("run_type") == "manual" and _over_before(deadline.get("deadline_time"), run.get("queued_at")):
        return "manual run of a past date, its deadline over before it was triggered: no deadline email"
    run_id = run.get("dag_run_id")  # the REST model's name for the run id
    subject = f"[oneroster {run.get('dag_id')}] run {run_id} missed its deadline"
    shown = {name: escape(str(value)) for name, value in (
        ("district", district), ("dag_id", run.get("dag_id")), ("run_id", run_id),
        ("logical_date", run.get("logical_date")), ("deadline", deadline.get("deadline_time", "")),
        ("state", run.get("state")))}
    body = (
        f"<p>The nightly sync of district <b>{shown['district']}</b> (DAG {shown['dag_id']}, run "
        f"<b>{shown['run_id']}</b>, logical date {shown['logical_date']}) was not done by its deadline "
        f"{shown['deadline']}.</p><p>State when the deadline passed: {shown['state']}.</p>"
    )
    await SmtpNotifier(to=to, subject=subject, html_content=body, smtp_conn_id=smtp_conn_id).async_notify(context)
    return f"deadline email sent to {len(to)} address(es)"


def _over_before(deadline_time: Any, moment: Any) -> bool:
    """Whether ``deadline_time`` came before ``moment`` (datetimes or ISO strings; False if either is unknown)."""
    if not deadline_time or not moment:
        return False
    as_time = [value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
               for value in (deadline_time, moment)]
    return as_time[0] <= as_time[1]


def deadline_alert(config: DistrictConfig) -> DeadlineAlert | None:
    """The Airflow 3 SLA: email when a run is not done in time after its scheduled time."""
    notifications = config.notifications
    if notifications.deadline is None or not notifications.emails:
        return None
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=notifications.deadline.after_scheduled_time(config.schedule),
        callback=AsyncCallback(
            email_deadline_missed,
            kwargs={
                "to": notifications.emails,
                "smtp_conn_id": notifications.smtp_conn_id,
                "district": config.district,
                "first_night": config.start_date.isoformat(),
            },
        ),
    )
