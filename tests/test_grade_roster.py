"""The students provisioned into each section, looked up from the enrollment state's columns, and the
lines kept aside for those an LMS's grade read does not list (include/grades/roster.py)."""

from __future__ import annotations

import random

import pandas as pd

from include.grades.roster import ProvisionedStudents, not_listed
from include.lms.target import SectionGrades


def state(rows: list[tuple[str, str, bool]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["section_key", "user_key", "admin"])


def test_each_sections_students_are_found_teachers_left_out_and_sections_named_alike_kept_apart():
    rng = random.Random(3)
    sections = ["A", "A1", "A:1", "B", "b", "class-10", "class-1"]
    truth: dict[str, set[str]] = {section: set() for section in sections}
    rows = []
    for _ in range(400):
        section, user = rng.choice(sections), f"u{rng.randrange(60)}"
        teacher = rng.random() < 0.1
        rows.append((section, user, teacher))
        if not teacher:
            truth[section].add(user)
    rng.shuffle(rows)
    roster = ProvisionedStudents(state(rows))
    for section in sections:
        assert sorted(set(roster.of(section))) == sorted(truth[section])
    assert roster.of("C") == [] and roster.of("") == []
    assert ProvisionedStudents(state([])).of("A") == []


def test_only_the_students_the_read_names_nowhere_are_kept_aside():
    grades = SectionGrades(rows=[("A", "s1", "Q1", 90.0, "A", 90.0, "A")],
                           kept_aside=[("A", "s2", "no term")], made_in_lms=0)
    lines = not_listed("A", grades, ["s3", "s1", "s2", "s4"])
    assert [(section, student) for section, student, _ in lines] == [("A", "s3"), ("A", "s4")]
    gone = SectionGrades(rows=[], kept_aside=[("A", None, "course gone")], made_in_lms=0)
    assert not_listed("A", gone, ["s1"]) == [], "a course gone is one line already"
