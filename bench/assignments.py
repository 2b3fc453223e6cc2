"""Assignment-post phase: assignment scores PUT to IC's OneRoster gradebook by the real post task.

Its one job is to measure assignment-level grade passback at scale against IC's concurrency
bound: ``sections`` semester-1 sections × ``assignments`` assignments × ``students`` graded
students each, a result per student and assignment, a lineItem per section and assignment and
a category per section and assignment group, all PUT to IC.

Its input is what the Canvas fetch task (``FetchLmsGradesOperator``) stages when assignment scores
are passed back: the LMS's assignment rows (``include.grades.assignments.ASSIGNMENT_SCHEMA``, one per
student and assignment, in one numbering) and the final-grade rows file beside them (empty here:
the final grades are :mod:`bench.post`'s). The rows are made and staged in a process of their own
(the bench's, not a task's), from the night's extracts and the sections provisioning provisioned.
The plan is ``PlanGradesOperator.execute`` and the post ``PostGradesOperator.execute``, each in a
fresh process as its Airflow task runs it, with the demo district's passback plus assignment scores;
the post goes to the bench's IC emulator (its latency and rate limit apply to every PUT). IC counts
the requests, the 429s and the most in flight, and its gradebook what it stored, read before and
after, so the figures and the check that every result arrived once are IC's, not ours.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bench.extract import SCHOOL_YEAR, EmulatorProcess
from bench.measure import PhaseResult, prepared_as_a_task
from bench.post import DISTRICT, SEMESTER_1, grade_post_phase, task_context

RUN_ID = "assignment_night"  # a run of its own: the final-grade posts' journal and postings stay theirs
LMS = "canvas"  # the LMS whose API gives assignment scores
GROUPS = ("Homework", "Quizzes", "Projects", "Tests")  # assignment groups (IC categories) of every section
POINTS = (10.0, 20.0, 50.0, 100.0)  # points possible of an assignment, by its group
WRITE_ROWS = 50_000  # about the rows staged per write (a row group), as the fetch task buffers them


def _passback(config_path: str, start: date):
    """The demo district's grade passback with assignment scores from ``start`` on; made here, as the
    district file's validation allows assignment scores only for an LMS read through its API."""
    from include.config import AssignmentPassback, load_district

    passback = load_district(Path(config_path)).grade_passback
    return passback.model_copy(update={"assignments": AssignmentPassback(start_date=start)})


def _semester(extract_uris: dict[str, str]) -> tuple[date, date]:
    from include.staging import read_frame

    sessions = read_frame(extract_uris["academicSessions"], ["sourced_id", "start_date", "end_date"])
    semester = sessions[sessions["sourced_id"].astype(str) == SEMESTER_1].iloc[0]
    return pd.Timestamp(semester["start_date"]).date(), pd.Timestamp(semester["end_date"]).date()


