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
import pyarrow as pa
import pyarrow.compute as pc

from include.config import GradePassback
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


def _coded(values: pd.Series) -> pd.Series:
    """``_as_object`` of a column of a few distinct values: each distinct value becomes one
    Python object, shared by its rows (a column of millions of rows is then pointers)."""
    codes, uniques = pd.factorize(values)
    objects = np.asarray(list(uniques) + [None], dtype=object)
    return pd.Series(objects[codes], index=values.index, dtype=object)


def _joined(*parts: pd.Series | pa.ChunkedArray) -> pa.ChunkedArray:
    """Text columns joined with ``-`` by arrow (an id per posting, millions of them)."""
    arrays = [
        pc.cast(part if isinstance(part, pa.ChunkedArray) else pa.array(part, from_pandas=True), pa.string())
        for part in parts
    ]
    joined = pc.binary_join_element_wise(*arrays, pa.scalar("-", pa.string()))
    return joined if isinstance(joined, pa.ChunkedArray) else pa.chunked_array([joined], pa.string())


def _strings(values: pa.Array | pa.ChunkedArray, index: pd.Index) -> pd.Series:
    """Arrow text as an object column (``None`` for missing), the Python strings made in C."""
    return pd.Series(values.to_numpy(zero_copy_only=False), index=index, dtype=object)


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
    """The export rows with their class, school, IC student and term, and the first row-level reason.

    A row's term depends only on its grading period and class, so terms, school exclusions
    and windows are worked out once per distinct (grading period, class), not per row.
    """
    if rows["row"].duplicated().any():
        raise ValueError("export rows must have distinct row numbers")
    frame = rows.reset_index(drop=True)
    classes = context.classes.drop_duplicates("sourced_id").reset_index(drop=True)
    class_ids = classes["sourced_id"].astype(str)
    section = frame["section"].astype(str)
    known = (isin(section, context.sections["key"].astype(str)) & isin(section, class_ids)).to_numpy()
    class_at = np.where(known, positions(section, class_ids), -1)
    schools = _as_object(classes["school_sourced_id"])
    frame = frame.assign(school=take(schools, class_at, frame.index))
    students = user_key(context.users)
    student_at = positions(frame["student"].astype(str), students)
    frame["student_id"] = _as_object(take(context.users["sourced_id"].astype(str), student_at, frame.index))

    period_codes, periods = pd.factorize(frame["grading_period"])
    pair_codes, pairs = pd.factorize((period_codes.astype(np.int64) + 1) * (len(classes) + 1) + class_at + 1)
    pair_period, pair_class = np.divmod(pairs, len(classes) + 1)
    pair_class = pair_class - 1
    per_pair = pd.DataFrame({
        "row": np.arange(len(pairs)),
        "grading_period": np.asarray(list(periods) + [None], dtype=object)[pair_period - 1],
        "school": take(schools, pair_class, pd.RangeIndex(len(pairs))),
        "class_terms": take(classes["term_sourced_ids"], pair_class, pd.RangeIndex(len(pairs))),
    })
    pair_terms, pair_excluded = _resolve_terms(per_pair, context)
    frame["term"] = pd.Series(pair_terms.to_numpy(dtype=object)[pair_codes], index=frame.index, dtype=object)
    excluded = pair_excluded.to_numpy(dtype=bool)[pair_codes]
    closed = _closed(pair_terms, context).to_numpy(dtype=bool)[pair_codes]
    opted_out = np.zeros(len(frame), dtype=bool)
    if context.opt_in is not None:
        opted_out = ~isin(section, context.opt_in).to_numpy()

    config = context.config
    parents, _ = flatten(classes["term_sourced_ids"])
    class_single = np.bincount(parents, minlength=len(classes)) == 1
    single_term = (class_at >= 0) & (class_single[np.maximum(class_at, 0)] if len(classes) else False)
    term_grade = (frame["term_percent"].notna() | frame["term_score"].notna()).to_numpy()
    course_grade = (frame["course_percent"].notna() | frame["course_score"].notna()).to_numpy()
    gradable = (term_grade & bool(config.term_task_ids)) | (
        (course_grade | (single_term & term_grade)) & bool(config.overall_task_ids)
    )
    no_task = ~gradable & (term_grade | course_grade)

    checks = [
        (~known, UNMAPPED_SECTION),
        (frame["student_id"].isna().to_numpy(), UNKNOWN_STUDENT),
        (excluded, SCHOOL_NOT_INCLUDED),
        (frame["term"].isna().to_numpy(), UNMAPPED_TERM),
        (opted_out, NOT_OPTED_IN),
        (closed, WINDOW_CLOSED),
        (no_task, NO_TASK),
    ]
    reasons = np.asarray(["", *(reason for _, reason in checks)], dtype=object)
    first = np.select([mask for mask, _ in checks], list(range(1, len(checks) + 1)), default=0)
    frame["reason"] = pd.Series(reasons[first], index=frame.index, dtype=object)
    frame["single_term"] = single_term
    return frame


