"""Final grades read from Canvas's API end to end: the Canvas district provisioned by its DAG, grades
set in the Canvas emulator (as teachers would in Canvas), the grades half of the DAG run against the
IC gradebook emulator; what IC holds and what the reconciliation says checked against the district
file's rules (tests/expected_grades.py), applied to the rows the README says Canvas's grades are
("Grades from Canvas": a row per student and grading period of the course's term, else one named
after the course's term; the teacher's override first), written here from what the test set."""

from __future__ import annotations

import csv
import io
import random
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone

import pytest

from include.config import load_district
from include.sandbox.canvas_emulator import CanvasEmulator
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_emulator import ICEmulator
from include.staging import read_frame
from tests.canvas_support import (
    active_students,
    canvas_district_file,
    canvas_import,
    connect_canvas,
    connect_ic_and_smtp,
    run_night,
)
from tests.expected_grades import at_ic, expected_grades, held_by_ic
from tests.expected_provisioning import expected_provisioning
from tests.support import CLIENT_ID, CLIENT_SECRET

NIGHT = datetime(2026, 12, 1, 6, tzinfo=timezone.utc)  # semester 1's window is open, semester 2's not yet
VENDOR = {"vendor_key": "test-vendor", "vendor_secret": "test-vendor-secret"}
GONE = r"not read from the LMS: no Canvas course has this class's SIS id .*"


@pytest.fixture
def district():
    return SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))


@pytest.fixture
def stack(district, canvas, smtp, monkeypatch, tmp_path, airflow_db):
    """The Canvas district with demo.yaml's grade passback, provisioned on NIGHT; IC with its gradebook."""
    config = load_district(canvas_district_file(tmp_path / "districts", monkeypatch, grades=True,
                                                backoff_seconds=0.05))
    with ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo", **VENDOR) as ic:
        connect_ic_and_smtp(monkeypatch, ic, smtp, tmp_path / "staging", **VENDOR)
        connect_canvas(monkeypatch, canvas)
        provisioned = run_night(NIGHT)
        assert provisioned.state == "success", provisioned.task_states
        yield {"ic": ic, "config": config, "smtp": smtp}


def semester_periods(canvas: CanvasEmulator, district, config) -> dict[int, str]:
    """Grading periods on Canvas's default term (where a class of both semesters is), one per IC
    semester, titled as its term was provisioned: Canvas grading period id -> title."""
    titles = expected_provisioning(district, config.provisioning).period_titles
    return {canvas.add_grading_period(None, titles[term["id"]], f"{term['start']}T00:00:00Z",
                                      f"{term['end']}T23:59:59Z"): titles[term["id"]]
            for term in district.sessions if term["type"] == "semester"}


def letter(percent: float) -> str:
    return next(score for score, floor in (("A", 90), ("B", 80), ("C", 70), ("D", 60), ("F", 0)) if percent >= floor)


def graded(rng: random.Random) -> dict:
    """A student's grades as a teacher leaves them: none yet, a score with or without a letter (a
    course with no grading scheme), now and then a final grade override."""
    if rng.random() < 0.1:
        return {}
    percent = round(rng.uniform(45, 100), 1)
    grades = {"current_score": percent, "current_grade": letter(percent) if rng.random() < 0.7 else None,
              "final_score": round(percent * 0.9, 1), "final_grade": None}
    if rng.random() < 0.05:
        grades |= {"override_score": 100.0, "override_grade": "A"}
    return grades


def as_row(grades: dict) -> tuple[str, str]:
    """(percent, letter) as an export row would carry them: the override first, else the current score."""
    if "override_score" in grades:
        return f"{grades['override_score']}", grades["override_grade"]
    if not grades:
        return "", ""
    return f"{grades['current_score']}", grades["current_grade"] or ""


def grade_in_canvas(canvas: CanvasEmulator, district, config, periods: dict[int, str], seed: int) -> bytes:
    """Sets every active student's grades in every active course, and returns what they are as an
    export file in the district's columns: the truth the rules are applied to."""
    rng = random.Random(seed)
    titles = expected_provisioning(district, config.provisioning).period_titles
    columns = config.grade_passback.columns
    text = io.StringIO()
    out = csv.writer(text, lineterminator="\r\n")
    out.writerow([columns.section, columns.student, columns.grading_period, columns.term_percent,
                  columns.term_score, columns.course_percent, columns.course_score])
    students = active_students(canvas)
    for course_id, course in sorted(canvas.courses.items()):
        if course["status"] != "active":
            continue
        for student in sorted(students.get(course_id, ())):
            whole = graded(rng)
            canvas.set_grades(course_id, student, **whole)
            if course["term_id"]:  # a class of one semester: in that term, which has no grading periods
                out.writerow([course_id, student, titles[course["term_id"].removeprefix("term-")],
                              *as_row(whole), *as_row(whole)])
                continue
            for period, title in sorted(periods.items()):
                part = graded(rng)
                canvas.set_grades(course_id, student, grading_period_id=period, **part)
                out.writerow([course_id, student, title, *as_row(part), *as_row(whole)])
    return text.getvalue().encode()


def delete_course(canvas: CanvasEmulator, course_id: str) -> None:
    """A Canvas admin deletes a course through a SIS import of their own."""
    canvas_import(canvas, "courses.csv", f"course_id,short_name,long_name,status\n{course_id},x,x,deleted\n")


