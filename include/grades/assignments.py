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
- OneRoster 1.2's result flags, in the postings' ``flags`` (``name=value`` pairs, ``;``-separated, sent
  as they are): ``missing`` on every result, ``true`` for missing work sent; ``late`` on every result
  unless the district file ignores it (``late: ignore``), ``true`` for work the LMS marks late.
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
                     "assigned_at", "due_at", "published", "counted", "score", "excused", "missing", "late",
                     "graded", "posted")
ASSIGNMENT_COLUMNS = ["row", *ASSIGNMENT_FIELDS]
_TYPES = {"points_possible": pa.float64(), "score": pa.float64(),
          **dict.fromkeys(("published", "counted", "excused", "missing", "late", "graded", "posted"), pa.bool_())}
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
STAMP = "%Y-%m-%dT%H:%M:%S.000Z"


def _instants(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values.astype(object).where(values.notna(), None), utc=True, errors="coerce")


def _terms(items: pd.DataFrame, day: pd.Series, context: GradeContext) -> pd.Series:
    """The class's IC term holding each assignment's day (the latest-starting of several), or None."""
    classes = context.classes.drop_duplicates("sourced_id")
    terms = classes[["sourced_id", "term_sourced_ids"]].explode("term_sourced_ids").dropna()
    terms = terms.rename(columns={"sourced_id": "section", "term_sourced_ids": "term"}).astype(str)
    sessions = context.sessions.assign(
        term=context.sessions["sourced_id"].astype(str),
        start=pd.to_datetime(context.sessions["start_date"]).dt.date,
        end=pd.to_datetime(context.sessions["end_date"]).dt.date)[["term", "start", "end"]]
    candidates = pd.DataFrame({"at": items.index, "section": items["section"], "day": day})
    candidates = candidates.dropna(subset=["day"]).merge(terms, on="section").merge(sessions, on="term")
    holding = candidates[(candidates["start"] <= candidates["day"]) & (candidates["day"] <= candidates["end"])]
    chosen = holding.sort_values(["at", "start"]).drop_duplicates("at", keep="last").set_index("at")["term"]
    return items.index.to_series().map(chosen).astype(object).where(lambda terms: terms.notna(), None)


class _Reasons:
    """The first reason that holds for each of ``size`` entries, as codes into ``texts`` (0: none)."""

    def __init__(self, size: int) -> None:
        self.code = np.zeros(size, dtype=np.int32)
        self.texts = [""]

    def hold(self, where, why) -> None:
        """``why`` (one text, or a text per entry) for the entries ``where`` that have no reason yet."""
        where = np.asarray(where, dtype=bool) & (self.code == 0)
        why = np.full(len(self.code), why, dtype=object) if isinstance(why, str) else np.asarray(why, dtype=object)
        for text in pd.unique(why[where]):
            if text not in self.texts:
                self.texts.append(text)
            self.code[where & (why == text)] = self.texts.index(text)


