"""The sync report: per school and object type, what was created, updated, deactivated,
left unchanged, skipped (and why) or refused by the LMS (and with what message)."""

from __future__ import annotations

import pandas as pd

from include.provisioning.diff import Changes

REPORT_COLUMNS = ["kind", "school", "outcome", "reason", "count"]
DONE = {"create": "created", "update": "updated", "deactivate": "deactivated"}


def report_rows(changes: Changes, failed: pd.DataFrame, dry_run: bool) -> pd.DataFrame:
    """Counts per (school, outcome, reason) for one kind; a dry run reports planned actions."""
    failed_keys = set(failed["key"])
    parts = []
    for action, frame in (("create", changes.create), ("update", changes.update), ("deactivate", changes.deactivate)):
        done = frame[~frame["key"].isin(failed_keys)]
        parts.append(done.assign(outcome=f"would {action}" if dry_run else DONE[action], reason=""))
    parts.append(changes.unchanged.assign(outcome="unchanged", reason=""))
    parts.append(changes.removed.assign(outcome="removed in IC", reason="kept in the LMS"))
    parts.append(changes.skipped.assign(outcome="skipped"))
    parts.append(failed.assign(outcome="failed", reason=failed["error"].fillna("")))
    rows = pd.concat([part[["school", "outcome", "reason"]] for part in parts if not part.empty], ignore_index=True)
    if rows.empty:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in REPORT_COLUMNS})
    rows["school"] = rows["school"].fillna("(district)")
    counted = rows.groupby(["school", "outcome", "reason"], as_index=False).size().rename(columns={"size": "count"})
    counted.insert(0, "kind", changes.kind)
    return counted[REPORT_COLUMNS]


def format_report(report: pd.DataFrame) -> str:
    """A plain-text table for the task log: one line per kind and school."""
    if report.empty:
        return "(nothing to report)"
    labels = report.apply(
        lambda row: f"{row['outcome']}{' (' + row['reason'] + ')' if row['reason'] else ''}", axis=1
    )
    table = report.assign(label=labels).pivot_table(
        index=["kind", "school"], columns="label", values="count", aggfunc="sum", fill_value=0
    )
    return table.to_string()
