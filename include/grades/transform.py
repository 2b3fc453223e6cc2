"""Export rows -> IC gradebook postings, and the answers back -> one outcome per row.

Pure pandas, no network, no Airflow. :func:`plan_postings` decides, for every row of the
LMS export and every configured IC grading task, whether a result is posted and with what
value (or why not); :func:`reconcile` folds IC's answers back so that every row of the
file, quarantined ones included, ends in exactly one outcome. A grade is modelled as
IC expects it: a lineItem per (section × term × task) and a result per student on it.
For the post task, :func:`withheld` answers for the results of a lineItem IC refused (they
are not sent) and :func:`refusals` sums IC's refusals up per lineItem for its log, which,
like :func:`format_reconciliation`'s, shows no student's id.

An export has millions of rows and a posting per row and task, so both work on integer codes
into the few distinct sections, students, terms, grades and reasons, and the postings keep
their text columns as categoricals; only the result ids (one per posting) are spelled out,
by arrow. No Python object is made per row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.config import GradePassback
from include.privacy import redacted
from include.provisioning.plan import flatten, isin, positions, take, term_key, user_key

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
WINDOW_OPENS = "window opens on "  # and the day: a window that has not opened yet
NO_TASK = "no task"
NO_GRADE = "no grade"
BAD_SCORE = "bad score"
LETTER_ONLY = "letter grade only: OneRoster 1.1 takes a percent"
SAME_RESULT = "several rows for the same IC result"
NO_ANSWER = "no answer from IC"
MALFORMED = "malformed: "
REJECTED = "rejected by IC"
LOGGED_STUDENT = "<student>"  # what a log line shows for a student's id

ROW_REASONS = ["", UNMAPPED_SECTION, UNKNOWN_STUDENT, SCHOOL_NOT_INCLUDED, UNMAPPED_TERM, NOT_OPTED_IN,
               WINDOW_CLOSED, NO_TASK]  # in the order they are checked
PLAN_REASONS = ["", NO_GRADE, BAD_SCORE, LETTER_ONLY]  # per (grade, task), in this order
ACTIONS = ["post", "unchanged", "skipped"]
TEXT = pa.large_string()  # what pandas' ``str`` columns hold
AT_ONCE = 1 << 18  # items per NumPy gather or arrow call on postings: bounds the temporaries


# the columns of the context's frames that planning reads: a million-student district's users
# extract is mostly names and roles, which the plan task need not hold
USER_COLUMNS = ["sourced_id", "legacy_sourced_id"]
CLASS_COLUMNS = ["sourced_id", "school_sourced_id", "term_sourced_ids"]
SESSION_COLUMNS = ["sourced_id", "end_date"]
SECTION_COLUMNS = ["key"]
GRADING_PERIOD_COLUMNS = ["key", "lms_id", "title"]
POSTED_COLUMNS = ["result_id", "fingerprint"]


class ReconciliationError(RuntimeError):
    """Rows and outcomes do not add up: a row would go unaccounted for."""


@dataclass(frozen=True)
class GradeContext:
    """What a run knows besides the export: the provisioning results, IC's extracts, the last postings."""

    sections: pd.DataFrame  # key (IC class sourcedId = LMS section_school_code)
    grading_periods: pd.DataFrame  # key ("term-<IC academicSession sourcedId>"), lms_id, title
    users: pd.DataFrame  # USER_COLUMNS of the extract
    classes: pd.DataFrame  # CLASS_COLUMNS
    sessions: pd.DataFrame  # SESSION_COLUMNS
    mapping: pd.DataFrame | None  # lms_grading_period, ic_term[, school]
    opt_in: frozenset[str] | None  # IC class sourcedIds whose teachers opted in; None: opt-in is off
    run_date: date
    config: GradePassback
    posted: pd.DataFrame  # result_id, fingerprint of the last accepted postings
    oneroster_version: str = "1.2"  # 1.1 results carry a numeric score only: no letter grade


@dataclass(frozen=True)
class Reconciliation:
    rows: pd.DataFrame  # row, section, student, outcome, reason: one per export row, quarantined included
    counts: dict[str, int]
    postings: pd.DataFrame  # the postings with their final outcome and reason


# -- codes instead of text ---------------------------------------------------------------------------


def _text(values: pd.Series) -> pa.Array | pa.ChunkedArray:
    """A column as arrow text; no copy for pandas' arrow-backed ``str`` columns."""
    array = pa.array(values, from_pandas=True)
    return array if array.type == TEXT else pc.cast(array, TEXT)