# -- grades per task --------------------------------------------------------------------------


def _task_postings(frame: pd.DataFrame, config: GradePassback) -> pd.DataFrame:
    """One posting per (row × configured task), with the grade that task takes from the row."""
    tasks = [(task, "term") for task in config.term_task_ids]
    tasks += [(task, "overall") for task in config.overall_task_ids]
    columns = ["row", "section", "school", "term", "student_id", "term_percent", "term_score",
               "course_percent", "course_score", "single_term"]
    postings = frame[columns].take(np.repeat(np.arange(len(frame)), len(tasks))).reset_index(drop=True)
    for position, column in enumerate(("task_id", "task_kind")):
        values = np.tile(np.asarray([task[position] for task in tasks], dtype=object), len(frame))
        postings[column] = pd.Series(values, dtype=object, copy=False)
    overall = postings["task_kind"] == "overall"
    no_course = postings["course_percent"].isna() & postings["course_score"].isna()
    from_term = ~overall | (postings["single_term"] & no_course)
    percent = postings["term_percent"].where(from_term, postings["course_percent"])
    postings["percent"] = percent.astype("float64")
    postings["given_score"] = _coded(postings["term_score"].where(from_term, postings["course_score"]))
    return postings


def _per_value(values: pd.Series, rule) -> pd.Series:
    """``rule`` applied to each distinct value (missing ones included, as None), then spread to
    the rows: a letter grade or a task id repeats over millions of postings."""
    codes, uniques = pd.factorize(values)
    answers = np.asarray([rule(value) for value in uniques] + [rule(None)], dtype=object)
    return pd.Series(answers[codes], index=values.index, dtype=object)


def _scores(postings: pd.DataFrame, config: GradePassback) -> pd.DataFrame:
    """The textScore sent and whether the grade fits the task's score group.

    IC files a percent alone under the group's band with the highest minimum not above
    it and refuses a percent below every band or a score outside the group, so those are
    caught here instead of failing at IC.
    """
    percent, given = postings["percent"], postings["given_score"]
    has_percent, has_score = percent.notna(), given.notna()
    send_given = (has_score & (config.letter_grades | ~has_percent)).to_numpy()
    group = _per_value(postings["task_id"], config.task_score_groups.get)
    score = given.where(send_given, None).to_numpy(dtype=object, copy=True)
    bad = np.zeros(len(postings), dtype=bool)
    group_values = group.to_numpy(dtype=object)
    for name, bands in config.score_groups.items():
        in_group = group_values == name
        ordered = sorted(bands, key=lambda band: band.min_percent)
        spelled = {band.score.strip().casefold(): band.score for band in ordered}
        canonical = _per_value(given, lambda value, spelled=spelled: (
            spelled.get(str(value).strip().casefold()) if value is not None else spelled.get(""))).to_numpy()
        listed = in_group & send_given
        score[listed] = canonical[listed]
        bad[listed] = pd.isna(canonical[listed])
        derived = in_group & (has_percent.to_numpy() & ~send_given)
        minimums = [band.min_percent for band in ordered]
        band = np.searchsorted(minimums, percent.to_numpy()[derived], side="right") - 1
        bad[derived] = band < 0
        if config.letter_grades:
            names = np.array([b.score for b in ordered] + [None], dtype=object)
            score[derived] = names[np.where(band < 0, -1, band)]
    def column(values: np.ndarray) -> pd.Series:
        return pd.Series(values, index=postings.index, dtype=object, copy=False)

    return pd.DataFrame({"score": column(score), "score_group": column(group_values), "bad": bad},
                        index=postings.index)


