"""What the grade-passback tests share: the demo district's settings, the connections to the
emulators, a DAG runner that also tells try numbers, and the far-side ledger of a passback run
(what IC's gradebook holds and what the run's reconciliation says, against what the rules say:
``tests/expected_grades.py``, from the export file itself and the synthetic district, never from
the run's plan)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from include.config import DISTRICTS_DIR, load_district
from include.staging import read_frame
from tests.expected_grades import (
    IC_WINDOW,
    Expected,
    Held,
    at_ic,
    expected_grades,
    export_records,
    held_by_ic,
    line_item_id,
)
from tests.fault_ledger import ScenarioLedger, record
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
    return len(export_records(data)[1]) if data else 0


@dataclass(frozen=True)
class Run:
    """A finished ``dag.test()`` run: its state, each task's state and try number, what tasks returned."""

    run_id: str
    state: str
    task_states: dict[str, str]
    tries: dict[str, int]
    returned: dict[str, Any]
    started: dict[str, datetime | None]
    logical_date: datetime | None = None

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
    return Run(run.run_id, str(run.state), states, tries, returned, started, when)


# -- the far side -------------------------------------------------------------------------------


def duplicates_at_ic(gradebook) -> int:
    """Objects IC holds twice: (lineItem, student) pairs with two results, and any sourcedId created twice."""
    twice = sum(entry.created - 1 for collection in ("lineItems", "results")
                for entry in gradebook.writes[collection].values() if entry.created > 1)
    return len(gradebook.duplicates()) + twice


def refused_by_ic(requests, grade) -> bool:
    """IC answered a PUT of the grade's lineItem or result, or of the category or score scale its
    lineItem needs, with a refusal (a 4xx other than an expired token or a 429, which are retried)."""
    item = line_item_id(grade.section, grade.term, grade.task)
    return any(request.method == "PUT" and 400 <= request.status < 500 and request.status not in (401, 429)
               and (item in request.path or "/categories/" in request.path or "/scoreScales/" in request.path)
               for request in requests)


def expected_of(data: bytes, district, run_date: date) -> Expected:
    """What the rules say of this export file on ``run_date``: the demo district file's rules, the
    synthetic district's records (see ``tests/expected_grades.py``). Nothing of the run is used."""
    return expected_grades(data, district, CONFIG, run_date)


def assert_read_the_file(fetched: dict, data: bytes) -> None:
    """The run passed back the file the test dropped (so the expectation is of the right file)."""
    assert fetched["content_sha256"] == hashlib.sha256(data).hexdigest(), "the run read another export"


def far_side_ledger(scenario: str, *, faults: int, expected: Expected, reconciled: dict, gradebook, requests,
                    posted_before: dict[tuple[str, str], Held] | None = None) -> ScenarioLedger:
    """The ledger line of a passback whose reconciliation ran, checked against what IC stores and
    what the rules say (``expected``), recorded: duplicates and lost must be 0.

    A row the rules post counts as ``posted`` when IC holds every result the rules give it, with
    their value, on the lineItem of their class, term and task, and the report says "posted" — or
    "unchanged" when ``posted_before`` (what IC held after the last run whose post finished) held
    each with that value already; ``failed`` when the report says failed with IC's message and IC
    did refuse it (``requests``: IC's log of the run's calls);
    ``skipped`` when IC refused it for a grading window it keeps closed and the report says so with
    IC's message. A row the rules leave out counts as ``skipped`` when the report skips it for a
    reason the rules give for it. Anything else is ``lost``. IC holding a result or lineItem the
    rules do not post, or the report rows the export does not have, fails the scenario.
    """
    assert expected.refused is None, f"{scenario}: the rules refuse this file ({expected.refused})"
    report = read_frame(reconciled["uri"])
    unresolved = report[report["outcome"].isin(["skipped", "failed"]) & (report["reason"].fillna("") == "")]
    assert unresolved.empty, f"{scenario}: rows skipped/failed without a reason: {unresolved['row'].tolist()}"
    said = {int(row): (str(outcome), reason if isinstance(reason, str) else "")
            for row, outcome, reason in zip(report["row"], report["outcome"], report["reason"], strict=True)}
    stray = sorted(set(said) - set(expected.rows))
    assert not stray, f"{scenario}: the report has rows the export does not: {stray[:10]}"

    held = held_by_ic(gradebook)
    before = posted_before or {}

    counts = {"posted": 0, "skipped": 0, "failed": 0}
    wrong = []
    for number, row in sorted(expected.rows.items()):
        outcome, reason = said.get(number, ("not in the report", ""))
        if not row.grades:  # the rules leave it out: the report must say why, as they do
            if outcome == "skipped" and row.skip_is_right(reason):
                counts["skipped"] += 1
            else:
                reasons = " | ".join(sorted(re.sub(r"\\(.)", r"\1", pattern) for pattern in row.reasons))
                wrong.append(f"row {number}: the rules skip it ({reasons}), "
                             f"the run says {outcome} {reason!r}")
            continue
        missing = [grade for grade in row.grades if not at_ic(grade, held)]
        window_refused = all(not gradebook.window_open(grade.term) for grade in missing)
        changed = any(grade.key not in before or not grade.held_by(before[grade.key].value)
                      for grade in row.grades)
        if (not missing or window_refused) and len(missing) < len(row.grades) and outcome == (
                "posted" if changed else "unchanged"):
            counts["posted"] += 1
        elif missing and outcome == "failed" and reason.strip() and all(
                refused_by_ic(requests, grade) for grade in missing):
            counts["failed"] += 1  # README reconcile: "failed (IC's message)"
        elif missing and window_refused and outcome == "skipped" and re.fullmatch(IC_WINDOW, reason):
            counts["skipped"] += 1  # README post step 4: a refusal for the grading window is a skip
        else:
            example = missing[0] if missing else row.grades[0]
            wrong.append(f"row {number}: the rules post {len(row.grades)} result(s), IC lacks {len(missing)} "
                         f"(e.g. {example.task} {example.percent}/{example.letter} on "
                         f"{line_item_id(example.section, example.term, example.task)}: IC holds "
                         f"{held.get(example.key)}), the run says {outcome} {reason!r}"
                         + ("" if changed else " (unchanged since the last run)"))
    rows_in = len(expected.rows)
    entry = ScenarioLedger(scenario, faults, rows_in, counts["posted"], counts["skipped"], counts["failed"],
                           duplicates_at_ic(gradebook), rows_in - sum(counts.values()))
    try:
        record(entry)
    except AssertionError as error:
        raise AssertionError(f"{error}; for example: {wrong[:5]}") from None
    grades = expected.grades()
    extra = sorted(key for key in held if key not in grades and key not in before)
    assert not extra, f"{scenario}: IC holds {len(extra)} result(s) the rules do not post: {extra[:5]}"
    line_items = {key[0] for key in grades} | {key[0] for key in before}
    stray_items = sorted(set(gradebook.stored("lineItems")) - line_items)
    assert not stray_items, f"{scenario}: IC holds lineItem(s) no posted grade needs: {stray_items[:5]}"
    run_counts = reconciled["counts"]
    assert counts["posted"] == run_counts.get("posted", 0) + run_counts.get("unchanged", 0), (
        f"{scenario}: the report says {run_counts} but IC holds the results of {counts['posted']} "
        "posted/unchanged rows")
    return entry