def _flat(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array of a chunked one (for the few distinct values, not for a column of millions)."""
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _encoded(values: pd.Series) -> tuple[np.ndarray, pa.Array]:
    """A text column as codes (-1: missing; read-only, and as small as a categorical's own:
    widen them before arithmetic) into its distinct values: a categorical's codes, else arrow's
    dictionary encoding (int32)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.cat.codes.to_numpy(), _flat(_text(pd.Series(values.cat.categories)))
    encoded = pc.dictionary_encode(_text(values))
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    if not chunks:
        return np.empty(0, dtype=np.int32), pa.array([], TEXT)
    codes = [(chunk.indices if chunk.indices.null_count == 0 else pc.fill_null(chunk.indices, -1)).to_numpy()
             for chunk in chunks]
    return codes[0] if len(codes) == 1 else np.concatenate(codes), chunks[0].dictionary  # one dictionary


def _at(values: np.ndarray, codes: np.ndarray, missing=-1) -> np.ndarray:
    """``values[codes]``, ``missing`` (of the values' type: False for flags) where the code is -1.
    A slice at a time: NumPy first copies an index array of small integers to 64 bits, and codes
    run to millions."""
    table = np.concatenate([values, np.asarray([missing], dtype=values.dtype)])
    found = np.empty(len(codes), dtype=table.dtype)
    for start in range(0, len(codes), AT_ONCE):
        np.take(table, codes[start: start + AT_ONCE], out=found[start: start + AT_ONCE])
    return found


def _used(codes: np.ndarray, count: int) -> np.ndarray:
    """Which of ``count`` values the codes (-1: none) name."""
    used = np.zeros(count + 1, dtype=bool)
    for start in range(0, len(codes), AT_ONCE):
        used[codes[start: start + AT_ONCE]] = True
    return used[:-1]


def _distinct(values: list) -> tuple[np.ndarray, list]:
    """Where each of a few values is among their distinct values, and those values."""
    first: dict = {}
    where = np.asarray([first.setdefault(value, len(first)) for value in values], dtype=np.int64)
    return where, list(first)


def _key(*parts: np.ndarray) -> np.ndarray:
    """One int64 per distinct combination of the parts' codes (each -1 or more)."""
    key = np.zeros(len(parts[0]), dtype=np.int64)
    size = 1
    for codes in parts:
        count = int(codes.max(initial=-1)) + 2
        if size * count >= 1 << 62:
            key, distinct = pd.factorize(key)
            size = len(distinct)
        key *= count
        key += codes
        key += 1
        size *= count
    return key


def _joint(*keys: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Codes for keys (non-negative int64) from one or more arrays, into their distinct keys (sorted
    when counted densely)."""
    size = max(int(key.max(initial=-1)) for key in keys) + 1
    if size <= sum(len(key) for key in keys) + (1 << 20):
        seen = np.zeros(size, dtype=bool)
        for key in keys:
            seen[key] = True
        code = (np.cumsum(seen, dtype=np.int64) - 1).astype(_code_type(int(seen.sum())))
        return [code[key] for key in keys], np.flatnonzero(seen)
    codes, distinct = pd.factorize(np.concatenate(keys))
    return np.split(codes, np.cumsum([len(key) for key in keys[:-1]])), distinct


def _index_type(count: int) -> type:
    """An integer type for positions among ``count`` items."""
    return np.int32 if count < 1 << 31 else np.int64


def _code_type(count: int) -> type:
    """The integer type pandas keeps a categorical's codes in, for ``count`` categories."""
    return np.int8 if count < 127 else np.int16 if count < 32_767 else np.int32


def _compact(codes: np.ndarray, categories: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Codes (-1: missing) into only the categories used, in the integer type pandas keeps them in."""
    used = _used(codes, len(categories))
    if not used.all():
        codes = _at(np.where(used, np.cumsum(used) - 1, -1).astype(_code_type(int(used.sum()))), codes)
        categories = categories.filter(pa.array(used))
    return codes.astype(_code_type(len(categories)), copy=False), categories


def _categorical(codes: np.ndarray, categories: pa.Array) -> pd.Categorical:
    """A categorical of ``_compact`` codes and categories (the codes are not copied). Text categories
    are Python strings: pandas makes them anyway to check that they are distinct, and keeps them."""
    textual = pa.types.is_large_string(categories.type) or pa.types.is_string(categories.type)
    categories = pd.Index(categories.to_numpy(zero_copy_only=False), dtype=object if textual else None)
    return pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories), validate=False)


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


def _windows(terms: pd.Series, context: GradeContext) -> tuple[np.ndarray, list[str]]:
    """Why each term's grading window excludes the run date, as a code into ROW_REASONS followed by
    the returned "window opens on <day>" reasons (0: it does not, or IC does not date the term and
    it is left to IC)."""
    rule = context.config.window_rule
    ends = dict(zip(context.sessions["sourced_id"].astype(str), context.sessions["end_date"], strict=True))
    why: dict[str, str] = {}
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
        if context.run_date < opens:
            why[term] = f"{WINDOW_OPENS}{opens.isoformat()}"
        elif context.run_date > closes:
            why[term] = WINDOW_CLOSED
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
    section, sections = _encoded(rows["section"])
    section_texts = sections.to_pandas()
    known = isin(section_texts, context.sections["key"].astype(str)).to_numpy()
    class_at = _at(np.where(known, positions(section_texts, classes["sourced_id"].astype(str)), -1), section)
    school_codes, schools = _encoded(classes["school_sourced_id"])
    school_codes = school_codes.astype(_code_type(len(schools)))
    student_text, student_texts = _encoded(rows["student"])
    user_at = positions(student_texts.to_pandas(), user_key(context.users))
    # only the users the export names are encoded (in the extract's order), not a million users' ids
    named = np.unique(user_at[user_at >= 0])
    user_codes, students = _encoded(take(context.users["sourced_id"], named, pd.RangeIndex(len(named))).astype(str))
    student = _at(_at(user_codes, np.where(user_at >= 0, np.searchsorted(named, user_at), -1)), student_text)

    period, periods = _encoded(rows["grading_period"])
    (pair,), pair_keys = _joint((period.astype(np.int64) + 1) * (len(classes) + 1) + class_at + 1)
    pair_period, pair_class = np.divmod(pair_keys, len(classes) + 1)
    pairs = pd.RangeIndex(len(pair_keys))
    per_pair = pd.DataFrame({
        "row": np.arange(len(pair_keys)),
        "grading_period": take(periods.to_pandas(), pair_period - 1, pairs),
        "school": take(classes["school_sourced_id"], pair_class - 1, pairs),
        "class_terms": take(classes["term_sourced_ids"], pair_class - 1, pairs),
    })
    pair_terms, pair_excluded = _resolve_terms(per_pair, context)
    term_codes, terms = _encoded(pair_terms)
    term = _at(term_codes.astype(_code_type(len(terms))), pair)
    opted_out = np.zeros(len(rows), dtype=bool)
    if context.opt_in is not None:
        opted_out = ~_at(isin(section_texts, context.opt_in).to_numpy(), section, False)

    term_percent, term_percents = pd.factorize(rows["term_percent"].to_numpy(float, na_value=np.nan))
    course_percent, course_percents = pd.factorize(rows["course_percent"].to_numpy(float, na_value=np.nan))
    term_score, term_scores = _encoded(rows["term_score"])
    course_score, course_scores = _encoded(rows["course_score"])
    # a grade is a (percent, letter) of the term columns or of the course columns: the two are keyed
    # apart (an equal grade in both is two grades, planned alike) so no row's codes need remapping
    term_width, course_width = len(term_scores) + 1, len(course_scores) + 1
    course_keys = (len(term_percents) + 1) * term_width
    (term_grade, course_grade), grade_keys = _joint(
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
        percent[where] = _at(np.asarray(percents, dtype=np.float64), percent_code - 1, np.nan)
        letter[where] = np.where(letter_code > 0, letter_code - 1 + letters_before, -1)

    parents, _ = flatten(classes["term_sourced_ids"])
    single_term = _at(np.bincount(parents, minlength=len(classes)) == 1, class_at, False)
    term_graded = (term_percent >= 0) | (term_score >= 0)
    course_graded = (course_percent >= 0) | (course_score >= 0)
    config = context.config
    gradable = (term_graded & bool(config.term_task_ids)) | (
        (course_graded | (single_term & term_graded)) & bool(config.overall_task_ids)
    )
    window_codes, opening = _windows(pair_terms, context)
    code_type = _code_type(len(ROW_REASONS) + len(opening))
    window = _at(window_codes.astype(code_type), pair, 0)
    checks = [class_at < 0, student < 0, _at(pair_excluded.to_numpy(dtype=bool), pair, False), term < 0,
              opted_out, window > 0,
              ~gradable & (term_graded | course_graded)]
    reason = np.zeros(len(rows), dtype=code_type)  # into ROW_REASONS + opening: the first check a row fails
    for code, failed in reversed(list(enumerate(checks, start=1))):
        np.copyto(reason, code, where=failed)
    np.copyto(reason, window, where=reason == ROW_REASONS.index(WINDOW_CLOSED))  # closed, or the day it opens
    return _Rows(
        number=rows["row"].to_numpy(dtype=np.int64), section=section, sections=sections,
        school=_at(school_codes, class_at), schools=schools, student=student, students=students,
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
    fingerprint_at, fingerprints = _distinct(["", *(numbers + "|" + texts)[reason == 0]])
    fingerprint = np.zeros(len(reason) + 1, dtype=np.int32)
    fingerprint[np.flatnonzero(reason == 0)] = fingerprint_at[1:]
    kinds = ["term"] * len(config.term_task_ids) + ["overall"] * len(config.overall_task_ids)
    task_id_at, task_ids = _distinct(["", *tasks])
    kind_at, task_kinds = _distinct(["", *kinds])
    groups = [config.task_score_groups.get(each) for each in tasks]
    group_at, score_groups = _distinct([group for group in groups if group is not None])
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
    codes, categories = _compact(np.where(used, table, -1), categories)
    return _categorical(_at(codes, entry), categories)


def _some_result_ids(line_item: np.ndarray, student: np.ndarray, line_items: pa.Array, students: pa.Array,
                     at: np.ndarray) -> pa.ChunkedArray:
    """The result ids of the postings ``at`` only."""
    return _chunked(_result_ids(line_item[at], student[at], line_items, students))


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
        codes, categories = _compact(codes, categories)
        return _categorical(per_line(codes), categories)

    # each column is made as soon as what it needs is known, and what it needed let go
    posting_rows = np.flatnonzero(~held)
    section, term, student = (in_order(codes)[posting_rows] for codes in
                              (resolved.section, resolved.term, resolved.student))
    student_codes, students = _compact(resolved.student, resolved.students)
    columns = {
        "row": per_line(resolved.number),
        "section": per_row(resolved.section, resolved.sections),
        "school": per_row(resolved.school, resolved.schools),
        "term": per_row(resolved.term, resolved.terms),
        "student": _categorical(per_line(student_codes), students),
    }
    del student_codes
    task = np.ones(int(lines.sum()), dtype=np.int8 if len(tasks) < 127 else np.int32)
    task[starts[1:]] = 1 - lines[:-1]
    task = (np.cumsum(task, dtype=np.int32) - 1).astype(task.dtype)  # 0, 1, ... within each row
    # the grade a posting takes: the course grade for an overall task, unless its row takes the term's
    takes_course = per_line(~resolved.from_term)
    takes_course &= _at(np.arange(len(tasks)) >= len(config.term_task_ids), task, False)
    position = _index_type(len(plan.reason))
    entry = per_line(resolved.term_grade.astype(position))
    np.copyto(entry, per_line(resolved.course_grade.astype(position)), where=takes_course)
    del takes_course
    entry *= len(tasks)
    entry += task
    np.copyto(entry, len(plan.reason) - 1, where=np.repeat(held, lines))
    row_reasons = resolved.reasons
    code_type = _code_type(len(row_reasons) + len(PLAN_REASONS))
    reason = _at(np.where(plan.reason < 0, 0, len(row_reasons) + plan.reason).astype(code_type), entry)
    reason += per_line(resolved.reason)  # into row_reasons, PLAN_REASONS, and clashes below
    sections, terms = resolved.sections, resolved.terms
    texts = (resolved.sections, resolved.terms, resolved.students)
    del resolved
    used = _used(entry, len(plan.reason))
    percent, percents = pd.factorize(plan.percent)
    columns |= {
        "task_id": _looked_up(plan.task_id, pa.array(plan.task_ids, TEXT), entry, used),
        "task_kind": _looked_up(plan.task_kind, pa.array(plan.task_kinds, TEXT), entry, used),
        "percent": _looked_up(percent, pa.array(percents, pa.float64()), entry, used),
        "score": pd.Series(_at(plan.score, entry, None), dtype=object),
        "score_group": _looked_up(plan.score_group, pa.array(plan.score_groups, TEXT), entry, used),
    }
    del percent, percents
    action = _at(np.where(plan.reason == 0, 0, 2).astype(np.int8), entry)  # into ACTIONS
    fingerprint = _at(plan.fingerprint.astype(_code_type(len(plan.fingerprints))), entry)
    del entry, used

    task_text, task_texts = _distinct(tasks)
    (slot,), slot_keys = _joint(section.astype(np.int64) * len(terms) + term)
    slot_section, slot_term = np.divmod(np.repeat(slot_keys, len(task_texts)), len(terms))
    line_items = _flat(pc.binary_join_element_wise(
        sections.take(pa.array(slot_section)), terms.take(pa.array(slot_term)),
        pa.array(task_texts * len(slot_keys), TEXT), pa.scalar("-", TEXT),
    ))
    slots = np.full(len(held), -1, dtype=np.int32)
    slots[posting_rows] = slot.astype(np.int32) * len(task_texts)
    line_item = np.repeat(slots, lines)  # -1 for a row's skipped line, whose task is the first (0)
    del slots, slot
    line_item += _at(task_text.astype(np.int32), task)
    columns["line_item_id"] = _categorical(*_compact(line_item, line_items))

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
        reason = reason.astype(_code_type(len(row_reasons) + len(PLAN_REASONS) + len(clash_reasons)))
        reason[clashing] = len(row_reasons) + len(PLAN_REASONS) + clash_reason
    else:
        clash_reasons = []
    if len(context.posted):
        sending = np.flatnonzero(action == 0)
        action[sending] = _unchanged(_take(_chunked(result_ids), sending), fingerprint[sending] - 1,
                                     plan.fingerprints[1:], context.posted)

    reason_at, reasons = _distinct(row_reasons + PLAN_REASONS + clash_reasons)
    columns |= {
        "fingerprint": _categorical(*_compact(fingerprint, pa.array(plan.fingerprints, TEXT))),
        "action": _categorical(*_compact(action, pa.array(ACTIONS, TEXT))),
        "reason": _categorical(*_compact(_at(reason_at.astype(_code_type(len(reasons))), reason),
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
    used = [values.filter(pa.array(_used(codes, len(values))))
            for codes, values in zip(parts, texts, strict=True)]
    if any(_dashed(values) for values in used):
        looked_at = np.flatnonzero(live)
        keys = _flat(pc.dictionary_encode(spelled(looked_at))).indices.to_numpy().astype(np.int64)
    else:
        tasks = len(task_text)
        sent_rows = np.flatnonzero(np.logical_or.reduceat(live, starts)) if len(starts) else starts
        row_key = _key(*(part[sent_rows] for part in (parts[2], parts[0], parts[1])))
        if tasks == len(np.unique(task_text)):  # else one row may name a result twice
            shared = _clashes(row_key)
            sent_rows, row_key = sent_rows[shared], row_key[shared]
        looked_at = (starts[sent_rows][:, None] + np.arange(tasks)).ravel()
        keep = live[looked_at]
        looked_at = looked_at[keep]
        keys = _key(np.repeat(row_key, tasks)[keep], task_text[task[looked_at]])
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
    before, before_texts = _encoded(last["fingerprint"])
    same_text = pc.index_in(before_texts, value_set=pa.array(fingerprints, TEXT))
    held = pc.fill_null(pc.index_in(result_ids, value_set=_flat(_text(last["result_id"]))), -1)
    previous = _at(_at(pc.fill_null(same_text, -1).to_numpy(), before), held.to_numpy(zero_copy_only=False))
    return np.where((previous >= 0) & (previous == fingerprint), 1, 0)


# -- IC's answers back to rows ---------------------------------------------------------------------


def _commonest(codes: np.ndarray) -> int:
    """The commonest of non-negative codes (-1 if none), counted a slice at a time."""
    counts = np.zeros(int(codes.max(initial=-1)) + 1, dtype=np.int64)
    for start in range(0, len(codes), AT_ONCE):
        part = np.bincount(codes[start: start + AT_ONCE])
        counts[: len(part)] += part
    return int(counts.argmax()) if len(counts) else -1


def _take(values: pa.ChunkedArray, at: np.ndarray) -> pa.ChunkedArray:
    """``values`` at the ascending positions ``at``, taken chunk by chunk: arrow would first join
    all the chunks into one (the result ids of millions of postings, copied whole)."""
    bounds = np.cumsum([0, *(len(chunk) for chunk in values.chunks)])
    cuts = np.searchsorted(at, bounds)
    pieces = zip(values.chunks, bounds[:-1], cuts[:-1], cuts[1:], strict=True)
    taken = [chunk.take(pa.array(at[low:high] - first)) for chunk, first, low, high in pieces]
    return pa.chunked_array(taken, values.type)


def _chunked(values: pd.Series) -> pa.ChunkedArray:
    text = _text(values)
    return text if isinstance(text, pa.ChunkedArray) else pa.chunked_array([text])


def _in_step(ids: pa.ChunkedArray, sent: np.ndarray, answered: pa.ChunkedArray) -> bool:
    """Whether the answers are for the sent results (the postings where ``sent``) one for one, in order."""
    if int(np.count_nonzero(sent)) != len(answered) or not len(answered):
        return False
    done = 0
    for start in range(0, len(ids), AT_ONCE):
        piece = ids.slice(start, AT_ONCE).filter(pa.array(sent[start: start + AT_ONCE]))
        if not pc.all(pc.equal(piece, answered.slice(done, len(piece))), skip_nulls=False).as_py():
            return False
        done += len(piece)
    return True


def _last_answers(result_ids: pd.Series, sent: np.ndarray, answers: pd.DataFrame,
                  unusual: np.ndarray) -> np.ndarray | None:
    """For each sent posting (where ``sent``), the position of IC's last answer for its result
    (-1: none; None: the answers are the sent postings', one for one).

    The answers normally come back one for one in the order the results were sent; then a result
    can have a later, different answer only if one of its answers is ``unusual`` (says other than
    most do), and only those results are looked up. Otherwise every result id is.
    """
    ids, answered = _chunked(result_ids), _chunked(answers["result_id"])
    if _in_step(ids, sent, answered):
        if not unusual.any():
            return None  # the i-th answer is the i-th sent posting's
        named = pc.is_in(ids, value_set=_flat(answered.filter(pa.array(unusual))))
        named = named.to_numpy(zero_copy_only=False)
        involved = np.flatnonzero(named[sent])
        del named
        codes = _flat(pc.dictionary_encode(_take(ids, np.flatnonzero(sent)[involved]))).indices.to_numpy()
        last = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        np.maximum.at(last, codes, involved)
        found = np.arange(len(answered))
        found[involved] = last[codes]
        return found
    backwards = _flat(answered).take(pa.array(np.arange(len(answered) - 1, -1, -1)))
    found = pc.index_in(_take(ids, np.flatnonzero(sent)), value_set=backwards)
    found = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
    return np.where(found >= 0, len(answered) - 1 - found, -1)


def _posting_outcomes(postings: pd.DataFrame,
                      outcomes: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list]:
    """The postings with their outcome and reason, and the same as codes: outcome into OUTCOMES,
    reason into the returned texts. Per posting only a few one-byte codes are held."""
    status, statuses = _encoded(outcomes["status"])
    unknown = set(statuses.to_pylist()) - set(IC_STATUSES) | ({None} if (status < 0).any() else set())
    if unknown:
        raise ValueError(f"unknown IC outcome status(es): {sorted(unknown, key=str)}")
    status = _at(np.asarray([IC_STATUSES.index(text) for text in statuses.to_pylist()], dtype=np.int8),
                 status, 4)  # into IC_STATUSES; 4: no answer
    message, messages = _encoded(outcomes["message"])
    said = [REJECTED if text.strip() == "" else text for text in messages.to_pylist()] + [REJECTED]
    blank = np.asarray([text.strip() == "" for text in messages.to_pylist()] + [True])  # by message
    message = _at(np.arange(len(said) - 1).astype(_code_type(len(said))), message, len(said) - 1)  # into said
    unusual = status != _commonest(status)
    unusual |= message != _commonest(message)

    action = postings["action"]
    sent, skipped = (action == "post").to_numpy(), (action == "skipped").to_numpy()
    found = _last_answers(postings["result_id"], sent, outcomes, unusual)
    del unusual
    kind = np.full(len(postings), 4, dtype=np.int8)
    kind[sent] = status if found is None else _at(status, found, 4)
    outcome = _at(np.asarray([0, 0, 2, 3, 3], dtype=np.int8), kind)  # into OUTCOMES
    np.copyto(outcome, 2, where=skipped)
    np.copyto(outcome, 1, where=(action == "unchanged").to_numpy())

    reason, reasons = _encoded(postings["reason"])
    reason_at, texts = _distinct([*reasons.to_pylist(), WINDOW_CLOSED, NO_ANSWER, "", *said])
    reason_at = reason_at.astype(_code_type(len(texts)))
    fixed = len(reasons)  # then WINDOW_CLOSED, NO_ANSWER, "", and what IC said
    reason = np.where(skipped, _at(reason_at, reason), reason_at[fixed + 2])
    del skipped
    lines = np.flatnonzero(sent & (kind >= 2))  # sent: window closed, rejected, no answer
    if len(lines):
        answer = np.cumsum(sent, dtype=_index_type(len(sent)))[lines] - 1
        answer = answer if found is None else found[answer]
        answered = _at(message, answer, len(said) - 1).astype(np.int64)
        replied = fixed + 3 + answered
        window = kind[lines] == 2  # IC's message says why (closed, or the day it opens), else WINDOW_CLOSED
        said_here = np.select([window & blank[answered], window | (kind[lines] == 3)], [fixed, replied],
                              fixed + 1)
        reason[lines] = reason_at[said_here]
    del sent, kind
    final = postings.assign(outcome=_categorical(*_compact(outcome, pa.array(OUTCOMES, TEXT))),
                            reason=_categorical(*_compact(reason, pa.array(texts, TEXT))))
    return final, outcome, reason, texts


def _decided(numbers: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Where each row's postings start (in row order) and, for each row, the posting that decides
    its outcome: failed > posted > unchanged > skipped, the first such posting of the row; and the
    order that sorts the postings by row (None: they are). Worked out a slice of rows at a time."""
    order = _sorting(numbers)
    if order is not None:
        numbers, outcome = numbers[order], outcome[order]
    new_row = np.ones(len(numbers), dtype=bool)
    np.not_equal(numbers[1:], numbers[:-1], out=new_row[1:])
    position = _index_type(len(numbers))
    starts = np.concatenate([np.flatnonzero(new_row[first: first + AT_ONCE]).astype(position) + first
                             for first in range(0, len(numbers), AT_ONCE)] or [np.empty(0, dtype=position)])
    del new_row
    decider = np.empty(len(starts), dtype=starts.dtype)
    ranks = np.asarray([1, 2, 3, 0], dtype=np.int64)  # by OUTCOMES: failed first, then posted, ...
    for first in range(0, len(starts), AT_ONCE):
        low = int(starts[first])
        high = int(starts[first + AT_ONCE]) if first + AT_ONCE < len(starts) else len(numbers)
        ranked = ranks[outcome[low:high]] * (high - low) + np.arange(high - low)
        best = np.minimum.reduceat(ranked, starts[first: first + AT_ONCE] - low)
        decider[first: first + AT_ONCE] = best % (high - low) + low
    return starts, decider if order is None else order[decider], order


def _rows_match(numbers: np.ndarray, starts: np.ndarray, order: np.ndarray | None, rows: np.ndarray) -> bool:
    """Whether the postings' rows (their numbers at ``starts``, in ``order``) are exactly ``rows``."""
    if len(starts) != len(rows):
        return False
    for first in range(0, len(rows), AT_ONCE):
        at = starts[first: first + AT_ONCE]
        if not np.array_equal(numbers[at if order is None else order[at]], rows[first: first + AT_ONCE]):
            return False
    return True


def _sorting(numbers: np.ndarray) -> np.ndarray | None:
    """None when the numbers are in order already, else the stable order that sorts them."""
    return None if (numbers[1:] >= numbers[:-1]).all() else np.argsort(numbers, kind="stable")


def reconcile(rows: pd.DataFrame, quarantined: pd.DataFrame, postings: pd.DataFrame,
              outcomes: pd.DataFrame) -> Reconciliation:
    """One outcome per export row: failed > posted > unchanged > skipped, with the reason that decided it."""
    final, outcome, reason, reasons = _posting_outcomes(postings, outcomes)
    posting_rows = final["row"].to_numpy(dtype=np.int64)
    starts, decider, by_row = _decided(posting_rows, outcome)
    row_numbers = rows["row"].to_numpy(dtype=np.int64)
    order = _sorting(row_numbers)
    numbers = row_numbers if order is None else row_numbers[order]
    if not _rows_match(posting_rows, starts, by_row, numbers):
        decided = posting_rows[starts if by_row is None else by_row[starts]]
        stray = np.setdiff1d(decided, row_numbers)
        if len(stray):
            raise ReconciliationError(f"postings for rows that are not in the export: {stray.tolist()[:10]}")
        at = np.minimum(np.searchsorted(decided, numbers), max(len(decided) - 1, 0))
        missing = numbers[decided[at] != numbers] if len(decided) else numbers
        if len(missing):
            raise ReconciliationError(f"export rows with no planned posting: {missing.tolist()[:10]}")
        decider = decider[at]

    def as_text(frame: pd.DataFrame, column: str, order: np.ndarray | None) -> pd.Series:
        values = frame[column].reset_index(drop=True).astype("str")
        return values if order is None else values.take(order).reset_index(drop=True)

    outcome, reason = outcome[decider], reason[decider]
    section, student = as_text(rows, "section", order), as_text(rows, "student", order)
    if len(quarantined):
        why, whys = _encoded(quarantined["reason"].astype(str))
        reason_at, reasons = _distinct(reasons + [MALFORMED + text for text in whys.to_pylist()])
        numbers = np.concatenate([numbers, quarantined["row"].to_numpy(dtype=np.int64)])
        outcome = np.concatenate([outcome, np.full(len(quarantined), 2, dtype=outcome.dtype)])
        why = np.where(why >= 0, len(reason_at) - len(whys) + why, -1)
        reason = _at(reason_at, np.concatenate([reason, why]))
        section = pd.concat([section, as_text(quarantined, "section", None)], ignore_index=True)
        student = pd.concat([student, as_text(quarantined, "student", None)], ignore_index=True)
        merged = _sorting(numbers)
        if merged is not None:
            numbers, outcome, reason = numbers[merged], outcome[merged], reason[merged]
            section, student = (values.take(merged).reset_index(drop=True) for values in (section, student))
    result = pd.DataFrame({
        "row": numbers, "section": section, "student": student,
        "outcome": _categorical(*_compact(outcome, pa.array(OUTCOMES, TEXT))),
        "reason": _categorical(*_compact(reason, pa.array(reasons, TEXT))),
    }, copy=False)[ROW_OUTCOME_COLUMNS]
    expected = len(rows) + len(quarantined)
    counts = {name: int(np.count_nonzero(outcome == code)) for code, name in enumerate(OUTCOMES)}
    if sum(counts.values()) != expected or (numbers[1:] == numbers[:-1]).any():
        raise ReconciliationError(
            f"{sum(counts.values())} row outcomes for {expected} export rows "
            f"({len(rows)} parsed, {len(quarantined)} quarantined); row numbers must be distinct"
        )
    return Reconciliation(rows=result, counts=counts, postings=final)


def withheld(postings: pd.DataFrame, refused: pd.DataFrame) -> pd.DataFrame:
    """The answers of the postings not sent because IC refused their lineItem or what it needs
    (``refused``: line_item_id, status, message): each takes its lineItem's status and message, as
    the journal holds IC's answers (result_id, fingerprint, status, message)."""
    held = postings.loc[isin(postings["line_item_id"], refused["line_item_id"]).to_numpy(),
                        ["line_item_id", "result_id", "fingerprint"]]
    held = held.astype({"line_item_id": str, "fingerprint": str})
    return held.merge(refused.astype({"line_item_id": str}), on="line_item_id")[
        ["result_id", "fingerprint", "status", "message"]]


def without_students(texts: pd.Series, students: pd.Series) -> pd.Series:
    """Each text with its student's id, where it stands as a word of its own (in a result's sourcedId,
    in IC's message), replaced by ``<student>``, and email addresses masked
    (:func:`include.privacy.redacted`): what a log line or an email may show of IC's messages.
    Texts repeat (one IC message for a lineItem's every result): each distinct pair is redacted once."""
    pairs = pd.DataFrame({"text": texts.astype(str).to_numpy(), "student": students.astype(str).to_numpy()})
    distinct = pairs.drop_duplicates()
    shown = {(text, student): redacted(text, [student], reference=LOGGED_STUDENT, limit=None,
                                       unknown_people=False)
             for text, student in zip(distinct["text"], distinct["student"], strict=True)}
    return pd.Series([shown[pair] for pair in zip(pairs["text"], pairs["student"], strict=True)],
                     index=texts.index, dtype=object)


def refusals(postings: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """IC's answers other than created / updated, one line per lineItem, status and message (the
    student's id left out, see :func:`without_students`) for the task log: how many results and from
    which export rows, the most results first."""
    refused = outcomes.loc[~outcomes["status"].isin(["created", "updated"]),
                           ["result_id", "status", "message"]]
    sent = postings.loc[isin(postings["result_id"], refused["result_id"]).to_numpy(),
                        ["result_id", "line_item_id", "student", "row"]]
    joined = refused.merge(sent.astype({"line_item_id": str, "student": str}), on="result_id")
    joined["message"] = without_students(joined["message"], joined["student"])
    lines = joined.groupby(["line_item_id", "status", "message"], sort=False)["row"].agg(
        results="size", rows=lambda rows: sorted(rows))
    return lines.reset_index().sort_values("results", ascending=False, kind="stable").reset_index(drop=True)


def _logged_reasons(rec: Reconciliation) -> dict[str, str]:
    """IC's reasons that name their posting's student, as a log line shows them."""
    postings = rec.postings
    answered = postings[((postings["action"] == "post") & (postings["outcome"] != "posted")).to_numpy()]
    shown = without_students(answered["reason"], answered["student"])
    return {reason: text for reason, text in zip(answered["reason"].astype(str), shown, strict=True)
            if reason != text}


def format_reconciliation(rec: Reconciliation, top: int = 5) -> str:
    """A few lines for the task log: counts and the commonest reasons, never a student or a name
    (IC's messages show ``<student>`` for the student they name; the staged report keeps them whole)."""
    total = sum(rec.counts.values())
    lines = [f"grade passback: {total} export rows: "
             + ", ".join(f"{outcome} {rec.counts.get(outcome, 0)}" for outcome in OUTCOMES)]
    logged = _logged_reasons(rec)
    for outcome in ("skipped", "failed"):
        reasons = Counter()
        for reason, count in Counter(rec.rows.loc[rec.rows["outcome"] == outcome, "reason"]).items():
            reasons[logged.get(reason, reason)] += count
        if reasons:
            common = reasons.most_common(top)
            more = len(reasons) - len(common)
            lines.append(f"{outcome} because: " + "; ".join(f"{reason} ({count})" for reason, count in common)
                         + (f"; and {more} other reason(s)" if more else ""))
    return "\n".join(lines)