def _fingerprint(percent: pd.Series, score: pd.Series) -> pd.Series:
    """The value IC holds, as text: equal text means nothing to send. Made once per distinct
    (percent, score)."""
    percent_codes, percents = pd.factorize(percent)
    score_codes, scores = pd.factorize(score)
    numbers = [""] + [repr(float(value)) for value in percents]
    texts = [""] + [str(value) for value in scores]
    pair_codes, pairs = pd.factorize((percent_codes.astype(np.int64) + 1) * len(texts) + score_codes + 1)
    number_at, text_at = np.divmod(pairs, len(texts))
    values = np.asarray([f"{numbers[n]}|{texts[t]}" for n, t in zip(number_at, text_at, strict=True)] + [""],
                        dtype=object)
    return pd.Series(values[pair_codes], index=percent.index, dtype=object)


def _result_codes(postings: pd.DataFrame, result_ids: pa.ChunkedArray) -> np.ndarray:
    """A number per distinct result id: from the codes of its parts when no section, term or
    student id holds a ``-`` (the parts then spell the id one way only), else from the text."""
    parts = [pd.factorize(postings[column]) for column in ("section", "term", "task_id", "student_id")]
    texts = [pd.Series(np.asarray(uniques, dtype=object)) for _, uniques in (parts[0], parts[1], parts[3])]
    if any(text.astype(str).str.contains("-", regex=False).any() for text in texts):
        return pc.dictionary_encode(result_ids).combine_chunks().indices.to_numpy(zero_copy_only=False)
    combined = np.zeros(len(postings), dtype=np.int64)
    for codes, uniques in parts:
        combined = pd.factorize(combined * (len(uniques) + 1) + codes + 1)[0].astype(np.int64)
    return combined


def _same_result(postings: pd.DataFrame, result_ids: pa.ChunkedArray) -> pd.Series:
    """The reason for results that several rows would write (two LMS periods mapped to one IC term)."""
    live = (postings["action"] != "skipped").to_numpy()
    codes = _result_codes(postings, result_ids)
    counts = np.bincount(codes[live], minlength=int(codes.max()) + 1 if len(codes) else 0)
    clashing = live & (counts[codes] > 1) if len(codes) else live
    clash = pd.DataFrame({
        "result_id": _strings(result_ids.filter(pa.array(clashing)), postings.index[clashing]),
        "row": postings["row"].to_numpy()[clashing],
    })
    rows = clash.groupby("result_id")["row"].agg(lambda numbers: ", ".join(map(str, sorted(set(numbers)))))
    return (f"{SAME_RESULT}, rows " + clash["result_id"].map(rows).astype(str)).reindex(postings.index)


