"""Canvas's enrollments and submissions (as its API lists them) as grade rows, and assignment rows as IC
postings: the expected values written out by hand from the README's rules ("Grades from Canvas",
"Assignment scores from Canvas"), never from the code under test."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from include.config import GradePassback
from include.grades.assignments import ASSIGNMENT_COLUMNS, plan_assignment_postings
from include.grades.plan import GradeContext
from include.lms.canvas_grades import NO_COURSE, NO_TERM, CourseGrades, course_rows, missing_course


def student(sis_id: str | None, canvas_id: int, **grades) -> dict:
    return {"id": canvas_id * 10, "user_id": canvas_id, "type": "StudentEnrollment", "sis_user_id": sis_id,
            "user": {"id": canvas_id, "sis_user_id": sis_id},
            "grades": {"current_score": None, "final_score": None, "current_grade": None, "final_grade": None,
                       **grades}}


S1 = {"id": 7, "title": "Semester 1", "start_date": "2026-08-15T00:00:00Z", "end_date": "2026-12-20T00:00:00Z"}
S2 = {"id": 8, "title": "Semester 2", "start_date": "2027-01-05T00:00:00Z", "end_date": "2027-06-05T00:00:00Z"}


def test_a_course_in_its_term_gives_a_row_per_student_with_the_whole_course_grade_for_both():
    course = CourseGrades(course="class-1", term="term-s1", whole=[
        student("u2", 2, current_score=81.5, current_grade="B", final_score=60.0, final_grade="D"),
        student("u1", 1, current_score=93.0, current_grade="A", final_score=90.0, final_grade="A-"),
        student("u3", 3),
    ])
    rows = course_rows(course)
    assert rows.rows == [
        ("class-1", "u1", "term-s1", 93.0, "A", 93.0, "A"),
        ("class-1", "u2", "term-s1", 81.5, "B", 81.5, "B"),
        ("class-1", "u3", "term-s1", None, None, None, None),
    ]
    assert course_rows(course, "final").rows[1] == ("class-1", "u2", "term-s1", 60.0, "D", 60.0, "D")
    assert rows.kept_aside == [] and rows.made_in_lms == 0


def test_grading_periods_give_a_row_per_period_whose_term_grade_is_the_periods():
    course = CourseGrades(
        course="class-2", term=None, grading_periods=[S2, S1],
        whole=[student("u1", 1, current_score=88.0, current_grade="B+")],
        by_period={7: [student("u1", 1, current_score=91.0, current_grade="A-")], 8: []},
    )
    assert course_rows(course).rows == [
        ("class-2", "u1", "Semester 1", 91.0, "A-", 88.0, "B+"),
        ("class-2", "u1", "Semester 2", None, None, 88.0, "B+"),
    ]


def test_a_teachers_override_wins_and_an_unposted_score_is_never_read():
    course = CourseGrades(course="class-3", term="term-s1", whole=[
        student("u1", 1, current_score=70.0, current_grade="C", override_score=75.0, override_grade="C+"),
        student("u2", 2, current_score=None, unposted_current_score=99.0, unposted_current_grade="A"),
        student("u3", 3, current_score=65.0, override_score=None, override_grade="P"),
    ])
    assert course_rows(course).rows == [
        ("class-3", "u1", "term-s1", 75.0, "C+", 75.0, "C+"),
        ("class-3", "u2", "term-s1", None, None, None, None),
        ("class-3", "u3", "term-s1", None, "P", None, "P"),
    ]


def test_what_names_no_ic_term_or_no_ic_student_is_kept_aside_or_counted():
    course = CourseGrades(course="class-4", term=None, whole=[
        student("u1", 1, current_score=80.0), student(None, 9, current_score=100.0),
        student("u1", 1, current_score=80.0),  # a second section of the course: one row
    ])
    rows = course_rows(course)
    assert rows.rows == [] and rows.kept_aside == [("class-4", "u1", NO_TERM)] and rows.made_in_lms == 1
    assert missing_course("class-5").kept_aside == [("class-5", None, NO_COURSE)]


def test_a_score_that_is_no_number_keeps_its_student_aside_and_a_bad_setting_is_refused():
    course = CourseGrades(course="class-6", term="term-s1",
                          whole=[student("u1", 1, current_score="ninety"), student("u2", 2, current_score=90)])
    rows = course_rows(course)
    assert rows.rows == [("class-6", "u2", "term-s1", 90.0, None, 90.0, None)]
    assert [(section, who) for section, who, _ in rows.kept_aside] == [("class-6", "u1")]
    assert rows.kept_aside[0][2].startswith("Canvas gave a score that is not a number")
    with pytest.raises(ValueError, match="current, final"):
        course_rows(course, "total")


def test_submissions_of_active_students_become_assignment_rows_and_an_unpublished_assignment_one_row():
    groups = [{"id": 3, "name": "Homework", "assignments": [
        {"id": 11, "name": "Worksheet", "points_possible": 10, "unlock_at": "2026-09-20T12:00:00Z",
         "created_at": "2026-09-01T00:00:00Z", "due_at": "2026-10-01T23:00:00Z", "published": True},
        {"id": 12, "name": "Draft", "points_possible": 5, "unlock_at": None, "created_at": "2026-10-02T08:00:00Z",
         "due_at": None, "published": False, "omit_from_final_grade": True},
    ]}]
    submissions = [
        {"assignment_id": 11, "user_id": 2, "score": 8.5, "excused": False, "missing": False, "late": True,
         "workflow_state": "graded", "posted_at": "2026-10-02T00:00:00Z"},
        {"assignment_id": 11, "user_id": 1, "score": None, "excused": True, "workflow_state": "graded",
         "posted_at": None, "user": {"sis_user_id": "u1"}},
        {"assignment_id": 11, "user_id": 9, "score": 10, "workflow_state": "graded", "posted_at": "x"},  # not IC's
        {"assignment_id": 99, "user_id": 2, "score": 1, "workflow_state": "graded", "posted_at": "x"},  # deleted
    ]
    course = CourseGrades(course="class-1", term="term-s1", whole=[student("u1", 1), student("u2", 2)],
                          assignment_groups=groups, submissions=submissions)
    assert course_rows(course).assignment_rows == [
        ("class-1", "u1", "11", "Worksheet", "3", "Homework", 10.0, "2026-09-20T12:00:00Z", "2026-10-01T23:00:00Z",
         True, True, None, True, False, False, True, False),
        ("class-1", "u2", "11", "Worksheet", "3", "Homework", 10.0, "2026-09-20T12:00:00Z", "2026-10-01T23:00:00Z",
         True, True, 8.5, False, False, True, True, True),
        ("class-1", None, "12", "Draft", "3", "Homework", 5.0, "2026-10-02T08:00:00Z", None,
         False, False, None, False, False, False, False, False),
    ]
    assert course_rows(CourseGrades(course="class-1", term="term-s1")).assignment_rows == [], "not asked for"


def context(version: str = "1.2", missing: str = "skip", posted=None, late: str = "flag") -> GradeContext:
    return GradeContext(
        sections=pd.DataFrame({"key": ["c1", "c2"]}),
        grading_periods=pd.DataFrame(columns=["key", "lms_id", "title"]),
        users=pd.DataFrame({"sourced_id": ["U1", "U2"], "legacy_sourced_id": ["s1", "s2"]}),
        classes=pd.DataFrame({"sourced_id": ["c1", "c2"], "school_sourced_id": ["100", "100"],
                              "term_sourced_ids": [["S1", "S2"], ["S1"]]}),
        sessions=pd.DataFrame({"sourced_id": ["S1", "S2"], "start_date": ["2026-08-15", "2027-01-05"],
                               "end_date": ["2026-12-20", "2027-06-05"]}),
        mapping=None, opt_in=frozenset({"c1"}), run_date=date(2026, 12, 1),
        config=GradePassback(term_task_ids=["T1"], window_rule={"opens_days_before_end": 120},
                             assignments={"start_date": "2026-09-01", "missing": missing, "late": late}),
        posted=posted if posted is not None else pd.DataFrame(columns=["result_id", "fingerprint"]),
        oneroster_version=version,
    )


def assignment_row(row: int, section: str, student: str, score=None, *, excused=False, missing=False, late=False,
                   assignment="11", due="2026-10-01T23:00:00Z") -> dict:
    return dict(zip(ASSIGNMENT_COLUMNS, (row, section, student, assignment, "Worksheet", "3", "Homework", 10.0,
                                         "2026-09-20T12:00:00Z", due, True, True, score, excused, missing, late,
                                         score is not None or excused, True), strict=True))


def test_assignment_postings_follow_the_rules_in_order():
    rows = pd.DataFrame([
        assignment_row(1, "c1", "s1", 8.0, late=True),
        assignment_row(2, "c1", "s9", 8.0),  # unknown to IC
        assignment_row(3, "c2", "s2", 8.0),  # its teacher has not opted in
        assignment_row(4, "c1", "s2", missing=True),
        assignment_row(5, "c1", "s2", 9.0, assignment="12", due="2027-03-01T08:00:00Z"),  # semester 2: later
        assignment_row(6, "c1", "s2", excused=True, assignment="13", due=None),
    ], columns=ASSIGNMENT_COLUMNS)
    postings, items = plan_assignment_postings(rows, context(missing="not_submitted"), "canvas")
    assert postings[["row", "action", "reason"]].values.tolist() == [
        [1, "post", ""], [2, "skipped", "student unknown to IC"], [3, "skipped", "not opted in"],
        [4, "post", ""], [5, "skipped", "window opens on 2027-02-05"], [6, "post", ""],
    ]
    sent = postings[postings["action"] == "post"]
    assert sent["result_id"].tolist() == ["c1-canvas-11-U1", "c1-canvas-11-U2", "c1-canvas-13-U2"]
    assert sent["status"].tolist() == ["fully graded", "not submitted", "exempt"]
    assert sent["points"].tolist()[0] == 8.0 and sent["points"].isna().tolist()[1:] == [True, True]
    assert sent["flags"].tolist() == ["missing=false;late=true", "missing=true;late=false", "missing=false;late=false"]
    assert set(sent["term"]) == {"S1"} and set(sent["task_kind"]) == {"assignment"}
    assert items.to_dict("records")[0] == {
        "line_item_id": "c1-canvas-11", "section": "c1", "school": "100", "term": "S1", "title": "Worksheet",
        "category_id": "c1-canvas-group-3", "category_title": "Homework", "assign_date": "2026-09-20T12:00:00.000Z",
        "due_date": "2026-10-01T23:00:00.000Z", "max_points": 10.0}, "its due date as given"
    assert items["line_item_id"].tolist() == ["c1-canvas-11", "c1-canvas-13"], "the lineItems of what is sent"

    undated = plan_assignment_postings(rows.iloc[[5]], context(), "canvas")[1]
    assert undated["due_date"].tolist() == ["2026-09-27T12:00:00.000Z"], "no due date: assigned + 7 days"
    skipped = plan_assignment_postings(rows.iloc[[3]], context(missing="skip"), "canvas")[0]
    assert skipped["reason"].tolist() == ["missing, not scored (the district file skips missing work)"]
    zero = plan_assignment_postings(rows.iloc[[3]], context(missing="zero"), "canvas")[0]
    assert (zero["points"].tolist(), zero["status"].tolist()) == ([0.0], ["fully graded"])
    old = plan_assignment_postings(rows.iloc[[0]], context(version="1.1"), "canvas")[0]
    assert old["reason"].tolist() == ["OneRoster 1.1: assignment scores go to IC over OneRoster 1.2 only"]
    again = plan_assignment_postings(rows.iloc[[0]], context(posted=sent[["result_id", "fingerprint"]]), "canvas")[0]
    assert again["action"].tolist() == ["unchanged"]
    on_time = rows.iloc[[0]].assign(late=False)
    lifted = plan_assignment_postings(on_time, context(posted=sent[["result_id", "fingerprint"]]), "canvas")[0]
    assert (lifted["action"].tolist(), lifted["flags"].tolist()) == (["post"], ["missing=false;late=false"]), \
        "a late mark lifted in the LMS is sent again, to lift it in IC"
    ignored = plan_assignment_postings(rows.iloc[[0]], context(late="ignore"), "canvas")[0]
    assert ignored["flags"].tolist() == ["missing=false"], "late: ignore sends no late flag"
    staged_before = plan_assignment_postings(rows.iloc[[0]].drop(columns="late"), context(), "canvas")[0]
    assert staged_before["flags"].tolist() == ["missing=false;late=false"], "rows staged with no late mark"

