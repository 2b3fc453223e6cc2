"""Grade-post phase: final grades PUT to IC's OneRoster gradebook by the real post task.

Its input is what the plan task stages: an LMS final-grade export of semester 1 (one row
per active student enrollment of the semester's classes, whole sections in turn, with the
term and the course-to-date grade: a result for each of the district's term and overall
tasks) planned by the real ``PlanGradesOperator`` against the night's staged extracts and
provisioned sections. The export is made and staged in a process of its own, as the fetch
task would have staged it, so that the plan's peak RSS is the plan task's alone. The post is
``PostGradesOperator.execute`` in a fresh process, as its Airflow task runs it, against the
bench's IC emulator (its latency and rate limit apply to the gradebook's PUTs).
IC counts the requests, the 429s and the most in flight, and its gradebook what it stored,
so the figures and the check that every result arrived once are IC's, not ours.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.extract import CONN_ID, SCHOOL_YEAR, EmulatorProcess, use_ic_connection
from bench.measure import PhaseResult, UpstreamManifests, prepared_as_a_task

if TYPE_CHECKING:
    from include.config import ExportColumns, GradePassback

DISTRICT = "bench"  # the provisioning steps' district: the plan reads the sections they provisioned
RUN_ID = "grade_night"
SEMESTER_1 = f"{SCHOOL_YEAR}01"
GRADING_NIGHT = datetime(SCHOOL_YEAR - 1, 12, 21, 6, tzinfo=timezone.utc)  # semester 1 ended the day before


def task_context(task_id: str, manifests: dict[str, dict], run_id: str = RUN_ID) -> dict:
    """What a grade task reads of its Airflow context: upstream manifests, run, year, the grading night."""
    return {"ti": UpstreamManifests(task_id, manifests), "run_id": run_id,
            "params": {"active_year": SCHOOL_YEAR}, "logical_date": GRADING_NIGHT}


def lms_export(extract_uris: dict[str, str], columns: ExportColumns, rows: int, seed: int, period: str) -> bytes:
    """The LMS's semester-1 export of ``rows`` grades as a CSV file: active student enrollments of
    the semester's classes, class by class (teachers finish a section at a time), seeded grades,
    under the title of the grading period provisioning made for the semester (``period``)."""
    from include.frames import lookup
    from include.provisioning.plan import user_key
    from include.sandbox.grade_export import letter
    from include.staging import read_frame

    classes = read_frame(extract_uris["classes"], ["sourced_id", "term_sourced_ids"]).explode("term_sourced_ids")
    in_semester = set(classes.loc[classes["term_sourced_ids"] == SEMESTER_1, "sourced_id"])
    enrollments = read_frame(extract_uris["enrollments"],  # eight million rows, filtered in one copy
                             ["user_sourced_id", "class_sourced_id", "role", "status"], categories=["role", "status"])
    graded = enrollments[(enrollments["role"] == "student") & (enrollments["status"] == "active")
                         & enrollments["class_sourced_id"].isin(in_semester)]
    del enrollments
    graded = graded.sort_values(["class_sourced_id", "user_sourced_id"], kind="stable").head(rows)
    users = read_frame(extract_uris["users"], ["sourced_id", "legacy_sourced_id"])
    random = np.random.default_rng(seed)
    term, course = (np.round(random.uniform(55, 100, len(graded)), 1) for _ in range(2))
    export = pd.DataFrame({
        columns.section: graded["class_sourced_id"].to_numpy(),
        columns.student: lookup(graded["user_sourced_id"], users["sourced_id"], user_key(users)).to_numpy(),
        columns.grading_period: period,
        columns.term_percent: term,
        columns.term_score: [letter(percent) for percent in term],
        columns.course_percent: course,
        columns.course_score: [letter(percent) for percent in course],
    })
    return export.to_csv(index=False, lineterminator="\r\n").encode("utf-8-sig")


def grade_export_phase(extract_uris: dict[str, str], config_path: str, staging_root: str, results: int,
                       seed: int) -> PhaseResult:
    """An export of about ``results`` grades, parsed and staged as the fetch task stages it. The bench
    makes it from the whole enrollments extract, which no grade task reads: its memory is no task's."""
    from include.config import load_district
    from include.grades.export import read_export
    from include.provisioning.plan import term_key
    from include.provisioning.steps import TERM_PERIODS
    from include.staging import read_frame, stage_frame, staging_path, state_path

    passback = load_district(Path(config_path)).grade_passback
    results_per_row = len(passback.term_task_ids) + len(passback.overall_task_ids)
    periods = read_frame(state_path(staging_root, DISTRICT, SCHOOL_YEAR, f"provisioned/{TERM_PERIODS}"))
    period = periods.loc[periods["key"] == term_key(SEMESTER_1), "title"].item()
    parsed = read_export(lms_export(extract_uris, passback.columns, -(-results // results_per_row), seed, period),
                         passback.columns)
    export = stage_frame(staging_path(staging_root, DISTRICT, RUN_ID, "grades/export.rows"), parsed.rows)
    return PhaseResult("grades: LMS export (bench)", records=export.row_count,
                       extra={"uri": str(export.target)})


def grade_plan_phase(extract_uris: dict[str, str], config_path: str, staging_root: str,
                     export_uri: str) -> PhaseResult:
    """The plan task on the staged export; ``seconds`` is the operator's own time."""
    from include.config import ActiveYearRule, load_district
    from plugins.operators.grades import PlanGradesOperator

    manifests = {"grades.fetch_export": {"uri": export_uri},
                 **{f"extract.{collection}": {"uri": uri, "oneroster_version": "1.2"}
                    for collection, uri in extract_uris.items()}}
    operator = PlanGradesOperator(task_id="plan", export_task_id="grades.fetch_export",
                                  config_dir=str(Path(config_path).parent), district=DISTRICT,
                                  passback=load_district(Path(config_path)).grade_passback,
                                  active_year_rule=ActiveYearRule(), staging_root=staging_root)
    prepared_as_a_task()
    started = time.perf_counter()
    manifest = operator.execute(task_context("grades.plan", manifests))
    return PhaseResult("grades: plan", records=manifest["row_count"], seconds=time.perf_counter() - started,
                       extra={"uri": manifest["uri"], "counts": manifest["counts"]})


def grade_post_phase(base_url: str, passback: GradePassback, staging_root: str, manifests: dict[str, dict],
                     concurrency: int, rate_limit: float | None, run_id: str = RUN_ID,
                     phase: str = "grades: post to IC") -> PhaseResult:
    """The post task of run ``run_id``: every posting of the plan PUT to IC (categories, score scales
    and lineItems first), as many at once as IC allows and never faster than its rate limit."""
    use_ic_connection(base_url)
    from include.config import ActiveYearRule, InfiniteCampus
    from plugins.operators.grades import PostGradesOperator

    ic = InfiniteCampus(conn_id=CONN_ID, pool="ic_bench", max_concurrency=concurrency, peak_concurrency=1,
                        requests_per_second=rate_limit)
    operator = PostGradesOperator(task_id="post", plan_task_id="grades.plan", infinite_campus=ic,
                                  district=DISTRICT, passback=passback, active_year_rule=ActiveYearRule(),
                                  staging_root=staging_root)
    prepared_as_a_task()
    started = time.perf_counter()
    manifest = operator.execute(task_context("grades.post", manifests, run_id))
    return PhaseResult(phase, records=manifest["row_count"], seconds=time.perf_counter() - started,
                       extra={"counts": manifest["counts"]})


def post_grades(emulator: EmulatorProcess, extract_uris: dict[str, str], config_path: str, staging_root: str,
                results: int, seed: int, concurrency: int, rate_limit: float | None,
                run_phase) -> tuple[PhaseResult, PhaseResult]:
    """The plan task, then the post task, each through ``run_phase`` (a fresh process), after the
    export is made in one more (its figures are in the plan's ``extra``, as it is no task). The post's
    ``requests`` are those IC carried out (a 429 is not one), with the 429s, the most requests IC
    saw at once and what its gradebook holds in ``extra``."""
    export = run_phase(grade_export_phase, extract_uris, config_path, staging_root, results, seed)
    plan = run_phase(grade_plan_phase, extract_uris, config_path, staging_root, export.extra["uri"])
    plan.extra.update(export_rows=export.records, export_seconds=export.seconds,
                      export_peak_rss_mib=export.peak_rss_mib)
    emulator.prepare_gradebook()
    before = emulator.stats()
    manifests = {"grades.plan": {"uri": plan.extra["uri"]},
                 "extract.academicSessions": {"uri": extract_uris["academicSessions"]}}
    from include.config import load_district

    post = run_phase(grade_post_phase, emulator.base_url, load_district(Path(config_path)).grade_passback,
                     staging_root, manifests, concurrency, rate_limit)
    after = emulator.stats()
    rate_limited = after["rate_limited"] - before["rate_limited"]
    post.requests = after["requests"] - before["requests"] - rate_limited
    post.extra.update(rate_limited=rate_limited, max_in_flight=after["max_in_flight"],
                      gradebook=emulator.gradebook())
    return plan, post
