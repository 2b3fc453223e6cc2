"""Benchmark phases for the pure pandas work: the provisioning plan/diff and the grade transform.

Each phase is a plain function returning a :class:`~bench.measure.PhaseResult`, so
:func:`~bench.measure.run_isolated` can run it in a fresh process (an Airflow task's
peak RSS is that of one process). The inputs are built once: the extract cache holds
the six collections in the staged shape (``arrow_schema``), the same files the extract
tasks write, so the plan phase reads exactly what ``ProvisionOperator`` reads.
"""

from __future__ import annotations

import multiprocessing
import time
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


def _provisioning(config_path: str, orgs_file: Path):
    """The district file's maps, with every school of the extract mapped to ``create``: the
    demo file names the demo's three schools, a synthetic district has one per 1,000 students."""
    from include.config import load_district

    provisioning = load_district(Path(config_path)).provisioning
    orgs = pq.read_table(orgs_file, columns=["sourced_id", "type"]).to_pydict()
    schools = {org: "create" for org, kind in zip(orgs["sourced_id"], orgs["type"], strict=True)
               if kind == "school"}
    return provisioning.model_copy(update={"schools": {**schools, **provisioning.schools}})


def _accepted_state(changes) -> pd.DataFrame:
    """The state after a night whose every create and update the LMS took, with made-up LMS ids
    (what ``next_state`` records, without a million ``ItemResult`` objects)."""
    from include.provisioning.diff import empty_state
    from include.provisioning.plan import plain, sorted_by_key

    written = pd.concat([changes.create, changes.update, changes.unchanged], ignore_index=True)
    numbers = pc.cast(pa.array(range(len(written)), pa.int64()), pa.string())
    made_up = pc.binary_join_element_wise("9", numbers, "")
    made_up = pd.Series(pa.chunked_array([made_up]).to_pandas().array, index=written.index)
    written["lms_id"] = written["lms_id"].fillna(made_up) if "lms_id" in written else made_up
    return plain(sorted_by_key(written.reindex(columns=list(empty_state(changes.kind).columns))))


