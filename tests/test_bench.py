"""The benchmark's own smoke test: the whole path at a small scale, its figures consistent.

Timings are not asserted (the benchmark measures them; see README, "Benchmark"); what is
asserted is that every phase ran on the district it says, and that the bounds and ratios
are computed from what was measured.
"""

from __future__ import annotations

import pytest

from bench.__main__ import S3_BUCKET, S3_CONN_ID, main
from include.oneroster.models import COLLECTIONS
from include.provisioning.steps import STEPS

ASSIGNMENT_SECTIONS, ASSIGNMENTS, ASSIGNMENT_STUDENTS = 20, 5, 2
GROUPS = 4  # assignment groups (IC categories) a section has, assignments spread over them


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    return main(["--students", "1500", "--grade-rows", "20000", "--sequential-seconds", "2", "--latency", "0.01",
                 "--page-size", "2000", "--rate-limit", "200", "--lms-latency", "0.005", "--lms-rate-limit", "300",
                 "--grade-posts", "400", "--assignment-sections", str(ASSIGNMENT_SECTIONS), "--assignments",
                 str(ASSIGNMENTS), "--assignment-students", str(ASSIGNMENT_STUDENTS), "--object-store", "--in-process",
                 "--work-dir", str(work)])


def test_every_phase_reads_the_whole_district_and_the_delta_night_only_its_changes(figures):
    results = {result.phase: result for result in figures["results"]}
    full, delta = results["full night: extract"], results["delta night: extract"]
    assert full.records == delta.records == sum(figures["counts"].values())
    assert results["raw transfer bound"].records == full.records
    assert results["full: extract users"].extra["mode"] == "full"
    assert results["delta: extract users"].extra["mode"] == "delta"
    fetched = figures["delta fetched"]
    assert 0 < fetched["users"] < figures["counts"]["users"] / 10, "a 1 % night fetches about 1 %"
    assert delta.requests < full.requests
    assert results["grade_transform"].records == 20000


def test_the_full_night_provisions_the_lms_and_the_delta_night_sends_only_the_changes(figures):
    results = {result.phase: result for result in figures["results"]}
    enrollments = results["full_night: provision enrollment"]
    assert enrollments.extra["counts"]["create"] == enrollments.extra["objects"] > 0
    assert enrollments.requests >= enrollments.records / 50, "bulk calls carry at most 50 items"
    full, delta = results["full night: provision"], results["delta night: provision"]
    assert full.requests <= figures["lms"]["requests"]
    users = results["delta_night: provision user"].extra["counts"]
    assert users["create"] == 0 and 0 < users["update"] < results["full_night: provision user"].records / 10
    dropped = results["delta_night: provision enrollment"].extra["counts"]
    assert dropped["create"] == dropped["update"] == 0 and dropped["deactivate"] > 0
    assert 0 < delta.requests < full.requests / 10


def test_the_grade_posts_reach_ics_gradebook_exactly_once_each(figures):
    results = {result.phase: result for result in figures["results"]}
    plan, post = results["grades: plan"], results["grades: post to IC"]
    sent = plan.extra["counts"]["post"]
    assert plan.extra["counts"] == {"post": 400}, "every export row is gradable tonight, two results a row"
    assert post.extra["counts"] == {"created": sent}
    gradebook = figures["gradebook"]
    assert gradebook["results"] == sent, "IC stores one result per posting sent"
    assert gradebook["written more than once"] == gradebook["duplicates"] == 0
    assert sent < post.requests < sent * 1.2, "one PUT per result, plus the lineItems they need"
    assert 0 < post.extra["max_in_flight"] <= 5, "no more at once than IC allows"


def test_the_assignment_posts_reach_ics_gradebook_exactly_once_each(figures):
    results = {result.phase: result for result in figures["results"]}
    rows, plan, post = (results[phase] for phase in ("grades: assignment rows (bench)", "assignments: plan",
                                                     "assignments: post to IC"))
    sections = rows.extra["sections"]
    assert sections == ASSIGNMENT_SECTIONS, "the 1,500-student district has more semester-1 sections than asked"
    expected = sections * ASSIGNMENTS * ASSIGNMENT_STUDENTS
    assert rows.records == expected, "a row per graded student and assignment"
    assert plan.extra["counts"] == {"post": expected}, "every assignment row is posted tonight"
    assert post.extra["counts"] == {"created": expected}
    gradebook = figures["assignment gradebook"]
    assert gradebook["results"] == expected, "IC stores one result per student and assignment"
    assert gradebook["lineItems"] == sections * ASSIGNMENTS, "and one lineItem per section and assignment"
    assert gradebook["categories"] == sections * min(ASSIGNMENTS, GROUPS), "and one category per assignment group"
    assert gradebook["written more than once"] == gradebook["duplicates"] == 0
    assert gradebook["lineItems written more than once"] == gradebook["categories written more than once"] == 0
    assert post.requests >= gradebook["results"] + gradebook["lineItems"] + gradebook["categories"], "a PUT each"
    assert 0 < post.extra["max_in_flight"] <= 5, "no more at once than IC allows"
    assert figures["figures"]["assignment posts ÷ IC's concurrency bound"] >= 0.95, "IC's bound is never beaten"


