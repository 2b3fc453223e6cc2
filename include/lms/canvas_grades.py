"""Canvas's final grades as grade rows: a course's student enrollments, in the grade export's shape.

Pure functions, one job: what Canvas's Enrollments API says of one course's students (their
``grades``, for the whole course and for each grading period of the course's term) becomes the rows
:func:`include.grades.plan.plan_postings` plans from, the same fields a Schoology export row has
(:data:`include.grades.export.ROW_COLUMNS`), so both LMSs' grades go through one plan, one post and
one reconciliation. No HTTP (:class:`plugins.hooks.canvas.CanvasHook` reads the lists), no Airflow.

- A row per (student, grading period of the course's term), its term grade the period's and its
  course grade the whole course's; a course whose term has no grading periods gives one row per
  student, named after the course's SIS term (the IC term it was provisioned in), its term and course
  grades both the whole course's. A course in no SIS term (a class of several IC terms goes into
  Canvas's default term) without grading periods names no IC term: its students' rows are kept
  aside with the reason, never guessed into a term.
- The grade is the score the district file chooses (``current``: graded work only; ``final``:
  ungraded work as zero) with its letter grade when the course has a grading scheme; a teacher's final
  grade override wins over both. Unposted scores (hidden from students) are never read.
- Students are named by their SIS user id (IC's id). An enrollment with none was made in Canvas for
  someone IC does not know: it is counted, not passed back. A student in several sections of a course
  has one set of grades (Canvas grades per course): one row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from include.lms.target import SectionGrades

SCORES = ("current", "final")
NO_TERM = ("its Canvas course is in no SIS term (a class of several IC terms) and has no grading periods, so "
           "its grades name no IC term: give the course's term grading periods, titled as IC's terms or "
           "mapped in the district's mapping_csv")
NO_COURSE = "no Canvas course has this class's SIS id (deleted or its SIS id changed in Canvas?): its grades cannot be read"
NOT_A_NUMBER = "Canvas gave a score that is not a number: "


@dataclass(frozen=True)
class CourseGrades:
    """What Canvas lists for one course: its SIS term, its term's grading periods and its student
    enrollments, for the whole course and per grading period (by the period's Canvas id)."""

    course: str  # the course's SIS id: the IC class's sourcedId
    term: str | None  # the course's SIS term id; None: Canvas's default term or a term made in Canvas
    grading_periods: Sequence[dict[str, Any]] = ()
    whole: Sequence[dict[str, Any]] = ()
    by_period: dict[int, Sequence[dict[str, Any]]] = field(default_factory=dict)
    assignment_groups: Sequence[dict[str, Any]] | None = None  # with their assignments; None: not read
    submissions: Sequence[dict[str, Any]] = ()  # the course's students' submissions (``for_students``)


def _number(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    if math.isnan(number):
        return None
    return number


def _grade(enrollment: dict[str, Any] | None, score: str) -> tuple[float | None, str | None]:
    """(percent, letter) of an enrollment's ``grades``: the override when the teacher set one."""
    grades = (enrollment or {}).get("grades") or {}
    if grades.get("override_score") is not None or grades.get("override_grade"):
        return _number(grades.get("override_score")), grades.get("override_grade") or None
    return _number(grades.get(f"{score}_score")), grades.get(f"{score}_grade") or None


def _sis_user_id(record: dict[str, Any]) -> str | None:
    """The SIS id of the student an enrollment or submission is about (its own field, else its
    ``user``'s); None for someone made in Canvas."""
    student = record.get("sis_user_id") or (record.get("user") or {}).get("sis_user_id")
    return str(student) if student else None


def _by_student(enrollments: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Student SIS id -> the first enrollment of the student (one per section: the same grades)."""
    found: dict[str, dict[str, Any]] = {}
    for enrollment in enrollments:
        student = _sis_user_id(enrollment)
        if student:
            found.setdefault(student, enrollment)
    return found


def _made_in_canvas(enrollments: Sequence[dict[str, Any]]) -> int:
    """Students listed without a SIS id: people made in Canvas, not IC's."""
    return len({enrollment.get("user_id") for enrollment in enrollments if not _sis_user_id(enrollment)})


def course_rows(course: CourseGrades, score: str = "current") -> SectionGrades:
    """The grade rows of one course (see the module's docstring), students in SIS-id order and each
    student's periods in the order they start."""
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, not {score!r}")
    students = _by_student(course.whole)
    made = _made_in_canvas(course.whole)
    periods = sorted(course.grading_periods, key=lambda period: (str(period.get("start_date") or ""),
                                                                  int(period["id"])))
    per_period = {int(period["id"]): _by_student(course.by_period.get(int(period["id"]), ()))
                  for period in periods}
    rows: list[tuple] = []
    kept_aside: list[tuple[str, str | None, str]] = []
    for student in sorted(students):
        if not periods and course.term is None:
            kept_aside.append((course.course, student, NO_TERM))
            continue
        try:
            course_percent, course_letter = _grade(students[student], score)
            if not periods:
                rows.append((course.course, student, course.term, course_percent, course_letter,
                             course_percent, course_letter))
                continue
            graded = [(_grade(per_period[int(period["id"])].get(student), score), period) for period in periods]
        except (TypeError, ValueError) as error:
            kept_aside.append((course.course, student, f"{NOT_A_NUMBER}{error}"))
            continue
        rows += [(course.course, student, str(period.get("title") or period["id"]), term_percent, term_letter,
                  course_percent, course_letter) for (term_percent, term_letter), period in graded]
    assignments = [] if course.assignment_groups is None else assignment_rows(course, students)
    return SectionGrades(rows=rows, kept_aside=kept_aside, made_in_lms=made, assignment_rows=assignments)


def _assignment_fields(assignment: dict[str, Any], group: dict[str, Any]) -> tuple:
    """(assignment, title, category, category_title, points_possible, assigned_at, due_at, published,
    counted) of an assignment and its group."""
    points = assignment.get("points_possible")
    return (str(assignment["id"]), str(assignment.get("name") or ""), str(group["id"]), str(group.get("name") or ""),
            None if points is None else float(points), assignment.get("unlock_at") or assignment.get("created_at"),
            assignment.get("due_at"), bool(assignment.get("published", True)),
            not assignment.get("omit_from_final_grade", False))


def assignment_rows(course: CourseGrades, students: dict[str, dict[str, Any]]) -> list[tuple]:
    """The course's assignment rows (:data:`include.grades.assignments.ASSIGNMENT_FIELDS`), by
    assignment and then student: a row per submission of an active student (``students``: their
    enrollments by SIS id) to a published assignment, and one, with no student, per unpublished
    assignment (it has none)."""
    assignments = {int(assignment["id"]): (assignment, group) for group in course.assignment_groups or ()
                   for assignment in group.get("assignments") or ()
                   if assignment.get("workflow_state") != "deleted"}
    sis_of = {enrollment.get("user_id"): student for student, enrollment in students.items()}
    rows = [(course.course, None, *_assignment_fields(assignment, group), None, False, False, False, False, False)
            for _, (assignment, group) in sorted(assignments.items())
            if not assignment.get("published", True)]
    for submission in course.submissions:
        found = assignments.get(int(submission["assignment_id"]))
        student = _sis_user_id(submission) or sis_of.get(submission.get("user_id"))
        if found is None or student not in students:
            continue  # a deleted assignment's, or someone not IC's or no longer active in the course
        score = submission.get("score")
        rows.append((course.course, str(student), *_assignment_fields(*found),
                     None if score is None else float(score), bool(submission.get("excused")),
                     bool(submission.get("missing")), bool(submission.get("late")),
                     submission.get("workflow_state") == "graded",
                     submission.get("posted_at") is not None))
    return sorted(rows, key=lambda row: (row[2], row[1] or ""))


def missing_course(course: str) -> SectionGrades:
    """A provisioned class whose Canvas course is gone: one line kept aside for it."""
    return SectionGrades(rows=[], kept_aside=[(course, None, NO_COURSE)], made_in_lms=0)
