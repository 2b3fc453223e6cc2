"""Export rows -> IC gradebook postings: the grade plan.

Pure pandas, no network, no Airflow. :func:`plan_postings` decides, for every row of the
LMS export and every configured IC grading task, whether a result is posted and with what
value (or why not). A grade is modelled as IC expects it: a lineItem per (section × term ×
task) and a result per student on it. :mod:`include.grades.reconciliation` folds IC's answers
to these postings back into one outcome per row.

An export has millions of rows and a posting per row and task, so the plan works on integer
codes (:mod:`include.frames`) into the few distinct sections, students, terms, grades and
reasons, and the postings keep their text columns as categoricals; only the result ids (one
per posting) are spelled out, by arrow. No Python object is made per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include import frames
from include.config import GradePassback
from include.frames import AT_ONCE, TEXT
from include.provisioning.plan import term_key, user_key

POSTING_COLUMNS = [
    "row", "section", "school", "term", "task_id", "task_kind", "student", "line_item_id", "result_id",
    "percent", "score", "score_group", "fingerprint", "action", "reason",
]

UNMAPPED_SECTION = "unmapped section"
UNKNOWN_STUDENT = "student unknown to IC"
SCHOOL_NOT_INCLUDED = "school not included"
UNMAPPED_TERM = "unmapped term"
NOT_OPTED_IN = "not opted in"
WINDOW_CLOSED = "window closed"
WINDOW_OPENS = "window opens on "  # and the day: a window that has not opened yet
NO_TASK = "no task"
NO_GRADE = "no grade"
BAD_SCORE = "bad score"
LETTER_ONLY = "letter grade only: OneRoster 1.1 takes a percent"
SAME_RESULT = "several rows for the same IC result"

ROW_REASONS = ["", UNMAPPED_SECTION, UNKNOWN_STUDENT, SCHOOL_NOT_INCLUDED, UNMAPPED_TERM, NOT_OPTED_IN,
               WINDOW_CLOSED, NO_TASK]  # in the order they are checked
PLAN_REASONS = ["", NO_GRADE, BAD_SCORE, LETTER_ONLY]  # per (grade, task), in this order
ACTIONS = ["post", "unchanged", "skipped"]


# the columns of the context's frames that planning reads: a million-student district's users
# extract is mostly names and roles, which the plan task need not hold
USER_COLUMNS = ["sourced_id", "legacy_sourced_id"]
CLASS_COLUMNS = ["sourced_id", "school_sourced_id", "term_sourced_ids"]
SESSION_COLUMNS = ["sourced_id", "start_date", "end_date"]
SECTION_COLUMNS = ["key"]
GRADING_PERIOD_COLUMNS = ["key", "lms_id", "title"]
POSTED_COLUMNS = ["result_id", "fingerprint"]


@dataclass(frozen=True)
class GradeContext:
    """What a run knows besides the export: the provisioning results, IC's extracts, the last postings."""

    sections: pd.DataFrame  # key (IC class sourcedId = LMS section_school_code)
    grading_periods: pd.DataFrame  # every term's period: key ("term-<IC sourcedId>"), lms_id, title
    users: pd.DataFrame  # USER_COLUMNS of the extract
    classes: pd.DataFrame  # CLASS_COLUMNS
    sessions: pd.DataFrame  # SESSION_COLUMNS
    mapping: pd.DataFrame | None  # lms_grading_period, ic_term[, school]
    opt_in: frozenset[str] | None  # IC class sourcedIds whose teachers opted in; None: opt-in is off
    run_date: date
    config: GradePassback
    posted: pd.DataFrame  # result_id, fingerprint of the last accepted postings
    oneroster_version: str = "1.2"  # 1.1 results carry a numeric score only: no letter grade


# -- text keys -------------------------------------------------------------------------------------


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


