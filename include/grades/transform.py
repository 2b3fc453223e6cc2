"""Export rows -> IC gradebook postings, and the answers back -> one outcome per row.

Pure pandas, no network, no Airflow. :func:`plan_postings` decides, for every row of the
LMS export and every configured IC grading task, whether a result is posted and with what
value (or why not); :func:`reconcile` folds IC's answers back so that every row of the
file, quarantined ones included, ends in exactly one outcome. A grade is modelled as
IC expects it: a lineItem per (section × term × task) and a result per student on it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from include.config import GradePassback
from include.provisioning.plan import term_key, user_key

POSTING_COLUMNS = [
    "row", "section", "school", "term", "task_id", "task_kind", "student", "line_item_id", "result_id",
    "percent", "score", "score_group", "fingerprint", "action", "reason",
]
ROW_OUTCOME_COLUMNS = ["row", "section", "student", "outcome", "reason"]
OUTCOMES = ("posted", "unchanged", "skipped", "failed")
IC_STATUSES = ("created", "updated", "window closed", "rejected")

UNMAPPED_SECTION = "unmapped section"
UNKNOWN_STUDENT = "student unknown to IC"
SCHOOL_NOT_INCLUDED = "school not included"
UNMAPPED_TERM = "unmapped term"
NOT_OPTED_IN = "not opted in"
WINDOW_CLOSED = "window closed"
NO_TASK = "no task"
NO_GRADE = "no grade"
BAD_SCORE = "bad score"
SAME_RESULT = "several rows for the same IC result"
NO_ANSWER = "no answer from IC"
MALFORMED = "malformed: "


class ReconciliationError(RuntimeError):
    """Rows and outcomes do not add up: a row would go unaccounted for."""


@dataclass(frozen=True)
class GradeContext:
    """What a run knows besides the export: the provisioning results, IC's extracts, the last postings."""

    sections: pd.DataFrame  # key (IC class sourcedId = LMS section_school_code), lms_id, course_key
    grading_periods: pd.DataFrame  # key ("term-<IC academicSession sourcedId>"), lms_id, title
    users: pd.DataFrame
    classes: pd.DataFrame
    sessions: pd.DataFrame
    mapping: pd.DataFrame | None  # lms_grading_period, ic_term[, school]
    opt_in: frozenset[str] | None  # IC class sourcedIds whose teachers opted in; None: opt-in is off
    run_date: date
    config: GradePassback
    posted: pd.DataFrame  # result_id, fingerprint of the last accepted postings


@dataclass(frozen=True)
class Reconciliation:
    rows: pd.DataFrame  # row, section, student, outcome, reason: one per export row, quarantined included
    counts: dict[str, int]
    postings: pd.DataFrame  # the postings with their final outcome and reason


def _text_key(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), "").astype(str).str.strip().str.casefold()


def _as_object(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), None)


# -- which IC term a row's grading period is ----------------------------------------------------


def _term_candidates(frame: pd.DataFrame, context: GradeContext) -> tuple[pd.DataFrame, pd.Series]:
    """(row, term, priority) for every IC term the grading period may name, and the rows whose
    school the mapping leaves out."""
    rows = pd.DataFrame({"row": frame["row"], "period": _text_key(frame["grading_period"]),
                         "school": frame["school"]})
    rows = rows[rows["period"] != ""]
    excluded = pd.Series(False, index=frame.index)
    if context.mapping is not None:
        mapping = pd.DataFrame({"period": _text_key(context.mapping["lms_grading_period"]),
                                "term": context.mapping["ic_term"].astype(str).str.strip()})
        if "school" not in context.mapping.columns:
            return rows.merge(mapping, on="period")[["row", "term"]].assign(priority=0), excluded
        mapping["school"] = _text_key(context.mapping["school"])
        rows["school"] = _text_key(rows["school"])
        named, anywhere = mapping[mapping["school"] != ""], mapping[mapping["school"] == ""]
        if anywhere.empty:
            excluded = ~_text_key(frame["school"]).isin(set(named["school"]))
        candidates = pd.concat([
            rows.merge(named, on=["period", "school"])[["row", "term"]].assign(priority=0),
            rows.merge(anywhere.drop(columns="school"), on="period")[["row", "term"]].assign(priority=1),
        ])
        return candidates, excluded
    periods = context.grading_periods
    terms = periods["key"].astype(str)
    is_term = terms.str.startswith(term_key(""))
    term = terms[is_term].str.removeprefix(term_key(""))
    names = pd.concat([
        pd.DataFrame({"period": _text_key(periods.loc[is_term, "lms_id"]), "term": term, "priority": 0}),
        pd.DataFrame({"period": _text_key(periods.loc[is_term, "title"]), "term": term, "priority": 1}),
    ])
    names = names[names["period"] != ""]
    return rows.merge(names, on="period")[["row", "term", "priority"]], excluded


