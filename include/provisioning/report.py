"""The sync report: per school and object type, what was created, updated, deactivated,
left unchanged, skipped (and why) or refused by the LMS (and with what message)."""

from __future__ import annotations

import pandas as pd

from include.provisioning.diff import Changes
from include.provisioning.plan import isin

REPORT_COLUMNS = ["kind", "school", "outcome", "reason", "count"]
DONE = {"create": "created", "update": "updated", "deactivate": "deactivated"}


def _counted(frame: pd.DataFrame, outcome: str, reason: str | pd.Series) -> pd.DataFrame:
    """Counts per (school, reason) of one outcome, grouped before anything is added per row:
    an enrollment night has millions of unchanged rows."""
    if isinstance(reason, str):
        counts = frame["school"].value_counts(sort=False, dropna=False).rename("count").reset_index()
        counts["reason"] = reason
    else:
        by = pd.DataFrame({"school": frame["school"], "reason": reason})
        counts = by.value_counts(sort=False, dropna=False).rename("count").reset_index()
    counts = counts[counts["count"] > 0]  # a categorical counts its unused categories too
    school = counts["school"].astype(object)
    return counts.assign(school=school.where(school.notna(), "(district)"), outcome=outcome)


def report_rows(changes: Changes, failed: pd.DataFrame, dry_run: bool) -> pd.DataFrame:
    """Counts per (school, outcome, reason) for one kind; a dry run reports planned actions."""
    parts = []
    for action, frame in (("create", changes.create), ("update", changes.update), ("deactivate", changes.deactivate)):
        done = frame[~isin(frame["key"], failed["key"])]
        parts.append(_counted(done, f"would {action}" if dry_run else DONE[action], ""))
    parts.append(_counted(changes.unchanged, "unchanged", ""))
    parts.append(_counted(changes.removed, "removed in IC", "kept in the LMS"))
    parts.append(_counted(changes.skipped, "skipped", changes.skipped["reason"]))
    parts.append(_counted(failed, "failed", failed["error"].fillna("")))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in REPORT_COLUMNS})
    rows = pd.concat(parts, ignore_index=True).astype({"school": object, "outcome": object, "reason": object})
    counted = rows.groupby(["school", "outcome", "reason"], as_index=False)["count"].sum()
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
