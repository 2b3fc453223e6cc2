"""Assignment scores read from Canvas end to end: the Canvas district provisioned by its DAG, assignments
made and graded in the Canvas emulator (as teachers would), the grades half of the DAG run against the
IC gradebook emulator. What IC holds and what the reconciliation says are checked against the README's
rules ("Assignment scores from Canvas"), restated here over what the test made, never read from the
plan: a lineItem ``<class>-canvas-<assignment id>`` per class and assignment, in the category
``<class>-canvas-group-<group id>`` titled as its group, in the class's IC term holding its due date;
a result per student on it, points or IC's exempt status; the skip reasons in the README's order."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone

import pytest

from include.config import load_district
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_emulator import ICEmulator
from include.staging import read_frame
from tests.canvas_support import (
    active_students,
    canvas_district_file,
    connect_canvas,
    connect_ic_and_smtp,
    run_night,
)
from tests.expected_provisioning import user_uid
from tests.fault_ledger import ScenarioLedger, record
from tests.support import CLIENT_ID, CLIENT_SECRET

NIGHT = datetime(2026, 12, 1, 6, tzinfo=timezone.utc)  # semester 1's window is open, semester 2's not yet
VENDOR = {"vendor_key": "test-vendor", "vendor_secret": "test-vendor-secret"}
START = date(2026, 9, 1)  # grade_passback.assignments.start_date
GRADED_COURSES = 10


@pytest.fixture
def district():
    return SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))


@pytest.fixture
def stack(district, canvas, smtp, monkeypatch, tmp_path, airflow_db):
    """The Canvas district with demo.yaml's grade passback and assignment scores (missing work as a
    zero), provisioned on NIGHT; IC with its gradebook."""
    path = canvas_district_file(tmp_path / "districts", monkeypatch, grades=True, backoff_seconds=0.05,
                                passback={"assignments": {"start_date": START.isoformat(), "missing": "zero"}})
    config = load_district(path)
    with ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo", **VENDOR) as ic:
        connect_ic_and_smtp(monkeypatch, ic, smtp, tmp_path / "staging", **VENDOR)
        connect_canvas(monkeypatch, canvas)
        provisioned = run_night(NIGHT)
        assert provisioned.state == "success", provisioned.task_states
        yield {"ic": ic, "config": config}


@dataclass(frozen=True)
class Assignment:
    course: str
    id: int
    title: str
    group: int
    group_title: str
    points: float
    assigned: datetime  # unlocked, else created
    due: datetime | None
    published: bool = True
    counted: bool = True


@dataclass
class Expected:
    sent: dict[str, tuple]  # result id -> (score, scoreStatus), for the results IC must hold
    items: dict[str, tuple]  # lineItem id -> (title, category title, IC term, assignDate, dueDate, max, class)
    outcomes: Counter  # (class, student uid or None, outcome, reason) per assignment row


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_assignments(canvas, courses: list[str]) -> list[Assignment]:
    """In each course: homework due in semester 1, a test with no due date, an unpublished draft, an
    extra-credit task left out of the final grade, a summer task assigned before the start date, and a
    project due in semester 2."""
    made = []
    for course in courses:
        homework = canvas.add_assignment_group(course, "Homework")
        tests = canvas.add_assignment_group(course, "Tests")
        for title, group, group_title, points, assigned, due, published, counted in (
            ("Worksheet 1", homework, "Homework", 10.0, datetime(2026, 9, 20, 12, tzinfo=timezone.utc),
             datetime(2026, 10, 1, 23, tzinfo=timezone.utc), True, True),
            ("Unit test", tests, "Tests", 100.0, datetime(2026, 9, 15, 8, tzinfo=timezone.utc), None, True, True),
            ("Draft", homework, "Homework", 5.0, datetime(2026, 10, 2, 8, tzinfo=timezone.utc), None, False, True),
            ("Extra credit", homework, "Homework", 5.0, datetime(2026, 10, 3, 8, tzinfo=timezone.utc),
             datetime(2026, 10, 10, 8, tzinfo=timezone.utc), True, False),
            ("Summer reading", homework, "Homework", 20.0, datetime(2026, 8, 20, 8, tzinfo=timezone.utc),
             datetime(2026, 8, 25, 8, tzinfo=timezone.utc), True, True),
            ("Spring project", tests, "Tests", 50.0, datetime(2026, 11, 20, 8, tzinfo=timezone.utc),
             datetime(2027, 3, 1, 8, tzinfo=timezone.utc), True, True),
        ):
            number = canvas.add_assignment(course, title, assignment_group_id=group, points_possible=points,
                                           unlock_at=stamp(assigned), due_at=stamp(due) if due else None,
                                           published=published, omit_from_final_grade=not counted)
            made.append(Assignment(course, number, title, group, group_title, points, assigned, due, published,
                                   counted))
    return made


def grade_them(canvas, assignments: list[Assignment], students: dict[str, set[str]], seed: int) -> dict:
    """Each active student's submission of each published assignment: scored, scored and late, excused,
    missing, not graded, or scored while the assignment's grades are hidden; (course, assignment,
    student) -> how."""
    chance, given = random.Random(seed), {}
    for assignment in assignments:
        if not assignment.published:
            continue
        for student in sorted(students[assignment.course]):
            kind = chance.choices(["score", "late", "excused", "missing", "ungraded", "hidden"], [5, 1, 1, 1, 1, 1])[0]
            score = round(chance.uniform(0, assignment.points * 1.1), 1)  # extra credit over the max is kept
            if kind in ("score", "late", "hidden"):
                canvas.grade(assignment.course, assignment.id, student, score=score, posted=kind != "hidden",
                             late=kind == "late")
            elif kind == "excused":
                canvas.grade(assignment.course, assignment.id, student, excused=True)
            elif kind == "missing":
                canvas.grade(assignment.course, assignment.id, student, missing=True)
            given[(assignment.course, assignment.id, student)] = (kind, score)
    return given


def expected(district, assignments: list[Assignment], students: dict[str, set[str]], given: dict,
             on: date) -> Expected:
    """README "Assignment scores from Canvas", in its order of reasons, over what the test made."""
    classes = {klass["sourcedId"]: klass for klass in district.records("classes", "1.2")}
    sessions = {session["sourcedId"]: session for session in district.records("academicSessions", "1.2")}
    ic_id = {user_uid(user): user["sourcedId"] for user in district.records("users", "1.2")}
    result = Expected({}, {}, Counter())
    for assignment in assignments:
        if not assignment.published:
            result.outcomes[(assignment.course, None, "skipped", "unpublished in the LMS")] += 1
            continue
        day = (assignment.due or assignment.assigned).date()
        holding = [sessions[term["sourcedId"]] for term in classes[assignment.course]["terms"]
                   if sessions[term["sourcedId"]]["startDate"] <= day.isoformat() <= sessions[term["sourcedId"]]["endDate"]]
        term = max(holding, key=lambda session: session["startDate"]) if holding else None
        for student in sorted(students[assignment.course]):
            kind, score = given[(assignment.course, assignment.id, student)]
            key = (assignment.course, student)
            if not assignment.counted:
                why = "left out of the final grade in the LMS"
            elif assignment.assigned.date() < START:
                why = f"assigned before the passback start date {START.isoformat()}"
            elif term is None:
                why = "no IC term of the class holds its due date"
            elif (end := date.fromisoformat(term["endDate"])) - timedelta(days=120) > on:  # demo.yaml's window_rule
                why = f"window opens on {(end - timedelta(days=120)).isoformat()}"
            elif end + timedelta(days=14) < on:
                why = "window closed"
            elif kind == "hidden":
                why = "graded but not posted to students in the LMS"
            elif kind == "ungraded":
                why = "not graded"
            else:
                why = None
            if why:
                result.outcomes[(*key, "skipped", why)] += 1
                continue
            result.outcomes[(*key, "posted", "")] += 1
            item = f"{assignment.course}-canvas-{assignment.id}"
            value = {"score": (score, "fully graded"), "late": (score, "fully graded"), "excused": (None, "exempt"),
                     "missing": (0.0, "fully graded")}[kind]  # missing: "zero" in the district file
            flags = ("true" if kind == "missing" else "false", "true" if kind == "late" else "false")
            result.sent[f"{item}-{ic_id[student]}"] = (*value, *flags)
            due = assignment.due or assignment.assigned + timedelta(days=7)
            result.items[item] = (assignment.title, assignment.group_title, term["sourcedId"],
                                  assignment.assigned.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                                  due.strftime("%Y-%m-%dT%H:%M:%S.000Z"), assignment.points, assignment.course)
    return result


def assert_ic_holds(ic, want: Expected) -> None:
    results, items = ic.gradebook.stored("results"), ic.gradebook.stored("lineItems")
    categories = ic.gradebook.stored("categories")
    held = {result_id: (result.get("score"), result["scoreStatus"], result.get("missing"), result.get("late"))
            for result_id, result in results.items() if "-canvas-" in result_id}
    assert held == want.sent, "IC holds each score the rules send, with its status and flags, and nothing else"
    for item_id, (title, group, term, assigned, due, points, klass) in want.items.items():
        item = items[item_id]
        assert (item["title"], item["gradingPeriod"]["sourcedId"], item["assignDate"], item["dueDate"],
                item["resultValueMax"], item["class"]["sourcedId"]) == (title, term, assigned, due, points, klass)
        assert categories[item["category"]["sourcedId"]]["title"] == group
    assert not ic.gradebook.duplicates()


def graded_in_canvas(canvas, district, seed: int = 3) -> tuple[list[Assignment], dict, dict, Expected]:
    """Assignments made and graded in the first active courses; what the rules then send on NIGHT."""
    students = active_students(canvas)
    courses = sorted(course for course, held in canvas.courses.items() if held["status"] == "active"
                     and students.get(course))[:GRADED_COURSES]
    assignments = make_assignments(canvas, courses)
    given = grade_them(canvas, assignments, students, seed=seed)
    want = expected(district, assignments, students, given, NIGHT.date())
    assert want.sent and len({reason for *_, reason in want.outcomes}) >= 8, "every rule is met"
    return assignments, given, students, want


def settle(scenario: str, faults: int, run, ic, want: Expected) -> ScenarioLedger:
    """The fault ledger's line for the run's assignment rows: a result the rules send that IC does not
    hold is lost unless its row is reported skipped or failed with a reason."""
    rows = read_frame(run.returned["grades.read_grades"]["assignments_uri"], ["row"])["row"]
    report = read_frame(run.returned["grades.reconcile"]["uri"]).set_index("row").loc[rows]
    postings = read_frame(run.returned["grades.plan"]["uri"], ["row", "result_id"]).dropna()
    row_of = dict(zip(postings["result_id"], postings["row"], strict=True))
    held = ic.gradebook.stored("results")
    lost = sum(1 for result_id in want.sent if result_id not in held and not (
        report.loc[row_of[result_id], "outcome"] in ("skipped", "failed") and report.loc[row_of[result_id], "reason"]))
    counts = Counter(report["outcome"])
    return record(ScenarioLedger(scenario, faults, len(rows), counts["posted"], counts["skipped"], counts["failed"],
                                 sum(len(ids) - 1 for ids in ic.gradebook.duplicates().values()), lost))


def test_assignment_scores_reach_ic_as_the_rules_say_and_a_rename_or_new_score_updates_in_place(
        stack, canvas, district):
    ic = stack["ic"]
    assignments, given, students, want = graded_in_canvas(canvas, district)

    outcome = run_night(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    assert_ic_holds(ic, want)
    report = read_frame(outcome.returned["grades.reconcile"]["uri"])
    rows = set(read_frame(outcome.returned["grades.read_grades"]["assignments_uri"])["row"])
    assert len(rows) == sum(want.outcomes.values())
    mine = report[report["row"].isin(rows)]
    assert Counter((line.section, line.student if isinstance(line.student, str) else None, line.outcome,
                    line.reason if line.outcome == "skipped" else "")
                   for line in mine.itertuples()) == want.outcomes

    # the next night: one assignment renamed, one student re-scored, one assignment deleted in Canvas
    ic_id = {user_uid(user): user["sourcedId"] for user in district.records("users", "1.2")}
    renamed = next(a for a in assignments if a.title == "Worksheet 1")
    canvas.update_assignment(renamed.id, name="Worksheet 1 (revised)")
    unit_tests = {a.id: a for a in assignments if a.title == "Unit test"}
    rescored_id, rescored = next(
        (result_id, key) for key, (kind, _) in sorted(given.items()) if kind == "score" and key[1] in unit_tests
        and (result_id := f"{key[0]}-canvas-{key[1]}-{ic_id[key[2]]}") in want.sent)
    canvas.grade(*rescored, score=1.5)
    lifted_id, lifted, (_, lifted_score) = next(
        (result_id, key, value) for key, value in sorted(given.items()) if value[0] == "late"
        and key[1] != renamed.id and (result_id := f"{key[0]}-canvas-{key[1]}-{ic_id[key[2]]}") in want.sent)
    canvas.grade(*lifted, score=lifted_score)  # the teacher lifts the late mark
    gone = next(a for a in unit_tests.values() if a.course != rescored[0] and a.id != lifted[1])
    canvas.delete_assignment(gone.id)
    ic.reset_stats()
    again = run_night(NIGHT + timedelta(days=1), halves="grades")
    assert again.state == "success", again.task_states
    now = [replace(a, title="Worksheet 1 (revised)") if a is renamed else a for a in assignments if a is not gone]
    given[rescored], given[lifted] = ("score", 1.5), ("score", lifted_score)
    want_now = expected(district, now, students, given, (NIGHT + timedelta(days=1)).date())
    # a deleted assignment's lineItem and results stay in IC (README): nobody decided to remove them
    want_now.sent |= {result_id: value for result_id, value in want.sent.items()
                      if result_id.startswith(f"{gone.course}-canvas-{gone.id}-")}
    assert_ic_holds(ic, want_now)
    resent = {request.path.rsplit("/", 1)[-1] for request in ic.requests
              if request.method == "PUT" and "/results/" in request.path}
    assert resent == {result_id for result_id in want_now.sent
                      if result_id.startswith(f"{renamed.course}-canvas-{renamed.id}-")} | {rescored_id, lifted_id}, \
        "only the renamed assignment's results, the re-scored one and the one no longer late are sent again"


def test_ic_errors_and_lost_answers_while_assignments_post_lose_and_duplicate_nothing(stack, canvas, district):
    ic = stack["ic"]
    *_, want = graded_in_canvas(canvas, district, seed=11)
    ic.inject("500", times=1, path_contains="/gradebook/v1p2/categories/")
    ic.inject("429", times=2, path_contains="/gradebook/v1p2/lineItems/", retry_after=1)
    ic.inject("reset_after_apply", times=3, path_contains="/gradebook/v1p2/results/", after=10)
    run = run_night(NIGHT, halves="grades")
    assert run.state == "success", run.task_states
    assert_ic_holds(ic, want)
    met = Counter(request.status for request in ic.requests if "/gradebook/" in request.path)
    assert (met[500], met[429], met[0]) == (1, 2, 3), "the faults were met"
    assert settle("grades: Canvas assignments, IC 500/429/answers lost", 6, run, ic, want).posted == len(want.sent)


def test_a_window_ic_closed_early_skips_its_assignment_scores_with_ics_message(stack, canvas, district):
    ic = stack["ic"]
    *_, want = graded_in_canvas(canvas, district, seed=13)
    first = next(session for session in district.sessions if session["title"].startswith("Semester 1 "))
    ic.gradebook.set_window(first["id"], first["start"], NIGHT.date() - timedelta(days=1))
    run = run_night(NIGHT, halves="grades")
    assert run.state == "success", run.task_states
    assert not [result_id for result_id in ic.gradebook.stored("results") if "-canvas-" in result_id]
    line = settle("grades: Canvas assignments, IC closed a window early", 1, run, ic, want)
    assert line.posted == 0 and line.failed == 0
    report = read_frame(run.returned["grades.reconcile"]["uri"])
    assert report["reason"].astype(str).str.startswith("window closed: ").sum() >= len(want.sent)