def _resolve_terms(frame: pd.DataFrame, context: GradeContext) -> tuple[pd.Series, pd.Series]:
    """The IC term of each row (one of its class's terms) or None, and the school-excluded mask."""
    candidates, excluded = _term_candidates(frame, context)
    class_terms = frame[["row", "class_terms"]].explode("class_terms").dropna()
    class_terms = class_terms.rename(columns={"class_terms": "term"}).astype({"term": str})
    fitting = candidates.merge(class_terms, on=["row", "term"])
    fitting = fitting.sort_values(["row", "priority"], kind="stable")
    chosen = fitting.drop_duplicates("row").set_index("row")["term"]
    return _as_object(frame["row"].map(chosen)), excluded


def _closed(terms: pd.Series, context: GradeContext) -> pd.Series:
    """Whether the term's grading window excludes the run date; a term IC does not date is left to IC."""
    rule = context.config.window_rule
    ends = dict(zip(context.sessions["sourced_id"].astype(str), context.sessions["end_date"], strict=True))
    closed = set()
    for term in terms.dropna().unique():
        window = context.config.windows.get(term)
        if window is not None:
            opens, closes = window.opens, window.closes
        elif term in ends:
            end = pd.Timestamp(ends[term]).date()
            opens = end - timedelta(days=rule.opens_days_before_end)
            closes = end + timedelta(days=rule.closes_days_after_end)
        else:
            continue
        if not opens <= context.run_date <= closes:
            closed.add(term)
    return terms.isin(closed)


def _resolve_rows(rows: pd.DataFrame, context: GradeContext) -> pd.DataFrame:
    """The export rows with their class, school, IC student and term, and the first row-level reason."""
    if rows["row"].duplicated().any():
        raise ValueError("export rows must have distinct row numbers")
    frame = rows.reset_index(drop=True).copy()
    classes = context.classes.drop_duplicates("sourced_id")
    classes = classes.set_index(classes["sourced_id"].astype(str))
    section = frame["section"].astype(str)
    known = section.isin(set(context.sections["key"].astype(str))) & section.isin(set(classes.index))
    frame["school"] = _as_object(section.map(classes["school_sourced_id"]).where(known))
    frame["class_terms"] = section.map(classes["term_sourced_ids"]).where(known)
    students = pd.Series(context.users["sourced_id"].astype(str).to_numpy(), index=user_key(context.users))
    students = students[~students.index.duplicated()]
    frame["student_id"] = _as_object(frame["student"].astype(str).map(students))
    frame["term"], excluded = _resolve_terms(frame, context)
    opted_out = (
        ~section.isin(context.opt_in) if context.opt_in is not None else pd.Series(False, index=frame.index)
    )
    closed = _closed(frame["term"], context)

    config = context.config
    term_grade = frame["term_percent"].notna() | frame["term_score"].notna()
    course_grade = frame["course_percent"].notna() | frame["course_score"].notna()
    single_term = frame["class_terms"].map(len, na_action="ignore") == 1
    gradable = (term_grade & bool(config.term_task_ids)) | (
        (course_grade | (single_term & term_grade)) & bool(config.overall_task_ids)
    )
    no_task = ~gradable & (term_grade | course_grade)

    checks = [
        (~known, UNMAPPED_SECTION),
        (frame["student_id"].isna(), UNKNOWN_STUDENT),
        (excluded, SCHOOL_NOT_INCLUDED),
        (frame["term"].isna(), UNMAPPED_TERM),
        (opted_out, NOT_OPTED_IN),
        (closed, WINDOW_CLOSED),
        (no_task, NO_TASK),
    ]
    frame["reason"] = np.select([mask.to_numpy(dtype=bool) for mask, _ in checks],
                                [reason for _, reason in checks], default="")
    frame["single_term"] = single_term
    return frame


# -- grades per task --------------------------------------------------------------------------


def _task_postings(frame: pd.DataFrame, config: GradePassback) -> pd.DataFrame:
    """One posting per (row × configured task), with the grade that task takes from the row."""
    tasks = pd.DataFrame(
        [(task, "term") for task in config.term_task_ids]
        + [(task, "overall") for task in config.overall_task_ids],
        columns=["task_id", "task_kind"],
    )
    postings = frame.merge(tasks, how="cross")
    overall = postings["task_kind"] == "overall"
    no_course = postings["course_percent"].isna() & postings["course_score"].isna()
    from_term = ~overall | (postings["single_term"] & no_course)
    percent = postings["term_percent"].where(from_term, postings["course_percent"])
    postings["percent"] = percent.astype("float64")
    postings["given_score"] = _as_object(postings["term_score"].where(from_term, postings["course_score"]))
    return postings


