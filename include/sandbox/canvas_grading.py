"""Grades given in the Canvas emulator as a school's teachers and admins would give them, for the demo.

Canvas has no file of grades: teachers grade in its UI, and the integration reads them from its API.
:func:`grade_canvas` does in the emulator what a school would have done by the grading window: an
admin gives Canvas's default term (where a class of several IC terms goes) a grading period per term
the single-term courses are in, titled as that term, and every active student of every active course
gets a whole-course grade and one per grading period (a few none yet, a few a teacher's override).
Seeded, hence repeatable.
"""

from __future__ import annotations

import random
from collections import defaultdict

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


def grade_canvas(canvas, *, seed: int) -> int:
    """Grading periods on the default term and grades for every active student; the grades set (whole
    course and per grading period)."""
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
    for course_id, course in sorted(canvas.courses.items()):
        if course["status"] != "active":
            continue
        for student in sorted(students[course_id]):
            canvas.set_grades(course_id, student, **_grades(chance))
            given += 1
            for period in [] if course["term_id"] else periods:
                canvas.set_grades(course_id, student, grading_period_id=period, **_grades(chance))
                given += 1
    return given
