"""The sync report: per school and object type, what was created, updated, deactivated,
left unchanged, skipped (and why) or refused by the LMS (and with what message); and per
extracted collection, what IC served that did not reach staging whole: records quarantined,
records served twice, a count unlike the server's total."""

from __future__ import annotations

import pandas as pd

from include.frames import isin
from include.provisioning.diff import Changes
from include.provisioning.plan import BUILDING_NOT_CREATED, GRADING_PERIOD_NOT_CREATED
from include.staging import Manifest

REPORT_COLUMNS = ["kind", "school", "outcome", "reason", "count"]
DONE = {"create": "created", "update": "updated", "deactivate": "deactivated"}
QUARANTINED = "quarantined"
SERVED_TWICE = "served twice"
COUNT_MISMATCH = "count unlike the server's total"
# Outcomes a person must look at: the run sends the district's notification email when any is reported.
NEEDS_A_PERSON = ("failed", QUARANTINED, SERVED_TWICE, COUNT_MISMATCH)
# Skips a person must look at too: the district file says to provision them and the run could not
# (a building or grading period the map says to create is not in the LMS: what goes in it waits).
SKIPS_NEEDING_A_PERSON = (BUILDING_NOT_CREATED, GRADING_PERIOD_NOT_CREATED)


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


def extract_rows(manifests: list[Manifest]) -> pd.DataFrame:
    """Report rows for what the extracts did not stage whole (kind: the collection)."""
    rows = []
    for manifest in manifests:
        reads = f"in the last of {manifest.reads} read(s)"
        if manifest.quarantined_count:
            rows.append((manifest.dataset, QUARANTINED, "not in OneRoster's shape (reasons in the quarantine file)",
                         manifest.quarantined_count))
        if manifest.duplicate_count:
            rows.append((manifest.dataset, SERVED_TWICE, f"the collection changed while paged {reads}; "
                         "the newest version was staged", manifest.duplicate_count))
        total, served = manifest.server_total, manifest.served_count
        if total is not None and served is not None and total != served:
            rows.append((manifest.dataset, COUNT_MISMATCH, f"the server said {total} and served {served} {reads}",
                         abs(total - served)))
    return pd.DataFrame([(kind, "(district)", outcome, reason, count) for kind, outcome, reason, count in rows],
                        columns=REPORT_COLUMNS).astype({"count": "int64"})


def needing_a_person(report: pd.DataFrame) -> pd.DataFrame:
    """The report's rows whose outcome a person must look at, counted per kind and outcome (a skip
    that needs one as ``skipped: <reason>``)."""
    skips = (report["outcome"] == "skipped") & report["reason"].isin(SKIPS_NEEDING_A_PERSON)
    rows = report[report["outcome"].isin(NEEDS_A_PERSON) | skips].copy()
    rows["outcome"] = rows["outcome"].where(rows["outcome"] != "skipped", "skipped: " + rows["reason"].astype(str))
    return rows.groupby(["kind", "outcome"], as_index=False, sort=True)["count"].sum()


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
