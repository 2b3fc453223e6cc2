"""Grades given in the Canvas emulator as a school's teachers and admins would give them, for the demo.

Canvas has no file of grades: teachers grade in its UI, and the integration reads them from its API.
:func:`grade_canvas` does in the emulator what a school would have done by the grading window: an
admin gives Canvas's default term (where a class of several IC terms goes) a grading period per term
the single-term courses are in, titled as that term, and every active student of every active course
gets a whole-course grade and one per grading period (a few none yet, a few a teacher's override).
Each course also gets two assignments, graded (a few excused, missing or not graded yet), and an
unpublished draft. Seeded, hence repeatable.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, datetime, time, timedelta, timezone

from include.sandbox.grade_export import letter


def _grades(chance: random.Random) -> dict:
    if chance.random() < 0.1:
        return {}
    percent = round(chance.uniform(50, 100), 1)
    grades = {"current_score": percent, "current_grade": letter(percent), "final_score": round(percent * 0.95, 1),
              "final_grade": letter(percent * 0.95)}
    if chance.random() < 0.03:
        grades |= {"override_score": min(100.0, percent + 5), "override_grade": letter(min(100.0, percent + 5))}
    return grades


def _assignments(canvas, course_id: str, term_start: date) -> list[int]:
    """Homework and a test a few weeks into the term, and a draft nobody sees yet; the published ones."""
    homework = canvas.add_assignment_group(course_id, "Homework")
    tests = canvas.add_assignment_group(course_id, "Tests")

    def at(days: int) -> str:
        moment = datetime.combine(term_start + timedelta(days=days), time(8), tzinfo=timezone.utc)
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

    made = [canvas.add_assignment(course_id, "Worksheet 1", assignment_group_id=homework, points_possible=10,
                                  unlock_at=at(20), due_at=at(27)),
            canvas.add_assignment(course_id, "Unit test 1", assignment_group_id=tests, points_possible=100,
                                  unlock_at=at(30))]
    canvas.add_assignment(course_id, "Draft", assignment_group_id=homework, points_possible=5, published=False)
    return made


def _submission(chance: random.Random, points: float) -> dict:
    kind = chance.choices(["score", "excused", "missing", "ungraded"], [8, 1, 1, 1])[0]
    if kind == "score":
        return {"score": round(chance.uniform(points * 0.5, points), 1)}
    return {"excused": True} if kind == "excused" else {"missing": True} if kind == "missing" else {}


def grade_canvas(canvas, *, seed: int) -> int:
    """Grading periods on the default term, grades for every active student and their assignments'
    scores; the grades and scores set."""
    chance = random.Random(seed)
    terms = canvas.terms
    used = sorted({course["term_id"] for course in canvas.courses.values() if course["term_id"]})
    periods = [canvas.add_grading_period(None, terms[term]["name"], f"{terms[term]['start_date']}T00:00:00Z",
                                         f"{terms[term]['end_date']}T23:59:59Z") for term in used]
    students = defaultdict(set)
    for enrollment in canvas.enrollments.values():
        if enrollment["role"] == "student" and enrollment["status"] == "active":
            students[enrollment["course_id"]].add(enrollment["user_id"])
    given = 0
    first_day = min(date.fromisoformat(terms[term]["start_date"]) for term in used)
    for course_id, course in sorted(canvas.courses.items()):
        if course["status"] != "active":
            continue
        start = date.fromisoformat(terms[course["term_id"]]["start_date"]) if course["term_id"] else first_day
        assignments = _assignments(canvas, course_id, start)
        for student in sorted(students[course_id]):
            for assignment, points in zip(assignments, (10, 100), strict=True):
                scored = _submission(chance, points)
                if scored:
                    canvas.grade(course_id, assignment, student, **scored)
                    given += 1
            canvas.set_grades(course_id, student, **_grades(chance))
            given += 1
            for period in [] if course["term_id"] else periods:
                canvas.set_grades(course_id, student, grading_period_id=period, **_grades(chance))
                given += 1
    return given
