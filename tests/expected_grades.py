"""What IC's gradebook must hold after a grade passback of one export file, and which export
rows must be left out and why: the district file's ``grade_passback`` rules applied to the rows
of the file a test dropped, to the synthetic district IC serves (``SyntheticDistrict.records``)
and to what provisioning put in the LMS, written out from README.md ("What a run does" → the
``grades`` task group; "A district" → ``grade_passback``), independently of the code under test.

Nothing here imports ``include.grades``, ``plugins.operators.grades`` or ``include.provisioning``:
it is the spec in executable form, plain Python over plain rows, so a wrong plan cannot make its
own expectation. What provisioning put in the LMS (which IC classes are LMS sections, which IC
terms are LMS grading periods and under which title) comes from ``tests/expected_provisioning.py``,
the same rules applied to the same district.

A result is named at IC by its lineItem and its student (one result per student on a lineItem,
README post step 4); the lineItem by its deterministic sourcedId, ``<IC class>-<IC term>-<task
id>`` (one per section × term × task), whose stored ``class`` and ``gradingPeriod`` must be that
class and term. Nothing else of the product's naming is used.

| reason (a regex, whole text)            | README rule                                                  |
|-----------------------------------------|--------------------------------------------------------------|
| ``malformed: <what>``                   | fetch step 2: malformed rows are quarantined with the reason |
| ``unmapped section``                    | plan step 3: joins each row to the IC section (provisioning) |
| ``student unknown to IC``               | plan step 3: "a known student"                               |
| ``unmapped term``                       | plan step 3: "a mapped term"                                 |
| ``not opted in``                        | plan step 3: "an opted-in section when opt-in is on"         |
| ``window closed``, ``window opens on <day>`` | plan step 3: "an open grading window on the run date"   |
| ``no grade``, ``no task``, ``bad score`` | plan step 3: term / overall tasks, score groups             |
| ``several rows for the same IC result, rows …`` | post step 4: one result per student on a lineItem    |
| ``window closed: <IC>``, ``window opens on <day>: <IC>`` | post step 4: IC refusing for its window     |
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta

from include.config import DistrictConfig, ExportColumns
from tests.expected_provisioning import expected_provisioning, user_uid

# the export's fields (README "A district", grade_passback.columns) in the order of ExportColumns
FIELDS = ("section", "student", "grading_period", "term_percent", "term_score", "course_percent",
          "course_score")
REQUIRED = ("section", "student", "grading_period")
PERCENTS = ("term_percent", "course_percent")

# The reasons, each a regex the run's reason must match whole (README "What a run does", grades).
MALFORMED = "malformed: "
UNMAPPED_SECTION = re.escape("unmapped section")
UNKNOWN_STUDENT = re.escape("student unknown to IC")
UNMAPPED_TERM = re.escape("unmapped term")
NOT_OPTED_IN = re.escape("not opted in")
WINDOW_CLOSED = re.escape("window closed")
NO_GRADE = re.escape("no grade")
NO_TASK = re.escape("no task")
BAD_SCORE = re.escape("bad score")
# README post step 4: "A refusal for the grading window is a skip with IC's message ("window
# closed: …", "window opens on <day>: …")"
IC_WINDOW = r"(window closed|window opens on \d{4}-\d{2}-\d{2}): .+"


def window_opens(day: date) -> str:
    return re.escape(f"window opens on {day.isoformat()}")


def line_item_id(section: str, term: str, task: str) -> str:
    """README post step 4: "one per section × term × task, deterministic sourcedIds"."""
    return f"{section}-{term}-{task}"


@dataclass(frozen=True)
class Grade:
    """One result IC must hold: the student's grade for a task, in a section and term."""

    section: str  # IC class sourcedId (= the LMS section_school_code)
    term: str  # IC academicSession sourcedId
    task: str
    student: str  # IC user sourcedId (1.2)
    percent: float | None
    letter: str | None  # the textScore sent; None: none sent (IC may file one under its score group)

    @property
    def key(self) -> tuple[str, str]:
        return line_item_id(self.section, self.term, self.task), self.student

    def held_by(self, value: tuple[float | None, str | None]) -> bool:
        """Whether IC's (score, textScore) is this grade: the percent, and the letter if one is sent."""
        score, text = value
        return score == self.percent and (self.letter is None or text == self.letter)