def plan_postings(rows: pd.DataFrame, context: GradeContext) -> pd.DataFrame:
    """One posting per (export row × IC grading task), or one skipped line for a row that yields none."""
    frame = _resolve_rows(rows, context)
    config = context.config
    held = frame[(frame["reason"] != "").to_numpy()]
    postings = _task_postings(frame[(frame["reason"] == "").to_numpy()], config)
    del frame
    scored = _scores(postings, config)
    postings["score"], postings["score_group"] = scored["score"], scored["score_group"]
    line_items = _joined(postings["section"], postings["term"], postings["task_id"])
    result_ids = _joined(line_items, postings["student_id"])
    no_grade = (postings["percent"].isna() & postings["given_score"].isna()).to_numpy()
    reason = np.select([no_grade, scored["bad"].to_numpy()], [NO_GRADE, BAD_SCORE], "")
    postings["reason"] = _coded(pd.Series(reason, dtype=object))
    postings["action"] = _coded(pd.Series(np.where(reason == "", "post", "skipped"), dtype=object))
    same = _same_result(postings, result_ids)
    postings["reason"] = postings["reason"].where(same.isna(), same)
    postings["action"] = postings["action"].where(same.isna(), "skipped")
    skipped = (postings["action"] == "skipped").to_numpy()
    postings["fingerprint"] = _fingerprint(postings["percent"], postings["score"]).where(~skipped, "")
    posted = context.posted.iloc[::-1]  # the last posting of a result counts
    previous = take(posted["fingerprint"].astype(object), positions(_strings(result_ids, postings.index),
                                                                     posted["result_id"]), postings.index)
    unchanged = (postings["action"] == "post").to_numpy() & (previous == postings["fingerprint"]).to_numpy()
    postings["action"] = postings["action"].mask(unchanged, "unchanged")
    return _assemble(held, postings, line_items, result_ids)


def _objects(values) -> np.ndarray:
    """A column as distinct Python objects and codes into them (``None`` for missing, last)."""
    codes, uniques = pd.factorize(values)
    return codes, np.asarray(list(np.asarray(uniques, dtype=object)) + [None], dtype=object)


def _column(left, right, order: np.ndarray) -> pd.Series:
    """``left`` then ``right`` in ``order`` as an object column whose repeated values share one
    Python object each."""
    left_codes, left_objects = _objects(left)
    right_codes, right_objects = _objects(right)
    objects = np.concatenate([left_objects[:-1], right_objects])
    missing = len(objects) - 1
    codes = np.concatenate([np.where(left_codes >= 0, left_codes, missing),
                            np.where(right_codes >= 0, right_codes + len(left_objects) - 1, missing)])
    return pd.Series(objects[codes[order]], dtype=object, copy=False)


def _assemble(held: pd.DataFrame, postings: pd.DataFrame, line_items, result_ids) -> pd.DataFrame:
    """Row skips and postings in one table, by row and then term before overall task, built a
    column at a time in that order; the text columns are Python objects, as always."""
    kind_order = {"": 0, "term": 1, "overall": 2}
    kinds = np.concatenate([np.zeros(len(held), dtype=np.int64),
                            postings["task_kind"].map(kind_order).to_numpy(dtype=np.int64)])
    row_numbers = np.concatenate([held["row"].to_numpy(dtype=np.int64),
                                  postings["row"].to_numpy(dtype=np.int64)])
    order = np.lexsort((kinds, row_numbers))
    skipped = {
        "section": held["section"], "school": held["school"], "term": held["term"], "task_id": "",
        "task_kind": "", "student": held["student_id"], "line_item_id": None, "result_id": None,
        "score": None, "score_group": None, "fingerprint": "", "action": "skipped", "reason": held["reason"],
    }
    sent = postings.rename(columns={"student_id": "student"})
    columns = {"row": pd.Series(row_numbers[order], dtype="int64", copy=False)}
    for column in POSTING_COLUMNS[1:]:
        if column == "percent":
            percent = np.concatenate([np.full(len(held), np.nan), sent["percent"].to_numpy(np.float64)])
            columns[column] = pd.Series(percent[order], dtype="float64", copy=False)
        elif column == "result_id":
            ids = pa.chunked_array([pa.nulls(len(held), pa.string()), *result_ids.chunks], pa.string())
            ids = ids.take(pa.array(order)).to_numpy(zero_copy_only=False)
            columns[column] = pd.Series(ids, dtype=object, copy=False)
        else:
            left = skipped[column]
            left = pd.Series([left] * len(held), dtype=object) if not isinstance(left, pd.Series) else left
            right = pd.Series(line_items.to_pandas().array) if column == "line_item_id" else sent[column]
            columns[column] = _column(left, right, order)
    return pd.DataFrame(columns, copy=False)[POSTING_COLUMNS]


