"""A final-grade auto-export as the LMS would write it, from what the Schoology emulator holds.

One row per student, section and grading period of the section, with the grading-period
grade and the course-to-date grade (percent and letter), under the column names of
:class:`~include.config.ExportColumns` — so the demo and the tests feed the passback the
file a district's LMS would drop on its SFTP server. Seeded, hence repeatable.
"""

from __future__ import annotations

import csv
import io
import random

from include.config import ExportColumns

LETTERS = ((90, "A"), (80, "B"), (70, "C"), (60, "D"), (0, "F"))


def letter(percent: float) -> str:
    return next(score for minimum, score in LETTERS if percent >= minimum)


def schoology_export(lms, *, seed: int, columns: ExportColumns = ExportColumns(), encoding: str = "utf-8-sig") -> bytes:
    """The export of every student enrollment the emulator ``lms`` holds."""
    chance = random.Random(seed)
    users = lms.users
    periods = lms.grading_periods
    sections = lms.sections
    header = [columns.section, columns.student, columns.grading_period, columns.term_percent, columns.term_score,
              columns.course_percent, columns.course_score]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    enrollments = sorted(lms.enrollments.values(), key=lambda item: (item["section_id"], item["uid"]))
    for enrollment in enrollments:
        if enrollment["admin"]:
            continue
        section = sections[enrollment["section_id"]]
        student = users[enrollment["uid"]]["school_uid"]
        grades = [round(chance.uniform(55, 100), 1) for _ in section["grading_periods"]]
        course = round(sum(grades) / len(grades), 1)
        for period_id, grade in zip(section["grading_periods"], grades, strict=True):
            writer.writerow([section["section_school_code"], student, periods[period_id]["title"], grade, letter(grade),
                             course, letter(course)])
    return out.getvalue().encode(encoding)