def test_bounds_and_ratios_come_from_the_measured_phases(figures):
    ratios = figures["figures"]
    assert ratios["extract ÷ raw-transfer bound"] > 0
    assert ratios["extract ÷ rate-limit bound"] > 0
    assert ratios["LMS load ÷ rate-limit bound"] >= 0.95, "the LMS's own limit is never beaten"
    assert ratios["grade posts ÷ rate-limit bound"] >= 0.95, "nor IC's"
    assert 0 < ratios["delta night ÷ full night"] < 1
    assert ratios["sequential client ÷ our extract (at least)"] > 1
    assert 0 < ratios["peak RSS of any task (MiB)"] < 2048


def test_the_districts_benchmark_parses_every_district_and_a_task_reads_only_its_own(tmp_path):
    figures = main(["--districts", "3", "--work-dir", str(tmp_path)])
    parse, task, errors = figures["results"]
    assert (parse.records, parse.requests, parse.extra["tasks"]) == (3, 3, 63), "21 tasks a demo district"
    assert (task.records, task.requests) == (1, 1)
    assert task.extra["dag_ids"] == [figures["task_dag"]]
    assert (errors.records, errors.requests) == (0, 3), "the import errors' file builds no DAG, reads every file"
    assert parse.extra["heavy_modules"] == task.extra["heavy_modules"] == errors.extra["heavy_modules"] == []
    assert figures["figures"]["district files a task's start-up reads"] == 1
    assert 0 < figures["figures"]["DAG file parse seconds (dag-processor, slowest file)"] == parse.seconds
    assert len(parse.extra["seconds_per_file"]) == 16 and parse.seconds == max(parse.extra["seconds_per_file"].values())


def test_the_object_store_night_stages_on_s3_and_provisions_what_the_disk_night_did(figures):
    results = {result.phase: result for result in figures["results"]}
    extracts = [results[f"S3 full: extract {collection}"] for collection in COLLECTIONS]
    provisioning = [result for phase, result in results.items() if phase.startswith("S3 full_night: provision")]
    staged = {f"s3://{S3_CONN_ID}@{S3_BUCKET}/{key}" for key in figures["object store keys"]}
    assert {extract.extra["uri"] for extract in extracts} <= staged, "every extract is an object in the bucket"
    assert any("/state/" in key for key in figures["object store keys"]), "and so is the provisioned state"
    assert results["S3 full night: extract"].records == results["full night: extract"].records
    assert len(provisioning) == len(STEPS)
    for step in provisioning:
        disk_step = results[step.phase.removeprefix("S3 ")]
        assert step.extra["counts"] == disk_step.extra["counts"], f"{step.phase} did the disk night's work"
    assert sum(step.extra["counts"].get("create", 0) for step in provisioning) > 0, "into an LMS of its own, empty"
    assert figures["figures"]["S3 staging night ÷ disk staging night"] > 0


@pytest.fixture(scope="module")
def canvas_figures(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench-canvas")
    return main(["--students", "1500", "--lms", "canvas", "--canvas-rows-per-import", "2000",
                 "--canvas-upload-seconds", "0.2", "--canvas-seconds-per-row", "0.0001", "--canvas-poll-seconds", "2",
                 "--grade-rows", "2000", "--sequential-seconds", "1", "--latency", "0.01", "--page-size", "2000",
                 "--grade-posts", "100", "--assignment-sections", "0", "--in-process", "--work-dir", str(work)])


def test_the_canvas_nights_import_the_district_into_canvas_and_then_only_its_changes(canvas_figures):
    counts, held = canvas_figures["counts"], canvas_figures["lms"]["held"]
    schools = counts["orgs"] - 1  # the generator's orgs: the district and its schools
    assert held["accounts"] == schools, "a sub-account per school"
    assert held["courses"] == held["sections"] == counts["classes"] - schools, \
        "a course and its section per class, but the trial-schedule class each school has"
    results = {result.phase: result for result in canvas_figures["results"]}
    full, delta = results["full night: provision"], results["delta night: provision"]
    enrollments = results["full_night: provision enrollment"]
    assert enrollments.extra["imports"] == -(-enrollments.records // 2000), "rows_per_import rows an import"
    assert held["enrollments"] >= enrollments.records, "and Canvas's own observer enrollments beside them"
    assert sum(step.extra["imports"] for step in canvas_figures["results"] if step.phase.startswith("delta_night")) \
        <= 2, "a 1 % night is one import of users and one of enrollments"
    assert 0 < delta.records < full.records / 20 and 0 < delta.bytes < full.bytes / 10
    assert canvas_figures["lms"]["rate_limited"] == 0
    assert canvas_figures["figures"]["Canvas provisioning ÷ Canvas's modelled import time"] >= 0.95, \
        "Canvas's own time is never beaten"