@dataclass
class Row:
    """One export row: the results it must put at IC (``grades``), or, when it puts none, the
    reasons (regexes) any one of which is right for leaving it out."""

    number: int
    section: str | None
    student: str | None
    grades: list[Grade] = field(default_factory=list)
    reasons: set[str] = field(default_factory=set)

    def skip_is_right(self, reason) -> bool:
        return not self.grades and isinstance(reason, str) and any(
            re.fullmatch(pattern, reason) for pattern in self.reasons)


@dataclass
class Expected:
    """Every row of the export, by row number; ``refused``: why the file as a whole cannot be read."""

    rows: dict[int, Row] = field(default_factory=dict)
    refused: str | None = None

    def grades(self) -> dict[tuple[str, str], Grade]:
        """Every result the rules put at IC, by (lineItem, student)."""
        return {grade.key: grade for row in self.rows.values() for grade in row.grades}


# -- reading the file ------------------------------------------------------------------------------


def decode(data: bytes) -> str:
    """README fetch step 2: "UTF-8 with or without BOM, UTF-16 with or without BOM, Windows-1252"."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    sample = data[:1024 - 1024 % 2]
    if len(sample) >= 8:  # ASCII text in UTF-16 has a zero byte in every other place
        if sample[1::2].count(0) >= 0.9 * len(sample[1::2]) and not sample[0::2].count(0):
            return data.decode("utf-16-le")
        if sample[0::2].count(0) >= 0.9 * len(sample[0::2]) and not sample[1::2].count(0):
            return data.decode("utf-16-be")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def export_records(data: bytes) -> tuple[list[str], list[tuple[int, list[str]]], bool]:
    """The header, the rows (numbered from 1 after the header; a blank line is no row but keeps
    its number, as "row N" is the file's record N + 1), and whether the file ends with a line break."""
    text = decode(data)
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        return [], [], True
    rows = [(number, record) for number, record in enumerate(records[1:], start=1) if record]
    return records[0], rows, text.endswith(("\n", "\r"))


def _header_key(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split()).casefold()


def _percent(text: str | None) -> tuple[float | None, str | None]:
    """(the grade, the reason it is malformed): a number, an optional "%" after it, not negative;
    README fetch step 2: "non-numeric or negative grades"; "Extra credit above 100% is posted as it is"."""
    if text is None:
        return None, None
    bare = text.removesuffix("%").strip()
    if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", bare):
        return None, f"{MALFORMED}non-numeric grade {re.escape(repr(text))}"
    value = float(bare)
    if value < 0:
        return None, f"{MALFORMED}negative grade {re.escape(repr(text))}"
    return value, None


def _parsed(data: bytes, columns: ExportColumns, expected: Expected) -> dict[int, dict]:
    """README fetch step 2: the rows to consider (by row number, their fields); every malformed row
    goes into ``expected`` as left out with its reasons."""
    header, rows, ends_with_break = export_records(data)
    position: dict[str, int] = {}
    for index, name in enumerate(header):  # headers matched loosely, the first of repeated ones
        position.setdefault(_header_key(name), index)
    found = {name: position[_header_key(getattr(columns, name))] for name in FIELDS
             if _header_key(getattr(columns, name)) in position}
    missing = [name for name in REQUIRED if name not in found]
    if not any(header) or missing or not ({"term_percent", "term_score"} & set(found)):
        # README fetch step 2: "missing required columns fail with the headers found"
        expected.refused = f"missing {missing or 'a term grade column'}; headers found: {header}"
        return {}
    width = len(header)
    last = rows[-1][0] if rows else None
    kept: dict[int, dict] = {}
    for number, record in rows:
        reasons = set()
        if number == last and not ends_with_break:
            # README fetch step 2: "the last row of a file that ends without a line break, as a
            # cut-off file does"
            reasons.add(f"{MALFORMED}.*cut off.*")
        if len(record) < width or any(value.strip() for value in record[width:]):
            # README fetch step 2: "wrong field count" (empty fields after the last header are the
            # trailing commas spreadsheets add)
            reasons.add(f"{MALFORMED}expected {width} fields, got {len(record)}")
        values = {name: (record[found[name]].strip() or None) if name in found and found[name] < len(record)
                  else None for name in FIELDS}
        if reasons:
            expected.rows[number] = Row(number, None, None, reasons=reasons)
            continue
        for name in ("section", "student"):  # README fetch step 2: "blank ids"
            if values[name] is None:
                reasons.add(f"{MALFORMED}blank {name}")
        for name in PERCENTS:
            values[name], why = _percent(values[name])
            if why:
                reasons.add(why)
        if reasons:
            expected.rows[number] = Row(number, values["section"], values["student"], reasons=reasons)
        else:
            kept[number] = values
    # README fetch step 2: "duplicates" (a row the same in every field as an earlier one) ...
    first: dict[tuple, int] = {}
    for number, values in list(kept.items()):
        same = first.setdefault(tuple(values[name] for name in FIELDS), number)
        if same != number:
            expected.rows[number] = Row(number, values["section"], values["student"],
                                        reasons={f"{MALFORMED}duplicate of row {same}"})
            del kept[number]
    # ... and "conflicting rows": other grades for the same student, section and grading period
    by_grade = defaultdict(list)
    for number, values in kept.items():
        by_grade[(values["section"], values["student"], values["grading_period"] or "")].append(number)
    for numbers in by_grade.values():
        if len(numbers) > 1:
            listed = re.escape(", ".join(map(str, numbers)))
            for number in numbers:
                values = kept.pop(number)
                expected.rows[number] = Row(number, values["section"], values["student"],
                                            reasons={f"{MALFORMED}conflicting .*rows {listed}"})
    return kept


# -- the rules -------------------------------------------------------------------------------


def _ref(value) -> str | None:
    return value.get("sourcedId") if isinstance(value, dict) else None


def _window(term: str, sessions: dict[str, dict], config, run_date: date) -> str | None:
    """README plan step 3: "an open grading window on the run date (else skipped, "window closed"
    or "window opens on <day>")"; README "A district": ``windows`` per IC term, else ``window_rule``
    around the term's end."""
    listed = config.windows.get(term)
    if listed is not None:
        opens, closes = listed.opens, listed.closes
    else:
        end = date.fromisoformat(sessions[term]["endDate"])
        opens = end - timedelta(days=config.window_rule.opens_days_before_end)
        closes = end + timedelta(days=config.window_rule.closes_days_after_end)
    if run_date < opens:
        return window_opens(opens)
    if run_date > closes:
        return WINDOW_CLOSED
    return None


def _graded(percent: float | None, letter: str | None, task: str, config) -> tuple[Grade | None, str | None]:
    """(percent, letter sent) for a task, or why none: README plan step 3 "the percent always, the
    letter too when `letter_grades` is on (a percent alone is mapped through the task's score
    group)"; README "A district": ``score_groups`` (a percent at or above ``min_percent`` earns the
    score), ``task_score_groups``."""
    if percent is None and letter is None:
        return None, NO_GRADE
    bands = config.score_groups.get(config.task_score_groups.get(task) or "")
    if letter is not None and (config.letter_grades or percent is None):
        if bands is None:
            return (percent, letter), None
        spelled = {band.score.strip().casefold(): band.score for band in bands}
        canonical = spelled.get(letter.strip().casefold())
        return ((percent, canonical), None) if canonical is not None else (None, BAD_SCORE)
    if bands is None:
        return (percent, None), None
    reached = [band for band in bands if band.min_percent <= percent]
    if not reached:
        return None, BAD_SCORE  # a percent below every score of the group: IC cannot file it
    best = max(reached, key=lambda band: band.min_percent)
    return (percent, best.score if config.letter_grades else None), None


def expected_grades(data: bytes, district, config: DistrictConfig, run_date: date, *,
                    opt_in: set[str] | None = None, version: str = "1.2",
                    existing_periods: dict[str, str] | None = None) -> Expected:
    """Apply the district file's grade-passback rules to an export file, on ``run_date``;
    ``existing_periods``: the LMS's titles (by id) of the grading periods ``terms.map`` names."""
    passback = config.grade_passback
    terms = config.provisioning.terms
    if version != "1.2":
        raise NotImplementedError("OneRoster 1.1: no scenario uses it yet; write its rules before one does")
    if passback.mapping_csv or terms.consolidate_year:
        raise NotImplementedError("mapping_csv / consolidate_year: write their rules first")
    if passback.teacher_opt_in and opt_in is None:
        raise ValueError("teacher_opt_in is on: give the opted-in IC class sourcedIds")
    expected = Expected()
    kept = _parsed(data, passback.columns, expected)

    # What provisioning put in the LMS (README DESIGN: "Grade passback needs the section and term
    # mapping that provisioning keeps"): sections are IC classes, grading periods IC terms.
    provisioned = expected_provisioning(district, config.provisioning)
    # README "Terms and grading periods": a term's grading period is the one created for it, titled
    # by the district file's template, or the existing one the map names, titled as the LMS titles it
    period_title = {**provisioned.period_titles, **{
        term: (existing_periods or {})[period] for term, period in provisioned.mapped_terms.items()}}
    sessions = {session["sourcedId"]: session for session in district.records("academicSessions", "1.2")}
    classes = {klass["sourcedId"]: klass for klass in district.records("classes", "1.2")}
    students = {user_uid(user): user["sourcedId"] for user in district.records("users", "1.2")}
    tasks = [*((task, "term") for task in passback.term_task_ids),
             *((task, "overall") for task in passback.overall_task_ids)]

    for number, values in sorted(kept.items()):
        section, uid, period = values["section"], values["student"], values["grading_period"]
        row = expected.rows[number] = Row(number, section, uid)
        student = students.get(uid)  # the export names people by the LMS's id: IC's 1.1 id
        if section not in provisioned.present["section"]:
            row.reasons.add(UNMAPPED_SECTION)
        if student is None:
            row.reasons.add(UNKNOWN_STUDENT)
        if UNMAPPED_SECTION in row.reasons:
            continue
        class_terms = [_ref(term) for term in classes[section].get("terms") or []]
        # README plan step 3: the row's grading period is the LMS grading period of one of its class's
        # terms, named as IC titles it (README is silent on case: letters are compared without it)
        named = [term for term in class_terms if term in period_title
                 and period is not None and period_title[term].strip().casefold() == period.casefold()]
        assert len(named) <= 1, f"row {number}: a grading period names two terms of its class: write the rule"
        if not named:
            row.reasons.add(UNMAPPED_TERM)
        if passback.teacher_opt_in and section not in opt_in:
            row.reasons.add(NOT_OPTED_IN)
        window = _window(named[0], sessions, passback, run_date) if named else None
        if window:
            row.reasons.add(window)
        term_grade = values["term_percent"], values["term_score"]
        course_grade = values["course_percent"], values["course_score"]
        # README plan step 3: "term tasks post the term-to-date grade and overall tasks the
        # course-to-date grade (a single-term course posts the term grade for both)": a class in a
        # single term whose row has no course grade takes its term grade (a course grade given is kept)
        single_term = len(class_terms) == 1
        overall_grade = term_grade if single_term and course_grade == (None, None) else course_grade
        if (term_grade != (None, None) or course_grade != (None, None)) and not any(
            (term_grade if kind == "term" else overall_grade) != (None, None) for _, kind in tasks
        ):
            row.reasons.add(NO_TASK)
        if row.reasons:
            continue
        for task, kind in tasks:
            grade, why = _graded(*(term_grade if kind == "term" else overall_grade), task, passback)
            if why:
                row.reasons.add(why)
            else:
                row.grades.append(Grade(section, named[0], task, student, *grade))

    # README post step 4: one result per student on a lineItem: rows that would write the same
    # result leave it to neither
    writers = defaultdict(list)
    for row in expected.rows.values():
        for grade in row.grades:
            writers[grade.key].append(row.number)
    for key, numbers in writers.items():
        if len(numbers) > 1:
            for number in numbers:
                row = expected.rows[number]
                row.grades = [grade for grade in row.grades if grade.key != key]
                listed = ", ".join(map(str, numbers))
                row.reasons.add(re.escape(f"several rows for the same IC result, rows {listed}"))
    return expected


# -- the far side ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Held:
    """A result IC stores: its value and the class and term of its lineItem."""

    value: tuple[float | None, str | None]
    line_item: tuple[str | None, str | None]  # (class, gradingPeriod) as IC stores the lineItem


def held_by_ic(gradebook) -> dict[tuple[str, str], Held]:
    """What IC's gradebook stores, by (lineItem sourcedId, student sourcedId)."""
    line_items = gradebook.stored("lineItems")
    held = {}
    for result in gradebook.stored("results").values():
        item_id = _ref(result.get("lineItem"))
        item = line_items.get(item_id, {})
        score = result.get("score")
        held[(item_id, _ref(result.get("student")))] = Held(
            (None if score is None else float(score), result.get("textScore")),
            (_ref(item.get("class")), _ref(item.get("gradingPeriod"))),
        )
    return held


def at_ic(grade: Grade, held: dict[tuple[str, str], Held]) -> bool:
    """IC holds the grade's result, with its value, on a lineItem of its class and term."""
    found = held.get(grade.key)
    return found is not None and grade.held_by(found.value) and found.line_item == (grade.section, grade.term)
