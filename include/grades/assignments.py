"""Assignment scores -> IC gradebook postings: the assignment plan.

Pure pandas, no network, no Airflow. :func:`plan_assignment_postings` decides, for every assignment
score an LMS's API gave (:data:`ASSIGNMENT_COLUMNS`, one row per student and assignment, and one per
unpublished assignment), whether a result is posted to IC and with what score and status, or why
not; and what each posted assignment's lineItem and category are. The postings have the columns of
:func:`include.grades.plan.plan_postings`'s (task kind ``assignment``) and two more, ``points`` and
``status``, so the post and reconcile tasks take both kinds together.

- A lineItem per (class × assignment), ``<class>-<lms>-<assignment id>``; a result per student on
  it, ``<lineItem>-<student>``; a category per (class × assignment group),
  ``<class>-<lms>-group-<group id>``, titled as the group. Fixed ids: a renamed assignment or a new
  score updates the same lineItem and result (a rename changes the result's fingerprint, so the
  lineItem and its results are sent again that night).
- The lineItem's term is the class's IC term that holds its due date (else its assigned date);
  its dates the assigned day (unlocked, else created) and the due day, else the assigned day + 7;
  ``resultValueMax`` the points possible.
- A score is sent as points, status ``fully graded``; excused as IC's ``exempt`` (no score);
  missing work nobody scored as the district file says (``missing``: skip, zero, not_submitted).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pyarrow as pa

from include.grades.plan import (
    NOT_OPTED_IN,
    UNKNOWN_STUDENT,
    UNMAPPED_SECTION,
    GradeContext,
    closed_windows,
)
from include.provisioning.plan import user_key

ASSIGNMENT_FIELDS = ("section", "student", "assignment", "title", "category", "category_title", "points_possible",
                     "assigned_at", "due_at", "published", "counted", "score", "excused", "missing", "graded",
                     "posted")
ASSIGNMENT_COLUMNS = ["row", *ASSIGNMENT_FIELDS]
_TYPES = {"points_possible": pa.float64(), "score": pa.float64(),
          **dict.fromkeys(("published", "counted", "excused", "missing", "graded", "posted"), pa.bool_())}
ASSIGNMENT_SCHEMA = pa.schema([("row", pa.int64()),
                               *((name, _TYPES.get(name, pa.string())) for name in ASSIGNMENT_FIELDS)])
ITEM_COLUMNS = ["line_item_id", "section", "school", "term", "title", "category_id", "category_title",
                "assign_date", "due_date", "max_points"]
ASSIGNMENT_TASK = "assignment"  # the postings' task_kind

UNPUBLISHED = "unpublished in the LMS"
NOT_COUNTED = "left out of the final grade in the LMS"
BEFORE_START = "assigned before the passback start date "  # and the day
NO_TERM = "no IC term of the class holds its due date"
HIDDEN = "graded but not posted to students in the LMS"
UNGRADED = "not graded"
MISSING = "missing, not scored (the district file skips missing work)"
OVER_11 = "OneRoster 1.1: assignment scores go to IC over OneRoster 1.2 only"
ASSIGNMENT_REASONS = [UNMAPPED_SECTION, UNPUBLISHED, NOT_COUNTED, BEFORE_START, UNKNOWN_STUDENT, NOT_OPTED_IN,
                      NO_TERM, "window", HIDDEN, UNGRADED, MISSING, OVER_11]  # checked in this order
STAMP = "%Y-%m-%dT%H:%M:%S.000Z"


def _instants(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values.astype(object).where(values.notna(), None), utc=True, errors="coerce")


def _terms(rows: pd.DataFrame, day: pd.Series, context: GradeContext) -> pd.Series:
    """The class's IC term holding each row's day (the latest-starting of several), or None."""
    classes = context.classes.drop_duplicates("sourced_id")
    terms = classes[["sourced_id", "term_sourced_ids"]].explode("term_sourced_ids").dropna()
    terms = terms.rename(columns={"sourced_id": "section", "term_sourced_ids": "term"}).astype(str)
    sessions = context.sessions.assign(
        term=context.sessions["sourced_id"].astype(str),
        start=pd.to_datetime(context.sessions["start_date"]).dt.date,
        end=pd.to_datetime(context.sessions["end_date"]).dt.date)[["term", "start", "end"]]
    candidates = pd.DataFrame({"at": rows.index, "section": rows["section"].astype(str), "day": day})
    candidates = candidates.dropna(subset=["day"]).merge(terms, on="section").merge(sessions, on="term")
    holding = candidates[(candidates["start"] <= candidates["day"]) & (candidates["day"] <= candidates["end"])]
    chosen = holding.sort_values(["at", "start"]).drop_duplicates("at", keep="last").set_index("at")["term"]
    return rows.index.to_series().map(chosen).astype(object).where(lambda terms: terms.notna(), None)


def plan_assignment_postings(rows: pd.DataFrame, context: GradeContext, lms: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One posting per assignment row (in row order): posted, unchanged or skipped with the first reason
    of :data:`ASSIGNMENT_REASONS` that holds; and the lineItems of the postings to send (:data:`ITEM_COLUMNS`)."""
    settings = context.config.assignments
    rows = rows.reset_index(drop=True)
    reason = pd.Series("", index=rows.index, dtype=object)

    def hold(where, why) -> None:
        free = reason == ""
        reason.loc[free & where] = why if isinstance(why, str) else why[free & where]

    section = rows["section"].astype(str)
    hold(~section.isin(set(context.sections["key"].astype(str))), UNMAPPED_SECTION)
    hold(~rows["published"].astype(bool), UNPUBLISHED)
    hold(~rows["counted"].astype(bool), NOT_COUNTED)
    assigned = _instants(rows["assigned_at"])
    before = assigned.dt.date < settings.start_date
    hold(before.fillna(False).astype(bool), f"{BEFORE_START}{settings.start_date.isoformat()}")
    sourced = dict(zip(user_key(context.users), context.users["sourced_id"].astype(str), strict=True))
    student = rows["student"].map(sourced)
    hold(student.isna(), UNKNOWN_STUDENT)
    if context.opt_in is not None:
        hold(~section.isin(context.opt_in), NOT_OPTED_IN)
    due = _instants(rows["due_at"])
    term = _terms(rows, due.fillna(assigned).dt.date, context)
    hold(term.isna(), NO_TERM)
    why = closed_windows(term.dropna().unique(), context)
    hold(term.isin(list(why)), term.map(why))
    graded, excused = rows["graded"].astype(bool), rows["excused"].astype(bool)
    scored = rows["score"].notna()
    hold((scored | excused) & graded & ~rows["posted"].astype(bool), HIDDEN)
    missing = rows["missing"].astype(bool) & ~scored & ~excused
    hold(~scored & ~excused & ~missing, UNGRADED)
    if settings.missing == "skip":
        hold(missing, MISSING)
    if context.oneroster_version == "1.1":
        hold(pd.Series(True, index=rows.index), OVER_11)

    sending = reason == ""
    points = rows["score"].astype(float).where(~excused, np.nan)
    status = pd.Series("fully graded", index=rows.index, dtype=object).mask(excused, "exempt")
    if settings.missing == "zero":
        points = points.mask(missing, 0.0)
    elif settings.missing == "not_submitted":
        status = status.mask(missing, "not submitted")
    line_item = (section + f"-{lms}-" + rows["assignment"].astype(str)).where(sending, None)
    result = (line_item + "-" + student.astype(str)).where(sending, None)
    category = section + f"-{lms}-group-" + rows["category"].astype(str)
    assign_day = assigned.dt.strftime(STAMP)
    due_day = due.fillna(assigned + timedelta(days=7)).dt.strftime(STAMP)
    max_points = rows["points_possible"].astype(float)
    # the value IC holds and what its lineItem says: a change in either sends them again
    fingerprint = (points.map(repr) + "|" + status + "|" + rows["title"].astype(str) + "|"
                   + rows["category_title"].astype(str) + "|" + assign_day.astype(str) + "|" + due_day.astype(str)
                   + "|" + max_points.map(repr) + "|" + term.astype(str)).where(sending, "")
    action = pd.Series("skipped", index=rows.index, dtype=object).mask(sending, "post")
    if len(context.posted):
        held = context.posted.drop_duplicates("result_id", keep="last").set_index("result_id")["fingerprint"]
        action = action.mask(sending & (result.map(held) == fingerprint), "unchanged")
    schools = context.classes.drop_duplicates("sourced_id").set_index("sourced_id")["school_sourced_id"]
    school = section.map(schools.astype(str))
    postings = pd.DataFrame({
        "row": rows["row"].astype("int64"), "section": section, "school": school.where(sending, None),
        "term": term.where(sending, None), "task_id": pd.Series(None, index=rows.index, dtype=object),
        "task_kind": ASSIGNMENT_TASK, "student": student.where(student.notna(), None),
        "line_item_id": line_item, "result_id": result, "percent": np.nan,
        "score": pd.Series(None, index=rows.index, dtype=object),
        "score_group": pd.Series(None, index=rows.index, dtype=object), "fingerprint": fingerprint,
        "action": action, "reason": reason.where(~sending, ""), "points": points.where(sending, np.nan),
        "status": status.where(sending, None),
    })
    items = pd.DataFrame({
        "line_item_id": line_item, "section": section, "school": school, "term": term,
        "title": rows["title"].astype(str), "category_id": category, "category_title": rows["category_title"].astype(str),
        "assign_date": assign_day, "due_date": due_day, "max_points": max_points,
    })[(action == "post").to_numpy()].drop_duplicates("line_item_id").reset_index(drop=True)
    return postings, items[ITEM_COLUMNS]