def _scores(postings: pd.DataFrame, config: GradePassback) -> pd.DataFrame:
    """The textScore sent and whether the grade fits the task's score group.

    IC files a percent alone under the group's band with the highest minimum not above
    it and refuses a percent below every band or a score outside the group, so those are
    caught here instead of failing at IC.
    """
    percent, given = postings["percent"], postings["given_score"]
    has_percent, has_score = percent.notna(), given.notna()
    send_given = has_score & (config.letter_grades | ~has_percent)
    group = _as_object(postings["task_id"].map(config.task_score_groups))
    score = given.where(send_given, None)
    bad = pd.Series(False, index=postings.index)
    for name, bands in config.score_groups.items():
        in_group = (group == name).to_numpy()
        ordered = sorted(bands, key=lambda band: band.min_percent)
        spelled = {band.score.strip().casefold(): band.score for band in ordered}
        listed = in_group & send_given.to_numpy()
        canonical = _text_key(given[listed]).map(spelled)
        score[listed] = canonical.to_numpy()
        bad[listed] = canonical.isna().to_numpy()
        derived = in_group & (has_percent & ~send_given).to_numpy()
        minimums = [band.min_percent for band in ordered]
        band = np.searchsorted(minimums, percent[derived].to_numpy(), side="right") - 1
        bad[derived] = band < 0
        if config.letter_grades:
            names = np.array([b.score for b in ordered] + [None], dtype=object)
            score[derived] = names[np.where(band < 0, -1, band)]
    return pd.DataFrame({"score": _as_object(score), "score_group": group, "bad": bad}, index=postings.index)


def _fingerprint(percent: pd.Series, score: pd.Series) -> pd.Series:
    """The value IC holds, as text: equal text means nothing to send."""
    number = percent.astype(object).map(lambda value: "" if pd.isna(value) else repr(float(value)))
    return (number + "|" + score.where(score.notna(), "").astype(str)).astype(object)


def _same_result(postings: pd.DataFrame) -> pd.Series:
    """The reason for results that several rows would write (two LMS periods mapped to one IC term)."""
    live = postings[postings["action"] != "skipped"]
    clash = live[live["result_id"].duplicated(keep=False)]
    rows = clash.groupby("result_id")["row"].agg(lambda numbers: ", ".join(map(str, sorted(set(numbers)))))
    return (f"{SAME_RESULT}, rows " + clash["result_id"].map(rows).astype(str)).reindex(postings.index)


def plan_postings(rows: pd.DataFrame, context: GradeContext) -> pd.DataFrame:
    """One posting per (export row × IC grading task), or one skipped line for a row that yields none."""
    frame = _resolve_rows(rows, context)
    config = context.config
    held = frame[frame["reason"] != ""]
    row_skips = pd.DataFrame({
        "row": held["row"], "section": held["section"], "school": held["school"], "term": held["term"],
        "task_id": "", "task_kind": "", "student": held["student_id"],
        "line_item_id": None, "result_id": None,
        "percent": np.nan, "score": None, "score_group": None, "fingerprint": "", "action": "skipped",
        "reason": held["reason"],
    })

    postings = _task_postings(frame[frame["reason"] == ""], config)
    scored = _scores(postings, config)
    postings["score"], postings["score_group"] = scored["score"], scored["score_group"]
    postings["student"] = postings["student_id"]
    postings["line_item_id"] = postings["section"] + "-" + postings["term"] + "-" + postings["task_id"]
    postings["result_id"] = postings["line_item_id"] + "-" + postings["student"]
    no_grade = postings["percent"].isna() & postings["given_score"].isna()
    postings["reason"] = np.select([no_grade.to_numpy(), scored["bad"].to_numpy()], [NO_GRADE, BAD_SCORE], "")
    postings["action"] = np.where(postings["reason"] == "", "post", "skipped")
    same = _same_result(postings)
    postings["reason"] = postings["reason"].where(same.isna(), same)
    postings["action"] = postings["action"].where(same.isna(), "skipped")
    postings["fingerprint"] = _fingerprint(postings["percent"], postings["score"]).where(
        postings["action"] != "skipped", ""
    )
    previous = context.posted.drop_duplicates("result_id", keep="last").set_index("result_id")["fingerprint"]
    same_value = postings["result_id"].map(previous) == postings["fingerprint"]
    unchanged = (postings["action"] == "post") & same_value
    postings["action"] = postings["action"].mask(unchanged, "unchanged")

    order = {"": 0, "term": 1, "overall": 2}
    parts = [part for part in (row_skips, postings[POSTING_COLUMNS]) if not part.empty]
    result = pd.concat(parts or [row_skips])
    result = result.assign(_kind=result["task_kind"].map(order)).sort_values(["row", "_kind"], kind="stable")
    result = result.drop(columns="_kind").reset_index(drop=True)
    text = [column for column in POSTING_COLUMNS if column not in ("row", "percent")]
    return result.astype({"row": "int64", "percent": "float64"}).assign(
        **{column: _as_object(result[column]) for column in text}
    )[POSTING_COLUMNS]