def _assignment_facts(items: pd.DataFrame, context: GradeContext,
                      lms: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Per (class, assignment): its lineItem and category ids, IC term, school, dates, and the reasons
    that hold for all its rows, before the student's (``before``) and after (``after``), as codes into
    the two lists of reasons returned with them."""
    settings = context.config.assignments
    facts = pd.DataFrame(index=items.index)
    section = items["section"]
    before = _Reasons(len(items))
    before.hold(~section.isin(set(context.sections["key"].astype(str))), UNMAPPED_SECTION)
    before.hold(~items["published"].astype(bool), UNPUBLISHED)
    before.hold(~items["counted"].astype(bool), NOT_COUNTED)
    assigned = _instants(items["assigned_at"])
    early = (assigned.dt.date < settings.start_date).fillna(False).astype(bool)
    before.hold(early, f"{BEFORE_START}{settings.start_date.isoformat()}")
    after = _Reasons(len(items))
    if context.opt_in is not None:
        after.hold(~section.isin(context.opt_in), NOT_OPTED_IN)
    due = _instants(items["due_at"])
    term = _terms(items, due.fillna(assigned).dt.date, context)
    after.hold(term.isna(), NO_TERM)
    why = closed_windows(term.dropna().unique(), context)
    after.hold(term.isin(list(why)), term.map(why).fillna(""))
    schools = context.classes.drop_duplicates("sourced_id").set_index("sourced_id")["school_sourced_id"]
    facts["line_item_id"] = section + f"-{lms}-" + items["assignment"]
    facts["category_id"] = section + f"-{lms}-group-" + items["category"]
    facts["term"] = term
    facts["school"] = section.map(schools.astype(str))
    facts["assign_date"] = assigned.dt.strftime(STAMP)
    facts["due_date"] = due.fillna(assigned + timedelta(days=7)).dt.strftime(STAMP)
    facts["max_points"] = items["points_possible"].astype(float)
    # what the lineItem says: a change sends it and its results again
    facts["about"] = ["|".join(map(str, values)) for values in zip(
        items["title"], items["category_title"], facts["assign_date"], facts["due_date"],
        facts["max_points"].map(repr), term, strict=True)]
    return facts.assign(before=before.code, after=after.code), before.texts, after.texts


def plan_assignment_postings(rows: pd.DataFrame, context: GradeContext, lms: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One posting per assignment row (in row order): posted, unchanged or skipped with the first reason
    that holds, checked in this order: unmapped section, unpublished, not counted, before the start
    date, unknown student, not opted in, no IC term, the term's window, hidden, not graded, missing
    (when skipped), OneRoster 1.1; and the lineItems of the postings to send (:data:`ITEM_COLUMNS`).

    What depends on the assignment alone (its lineItem, term, dates, and most reasons) is worked out
    once per (class, assignment) and spread to its rows by code."""
    settings = context.config.assignments
    rows = rows.reset_index(drop=True)
    text = {name: rows[name].astype(object).where(rows[name].notna(), "").astype(str)
            for name in ("section", "assignment", "title", "category", "category_title")}
    keyed = pd.DataFrame({"section": text["section"], "assignment": text["assignment"]})
    code = keyed.groupby(["section", "assignment"], sort=False).ngroup().to_numpy()
    first = ~keyed.duplicated().to_numpy()
    items = rows.loc[first, ["points_possible", "assigned_at", "due_at", "published", "counted"]].assign(
        **{name: text[name][first] for name in text}).reset_index(drop=True)
    facts, before_texts, after_texts = _assignment_facts(items, context, lms)

    reason = _Reasons(len(rows))
    spread = facts["before"].to_numpy()[code]
    for number, why in enumerate(before_texts[1:], start=1):
        reason.hold(spread == number, why)
    student_codes, students = pd.factorize(rows["student"])
    sourced = pd.Series(students).map(dict(zip(user_key(context.users), context.users["sourced_id"].astype(str),
                                               strict=True))).to_numpy(dtype=object)
    student = np.where(student_codes >= 0, sourced[np.maximum(student_codes, 0)], None)
    reason.hold(pd.isna(student), UNKNOWN_STUDENT)
    spread = facts["after"].to_numpy()[code]
    for number, why in enumerate(after_texts[1:], start=1):
        reason.hold(spread == number, why)
    graded, excused = rows["graded"].astype(bool).to_numpy(), rows["excused"].astype(bool).to_numpy()
    scored = rows["score"].notna().to_numpy()
    reason.hold((scored | excused) & graded & ~rows["posted"].astype(bool).to_numpy(), HIDDEN)
    missing = rows["missing"].astype(bool).to_numpy() & ~scored & ~excused
    # rows staged before the LMS's late mark was read have none
    late = rows["late"].astype(bool).to_numpy() if "late" in rows else np.zeros(len(rows), dtype=bool)
    reason.hold(~scored & ~excused & ~missing, UNGRADED)
    if settings.missing == "skip":
        reason.hold(missing, MISSING)
    if context.oneroster_version == "1.1":
        reason.hold(np.ones(len(rows), dtype=bool), OVER_11)

    sending = reason.code == 0
    points = rows["score"].astype(float).to_numpy().copy()
    points[excused] = np.nan
    status = np.where(excused, "exempt", "fully graded").astype(object)
    if settings.missing == "zero":
        points[missing] = 0.0
    elif settings.missing == "not_submitted":
        status[missing] = "not submitted"
    points[~sending], status[~sending] = np.nan, None
    flags = np.where(missing, "missing=true", "missing=false").astype(object)
    if settings.late == "flag":
        flags = flags + np.where(late, ";late=true", ";late=false").astype(object)
    flags[~sending] = None
    line_item = np.where(sending, facts["line_item_id"].to_numpy(dtype=object)[code], None)
    result = pd.Series(np.where(sending, line_item, ""), dtype=object) + "-" + pd.Series(
        np.where(sending, student, ""), dtype=object)
    result = result.where(sending, None)
    fingerprint = (pd.Series(np.where(sending, facts["about"].to_numpy(dtype=object)[code], ""), dtype=object)
                   + "|" + pd.Series(points).map(repr).astype(object)
                   + "|" + pd.Series(np.where(sending, status, ""), dtype=object)
                   + "|" + pd.Series(np.where(sending, flags, ""), dtype=object)).where(sending, "")
    action = np.where(sending, "post", "skipped").astype(object)
    if len(context.posted) and sending.any():
        held = context.posted.drop_duplicates("result_id", keep="last").set_index("result_id")["fingerprint"]
        action[sending & (result.map(held) == fingerprint).to_numpy()] = "unchanged"

    def spread_text(column: str) -> pd.Categorical:
        values = facts[column].astype(object).where(facts[column].notna(), None)
        categorical = pd.Categorical(values)
        codes = np.where(sending, categorical.codes[code], -1)
        return pd.Categorical.from_codes(codes, categorical.categories)

    postings = pd.DataFrame({
        "row": rows["row"].astype("int64"), "section": pd.Categorical(text["section"]),
        "school": spread_text("school"), "term": spread_text("term"),
        "task_id": pd.Series(None, index=rows.index, dtype=object), "task_kind": ASSIGNMENT_TASK,
        "student": pd.Series(student, dtype=object), "line_item_id": spread_text("line_item_id"),
        "result_id": result, "percent": np.nan, "score": pd.Series(None, index=rows.index, dtype=object),
        "score_group": pd.Series(None, index=rows.index, dtype=object), "fingerprint": fingerprint,
        "action": pd.Categorical(action, categories=["post", "unchanged", "skipped"]),
        "reason": pd.Categorical.from_codes(reason.code, reason.texts), "points": points,
        "status": pd.Series(status, dtype=object), "flags": pd.Series(flags, dtype=object),
    })
    posted_items = np.unique(code[action == "post"])
    items_out = facts.iloc[posted_items].assign(
        section=items["section"].iloc[posted_items], title=items["title"].iloc[posted_items],
        category_title=items["category_title"].iloc[posted_items])
    return postings, items_out[ITEM_COLUMNS].reset_index(drop=True)