# -- IC's answers back to rows ---------------------------------------------------------------------


def _posting_outcomes(postings: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    unknown = set(outcomes["status"]) - set(IC_STATUSES)
    if unknown:
        raise ValueError(f"unknown IC outcome status(es): {sorted(unknown)}")
    answers = outcomes.iloc[::-1]  # the last answer for a result counts
    action = postings["action"].to_numpy(dtype=object)
    sent = action == "post"
    at = np.where(sent, positions(postings["result_id"], answers["result_id"]), -1)
    status = take(answers["status"].astype(object), at, postings.index).to_numpy(dtype=object)
    messages = answers["message"].astype(object)
    blank = (messages.isna() | (messages.where(messages.notna(), "").astype(str).str.strip() == "")).to_numpy()
    messages = messages.where(~blank, "rejected by IC").to_numpy(dtype=object)
    message = np.where(at >= 0, messages[np.maximum(at, 0)] if len(messages) else None, "rejected by IC")
    accepted = (status == "created") | (status == "updated")
    closed, rejected = status == WINDOW_CLOSED, status == "rejected"
    outcome = np.select([action == "unchanged", action == "skipped", accepted, closed, rejected],
                        ["unchanged", "skipped", "posted", "skipped", "failed"], default="failed")
    reason = np.select([action == "skipped", closed, rejected, sent & pd.isna(status)],
                       [postings["reason"].to_numpy(dtype=object), WINDOW_CLOSED, message, NO_ANSWER],
                       default="")
    return postings.assign(outcome=_coded(pd.Series(outcome, dtype=object)),
                           reason=pd.Series(reason, index=postings.index, dtype=object))


def reconcile(rows: pd.DataFrame, quarantined: pd.DataFrame, postings: pd.DataFrame,
              outcomes: pd.DataFrame) -> Reconciliation:
    """One outcome per export row: failed > posted > unchanged > skipped, with the reason that decided it."""
    final = _posting_outcomes(postings, outcomes)
    rank = {"failed": 0, "posted": 1, "unchanged": 2, "skipped": 3}
    numbers = final["row"].to_numpy(dtype=np.int64)
    order = np.lexsort((final["outcome"].map(rank).to_numpy(dtype=np.int64), numbers))
    first = order[np.r_[True, numbers[order][1:] != numbers[order][:-1]]] if len(order) else order
    decided = pd.Index(numbers[first])
    row_numbers = rows["row"].to_numpy(dtype=np.int64)
    stray = np.setdiff1d(decided.to_numpy(), row_numbers)
    if len(stray):
        raise ReconciliationError(
            f"postings for rows that are not in the export: {sorted(stray.tolist())[:10]}"
        )
    at = decided.get_indexer(row_numbers)
    if (at < 0).any():
        missing = sorted(row_numbers[at < 0].tolist())
        raise ReconciliationError(f"export rows with no planned posting: {missing[:10]}")
    answered = pd.DataFrame({
        "row": row_numbers,
        "section": rows["section"].astype(object).to_numpy(),
        "student": rows["student"].astype(object).to_numpy(),
        "outcome": final["outcome"].to_numpy(dtype=object)[first][at],
        "reason": final["reason"].to_numpy(dtype=object)[first][at],
    })
    kept_aside = quarantined[["row", "section", "student"]].assign(
        outcome="skipped", reason=MALFORMED + quarantined["reason"].astype(str)
    )
    parts = [part for part in (answered, kept_aside) if not part.empty] or [answered]
    result = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    result = result.astype(
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
