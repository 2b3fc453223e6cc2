"""Canvas's enrollments (as its Enrollments API lists them) as grade rows: the rows written out by
hand from README's rule ("Grades from Canvas"), never from the code under test."""

from __future__ import annotations

import pytest

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
