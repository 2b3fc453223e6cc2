"""Benchmark phases for the pure pandas work: the provisioning plan/diff and the grade transform.

Each phase is a plain function returning a :class:`~bench.measure.PhaseResult`, so
:func:`~bench.measure.run_isolated` can run it in a fresh process (an Airflow task's
peak RSS is that of one process). The inputs are built once: the extract cache holds
the six collections in the staged shape (``arrow_schema``), the same files the extract
tasks write, so the plan phase reads exactly what ``ProvisionOperator`` reads.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.measure import PhaseResult
from include.oneroster.models import COLLECTIONS, arrow_schema, normalise_page
from include.staging import ROW_GROUP_SIZE

SCHOOL_YEAR = 2027
NIGHT_DAY = date(SCHOOL_YEAR - 1, 12, 1)  # the day the planned nights run on: mid first semester
CHUNK = 20_000


def _district(students: int, seed: int):
    from include.sandbox.generator import DistrictSpec, SyntheticDistrict

    return SyntheticDistrict(DistrictSpec(seed=seed, students=students, school_year=SCHOOL_YEAR))


_WORKER_DISTRICT = None


def _init_worker(students: int, seed: int) -> None:
    global _WORKER_DISTRICT
    _WORKER_DISTRICT = _district(students, seed)


def _chunk(job: tuple[str, int, int]) -> pa.Table:
    """One slice of a collection, normalised as the extract does; runs in a pool worker."""
    collection, start, stop = job
    records = _WORKER_DISTRICT.records(collection, "1.2")[start:stop]
    rows, rejected = normalise_page(collection, "1.2", records)
    if rejected:
        raise ValueError(f"{collection}: {len(rejected)} generated records did not normalise")
    return pa.Table.from_pylist(rows, schema=arrow_schema(collection))


def write_extract_cache(students: int, seed: int, directory: str, workers: int = 2) -> PhaseResult:
    """The synthetic district's six collections as ``<directory>/<collection>.parquet``.

    Generated in slices by ``workers`` processes and streamed to one writer, so memory
    stays at a few slices whatever the district's size. An existing complete cache is
    kept (building a 1 M-student district takes minutes).
    """
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    district = _district(students, seed)
    counts = district.expected_counts("1.2")
    done = all(
        (target / f"{name}.parquet").exists()
        and pq.ParquetFile(target / f"{name}.parquet").metadata.num_rows == counts[name]
        for name in COLLECTIONS
    )
    started = time.perf_counter()
    written = 0
    if not done:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(students, seed)) as pool:
            for collection in COLLECTIONS:
                final = target / f"{collection}.parquet"
                partial = target / f".{collection}.parquet.tmp"
                jobs = [(collection, start, min(start + CHUNK, counts[collection]))
                        for start in range(0, counts[collection], CHUNK)]
                with pq.ParquetWriter(partial, arrow_schema(collection), compression="zstd") as writer:
                    for table in pool.imap(_chunk, jobs):
                        writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
                partial.rename(final)
        written = sum(counts.values())
    size = sum((target / f"{name}.parquet").stat().st_size for name in COLLECTIONS)
    return PhaseResult(
        phase="extract_cache",
        records=sum(counts.values()),
        bytes=size,
        seconds=time.perf_counter() - started,
        extra={"counts": counts, "generated": written, "directory": str(target)},
    )


# -- provisioning: plan and diff per step ------------------------------------------------------


def bench_provisioning(config_path: str, orgs_uri: str):
    """The district file's maps, with every school of the extract (staged at ``orgs_uri``, on disk
    or in an object store) mapped to ``create``: the demo file names the demo's three schools, a
    synthetic district has one per 1,000 students."""
    from include.config import load_district
    from include.staging import read_frame

    provisioning = load_district(Path(config_path)).provisioning
    orgs = read_frame(orgs_uri, ["sourced_id", "type"])
    schools = {org: "create" for org, kind in zip(orgs["sourced_id"], orgs["type"], strict=True)
               if kind == "school"}
    return provisioning.model_copy(update={"schools": {**schools, **provisioning.schools}})


def _accepting_lms(changes) -> dict[str, pd.DataFrame]:
    """What an LMS that takes every create, update and deactivation answers, as
    ``ProvisionOperator`` gets it from the LMS, with made-up LMS ids for what it created."""
    from include.provisioning.diff import OUTCOME_SCHEMA

    def answers(keys: pd.Series, lms_ids: pa.ChunkedArray | pa.Array | None = None) -> pd.DataFrame:
        count = len(keys)
        key = pc.cast(pa.array(keys, from_pandas=True), pa.string())
        lms_id = pa.nulls(count, pa.string()) if lms_ids is None else pc.cast(lms_ids, pa.string())
        columns = [key, pa.array(np.ones(count, dtype=bool)), lms_id, pa.nulls(count, pa.string())]
        return pa.table(columns, schema=OUTCOME_SCHEMA).to_pandas(types_mapper=pd.ArrowDtype)

    numbers = pc.cast(pa.array(np.arange(len(changes.create))), pa.string())
    made_up = pc.binary_join_element_wise("9", numbers, "")
    return {
        "create": answers(changes.create["key"], made_up),
        "update": answers(changes.update["key"], pa.array(changes.update["lms_id"], from_pandas=True)),
        "deactivate": answers(changes.deactivate["key"]),
    }


def plan_step_phase(
    kind: str, extract_dir: str, config_path: str, work_dir: str, night: str = "full"
) -> PhaseResult:
    """One provisioning step as its task runs it, against an LMS that takes everything: read the
    staged frames it reads, plan, read the state (none on a ``full`` night, the last night's on a
    ``delta`` night), diff, report, and stage the next state and the result table the later
    steps read, in the operator's order.

    ``seconds`` is the whole step; ``extra`` splits it, counts the actions and gives the peak
    RSS up to the end of the diff (``plan_peak_rss_mib``), before the state is recorded.
    """
    from include.provisioning.diff import empty_state, fingerprint_hashes, next_state, plan_changes, result_table
    from include.provisioning.report import report_rows
    from include.provisioning.steps import READ_BY_LATER_STEPS, STEP_BY_KIND, RunScope
    from include.staging import stage_frame

    step = STEP_BY_KIND[kind]
    extracts_path, work = Path(extract_dir), Path(work_dir)
    provisioning = bench_provisioning(config_path, str(extracts_path / "orgs.parquet"))
    state_file = work / "state" / f"{kind}.parquet"
    if night not in ("full", "delta"):
        raise ValueError(f"night is 'full' or 'delta', not {night!r}")

    started = time.perf_counter()
    extracts = {collection: step.read_extract(collection, str(extracts_path / f"{collection}.parquet"))
                for collection in step.extracts}
    results = {need: step.read_result(need, str(work / "results" / f"{need}.parquet")) for need in step.needs}
    read = time.perf_counter()
    desired = step.desired(extracts, results, provisioning, RunScope(NIGHT_DAY, SCHOOL_YEAR))
    terms = desired.terms
    del extracts, results
    hashes = fingerprint_hashes(desired.rows, kind)
    built = time.perf_counter()
    state = step.read_state(str(state_file)) if night == "delta" else empty_state(kind)
    state_read = time.perf_counter()
    changes = plan_changes(desired, state, hashes=hashes)
    planned, offered = len(desired.rows), len(desired.rows) + len(desired.skipped)
    del desired, hashes
    diffed = time.perf_counter()
    plan_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    outcomes = _accepting_lms(changes)
    (work / "state").mkdir(parents=True, exist_ok=True)
    stage_frame(state_file, next_state(state, changes, outcomes))
    state = state[["key", "lms_id"]]  # as the task: all the result table needs of it
    no_failures = pd.DataFrame({"key": pd.Series(dtype=object), "action": pd.Series(dtype=object),
                                "error": pd.Series(dtype=object), "school": pd.Series(dtype=object)})
    report = report_rows(changes, no_failures, dry_run=False)
    if kind in READ_BY_LATER_STEPS:
        result = result_table(changes, outcomes, state, dry_run=False, terms=terms)
        (work / "results").mkdir(parents=True, exist_ok=True)
        stage_frame(work / "results" / f"{kind}.parquet", result)
    recorded = time.perf_counter()
    return PhaseResult(
        phase=f"plan.{night}.{kind}",
        records=offered,
        seconds=recorded - started,
        extra={
            "read_seconds": round(read - started + state_read - built, 3),
            "plan_seconds": round(built - read, 3),
            "diff_seconds": round(diffed - state_read, 3),
            "record_seconds": round(recorded - diffed, 3),
            "plan_peak_rss_mib": round(plan_peak),
            "planned": planned,
            "report_rows": len(report),
            **changes.counts(),
        },
    )


def plan_night(extract_dir: str, config_path: str, work_dir: str, night: str = "full",
               isolated: bool = True) -> list[PhaseResult]:
    """Every provisioning step in order, each in its own process (as its task would be) unless
    ``isolated`` is false; a ``delta`` night needs a ``full`` one in the same ``work_dir`` first."""
    from bench.measure import run_isolated
    from include.provisioning.steps import STEPS

    run = run_isolated if isolated else (lambda fn, *args: fn(*args))
    return [run(plan_step_phase, step.kind, extract_dir, config_path, work_dir, night) for step in STEPS]


# -- grade passback: the transform -------------------------------------------------------------

PERIODS = 8
CLASS_SIZE = 25
STUDENTS_PER_SCHOOL = 1000
TEXT = pa.large_string()  # what pandas' ``str`` columns hold, as ``read_frame`` gives them
SPELLED_AT_ONCE = 1_000_000  # numbers made text per arrow call


def _categorical(codes: np.ndarray, categories: list[str]) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(pd.Index(categories, dtype="str")))


def _numbered(prefix: str, numbers: np.ndarray) -> pd.Series:
    """``prefix`` and each number as text, made by arrow a slice at a time: no Python string per
    row, and no more than a slice of text made only to be joined."""
    chunks = []
    for start in range(0, len(numbers), SPELLED_AT_ONCE):
        digits = pc.cast(pa.array(numbers[start: start + SPELLED_AT_ONCE]), TEXT)
        chunks.append(pc.binary_join_element_wise(pa.scalar(prefix, TEXT), digits, pa.scalar("", TEXT))
                      if prefix else digits)
    return pa.chunked_array(chunks, TEXT).to_pandas()


def _grade_inputs(rows: int, seed: int):
    """An export of ``rows`` grade rows (one per student and period, as ``read_export`` leaves them
    and ``read_frame`` gives them back: arrow-backed ``str`` text, categoricals for the grading
    period and letter grades) and the GradeContext around it, built with NumPy and arrow so that
    making them costs no more memory than holding them.

    The district follows the synthetic generator's shape: periods 0-5 year-long (both
    semesters), period 6 in semester 1, period 7 in semester 2; the run date is in semester
    1's grading window, so semester 2 rows are skipped as "window closed". A few rows name a
    section or a student IC does not know, some have no grade, some a letter only.
    """
    from datetime import date

    from include.config import DISTRICTS_DIR, load_district
    from include.grades.plan import GradeContext

    random = np.random.default_rng(seed)
    students = -(-rows // PERIODS)
    sections_per_period = -(-STUDENTS_PER_SCHOOL // CLASS_SIZE)
    schools = -(-students // STUDENTS_PER_SCHOOL)
    year = SCHOOL_YEAR

    classes_per_school = PERIODS * sections_per_period
    class_index = np.arange(schools * classes_per_school)
    class_school, local = np.divmod(class_index, classes_per_school)
    period = local // sections_per_period
    terms = {0: [f"{year}01", f"{year}02"], 6: [f"{year}01"], 7: [f"{year}02"]}
    class_ids = _numbered("", 600_000 + class_index)
    classes = pd.DataFrame({
        "sourced_id": class_ids,
        "school_sourced_id": _numbered("", 100 + class_school),
        "course_sourced_id": _numbered("", 50_000 + class_school * 9 + period),
        "term_sourced_ids": pd.Series([np.array(terms.get(p, terms[0]), dtype=object)
                                       for p in range(PERIODS)]).take(period).to_numpy(),
    })
    sessions = pd.DataFrame({
        "sourced_id": [f"{year}00", f"{year}01", f"{year}02"],
        "title": [f"{year - 1}-{year % 100:02d}", f"Semester 1 {year - 1}-{year % 100:02d}",
                  f"Semester 2 {year - 1}-{year % 100:02d}"],
        "start_date": [date(year - 1, 8, 15), date(year - 1, 8, 15), date(year, 1, 5)],
        "end_date": [date(year, 6, 5), date(year - 1, 12, 20), date(year, 6, 5)],
    })
    student = np.arange(students)
    users = pd.DataFrame({
        "sourced_id": _numbered("", 1_000_000 + student),
        "legacy_sourced_id": _numbered("s", 1_000_000 + student),
    })

    row = np.arange(rows)
    who, row_period = np.divmod(row, PERIODS)
    school, local_student = np.divmod(who, STUDENTS_PER_SCHOOL)
    section_number = ((local_student + 7 * row_period) % STUDENTS_PER_SCHOOL) // CLASS_SIZE
    section = 600_000 + school * classes_per_school + row_period * sections_per_period + section_number
    student_number = 1_000_000 + who
    del who, school, local_student, section_number
    stray = random.random(rows)
    section[stray < 0.002] = 999_999
    student_number[(stray >= 0.002) & (stray < 0.004)] = 9_999_999
    del stray
    semester = np.where(row_period == 7, 1, 0)
    percent = np.round(random.uniform(35, 100, rows), 1)
    percent[random.random(rows) < 0.02] = np.nan
    letter = np.full(rows, -1, dtype=np.int8)
    letter_only = random.random(rows) < 0.05
    letters = ["A", "B", "C", "D", "F"]
    letter[letter_only] = random.integers(0, len(letters), letter_only.sum())
    percent[letter_only] = np.nan
    course = np.where(random.random(rows) < 0.5, np.round(random.uniform(35, 100, rows), 1), np.nan)
    export = pd.DataFrame({
        "row": row + 1,
        "section": _numbered("", section),
        "student": _numbered("s", student_number),
        "grading_period": _categorical(semester.astype(np.int8), list(sessions["title"][1:])),
        "term_percent": percent,
        "term_score": _categorical(letter, letters),
        "course_percent": course,
        "course_score": _categorical(np.full(rows, -1, dtype=np.int8), []),
    })
    config = load_district(DISTRICTS_DIR / "demo.yaml").grade_passback
    context = GradeContext(
        sections=pd.DataFrame({"key": class_ids, "lms_id": "9" + class_ids,
                               "course_key": classes["course_sourced_id"]}),
        grading_periods=pd.DataFrame({"key": ["term-" + term for term in sessions["sourced_id"][1:]],
                                      "lms_id": ["7001", "7002"], "title": list(sessions["title"][1:])}),
        users=users,
        classes=classes,
        sessions=sessions,
        mapping=None,
        opt_in=None,
        run_date=date(year - 1, 12, 21),
        config=config,
        posted=pd.DataFrame({"result_id": pd.Series(dtype="str"), "fingerprint": pd.Series(dtype="str")}),
    )
    return export, context


def grade_transform_phase(rows: int, seed: int) -> PhaseResult:
    """The grade transform on ``rows`` export rows: plan the postings, then reconcile them with
    IC accepting every one sent. ``seconds`` is the transform's own time, not the input's, on one
    core: arrow is held to one thread, as a task given one CPU would be; ``process_seconds`` is the
    CPU time the process spent in it."""
    threads = pa.cpu_count(), pa.io_thread_count()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    try:
        return _grade_transform(rows, seed)
    finally:  # as they were: the phase may run in its caller's process (the tests run it so)
        pa.set_cpu_count(threads[0])
        pa.set_io_thread_count(threads[1])


def _grade_transform(rows: int, seed: int) -> PhaseResult:
    from include.grades.export import QUARANTINE_COLUMNS
    from include.grades.plan import plan_postings
    from include.grades.reconciliation import reconcile

    export, context = _grade_inputs(rows, seed)
    quarantined = pd.DataFrame({column: pd.Series(dtype="int64" if column == "row" else object)
                                for column in QUARANTINE_COLUMNS})
    started, cpu_started = time.perf_counter(), time.process_time()
    postings = plan_postings(export, context)
    planned, cpu_planned = time.perf_counter(), time.process_time()
    actions = {key: int(value) for key, value in postings["action"].value_counts().items()}
    del context  # what the reconcile task holds: the export, the postings and IC's answers (as read back)
    sent = pa.array(postings["result_id"]).filter(pa.array((postings["action"] == "post").to_numpy()))
    answers = pd.DataFrame({"result_id": sent.to_pandas(), "status": "created", "message": ""})
    del sent
    answered, cpu_answered = time.perf_counter(), time.process_time()
    result = reconcile(export, quarantined, postings, answers)
    finished, cpu_finished = time.perf_counter(), time.process_time()
    return PhaseResult(
        phase="grade_transform",
        records=rows,
        seconds=(planned - started) + (finished - answered),
        extra={
            "postings": len(postings),
            "plan_seconds": round(planned - started, 3),
            "reconcile_seconds": round(finished - answered, 3),
            "process_seconds": round((cpu_planned - cpu_started) + (cpu_finished - cpu_answered), 3),
            "actions": actions,
            "outcomes": result.counts,
        },
    )
