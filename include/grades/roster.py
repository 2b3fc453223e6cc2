"""Which of IC's students an LMS's grade read left out: IC's roster as provisioned, against what the
LMS listed.

One job. The night's provisioning keeps in its state the enrollments the LMS accepted (IC's, active
this school year). An LMS whose grades are read from its API (Canvas) lists the students whose
enrollment is active there; a student IC has in a class whose LMS enrollment a teacher or admin
concluded, deactivated or deleted by hand has no grade read, and without this check that would be a
silent gap (no row, no post, no line in the report). Each such student becomes a line kept aside with
the reason, every night until IC or the LMS changes. Pure functions over the state's columns; no HTTP,
no Airflow.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from include.frames import encoded, text_array
from include.lms.target import SectionGrades

NOT_LISTED = ("IC has this student in the class, but the LMS lists no active enrollment of theirs in its "
              "course (concluded, deactivated or deleted in the LMS by hand?): no grade was read, so none is "
              "passed back; reactivate the enrollment in the LMS, or drop the student from the class in IC")
STATE_COLUMNS = ["section_key", "user_key", "admin"]  # of the provisioned enrollments' state


class ProvisionedStudents:
    """The students provisioned into each section (the enrollment state's rows that are not a
    teacher's), looked up a section at a time. Held as one Arrow text column sorted by section and
    the sections' codes, not a Python set per section: a million students are eight million
    enrollments."""

    def __init__(self, state: pd.DataFrame):
        students = state[~state["admin"].astype(bool).to_numpy()]
        codes, sections = encoded(students["section_key"])  # a categorical's codes as they are
        order = np.argsort(codes, kind="stable")
        self._codes = codes[order]
        self._students = text_array(students["user_key"]).take(order)
        self._code_of = {section: code for code, section in enumerate(sections.to_pylist())}

    def of(self, section: str) -> list[str]:
        """The SIS ids of the section's provisioned students (none for a section not in the state)."""
        code = self._code_of.get(section)
        if code is None:
            return []
        start, end = np.searchsorted(self._codes, [code, code + 1])
        return self._students[int(start):int(end)].to_pylist()


def not_listed(section: str, grades: SectionGrades, students: list[str]) -> list[tuple[str, str, str]]:
    """Kept-aside lines (section, student, :data:`NOT_LISTED`) for the section's provisioned
    ``students`` the LMS's read names nowhere: neither in a row nor in a line kept aside. None when
    the whole section was kept aside (its course is gone: one line says so already)."""
    if any(student is None for _, student, _ in grades.kept_aside):
        return []
    listed = {row[1] for row in grades.rows} | {student for _, student, _ in grades.kept_aside}
    return [(section, student, NOT_LISTED) for student in sorted(set(students) - listed)]