def closed_windows(terms, context: GradeContext) -> dict[str, str]:
    """Why the grading window of each of the IC ``terms`` excludes the run date: term -> WINDOW_CLOSED or
    "window opens on <day>" (a term absent: its window is open, or IC does not date the term and it is
    left to IC). A window is the district file's for the term, else its ``window_rule`` around the end."""
    rule = context.config.window_rule
    ends = dict(zip(context.sessions["sourced_id"].astype(str), context.sessions["end_date"], strict=True))
    why: dict[str, str] = {}
    for term in terms:
        window = context.config.windows.get(term)
        if window is not None:
            opens, closes = window.opens, window.closes
        elif term in ends:
            end = pd.Timestamp(ends[term]).date()
            opens = end - timedelta(days=rule.opens_days_before_end)
            closes = end + timedelta(days=rule.closes_days_after_end)
        else:
            continue
        if context.run_date < opens:
            why[term] = f"{WINDOW_OPENS}{opens.isoformat()}"
        elif context.run_date > closes:
            why[term] = WINDOW_CLOSED
    return why


def _windows(terms: pd.Series, context: GradeContext) -> tuple[np.ndarray, list[str]]:
    """Why each term's grading window excludes the run date, as a code into ROW_REASONS followed by
    the returned "window opens on <day>" reasons (0: it does not, or IC does not date the term and it
    is left to IC)."""
    why = closed_windows(terms.dropna().unique(), context)
    opening = sorted(set(why.values()) - {WINDOW_CLOSED})
    code = {WINDOW_CLOSED: ROW_REASONS.index(WINDOW_CLOSED),
            **{text: len(ROW_REASONS) + place for place, text in enumerate(opening)}}
    return terms.map(lambda term: code.get(why.get(term), 0)).to_numpy(dtype=np.int64), opening


@dataclass(frozen=True)
class _Rows:
    """The export rows, resolved, in the export's order: each text as a code into its distinct values."""

    number: np.ndarray
    section: np.ndarray
    sections: pa.Array
    school: np.ndarray
    schools: pa.Array
    student: np.ndarray  # the IC student (sourcedId)
    students: pa.Array
    term: np.ndarray
    terms: pa.Array
    term_grade: np.ndarray  # the row's term percent and letter grade, as a code into ``grades``
    course_grade: np.ndarray
    grades: tuple[np.ndarray, np.ndarray]  # per grade: its percent (NaN: none) and letter (into ``scores``)
    scores: list
    from_term: np.ndarray  # an overall task takes the term grade: a single-term class without course grade
    reason: np.ndarray  # into ``reasons``; 0: none, the row has postings
    reasons: list[str]  # ROW_REASONS, then the days windows open on