def plan_step_phase(
    kind: str, extract_dir: str, config_path: str, work_dir: str, night: str = "full"
) -> PhaseResult:
    """One provisioning step as its task runs it, without the LMS: read the staged frames it
    reads, plan, diff against the state (none on a ``full`` night, the last night's on a
    ``delta`` night), report, and stage the result table the later steps read.

    A full night also stages the state an all-accepting LMS would leave, for the delta night.
    ``seconds`` is the whole step; ``extra`` splits it and counts the actions.
    """
    from include.provisioning.diff import empty_state, plan_changes
    from include.provisioning.report import report_rows
    from include.provisioning.steps import STEP_BY_KIND
    from include.staging import read_frame, stage_frame
    from plugins.operators.provision import ProvisionOperator

    step = STEP_BY_KIND[kind]
    extracts_path, work = Path(extract_dir), Path(work_dir)
    provisioning = _provisioning(config_path, extracts_path / "orgs.parquet")
    state_file = work / "state" / f"{kind}.parquet"
    if night not in ("full", "delta"):
        raise ValueError(f"night is 'full' or 'delta', not {night!r}")

    started = time.perf_counter()
    extracts = {
        collection: read_frame(
            str(extracts_path / f"{collection}.parquet"), columns=step.columns.get(collection),
            arrow_lists=True, categories=step.categories.get(collection),
        )
        for collection in step.extracts
    }
    results = {need: read_frame(str(work / "results" / f"{need}.parquet"), columns=step.columns.get(need))
               for need in step.needs}
    state = (read_frame(str(state_file), categories=step.categories.get("state")) if night == "delta"
             else empty_state(kind))
    read = time.perf_counter()
    desired = step.build(extracts, results, provisioning)
    del extracts, results
    built = time.perf_counter()
    changes = plan_changes(desired, state)
    diffed = time.perf_counter()
    no_failures = pd.DataFrame({"key": pd.Series(dtype=object), "action": pd.Series(dtype=object),
                                "error": pd.Series(dtype=object), "school": pd.Series(dtype=object)})
    report = report_rows(changes, no_failures, dry_run=False)
    if night == "full":
        state = _accepted_state(changes).reset_index(drop=True)
        (work / "state").mkdir(parents=True, exist_ok=True)
        stage_frame(state_file, state)
    result = ProvisionOperator._result_table(changes, {}, state, dry_run=False)
    (work / "results").mkdir(parents=True, exist_ok=True)
    stage_frame(work / "results" / f"{kind}.parquet", result)
    recorded = time.perf_counter()
    return PhaseResult(
        phase=f"plan.{night}.{kind}",
        records=len(desired.rows) + len(desired.skipped),
        seconds=recorded - started,
        extra={
            "read_seconds": round(read - started, 3),
            "plan_seconds": round(built - read, 3),
            "diff_seconds": round(diffed - built, 3),
            "record_seconds": round(recorded - diffed, 3),
            "planned": len(desired.rows),
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


def _grade_inputs(rows: int, seed: int):
    """An export of ``rows`` grade rows (one per student and period, as ``read_export`` leaves them
    and ``read_frame`` gives them back) and the GradeContext around it, built with NumPy.

    The district follows the synthetic generator's shape: periods 0-5 year-long (both
    semesters), period 6 in semester 1, period 7 in semester 2; the run date is in semester
    1's grading window, so semester 2 rows are skipped as "window closed". A few rows name a
    section or a student IC does not know, some have no grade, some a letter only.
    """
    from datetime import date

    from include.config import DISTRICTS_DIR, load_district
    from include.grades.transform import GradeContext

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
    class_ids = pd.Series(600_000 + class_index).astype(str)
    classes = pd.DataFrame({
        "sourced_id": class_ids,
        "school_sourced_id": pd.Series(100 + class_school).astype(str),
        "course_sourced_id": pd.Series(50_000 + class_school * 9 + period).astype(str),
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
        "sourced_id": pd.Series(1_000_000 + student).astype(str),
        "legacy_sourced_id": ("s" + pd.Series(1_000_000 + student).astype(str)),
    })

    row = np.arange(rows)
    who, row_period = np.divmod(row, PERIODS)
    school, local_student = np.divmod(who, STUDENTS_PER_SCHOOL)
    section_number = ((local_student + 7 * row_period) % STUDENTS_PER_SCHOOL) // CLASS_SIZE
    section = school * classes_per_school + row_period * sections_per_period + section_number
    section_text = pd.Series(600_000 + section).astype(str)
    student_text = "s" + pd.Series(1_000_000 + who).astype(str)
    stray = random.random(rows)
    section_text[stray < 0.002] = "999999"
    student_text[(stray >= 0.002) & (stray < 0.004)] = "s9999999"
    semester = np.where(row_period == 7, 1, 0)
    period_title = np.array([sessions["title"][1], sessions["title"][2]], dtype=object)[semester]
    percent = np.round(random.uniform(35, 100, rows), 1)
    percent[random.random(rows) < 0.02] = np.nan
    letter = np.full(rows, None, dtype=object)
    letter_only = random.random(rows) < 0.05
    letters = np.array(["A", "B", "C", "D", "F"], dtype=object)
    letter[letter_only] = letters[random.integers(0, len(letters), letter_only.sum())]
    percent[letter_only] = np.nan
    course = np.where(random.random(rows) < 0.5, np.round(random.uniform(35, 100, rows), 1), np.nan)
    export = pd.DataFrame({
        "row": row + 1,
        "section": section_text.astype("str"),
        "student": student_text.astype("str"),
        "grading_period": pd.Series(period_title).astype("str"),
        "term_percent": percent,
        "term_score": pd.Series(letter).astype("str"),
        "course_percent": course,
        "course_score": pd.Series(np.full(rows, None, dtype=object)).astype("str"),
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
    IC accepting every one sent. ``seconds`` is the transform's own time, not the input's."""
    from include.grades.export import QUARANTINE_COLUMNS
    from include.grades.transform import plan_postings, reconcile

    export, context = _grade_inputs(rows, seed)
    quarantined = pd.DataFrame({column: pd.Series(dtype="int64" if column == "row" else object)
                                for column in QUARANTINE_COLUMNS})
    started = time.perf_counter()
    postings = plan_postings(export, context)
    planned = time.perf_counter()
    sent = postings.loc[postings["action"] == "post", "result_id"]
    answers = pd.DataFrame({"result_id": sent, "status": "created", "message": ""})
    answered = time.perf_counter()
    result = reconcile(export, quarantined, postings, answers)
    finished = time.perf_counter()
    return PhaseResult(
        phase="grade_transform",
        records=rows,
        seconds=(planned - started) + (finished - answered),
        extra={
            "postings": len(postings),
            "plan_seconds": round(planned - started, 3),
            "reconcile_seconds": round(finished - answered, 3),
            "actions": {key: int(value) for key, value in postings["action"].value_counts().items()},
            "outcomes": result.counts,
        },
    )
