"""``python -m bench --students N``: the extract → plan → load → grade-transform → grade-post path at scale.

The IC emulator runs in its own process with every page built ahead, a configured
latency and optionally a rate limit; so does the Schoology emulator the provisioning
tasks load. The benchmark prints, per phase, records, requests, bytes, wall time,
records/s and peak RSS (each phase in a fresh process, as an Airflow task), then our
extract against two bounds (the same pages read and thrown away at the same
concurrency; requests needed ÷ the rate limit), the LMS load against the LMS's rate
limit, a plain sequential client, a delta night against the full night, end to end, and
the grade posts to IC's gradebook against IC's rate limit, with what IC stored, and the
assignment posts (a result per student and assignment, with their lineItems and categories) to
IC's gradebook against IC's concurrency bound (and its rate limit, if set).
With ``--object-store`` it also runs the full night again staged on a local S3 server
instead of local disk, against an LMS of its own as empty as the first, and prints the
ratio of the two nights.

``python -m bench --districts N`` measures instead the DAG file at N district files: the
dag-processor's parse and a task's start-up (see :mod:`bench.parse`).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

from bench.assignments import post_assignments
from bench.extract import (
    EmulatorProcess,
    EmulatorSettings,
    extract_phase,
    raw_transfer_phase,
    requests_needed,
    sequential_phase,
)
from bench.load import CanvasModel, LmsProcess, LmsSettings, provision_night
from bench.measure import PhaseResult, run_isolated
from bench.parse import DAG_FILES, ERRORS_FILE, dag_file_of, dag_file_parse, slowest_of, write_districts
from bench.post import post_grades
from include.config import DISTRICTS_DIR
from include.oneroster.models import COLLECTIONS
from include.sandbox.environment import use_project_airflow
from include.sandbox.object_store import ObjectStore

DEMO = DISTRICTS_DIR / "demo.yaml"
DEMO_CANVAS = DISTRICTS_DIR / "demo_canvas.yaml"  # the provisioning maps of a Canvas night (--lms canvas)
S3_CONN_ID, S3_BUCKET = "staging_s3_bench", "oneroster-bench"  # --object-store's connection and bucket

GOALS = {
    "extract ÷ raw-transfer bound": 1.5,
    "extract ÷ rate-limit bound": 1.2,
    "LMS load ÷ rate-limit bound": 1.2,
    "Canvas provisioning ÷ Canvas's modelled import time": 1.2,
    "grade posts ÷ rate-limit bound": 1.2,
    "assignment posts ÷ IC's concurrency bound": 1.2,
    "delta night ÷ full night": 0.05,
    "S3 staging night ÷ disk staging night": 1.15,
    "sequential client ÷ our extract (at least)": 10.0,
    "grade transform seconds": 10.0,
    "peak RSS of any task (MiB)": 2048.0,
    "DAG file parse seconds (dag-processor, slowest file)": 2.0,
    "district files a task's start-up reads": 1.0,
}


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2027)
    parser.add_argument("--latency", type=float, default=0.05, help="IC's time per request, seconds")
    parser.add_argument("--record-latency", type=float, default=20e-6,
                        help="IC's time per record served, seconds (20 µs: a 50,000-record page takes 1 s)")
    parser.add_argument("--rate-limit", type=float, default=None, help="IC's requests per second, if limited")
    parser.add_argument("--page-size", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--sequential-seconds", type=float, default=30.0,
                        help="how long the sequential client reads before its rate is projected")
    parser.add_argument("--change-percent", type=float, default=1.0, help="records changed before the delta night")
    parser.add_argument("--lms-rate-limit", type=float, default=None, help="the LMS's requests per second, if limited")
    parser.add_argument("--lms-latency", type=float, default=0.05, help="the LMS's time per request, seconds")
    parser.add_argument("--lms-in-flight", type=int, default=4, help="bulk calls under way at once (lms.max_in_flight)")
    parser.add_argument("--lms", choices=("schoology", "canvas"), default="schoology",
                        help="the LMS the nights provision: Schoology (the --lms-* settings) or Canvas (--canvas-*)")
    parser.add_argument("--canvas-upload-seconds", type=float, default=1.0,
                        help="Canvas's time from an import's upload until it starts, seconds")
    parser.add_argument("--canvas-seconds-per-row", type=float, default=0.0002,
                        help="Canvas's time per row of an import, seconds (0.2 ms: 5,000 rows a second)")
    parser.add_argument("--canvas-rows-per-import", type=int, default=10_000, help="lms.rows_per_import")
    parser.add_argument("--canvas-poll-seconds", type=float, default=10.0,
                        help="the Canvas connection's poll_seconds (the longest wait between two status reads)")
    parser.add_argument("--grade-rows", type=int, default=5_000_000)
    parser.add_argument("--grade-posts", type=int, default=20_000,
                        help="results the post task PUTs to IC's gradebook (each one request)")
    parser.add_argument("--assignment-sections", type=int, default=10_000,
                        help="semester-1 sections whose assignment scores are posted to IC (fewer if the district "
                             "has fewer provisioned with students); 0 skips the assignment posts")
    parser.add_argument("--assignments", type=int, default=20, help="assignments per section (in 4 groups)")
    parser.add_argument("--assignment-students", type=int, default=1,
                        help="graded students per section and assignment; each result is one PUT (as is each "
                             "lineItem and category), so the default keeps a run at 10,000 × 20 to about 440,000 "
                             "requests (200,000 results, 200,000 lineItems, 40,000 categories)")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/oneroster-bench"))
    parser.add_argument("--districts", type=int, default=None,
                        help="measure only the DAG file's parse at this many district files (e.g. 500)")
    parser.add_argument("--object-store", action="store_true",
                        help="run the full night a second time staged on a local S3 server, against disk")
    parser.add_argument("--in-process", action="store_true",
                        help="run the phases in this process (quick smoke runs; peak RSS is then the whole run's)")
    return parser.parse_args(argv)


def run_phase(args: argparse.Namespace, fn, *arguments) -> PhaseResult:
    """A phase in a fresh process (an Airflow task's peak RSS is its own process's), or here."""
    if not args.in_process:
        return run_isolated(fn, *arguments)
    result = fn(*arguments)
    result.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def extract_night(emulator: EmulatorProcess, args: argparse.Namespace, staging: str, run_id: str,
                  full: bool) -> list[PhaseResult]:
    results = []
    for collection in COLLECTIONS:
        result = run_phase(args, extract_phase, emulator.base_url, collection, staging, run_id, args.page_size,
                           args.concurrency, args.rate_limit, full)
        result.phase = f"{'full' if full else 'delta'}: extract {collection}"
        results.append(result)
    return results


def _uris(extracts: list[PhaseResult]) -> dict[str, str]:
    return dict(zip(COLLECTIONS, (result.extra["uri"] for result in extracts), strict=True))


def full_night_on_object_store(emulator: EmulatorProcess, args: argparse.Namespace, lms_settings: LmsSettings,
                               manifests_file: Path) -> tuple[list[PhaseResult], list[PhaseResult], list[str]]:
    """The full night again, staged on a local S3 server (moto in a thread of this process, which
    only waits while a phase's process runs) and provisioning an LMS of its own, as empty as the
    disk night's was: its extracts, its provisioning steps and the keys it staged."""
    with ObjectStore(conn_id=S3_CONN_ID, bucket=S3_BUCKET) as store:
        os.environ.update(store.connection_env())  # every phase's process inherits the connection
        staging = store.staging_root()
        with LmsProcess(lms_settings) as lms:
            extracts = extract_night(emulator, args, staging, "full_night", full=True)
            load = provision_night(lms, _uris(extracts), str(district_file(args)), staging, "full_night",
                                   manifests_file, partial(run_phase, args))
        for result in [*extracts, *load]:
            result.phase = f"S3 {result.phase}"
        return extracts, load, store.keys()


def lms_settings_of(args: argparse.Namespace) -> LmsSettings | CanvasModel:
    if args.lms == "canvas":
        return CanvasModel(args.canvas_upload_seconds, args.canvas_seconds_per_row, args.canvas_rows_per_import,
                           args.canvas_poll_seconds)
    return LmsSettings(args.lms_rate_limit, args.lms_latency, args.lms_in_flight)


def district_file(args: argparse.Namespace) -> Path:
    """The district file whose maps the nights provision with (the bench maps every school to create)."""
    return DEMO_CANVAS if args.lms == "canvas" else DEMO


def total(phase: str, results: list[PhaseResult]) -> PhaseResult:
    return PhaseResult(phase, records=sum(r.records for r in results), requests=sum(r.requests for r in results),
                       bytes=sum(r.bytes for r in results), seconds=sum(r.seconds for r in results),
                       peak_rss_mib=max(r.peak_rss_mib for r in results))


def table(results: list[PhaseResult]) -> str:
    header = f"{'phase':<36}{'records':>12}{'requests':>10}{'MB':>9}{'seconds':>10}{'records/s':>12}{'peak RSS MiB':>14}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(f"{r.phase:<36}{r.records:>12,}{r.requests:>10,}{r.bytes / 1e6:>9.1f}{r.seconds:>10.2f}"
                     f"{r.records_per_second:>12,.0f}{r.peak_rss_mib:>14.0f}")
    return "\n".join(lines)