def _resolve_rows(rows: pd.DataFrame, context: GradeContext) -> _Rows:
    """The export rows with their class, school, IC student, term and grades, and the first row-level
    reason. Lookups are made once per distinct section, student or (grading period, class) pair,
    whose term, school exclusion and window are the same for all its rows, and spread by code."""
    classes = context.classes.drop_duplicates("sourced_id").reset_index(drop=True)
    section, sections = frames.encoded(rows["section"])
    section_texts = sections.to_pandas()
    known = frames.isin(section_texts, context.sections["key"].astype(str)).to_numpy()
    class_at = frames.gather(
        np.where(known, frames.positions(section_texts, classes["sourced_id"].astype(str)), -1), section)
    school_codes, schools = frames.encoded(classes["school_sourced_id"])
    school_codes = school_codes.astype(frames.code_type(len(schools)))
    student_text, student_texts = frames.encoded(rows["student"])
    user_at = frames.positions(student_texts.to_pandas(), user_key(context.users))
    # only the users the export names are encoded (in the extract's order), not a million users' ids
    named = np.unique(user_at[user_at >= 0])
    user_codes, students = frames.encoded(
        frames.take(context.users["sourced_id"], named, pd.RangeIndex(len(named))).astype(str))
    student = frames.gather(
        frames.gather(user_codes, np.where(user_at >= 0, np.searchsorted(named, user_at), -1)), student_text)

    period, periods = frames.encoded(rows["grading_period"])
    (pair,), pair_keys = frames.joint_codes((period.astype(np.int64) + 1) * (len(classes) + 1) + class_at + 1)
    pair_period, pair_class = np.divmod(pair_keys, len(classes) + 1)
    pairs = pd.RangeIndex(len(pair_keys))
    per_pair = pd.DataFrame({
        "row": np.arange(len(pair_keys)),
        "grading_period": frames.take(periods.to_pandas(), pair_period - 1, pairs),
        "school": frames.take(classes["school_sourced_id"], pair_class - 1, pairs),
        "class_terms": frames.take(classes["term_sourced_ids"], pair_class - 1, pairs),
    })
    pair_terms, pair_excluded = _resolve_terms(per_pair, context)
    term_codes, terms = frames.encoded(pair_terms)
    term = frames.gather(term_codes.astype(frames.code_type(len(terms))), pair)
    opted_out = np.zeros(len(rows), dtype=bool)
    if context.opt_in is not None:
        opted_out = ~frames.gather(frames.isin(section_texts, context.opt_in).to_numpy(), section, False)

    term_percent, term_percents = pd.factorize(rows["term_percent"].to_numpy(float, na_value=np.nan))
    course_percent, course_percents = pd.factorize(rows["course_percent"].to_numpy(float, na_value=np.nan))
    term_score, term_scores = frames.encoded(rows["term_score"])
    course_score, course_scores = frames.encoded(rows["course_score"])
    # a grade is a (percent, letter) of the term columns or of the course columns: the two are keyed
    # apart (an equal grade in both is two grades, planned alike) so no row's codes need remapping
    term_width, course_width = len(term_scores) + 1, len(course_scores) + 1
    course_keys = (len(term_percents) + 1) * term_width
    (term_grade, course_grade), grade_keys = frames.joint_codes(
        (term_percent + 1).astype(np.int64) * term_width + term_score + 1,
        course_keys + (course_percent + 1).astype(np.int64) * course_width + course_score + 1,
    )
    percent, letter = np.empty(len(grade_keys)), np.empty(len(grade_keys), dtype=np.int64)
    of_term = grade_keys < course_keys
    for where, keys, width, percents, letters_before in (
        (of_term, grade_keys, term_width, term_percents, 0),
        (~of_term, grade_keys - course_keys, course_width, course_percents, len(term_scores)),
    ):
        percent_code, letter_code = np.divmod(keys[where], width)
        percent[where] = frames.gather(np.asarray(percents, dtype=np.float64), percent_code - 1, np.nan)
        letter[where] = np.where(letter_code > 0, letter_code - 1 + letters_before, -1)

    parents, _ = frames.flatten(classes["term_sourced_ids"])
    single_term = frames.gather(np.bincount(parents, minlength=len(classes)) == 1, class_at, False)
    term_graded = (term_percent >= 0) | (term_score >= 0)
    course_graded = (course_percent >= 0) | (course_score >= 0)
    config = context.config
    gradable = (term_graded & bool(config.term_task_ids)) | (
        (course_graded | (single_term & term_graded)) & bool(config.overall_task_ids)
    )
    window_codes, opening = _windows(pair_terms, context)
    code_type = frames.code_type(len(ROW_REASONS) + len(opening))
    window = frames.gather(window_codes.astype(code_type), pair, 0)
    checks = [class_at < 0, student < 0, frames.gather(pair_excluded.to_numpy(dtype=bool), pair, False),
              term < 0, opted_out, window > 0,
              ~gradable & (term_graded | course_graded)]
    reason = np.zeros(len(rows), dtype=code_type)  # into ROW_REASONS + opening: the first check a row fails
    for code, failed in reversed(list(enumerate(checks, start=1))):
        np.copyto(reason, code, where=failed)
    np.copyto(reason, window, where=reason == ROW_REASONS.index(WINDOW_CLOSED))  # closed, or the day it opens
    return _Rows(
        number=rows["row"].to_numpy(dtype=np.int64), section=section, sections=sections,
        school=frames.gather(school_codes, class_at), schools=schools, student=student, students=students,
        term=term, terms=terms, term_grade=term_grade, course_grade=course_grade,
        grades=(percent, letter),
        scores=term_scores.to_pylist() + course_scores.to_pylist(), from_term=single_term & ~course_graded,
        reason=reason, reasons=ROW_REASONS + opening,
    )


def _row_order(numbers: np.ndarray) -> np.ndarray | None:
    """The rows' positions in row-number order (None: they are in order); row numbers must be distinct."""
    if (numbers[1:] > numbers[:-1]).all():
        return None
    order = np.argsort(numbers, kind="stable")
    if (numbers[order][1:] == numbers[order][:-1]).any():
        raise ValueError("export rows must have distinct row numbers")
    return order


# -- grades per task --------------------------------------------------------------------------