def _schedule(start: date, end: date, assignments: int) -> tuple[list[str], list[str]]:
    """Assigned and due instants (noon UTC) of each assignment, spread over the semester, each due a
    week after it is assigned and no later than the semester's last day (so its IC term is found)."""
    span = max(0, (end - start).days - 8)
    assigned = [start + timedelta(days=1 + number * span // max(1, assignments)) for number in range(assignments)]
    due = [min(day + timedelta(days=7), end) for day in assigned]
    return ([f"{day.isoformat()}T12:00:00Z" for day in assigned], [f"{day.isoformat()}T12:00:00Z" for day in due])


def assignment_rows_phase(extract_uris: dict[str, str], staging_root: str, sections: int, assignments: int,
                          students: int, seed: int) -> PhaseResult:
    """The LMS's assignment rows of the first ``sections`` provisioned semester-1 sections with active
    students (sorted), ``assignments`` each (in len(GROUPS) groups) for the first ``students`` active
    students of each (sorted), seeded scores; staged as the fetch task stages them, a row group at a
    time, with an empty final-grade rows file. The bench makes them from the whole enrollments extract,
    which no grade task reads: its memory is no task's."""
    import pyarrow as pa

    from include.frames import lookup
    from include.grades.assignments import ASSIGNMENT_SCHEMA
    from include.grades.export import ROW_SCHEMA
    from include.provisioning.plan import user_key
    from include.staging import StagedParquetWriter, read_frame, staging_path, state_path

    started = time.perf_counter()
    provisioned = set(read_frame(state_path(staging_root, DISTRICT, SCHOOL_YEAR, "provisioned/section"),
                                 ["key"])["key"].astype(str))
    classes = read_frame(extract_uris["classes"], ["sourced_id", "term_sourced_ids"]).explode("term_sourced_ids")
    in_semester = set(classes.loc[classes["term_sourced_ids"] == SEMESTER_1, "sourced_id"].astype(str)) & provisioned
    del classes
    enrollments = read_frame(extract_uris["enrollments"],
                             ["user_sourced_id", "class_sourced_id", "role", "status"], categories=["role", "status"])
    active = enrollments[(enrollments["role"] == "student") & (enrollments["status"] == "active")
                         & enrollments["class_sourced_id"].isin(in_semester)]
    active = active[["class_sourced_id", "user_sourced_id"]].astype(str).drop_duplicates()
    del enrollments
    chosen = sorted(active["class_sourced_id"].unique())[:sections]
    graded = active[active["class_sourced_id"].isin(set(chosen))].sort_values(
        ["class_sourced_id", "user_sourced_id"], kind="stable").groupby("class_sourced_id", sort=False).head(students)
    del active
    users = read_frame(extract_uris["users"], ["sourced_id", "legacy_sourced_id"])
    graded = pd.DataFrame({"section": graded["class_sourced_id"].to_numpy(),
                           "student": lookup(graded["user_sourced_id"], users["sourced_id"],
                                             user_key(users)).to_numpy()})
    del users
    graded["number"] = graded["section"].map({section: number for number, section in enumerate(chosen)})

    start, end = _semester(extract_uris)
    assigned, due = _schedule(start, end, assignments)
    number = np.arange(assignments)
    group = number % len(GROUPS)
    titles = np.array([f"Assignment {n + 1}" for n in number], dtype=object)
    group_titles, points = np.array(GROUPS, dtype=object)[group], np.array(POINTS)[group]
    assigned, due = np.array(assigned, dtype=object), np.array(due, dtype=object)
    random = np.random.default_rng(seed)
    rows_path = staging_path(staging_root, DISTRICT, RUN_ID, "grades/export.rows")
    scores_path = staging_path(staging_root, DISTRICT, RUN_ID, "grades/assignments.rows")
    per_chunk = max(1, WRITE_ROWS // max(1, assignments * students))  # sections a write
    row = 0
    with StagedParquetWriter(rows_path, ROW_SCHEMA) as final_rows, \
            StagedParquetWriter(scores_path, ASSIGNMENT_SCHEMA) as staged:
        for first in range(0, len(chosen), per_chunk):
            pairs = graded[(graded["number"] >= first) & (graded["number"] < first + per_chunk)]
            # by section, then assignment, then student, as the LMS's API lists them
            section_of = np.repeat(pairs["number"].to_numpy(), assignments)
            which = np.tile(number, len(pairs))
            order = np.lexsort((np.repeat(np.arange(len(pairs)), assignments), which, section_of))
            section_of, which = section_of[order], which[order]
            pair = np.repeat(np.arange(len(pairs)), assignments)[order]
            size = len(order)
            possible = points[which]
            table = pa.table({
                "row": np.arange(row + 1, row + size + 1, dtype=np.int64),
                "section": pairs["section"].to_numpy(dtype=object)[pair],
                "student": pairs["student"].to_numpy(dtype=object)[pair],
                "assignment": (100_000 + section_of * assignments + which).astype(str),  # unique, as Canvas ids
                "title": titles[which],
                "category": (10_000 + section_of * len(GROUPS) + group[which]).astype(str),
                "category_title": group_titles[which],
                "points_possible": possible,
                "assigned_at": assigned[which],
                "due_at": due[which],
                "published": np.ones(size, dtype=bool),
                "counted": np.ones(size, dtype=bool),
                "score": np.round(random.uniform(0.5, 1.0, size) * possible * 2) / 2,
                "excused": np.zeros(size, dtype=bool),
                "missing": np.zeros(size, dtype=bool),
                "late": np.zeros(size, dtype=bool),
                "graded": np.ones(size, dtype=bool),
                "posted": np.ones(size, dtype=bool),
            }, schema=ASSIGNMENT_SCHEMA)
            staged.write_table(table)
            row += size
    return PhaseResult("grades: assignment rows (bench)", records=staged.row_count,
                       seconds=time.perf_counter() - started, extra={
        "uri": str(final_rows.target), "assignments_uri": str(staged.target), "sections": len(chosen),
        "graded_students": len(graded), "assignments": assignments,
        "categories": len(chosen) * min(assignments, len(GROUPS)), "start_date": start - timedelta(days=14),
        "read_at": datetime.now(timezone.utc).isoformat()})


def assignment_plan_phase(extract_uris: dict[str, str], config_path: str, staging_root: str, export: dict,
                          start: date) -> PhaseResult:
    """The plan task on the staged rows; ``seconds`` is the operator's own time. ``extra`` has the
    counts by action and, if any row is not posted, the reasons."""
    from include.config import ActiveYearRule
    from include.staging import read_frame
    from plugins.operators.grades import PlanGradesOperator

    manifests = {"grades.fetch_lms": export,
                 **{f"extract.{collection}": {"uri": uri, "oneroster_version": "1.2"}
                    for collection, uri in extract_uris.items()}}
    operator = PlanGradesOperator(task_id="plan", export_task_id="grades.fetch_lms",
                                  config_dir=str(Path(config_path).parent), district=DISTRICT,
                                  passback=_passback(config_path, start), active_year_rule=ActiveYearRule(),
                                  staging_root=staging_root)
    prepared_as_a_task()
    started = time.perf_counter()
    manifest = operator.execute(task_context("grades.plan", manifests, RUN_ID))
    seconds = time.perf_counter() - started
    counts = {action: count for action, count in manifest["counts"].items() if count}
    reasons = {}
    if set(counts) != {"post"}:
        postings = read_frame(manifest["uri"], ["action", "reason"])
        reasons = postings.loc[postings["action"] != "post", "reason"].astype(str).value_counts().head(10).to_dict()
    return PhaseResult("assignments: plan", records=manifest["row_count"], seconds=seconds,
                       extra={"uri": manifest["uri"], "items_uri": manifest["items_uri"], "counts": counts,
                              "reasons": reasons})


def post_assignments(emulator: EmulatorProcess, extract_uris: dict[str, str], config_path: str, staging_root: str,
                     sections: int, assignments: int, students: int, seed: int, concurrency: int,
                     rate_limit: float | None,
                     run_phase) -> tuple[PhaseResult, PhaseResult | None, PhaseResult | None]:
    """The rows (made in a process of their own; no task), the plan task, then the post task, each
    through ``run_phase`` (a fresh process); no plan or post (None) if the district has no section to
    grade. Refuses to post a plan that skips rows: the rows are made
    to be posted, so a skip is the bench's mistake. The post's ``requests`` are those IC carried out (a
    429 is not one), with the 429s, the most requests IC saw at once and what IC's gradebook gained
    (results, lineItems, categories, writes, duplicates: after less before) in ``extra``."""
    rows = run_phase(assignment_rows_phase, extract_uris, staging_root, sections, assignments, students, seed)
    if not rows.extra["sections"]:
        print("Assignment posts: no provisioned semester-1 section with active students (the state "
              "provisioned/section names no semester-1 class of the extract); not measured", flush=True)
        return rows, None, None
    start = rows.extra["start_date"]
    export = {"uri": rows.extra["uri"], "assignments_uri": rows.extra["assignments_uri"],
              "source": {"name": "bench", "lms": LMS, "read_at": rows.extra["read_at"]}}
    plan = run_phase(assignment_plan_phase, extract_uris, config_path, staging_root, export, start)
    if set(plan.extra["counts"]) - {"post"}:
        raise RuntimeError(f"the assignment plan does not post every row: {plan.extra['counts']}; "
                           f"reasons: {plan.extra['reasons']}")
    before_book = emulator.gradebook()
    emulator.prepare_gradebook()
    before = emulator.stats()
    manifests = {"grades.plan": {"uri": plan.extra["uri"], "items_uri": plan.extra["items_uri"]},
                 "extract.academicSessions": {"uri": extract_uris["academicSessions"]},
                 "extract.users": {"uri": extract_uris["users"]}}
    post = run_phase(grade_post_phase, emulator.base_url, _passback(config_path, start), staging_root,
                     manifests, concurrency, rate_limit, RUN_ID, "assignments: post to IC")
    after = emulator.stats()
    after_book = emulator.gradebook()
    rate_limited = after["rate_limited"] - before["rate_limited"]
    post.requests = after["requests"] - before["requests"] - rate_limited
    post.extra.update(rate_limited=rate_limited, max_in_flight=after["max_in_flight"],
                      sections=rows.extra["sections"], assignments=assignments,
                      graded_students=rows.extra["graded_students"],
                      gradebook={name: after_book[name] - before_book.get(name, 0) for name in after_book})
    return rows, plan, post