def test_canvas_final_grades_reach_ic_as_the_rules_say_and_only_changes_are_sent_again(stack, canvas, district):
    ic, config = stack["ic"], stack["config"]
    periods = semester_periods(canvas, district, config)
    data = grade_in_canvas(canvas, district, config, periods, seed=5)
    made_here = sorted(canvas.courses)[0]
    canvas.add_enrollment_made_in_canvas(made_here, None)  # a student a teacher added in Canvas: not IC's
    gone = sorted(course for course, held in canvas.courses.items() if held["status"] == "active")[-1]
    delete_course(canvas, gone)
    data = b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(gone.encode() + b","))

    outcome = run_night(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    read = outcome.returned["grades.read_grades"]
    assert read["made_in_lms"] == 1 and read["quarantined_count"] == 1

    expected = expected_grades(data, district, config, NIGHT.date())
    held, grades = held_by_ic(ic.gradebook), expected.grades()
    assert grades and all(at_ic(grade, held) for grade in grades.values())
    assert len(held) == len(grades) and not ic.gradebook.duplicates(), "IC holds what the rules say, no more"

    report = read_frame(outcome.returned["grades.reconcile"]["uri"])
    outcomes, reasons = Counter(), defaultdict(set)
    for line in report.itertuples():
        outcomes[(line.section, line.student if isinstance(line.student, str) else None, line.outcome)] += 1
        reasons[(line.section, line.student)].add(line.reason)
    wanted = Counter((row.section, row.student, "posted" if row.grades else "skipped")
                     for row in expected.rows.values())
    wanted[(gone, None, "skipped")] += 1
    assert outcomes == wanted
    for row in expected.rows.values():
        if not row.grades:
            assert any(row.skip_is_right(reason) for reason in reasons[(row.section, row.student)]), row
    (kept,) = report[report["section"] == gone].itertuples()
    assert re.fullmatch(GONE, kept.reason)

    (mail,) = stack["smtp"].wait_for(1)
    assert "1 grade row(s) to fix in the LMS or IC" in mail.subject
    assert not any(student in mail.body for student in {row.student for row in expected.rows.values()})

    # the next night: nothing changed but one student's grade in one single-semester course
    changed = next(row for row in expected.rows.values() if row.grades and canvas.courses[row.section]["term_id"])
    canvas.set_grades(changed.section, changed.student, current_score=12.5, current_grade=None)
    ic.reset_stats()
    again = run_night(NIGHT + timedelta(days=1), halves="grades")
    assert again.state == "success", again.task_states
    counts = again.returned["grades.reconcile"]["counts"]
    assert counts["posted"] == 1 and counts["failed"] == 0
    puts = [request.path for request in ic.requests if request.method == "PUT" and "/results/" in request.path]
    assert len(puts) == len(changed.grades), "only the changed student's results are sent again"
    held = held_by_ic(ic.gradebook)
    assert all(held[grade.key].value[0] == 12.5 for grade in changed.grades)
    assert len(held) == len(grades), "updated in place, not a second result"


def test_throttling_and_server_errors_while_grades_are_read_lose_and_duplicate_nothing(stack, canvas, district):
    ic, config = stack["ic"], stack["config"]
    data = grade_in_canvas(canvas, district, config, semester_periods(canvas, district, config), seed=9)
    canvas.inject("throttle", times=3, path_contains="/enrollments", after=5)
    canvas.inject("500", times=2, path_contains="/grading_periods")
    outcome = run_night(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    met = Counter(request.status for request in canvas.requests if request.method == "GET")
    assert met[403] == 3 and met[500] == 2, "the faults were met"
    grades, held = expected_grades(data, district, config, NIGHT.date()).grades(), held_by_ic(ic.gradebook)
    assert grades and all(at_ic(grade, held) for grade in grades.values())
    assert len(held) == len(grades) and not ic.gradebook.duplicates()


ENDED = r"not read from the LMS: IC has this student in the class, but the LMS lists no active enrollment .*"


def test_a_student_whose_canvas_enrollment_was_ended_by_hand_is_kept_aside_not_silently_left_out(
        stack, canvas, district):
    """A teacher concludes one student's enrollment and an admin deactivates another's, in Canvas,
    while IC still has both in their classes: Canvas no longer lists them, so no grade of theirs is
    read. Each is a line to fix in the report and the email; everyone else's grades post as before."""
    ic, config = stack["ic"], stack["config"]
    data = grade_in_canvas(canvas, district, config, semester_periods(canvas, district, config), seed=13)
    students = active_students(canvas)
    first, second = [course for course in sorted(students)
                     if canvas.courses[course]["status"] == "active"][:2]
    ended = {(first, sorted(students[first])[0]), (second, sorted(students[second])[-1])}
    (concluded, deactivated) = sorted(ended)
    canvas.end_enrollment(*concluded, task="conclude")
    canvas.end_enrollment(*deactivated, task="deactivate")
    data = b"\r\n".join(line for line in data.split(b"\r\n")
                        if not any(line.startswith(f"{course},{student},".encode())
                                   for course, student in ended))

    outcome = run_night(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    read = outcome.returned["grades.read_grades"]
    assert read["not_listed"] == 2 and read["quarantined_count"] == 2

    grades, held = expected_grades(data, district, config, NIGHT.date()).grades(), held_by_ic(ic.gradebook)
    assert grades and all(at_ic(grade, held) for grade in grades.values())
    assert len(held) == len(grades), "nothing of the two students reached IC, everyone else's did"

    report = read_frame(outcome.returned["grades.reconcile"]["uri"])
    kept = {(line.section, line.student): line for line in report.itertuples()
            if re.fullmatch(ENDED, line.reason)}
    assert set(kept) == ended and all(line.outcome == "skipped" for line in kept.values())
    (mail,) = stack["smtp"].wait_for(1)
    assert "2 grade row(s) to fix in the LMS or IC" in mail.subject
    assert not any(student in mail.body for _, student in ended)