def verdict(name: str, value: float) -> str:
    goal = GOALS[name]
    met = value >= goal if "at least" in name else value <= goal
    return f"  {name:<52}{value:>10.2f}   goal {'≥' if 'at least' in name else '≤'} {goal:g}: {'met' if met else 'NOT met'}"


def districts_main(args: argparse.Namespace) -> dict:
    """The DAG file at ``args.districts`` district files: each parse in a fresh process, whatever
    ``--in-process`` says (a parse in a process that already imported it would measure nothing)."""
    work = args.work_dir / f"districts-{args.districts}"
    if "AIRFLOW_HOME" not in os.environ:
        use_project_airflow(work / "airflow-home")
        os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    dag_ids = write_districts(work / "districts", args.districts)
    task_dag = dag_ids[len(dag_ids) // 2]
    print(f"{args.districts:,} district files (the demo's settings) in {work / 'districts'}; the task's DAG "
          f"{task_dag}", flush=True)
    parse = slowest_of([run_isolated(dag_file_parse, str(work / "districts"), dag_file) for dag_file in DAG_FILES])
    task = run_isolated(dag_file_parse, str(work / "districts"), dag_file_of(task_dag), task_dag)
    errors = run_isolated(dag_file_parse, str(work / "districts"), ERRORS_FILE)
    print()
    header = f"{'phase':<50}{'DAGs':>6}{'tasks':>8}{'files read':>12}{'seconds':>10}{'peak RSS MiB':>14}"
    print(header)
    print("-" * len(header))
    for result in (parse, task, errors):
        print(f"{result.phase:<50}{result.records:>6,}{result.extra['tasks']:>8,}{result.requests:>12,}"
              f"{result.seconds:>10.2f}{result.peak_rss_mib:>14.0f}")
    print(f"\nThe {len(DAG_FILES)} DAG files' parses add up to {parse.extra['seconds_total']:.2f} s; the slowest, "
          f"{parse.extra['slowest_file']}, takes {parse.seconds:.2f} s.")
    for result in (parse, task, errors):
        print(f"{result.phase}: heavy modules imported: {', '.join(result.extra['heavy_modules']) or 'none'}")
    figures = {
        "DAG file parse seconds (dag-processor, slowest file)": parse.seconds,
        "district files a task's start-up reads": float(task.requests),
    }
    print("Figures against the goals:")
    for name, value in figures.items():
        print(verdict(name, value))
    return {"figures": figures, "results": [parse, task, errors], "task_dag": task_dag}


def main(argv: list[str] | None = None) -> dict:
    args = arguments(argv)
    if args.districts is not None:
        return districts_main(args)
    work = args.work_dir / f"{args.students}"
    shutil.rmtree(work / "staging", ignore_errors=True)
    shutil.rmtree(work / "manifests", ignore_errors=True)
    staging, manifests = (work / "staging").as_uri(), work / "manifests"
    manifests.mkdir(parents=True)
    if "AIRFLOW_HOME" not in os.environ:
        use_project_airflow(work / "airflow-home")  # every phase's process inherits it
        os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    settings = EmulatorSettings(args.students, args.seed, args.latency, args.record_latency, args.rate_limit,
                                args.page_size)
    print(f"District: {args.students:,} students, seed {args.seed}; IC emulator latency {args.latency * 1000:g} ms "
          f"+ {args.record_latency * 1e6:g} µs/record, rate limit {args.rate_limit or 'none'}, "
          f"pages of {args.page_size:,}, {args.concurrency} concurrent", flush=True)
    lms_settings = lms_settings_of(args)
    if args.lms == "canvas":
        print(f"Canvas emulator: an import starts {args.canvas_upload_seconds:g} s after its upload and takes "
              f"{args.canvas_seconds_per_row * 1000:g} ms a row, one import at a time; {args.canvas_rows_per_import:,} "
              f"rows an import, status read at most {args.canvas_poll_seconds:g} s apart", flush=True)
    else:
        print(f"LMS emulator: latency {args.lms_latency * 1000:g} ms, rate limit {args.lms_rate_limit or 'none'}, "
              f"{args.lms_in_flight} bulk calls in flight", flush=True)
    with EmulatorProcess(settings) as emulator:
        with LmsProcess(lms_settings) as lms:
            print(f"Emulator: {sum(emulator.counts.values()):,} records in {emulator.info['pages']} pages built ahead "
                  f"in {emulator.info['prerender_seconds']:.0f} s (not measured)", flush=True)
            raw = run_phase(args, raw_transfer_phase, emulator.base_url, emulator.counts, args.page_size,
                            args.concurrency, args.rate_limit)
            full = extract_night(emulator, args, staging, "full_night", full=True)
            full_load = provision_night(lms, _uris(full), str(district_file(args)), staging, "full_night",
                                        manifests / "full_night.json", partial(run_phase, args))
            s3_full, s3_load, s3_keys = [], [], []
            if args.object_store:
                s3_full, s3_load, s3_keys = full_night_on_object_store(emulator, args, lms_settings,
                                                                       manifests / "s3_full_night.json")
            sequential = run_phase(args, sequential_phase, emulator.base_url, emulator.counts,
                                   args.sequential_seconds)
            changes_at = datetime.now(timezone.utc) + timedelta(hours=1)
            for collection in ("users", "enrollments"):
                emulator.modify(collection, int(emulator.counts[collection] * args.change_percent / 100), changes_at)
            delta = extract_night(emulator, args, staging, "delta_night", full=False)
            delta_load = provision_night(lms, _uris(delta), str(district_file(args)), staging, "delta_night",
                                         manifests / "delta_night.json", partial(run_phase, args))
            stats, lms_stats = emulator.stats(), lms.stats()
        from bench.transform import grade_transform_phase

        grades = run_phase(args, grade_transform_phase, args.grade_rows, args.seed)
        grade_plan, grade_post = post_grades(emulator, _uris(delta), str(DEMO), staging, args.grade_posts, args.seed,
                                             args.concurrency, args.rate_limit, partial(run_phase, args))
        assignment_rows = assignment_plan = assignment_post = None
        if args.assignment_sections > 0:
            assignment_rows, assignment_plan, assignment_post = post_assignments(
                emulator, _uris(delta), str(DEMO), staging, args.assignment_sections, args.assignments,
                args.assignment_students, args.seed, args.concurrency, args.rate_limit, partial(run_phase, args))
    # the assignment rows are the bench's (no task's): a row of the table, not in the tasks' peak RSS
    assignment_phases = [assignment_plan, assignment_post] if assignment_post else []

    full_extract, delta_extract = total("full night: extract", full), total("delta night: extract", delta)
    full_provision = total("full night: provision", full_load)
    delta_provision = total("delta night: provision", delta_load)
    s3_night_rows = []
    if args.object_store:
        s3_extract, s3_provision = total("S3 full night: extract", s3_full), total("S3 full night: provision", s3_load)
        s3_night_rows = [*s3_full, s3_extract, *s3_load, s3_provision]
    results = [raw, *full, full_extract, *full_load, full_provision, *s3_night_rows, *delta, delta_extract,
               *delta_load, delta_provision, sequential, grades, grade_plan, grade_post,
               *([assignment_rows] if assignment_rows else []), *assignment_phases]
    tasks = [*full, *delta, *full_load, *delta_load, *s3_full, *s3_load, grades, grade_plan, grade_post,
             *assignment_phases]
    print()
    print(table(results))
    print()
    full_night = full_extract.seconds + full_provision.seconds
    delta_night = delta_extract.seconds + delta_provision.seconds
    figures = {
        "extract ÷ raw-transfer bound": full_extract.seconds / raw.seconds,
        "delta night ÷ full night": delta_night / full_night,
        "sequential client ÷ our extract (at least)": sequential.extra["projected_seconds"] / full_extract.seconds,
        "grade transform seconds": grades.seconds,
        "peak RSS of any task (MiB)": max(r.peak_rss_mib for r in tasks),
    }
    print(f"Full night {full_night:,.1f} s (extract {full_extract.seconds:,.1f} s, provision "
          f"{full_provision.seconds:,.1f} s); delta night {delta_night:,.1f} s (extract {delta_extract.seconds:,.1f} s, "
          f"provision {delta_provision.seconds:,.1f} s)")
    if args.object_store:
        s3_night = s3_extract.seconds + s3_provision.seconds
        figures["S3 staging night ÷ disk staging night"] = s3_night / full_night
        print(f"Full night staged on the local S3 server {s3_night:,.1f} s (extract {s3_extract.seconds:,.1f} s, "
              f"provision {s3_provision.seconds:,.1f} s), {len(s3_keys):,} objects staged; on local disk "
              f"{full_night:,.1f} s")
    print(f"Raw-transfer bound: {raw.seconds:.2f} s for {raw.requests:,} requests, {raw.bytes / 1e6:,.0f} MB")
    if args.rate_limit:
        bound = requests_needed(emulator.counts, args.page_size) / args.rate_limit
        figures["extract ÷ rate-limit bound"] = full_extract.seconds / bound
        print(f"Rate-limit bound: {requests_needed(emulator.counts, args.page_size):,} requests ÷ "
              f"{args.rate_limit:g}/s = {bound:.2f} s; 429s answered by IC: {stats['rate_limited']}")
    if args.lms == "canvas":
        modelled = sum(result.extra["modelled_seconds"] for result in full_load)
        imports = sum(result.extra["imports"] for result in full_load)
        figures["Canvas provisioning ÷ Canvas's modelled import time"] = full_provision.seconds / modelled
        print(f"Canvas's modelled time: {imports:,} imports ({full_provision.records:,} rows) one at a time, "
              f"{modelled:,.1f} s for the full night's provisioning, which took {full_provision.seconds:,.1f} s; "
              f"the delta night's {sum(result.extra['imports'] for result in delta_load):,} imports "
              f"{sum(result.extra['modelled_seconds'] for result in delta_load):,.1f} s; throttled answers: "
              f"{lms_stats['rate_limited']}; Canvas holds {lms_stats['held']} (the emulator's peak RSS "
              f"{lms_stats['peak_rss_mib']:,.0f} MiB)")
        print(f"Canvas's own diffing instead (diffing_data_set_identifier) takes the whole roster every night: "
              f"{full_provision.records:,} rows, {full_provision.bytes / 1e6:,.1f} MB zipped as the full night "
              f"uploaded them; the delta night uploaded {delta_provision.records:,} rows, "
              f"{delta_provision.bytes / 1e6:,.2f} MB")
    elif args.lms_rate_limit:
        lms_bound = full_provision.requests / args.lms_rate_limit
        figures["LMS load ÷ rate-limit bound"] = full_provision.seconds / lms_bound
        print(f"LMS rate-limit bound: {full_provision.requests:,} requests ÷ {args.lms_rate_limit:g}/s = "
              f"{lms_bound:.2f} s for the full night's provisioning; 429s answered by the LMS: "
              f"{lms_stats['rate_limited']}")
    print(f"Sequential client: read {sequential.records:,} records in {sequential.seconds:.1f} s; projected "
          f"{sequential.extra['projected_seconds']:,.0f} s for the district's {sequential.extra['district_records']:,}")
    print(f"Most requests IC saw at once: {stats['max_in_flight']}")
    gradebook, sent = grade_post.extra["gradebook"], grade_plan.extra["counts"].get("post", 0)
    print(f"Grade posts: {grade_post.records:,} results of {sent:,} postings PUT to IC in {grade_post.requests:,} "
          f"requests (lineItems, score scales and the category included), {grade_post.seconds:.2f} s, "
          f"{grade_post.records_per_second:,.0f} results/s; 429s answered by IC: {grade_post.extra['rate_limited']}; "
          f"most requests IC saw at once: {grade_post.extra['max_in_flight']}; IC's gradebook holds "
          f"{gradebook['results']:,} results, {gradebook['written more than once']} written more than once, "
          f"{gradebook['duplicates']} duplicates")
    if args.rate_limit:
        post_bound = grade_post.requests / args.rate_limit
        figures["grade posts ÷ rate-limit bound"] = grade_post.seconds / post_bound
        print(f"Grade-post rate-limit bound: {grade_post.requests:,} requests ÷ {args.rate_limit:g}/s = "
              f"{post_bound:.2f} s")
    assignment_book = None
    if assignment_post:
        assignment_book, extra = assignment_post.extra["gradebook"], assignment_post.extra
        fewer = (f" (the district's provisioned semester-1 sections with students; {args.assignment_sections:,} "
                 "asked)" if extra["sections"] < args.assignment_sections else "")
        print(f"Assignment posts: {extra['sections']:,} sections{fewer} × {extra['assignments']} assignments "
              f"({extra['graded_students']:,} graded students): {assignment_post.records:,} results, "
              f"{assignment_book['lineItems']:,} lineItems, {assignment_book['categories']:,} categories PUT to IC "
              f"in {assignment_post.requests:,} requests, {assignment_post.seconds:.2f} s, "
              f"{assignment_post.records_per_second:,.0f} results/s; 429s answered by IC: {extra['rate_limited']}; "
              f"most requests IC saw at once: {extra['max_in_flight']}; IC's gradebook gained "
              f"{assignment_book['results']:,} results, {assignment_book['lineItems']:,} lineItems, "
              f"{assignment_book['categories']:,} categories; {assignment_book['written more than once']} results "
              f"written more than once, {assignment_book['duplicates']} duplicates")
        concurrency_bound = assignment_post.requests * args.latency / args.concurrency
        bound, which = concurrency_bound, (f"IC's concurrency bound: {assignment_post.requests:,} requests ÷ "
                                           f"({args.concurrency} ÷ {args.latency * 1000:g} ms) = "
                                           f"{concurrency_bound:.2f} s")
        if args.rate_limit and assignment_post.requests / args.rate_limit > concurrency_bound:
            bound = assignment_post.requests / args.rate_limit
            which = (f"IC's rate-limit bound: {assignment_post.requests:,} requests ÷ {args.rate_limit:g}/s = "
                     f"{bound:.2f} s (above its concurrency bound, {concurrency_bound:.2f} s)")
        figures["assignment posts ÷ IC's concurrency bound"] = assignment_post.seconds / bound
        print(f"Assignment-post bound, {which}")
    print("Figures against the goals:")
    for name, value in figures.items():
        print(verdict(name, value))
    return {"figures": figures, "results": results, "counts": emulator.counts, "lms": lms_stats, "gradebook": gradebook,
            "assignment gradebook": assignment_book,
            "delta fetched": dict(zip(COLLECTIONS, (r.extra["fetched"] for r in delta), strict=True)),
            "object store keys": s3_keys}


if __name__ == "__main__":
    main()