def _scores(percent: np.ndarray, given: np.ndarray, task: np.ndarray, tasks: list[str], scores: list,
            config: GradePassback, letters: bool) -> tuple[np.ndarray, list, np.ndarray]:
    """The textScore sent (a code into the returned values, -1: none) and whether the grade does
    not fit the task's score group.

    IC files a percent alone under the group's band with the highest minimum not above
    it and refuses a percent below every band or a score outside the group, so those are
    caught here instead of failing at IC. Without ``letters`` (OneRoster 1.1) no textScore is
    sent: IC files the percent under its group itself.
    """
    has_percent = ~np.isnan(percent)
    send_given = (given >= 0) & (config.letter_grades | ~has_percent) & letters
    score = np.where(send_given, given, -1)
    bad = np.zeros(len(percent), dtype=bool)
    values = list(scores)
    for name, bands in config.score_groups.items():
        grouped = np.asarray([config.task_score_groups.get(each) == name for each in tasks], dtype=bool)
        in_group = grouped[task]
        ordered = sorted(bands, key=lambda band: band.min_percent)
        named_at = len(values)
        values += [band.score for band in ordered]
        spelled = {band.score.strip().casefold(): named_at + place for place, band in enumerate(ordered)}
        canonical = np.asarray([spelled.get(str(value).strip().casefold(), -1) for value in scores] + [-1])
        listed = in_group & send_given
        score[listed] = canonical[given[listed]]
        bad[listed] = score[listed] < 0
        derived = in_group & has_percent & ~send_given
        band = np.searchsorted([band.min_percent for band in ordered], percent[derived], side="right") - 1
        bad[derived] = band < 0
        if config.letter_grades and letters:
            score[derived] = np.where(band < 0, -1, named_at + band)
    return score, values, bad


@dataclass(frozen=True)
class _Plan:
    """What a posting holds, worked out once per (grade, task) and looked up by its entry
    (``grade * len(tasks) + task``; the last entry is a row's skipped line): codes into the lists."""

    percent: np.ndarray  # NaN: none
    score: np.ndarray  # the textScore sent (an object), None: none
    task_id: np.ndarray
    task_ids: list
    task_kind: np.ndarray
    task_kinds: list
    score_group: np.ndarray
    score_groups: list
    fingerprint: np.ndarray  # the value IC holds, as text (equal text: nothing to send); "" if not sent
    fingerprints: list
    reason: np.ndarray  # into PLAN_REASONS; -1 for the skipped line of a row


def _plan(grades: tuple[np.ndarray, np.ndarray], scores: list, config: GradePassback, version: str) -> _Plan:
    """The postings of every (grade, task): what is sent, its fingerprint and why not."""
    tasks = [*config.term_task_ids, *config.overall_task_ids]
    grade, task = np.divmod(np.arange(len(grades[0]) * len(tasks)), len(tasks))
    percent, given = grades[0][grade], grades[1][grade]
    letters = version != "1.1"
    score, values, bad = _scores(percent, given, task, tasks, scores, config, letters)
    no_percent = np.isnan(percent)
    reason = np.select([no_percent & (given < 0), bad, no_percent & (not letters)], [1, 2, 3], 0)
    texts = np.asarray([str(value) for value in values] + [""], dtype=object)[score]
    numbers = np.asarray([repr(float(value)) for value in percent], dtype=object)
    numbers[np.isnan(percent)] = ""
    fingerprint_at, fingerprints = frames.distinct(["", *(numbers + "|" + texts)[reason == 0]])
    fingerprint = np.zeros(len(reason) + 1, dtype=np.int32)
    fingerprint[np.flatnonzero(reason == 0)] = fingerprint_at[1:]
    kinds = ["term"] * len(config.term_task_ids) + ["overall"] * len(config.overall_task_ids)
    task_id_at, task_ids = frames.distinct(["", *tasks])
    kind_at, task_kinds = frames.distinct(["", *kinds])
    groups = [config.task_score_groups.get(each) for each in tasks]
    group_at, score_groups = frames.distinct([group for group in groups if group is not None])
    group = np.full(len(tasks), -1)
    group[[place for place, name in enumerate(groups) if name is not None]] = group_at
    return _Plan(
        percent=np.append(percent, np.nan),
        score=np.append(np.asarray([*values, None], dtype=object)[score], None),
        task_id=np.append(task_id_at[1:][task], task_id_at[0]), task_ids=task_ids,
        task_kind=np.append(kind_at[1:][task], kind_at[0]), task_kinds=task_kinds,
        score_group=np.append(group[task], -1), score_groups=score_groups,
        fingerprint=fingerprint, fingerprints=fingerprints, reason=np.append(reason, -1),
    )