# -- IC's answers back to rows ---------------------------------------------------------------------


def _posting_outcomes(postings: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    unknown = set(outcomes["status"]) - set(IC_STATUSES)
    if unknown:
        raise ValueError(f"unknown IC outcome status(es): {sorted(unknown)}")
    answers = outcomes.drop_duplicates("result_id", keep="last").set_index("result_id")
    frame = postings.copy()
    sent = frame["action"] == "post"
    status = frame["result_id"].map(answers["status"]).where(sent)
    message = frame["result_id"].map(answers["message"]).where(sent)
    rejected = status == "rejected"
    message = message.where(message.notna() & (message.astype(str).str.strip() != ""), "rejected by IC")
    frame["outcome"] = np.select(
        [frame["action"] == "unchanged", frame["action"] == "skipped",
         status.isin(["created", "updated"]).to_numpy(),
         (status == "window closed").to_numpy(), rejected.to_numpy()],
        ["unchanged", "skipped", "posted", "skipped", "failed"],
        default="failed",
    )
    frame["reason"] = np.select(
        [frame["action"] == "skipped", (status == "window closed").to_numpy(), rejected.to_numpy(),
         (sent & status.isna()).to_numpy()],
        [frame["reason"].astype(object), WINDOW_CLOSED, message.astype(object), NO_ANSWER],
        default="",
    )
    frame["reason"] = frame["reason"].astype(object)
    frame["outcome"] = frame["outcome"].astype(object)
    return frame


def reconcile(rows: pd.DataFrame, quarantined: pd.DataFrame, postings: pd.DataFrame,
              outcomes: pd.DataFrame) -> Reconciliation:
    """One outcome per export row: failed > posted > unchanged > skipped, with the reason that decided it."""
    final = _posting_outcomes(postings, outcomes)
    rank = {"failed": 0, "posted": 1, "unchanged": 2, "skipped": 3}
    decided = (
        final.assign(_rank=final["outcome"].map(rank))
        .sort_values(["row", "_rank"], kind="stable")
        .drop_duplicates("row")
        .set_index("row")
    )
    stray = set(decided.index) - set(rows["row"])
    if stray:
        raise ReconciliationError(f"postings for rows that are not in the export: {sorted(stray)[:10]}")
    answered = rows[["row", "section", "student"]].assign(
        outcome=rows["row"].map(decided["outcome"]), reason=rows["row"].map(decided["reason"])
    )
    missing = answered.loc[answered["outcome"].isna(), "row"]
    if not missing.empty:
        raise ReconciliationError(f"export rows with no planned posting: {sorted(missing)[:10]}")
    kept_aside = quarantined[["row", "section", "student"]].assign(
        outcome="skipped", reason=MALFORMED + quarantined["reason"].astype(str)
    )
    result = pd.concat([answered, kept_aside], ignore_index=True).astype(
        {"row": "int64", "section": object, "student": object, "outcome": object, "reason": object}
    )
    result = result.sort_values("row", kind="stable").reset_index(drop=True)[ROW_OUTCOME_COLUMNS]
    expected = len(rows) + len(quarantined)
    counted = result["outcome"].value_counts()
    counts = {outcome: int(counted.get(outcome, 0)) for outcome in OUTCOMES}
    if sum(counts.values()) != expected or result["row"].duplicated().any():
        raise ReconciliationError(
            f"{sum(counts.values())} row outcomes for {expected} export rows "
            f"({len(rows)} parsed, {len(quarantined)} quarantined); row numbers must be distinct"
        )
    return Reconciliation(rows=result, counts=counts, postings=final)


def format_reconciliation(rec: Reconciliation, top: int = 5) -> str:
    """A few lines for the task log: counts and the commonest reasons, never a student or a name."""
    total = sum(rec.counts.values())
    lines = [f"grade passback: {total} export rows: "
             + ", ".join(f"{outcome} {rec.counts.get(outcome, 0)}" for outcome in OUTCOMES)]
    for outcome in ("skipped", "failed"):
        reasons = Counter(rec.rows.loc[rec.rows["outcome"] == outcome, "reason"])
        if reasons:
            common = reasons.most_common(top)
            more = len(reasons) - len(common)
            lines.append(f"{outcome} because: " + "; ".join(f"{reason} ({count})" for reason, count in common)
                         + (f"; and {more} other reason(s)" if more else ""))
    return "\n".join(lines)