def _clashes(keys: np.ndarray) -> np.ndarray:
    """Whether another of the keys is the same."""
    ordered = np.sort(keys, kind="stable")  # keys made in row order are mostly in order already
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    return np.isin(keys, repeated) if len(repeated) else np.zeros(len(keys), dtype=bool)


def _clash_reasons(keys: np.ndarray, numbers: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """For postings whose result another posting would write too (two LMS periods mapped to one IC
    term): a code per posting into the returned reasons, which list the rows of its result."""
    order = np.lexsort((numbers, keys))
    key, number = keys[order], numbers[order]
    new_key = np.r_[True, key[1:] != key[:-1]]
    new_row = new_key | np.r_[True, number[1:] != number[:-1]]
    offsets = np.append(np.flatnonzero(new_key[new_row]), new_row.sum()).astype(np.int32)
    listed = pa.ListArray.from_arrays(pa.array(offsets), pc.cast(pa.array(number[new_row]), pa.string()))
    code = np.empty(len(keys), dtype=np.int64)
    code[order] = np.cumsum(new_key) - 1
    return code, [f"{SAME_RESULT}, rows {rows}" for rows in pc.binary_join(listed, ", ").to_pylist()]


def _dashed(texts: pa.Array) -> bool:
    """Whether any of the texts holds a ``-``, so that ids joined with ``-`` could be read two ways."""
    return bool(len(texts)) and pc.any(pc.match_substring(texts, "-")).as_py()


def _result_ids(line_item: np.ndarray, student: np.ndarray, line_items: pa.Array,
                students: pa.Array) -> pd.Series:
    """``<lineItem>-<student>`` per posting (missing without a line item), joined by arrow a slice
    at a time so that only the ids themselves are held."""
    chunks = []
    for start in range(0, len(line_item), AT_ONCE):
        items = line_item[start: start + AT_ONCE]
        missing = items < 0
        whose = np.where(missing, 0, student[start: start + AT_ONCE])
        chunks.append(pc.binary_join_element_wise(
            line_items.take(pa.array(items, mask=missing)), students.take(pa.array(whose, mask=missing)),
            pa.scalar("-", TEXT),
        ))
    return pa.chunked_array(chunks, TEXT).to_pandas()


def _looked_up(table: np.ndarray, categories: pa.Array, entry: np.ndarray,
               used: np.ndarray) -> pd.Categorical:
    """A column of the plan (codes into ``categories`` per entry) for postings of the given entries."""
    codes, categories = frames.compact(np.where(used, table, -1), categories)
    return frames.categorical_from_arrow(frames.gather(codes, entry), categories)


def _some_result_ids(line_item: np.ndarray, student: np.ndarray, line_items: pa.Array, students: pa.Array,
                     at: np.ndarray) -> pa.ChunkedArray:
    """The result ids of the postings ``at`` only."""
    return frames.chunked_text(_result_ids(line_item[at], student[at], line_items, students))


def plan_postings(rows: pd.DataFrame, context: GradeContext) -> pd.DataFrame:
    """One posting per (export row × IC grading task), or one skipped line for a row that yields none,
    by row and then term before overall task.

    A posting's grade, score, fingerprint and reason depend only on its row's grades and its task,
    so they are worked out per distinct (grade, task) (:func:`_plan`) and looked up per posting.
    """
    resolved = _resolve_rows(rows, context)
    config = context.config
    tasks = [*config.term_task_ids, *config.overall_task_ids]
    plan = _plan(resolved.grades, resolved.scores, config, context.oneroster_version)
    order = _row_order(resolved.number)

    def in_order(values: np.ndarray) -> np.ndarray:
        return values if order is None else values[order]

    held = in_order(resolved.reason) > 0
    lines = np.where(held, 1, len(tasks))
    starts = np.cumsum(lines) - lines

    def per_line(values: np.ndarray) -> np.ndarray:
        return np.repeat(in_order(values), lines)

    def per_row(codes: np.ndarray, categories: pa.Array) -> pd.Categorical:
        codes, categories = frames.compact(codes, categories)
        return frames.categorical_from_arrow(per_line(codes), categories)

    # each column is made as soon as what it needs is known, and what it needed let go
    posting_rows = np.flatnonzero(~held)
    section, term, student = (in_order(codes)[posting_rows] for codes in
                              (resolved.section, resolved.term, resolved.student))
    student_codes, students = frames.compact(resolved.student, resolved.students)
    columns = {
        "row": per_line(resolved.number),
        "section": per_row(resolved.section, resolved.sections),
        "school": per_row(resolved.school, resolved.schools),
        "term": per_row(resolved.term, resolved.terms),
        "student": frames.categorical_from_arrow(per_line(student_codes), students),
    }
    del student_codes
    task = np.ones(int(lines.sum()), dtype=np.int8 if len(tasks) < 127 else np.int32)
    task[starts[1:]] = 1 - lines[:-1]
    task = (np.cumsum(task, dtype=np.int32) - 1).astype(task.dtype)  # 0, 1, ... within each row
    # the grade a posting takes: the course grade for an overall task, unless its row takes the term's
    takes_course = per_line(~resolved.from_term)
    takes_course &= frames.gather(np.arange(len(tasks)) >= len(config.term_task_ids), task, False)
    position = frames.index_type(len(plan.reason))
    entry = per_line(resolved.term_grade.astype(position))
    np.copyto(entry, per_line(resolved.course_grade.astype(position)), where=takes_course)
    del takes_course
    entry *= len(tasks)
    entry += task
    np.copyto(entry, len(plan.reason) - 1, where=np.repeat(held, lines))
    row_reasons = resolved.reasons
    code_type = frames.code_type(len(row_reasons) + len(PLAN_REASONS))
    reason = frames.gather(np.where(plan.reason < 0, 0, len(row_reasons) + plan.reason).astype(code_type),
                           entry)
    reason += per_line(resolved.reason)  # into row_reasons, PLAN_REASONS, and clashes below
    sections, terms = resolved.sections, resolved.terms
    texts = (resolved.sections, resolved.terms, resolved.students)
    del resolved
    used = frames.codes_used(entry, len(plan.reason))
    percent, percents = pd.factorize(plan.percent)
    columns |= {
        "task_id": _looked_up(plan.task_id, pa.array(plan.task_ids, TEXT), entry, used),
        "task_kind": _looked_up(plan.task_kind, pa.array(plan.task_kinds, TEXT), entry, used),
        "percent": _looked_up(percent, pa.array(percents, pa.float64()), entry, used),
        "score": pd.Series(frames.gather(plan.score, entry, None), dtype=object),
        "score_group": _looked_up(plan.score_group, pa.array(plan.score_groups, TEXT), entry, used),
    }
    del percent, percents
    action = frames.gather(np.where(plan.reason == 0, 0, 2).astype(np.int8), entry)  # into ACTIONS
    fingerprint = frames.gather(plan.fingerprint.astype(frames.code_type(len(plan.fingerprints))), entry)
    del entry, used

    task_text, task_texts = frames.distinct(tasks)
    (slot,), slot_keys = frames.joint_codes(section.astype(np.int64) * len(terms) + term)
    slot_section, slot_term = np.divmod(np.repeat(slot_keys, len(task_texts)), len(terms))
    line_items = frames.flat(pc.binary_join_element_wise(
        sections.take(pa.array(slot_section)), terms.take(pa.array(slot_term)),
        pa.array(task_texts * len(slot_keys), TEXT), pa.scalar("-", TEXT),
    ))
    slots = np.full(len(held), -1, dtype=np.int32)
    slots[posting_rows] = slot.astype(np.int32) * len(task_texts)
    line_item = np.repeat(slots, lines)  # -1 for a row's skipped line, whose task is the first (0)
    del slots, slot
    line_item += frames.gather(task_text.astype(np.int32), task)
    columns["line_item_id"] = frames.categorical_from_arrow(*frames.compact(line_item, line_items))

    spelled = partial(_some_result_ids, line_item, columns["student"].codes, line_items, students)
    clash = _same_results(action == 0, starts[posting_rows], (section, term, student), task, task_text,
                          spelled, columns["row"], texts)
    del section, term, student, task, posting_rows, spelled
    result_ids = _result_ids(line_item, columns["student"].codes, line_items, students)
    del line_item
    columns["result_id"] = result_ids
    if len(clash[0]):
        clashing, clash_reason, clash_reasons = clash
        action[clashing] = 2
        fingerprint[clashing] = 0
        reason = reason.astype(frames.code_type(len(row_reasons) + len(PLAN_REASONS) + len(clash_reasons)))
        reason[clashing] = len(row_reasons) + len(PLAN_REASONS) + clash_reason
    else:
        clash_reasons = []
    if len(context.posted):
        sending = np.flatnonzero(action == 0)
        action[sending] = _unchanged(frames.take_chunked(frames.chunked_text(result_ids), sending),
                                     fingerprint[sending] - 1, plan.fingerprints[1:], context.posted)

    reason_at, reasons = frames.distinct(row_reasons + PLAN_REASONS + clash_reasons)
    columns |= {
        "fingerprint": frames.categorical_from_arrow(
            *frames.compact(fingerprint, pa.array(plan.fingerprints, TEXT))),
        "action": frames.categorical_from_arrow(*frames.compact(action, pa.array(ACTIONS, TEXT))),
        "reason": frames.categorical_from_arrow(
            *frames.compact(frames.gather(reason_at.astype(frames.code_type(len(reasons))), reason),
                            pa.array(reasons, TEXT))),
    }
    return pd.DataFrame(columns, copy=False)[POSTING_COLUMNS]


def _same_results(live: np.ndarray, starts: np.ndarray, parts: tuple[np.ndarray, np.ndarray, np.ndarray],
                  task: np.ndarray, task_text: np.ndarray, spelled: Callable[[np.ndarray], pa.ChunkedArray],
                  numbers: np.ndarray,
                  texts: tuple[pa.Array, pa.Array, pa.Array]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The postings to send whose result another one would write too, with a code per such posting
    into the reasons returned.

    When no section, term or student id holds a ``-``, a result id is spelled by one (section, term,
    task, student) only, so only rows with the same section, term and student need a closer look;
    otherwise the ids themselves (``spelled(postings)``) are compared.
    """
    used = [values.filter(pa.array(frames.codes_used(codes, len(values))))
            for codes, values in zip(parts, texts, strict=True)]
    if any(_dashed(values) for values in used):
        looked_at = np.flatnonzero(live)
        keys = frames.flat(pc.dictionary_encode(spelled(looked_at))).indices.to_numpy().astype(np.int64)
    else:
        tasks = len(task_text)
        sent_rows = np.flatnonzero(np.logical_or.reduceat(live, starts)) if len(starts) else starts
        row_key = frames.combined_key(*(part[sent_rows] for part in (parts[2], parts[0], parts[1])))
        if tasks == len(np.unique(task_text)):  # else one row may name a result twice
            shared = _clashes(row_key)
            sent_rows, row_key = sent_rows[shared], row_key[shared]
        looked_at = (starts[sent_rows][:, None] + np.arange(tasks)).ravel()
        keep = live[looked_at]
        looked_at = looked_at[keep]
        keys = frames.combined_key(np.repeat(row_key, tasks)[keep], task_text[task[looked_at]])
    clashing = _clashes(keys)
    if not clashing.any():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), []
    code, reasons = _clash_reasons(keys[clashing], numbers[looked_at[clashing]])
    return looked_at[clashing], code, reasons


def _unchanged(result_ids: pa.ChunkedArray, fingerprint: np.ndarray, fingerprints: list[str],
               posted: pd.DataFrame) -> np.ndarray:
    """The action of each result to send: "unchanged" when IC already holds this value (the last
    posting of a result counts), else "post"."""
    last = posted.iloc[::-1]
    before, before_texts = frames.encoded(last["fingerprint"])
    same_text = pc.index_in(before_texts, value_set=pa.array(fingerprints, TEXT))
    held = pc.fill_null(pc.index_in(result_ids, value_set=frames.text_array(last["result_id"], TEXT)), -1)
    previous = frames.gather(frames.gather(pc.fill_null(same_text, -1).to_numpy(), before),
                             held.to_numpy(zero_copy_only=False))
    return np.where((previous >= 0) & (previous == fingerprint), 1, 0)
