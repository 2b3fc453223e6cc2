"""``make demo``: the demo districts end to end on the embedded default.

Creates an Airflow home in ``.airflow/`` (SQLite metadata DB), loads
``airflow_settings.yaml``, starts the IC emulator, the Schoology emulator and an SMTP
sink where the demo connections point, and then:

1. extracts the demo district through OneRoster 1.2 (``oneroster_demo``) and 1.1
   (``oneroster_demo_v11``) and compares the counts with the generator's;
2. provisions the LMS three nights in a row: the first night creates everything, the
   second (nothing changed in IC) must write nothing, the third (two users renamed and
   three enrollments dropped in IC) must send only those changes;
3. on the third night also passes grades back: the LMS's final-grade auto-export (made
   from what the LMS emulator holds) is put on the local SFTP server, and the DAG
   senses, parses, plans, posts it to IC's gradebook and reconciles every row;
4. provisions the same district into Canvas (``oneroster_demo_canvas``, the Canvas emulator
   taking SIS imports) on the same three nights: everything, then nothing (no import), then
   only the changes; between the second and third nights teachers grade in Canvas
   (:func:`~include.sandbox.canvas_grading.grade_canvas`: final grades and assignment scores), and
   the third night reads those from Canvas's API and posts them to IC's gradebook;

prints a short summary and stops what it started. Exits non-zero on any mismatch.
Staging starts empty in ``.airflow/staging`` because the emulators start empty.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from include.sandbox.environment import PROJECT_ROOT as ROOT
from include.sandbox.environment import use_project_airflow

DEMO_DISTRICTS = ("demo", "demo_v11", "demo_canvas")
DEMO_STUDENTS = 120
DEMO_SEED = 2027
WRITES = ("POST", "PUT", "DELETE")


def _extract_summary(outcome, expected: dict[str, int]) -> tuple[list[str], int]:
    lines = [f"  {'collection':<18}{'extracted':>10}{'generator':>11}{'quarantined':>13}"]
    problems = 0
    for collection, count in expected.items():
        manifest = outcome.returned.get(f"extract.{collection}") or {}
        extracted = manifest.get("row_count")
        ok = extracted == count and manifest.get("quarantined_count") == 0
        problems += not ok
        lines.append(
            f"  {collection:<18}{extracted if extracted is not None else '-':>10}{count:>11}"
            f"{manifest.get('quarantined_count', '-'):>13}  {'ok' if ok else 'MISMATCH'}"
        )
    return lines, problems


def _canvas_holdings(canvas) -> str:
    """What the Canvas emulator holds, counted: active objects and enrollments by status."""
    def active(store: dict) -> int:
        return sum(1 for item in store.values() if item.get("status", item.get("workflow_state")) == "active")

    enrollments = [item for item in canvas.enrollments.values() if item["role"] != "observer"]
    statuses = sorted({item["status"] for item in enrollments})
    return (f"{active(canvas.accounts)} sub-accounts, {active(canvas.terms)} terms, {active(canvas.users)} users, "
            f"{active(canvas.courses)} courses (one per IC class) with their sections, enrollments "
            + ", ".join(f"{sum(item['status'] == status for item in enrollments)} {status}" for status in statuses)
            + f", {active(canvas.user_observers)} observer links")


def _provisioned(outcome) -> dict[str, int]:
    """Outcome -> count over every kind, from the run's sync report manifest."""
    return (outcome.returned.get("provision.sync_report") or {}).get("totals", {})


def main() -> int:
    use_project_airflow(ROOT / ".airflow")
    # Task logs would bury the summary; AIRFLOW__LOGGING__LOGGING_LEVEL=INFO make demo shows them.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    staging = ROOT / ".airflow" / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    os.environ["AIRFLOW_VAR_ONEROSTER_STAGING_ROOT"] = staging.as_uri()
    from include.config import DISTRICTS_DIR, load_district
    from include.sandbox.canvas_emulator import CanvasEmulator
    from include.sandbox.canvas_grading import grade_canvas
    from include.sandbox.generator import DistrictSpec, SyntheticDistrict
    from include.sandbox.grade_export import schoology_export
    from include.sandbox.ic_emulator import ICEmulator
    from include.sandbox.lms_emulator import SchoologyEmulator
    from include.sandbox.sftp_server import SFTPServer
    from include.sandbox.smtp_sink import SMTPSink
    from include.settings import import_settings, read_settings

    print("Preparing Airflow in .airflow/ (SQLite) ...", flush=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    settings = read_settings(ROOT / "airflow_settings.yaml")
    import_settings(settings)
    connections = {entry.conn_id: entry for entry in settings.airflow.connections}

    from include.sandbox.runner import run_dag

    now = datetime.now(timezone.utc)
    configs = {name: load_district(DISTRICTS_DIR / f"{name}.yaml") for name in DEMO_DISTRICTS}
    demo = configs["demo"]
    ic_conn = connections[demo.infinite_campus.conn_id]
    lms_conn = connections[demo.lms.conn_id]
    on_canvas = configs["demo_canvas"]
    canvas_conn = connections[on_canvas.lms.conn_id]
    smtp_conn = connections[demo.notifications.smtp_conn_id]
    sftp_conn = connections[demo.grade_passback.sftp_conn_id]
    sftp_root = ROOT / ".airflow" / "sftp"
    shutil.rmtree(sftp_root, ignore_errors=True)
    export_dir = sftp_root / demo.grade_passback.remote_dir.strip("/")
    export_dir.mkdir(parents=True)
    school_year = demo.active_year.school_year_of(now)
    district = SyntheticDistrict(DistrictSpec(seed=DEMO_SEED, students=DEMO_STUDENTS, school_year=school_year))

    failures = 0
    summary: list[str] = []
    with (
        ICEmulator(
            district,
            client_id=ic_conn.conn_login,
            client_secret=ic_conn.conn_password,
            app_name=ic_conn.conn_extra["app_name"],
            port=urlsplit(ic_conn.conn_host).port,
            vendor_key=ic_conn.conn_extra["vendor_key"],
            vendor_secret=ic_conn.conn_extra["vendor_secret"],
        ) as ic,
        SchoologyEmulator(
            consumer_key=lms_conn.conn_login,
            consumer_secret=lms_conn.conn_password,
            school_id=lms_conn.conn_extra["school_id"],
            port=urlsplit(lms_conn.conn_host).port,
        ) as lms,
        CanvasEmulator(
            token=canvas_conn.conn_password,
            account_id=canvas_conn.conn_extra["account_id"],
            port=urlsplit(canvas_conn.conn_host).port,
        ) as canvas,
        SMTPSink(port=smtp_conn.conn_port) as smtp,
        SFTPServer(
            sftp_root,
            username=sftp_conn.conn_login,
            password=sftp_conn.conn_password,
            port=sftp_conn.conn_port,
            host_key_path=ROOT / ".airflow" / "sftp_host_key",
        ) as sftp,
    ):
        # the server's own host key, checked by the SFTP hook like a real district's
        os.environ[f"AIRFLOW_CONN_{sftp_conn.conn_id.upper()}"] = json.dumps(sftp.connection())
        print(f"IC emulator ({DEMO_STUDENTS} students) on {ic.base_url}, Schoology emulator on {lms.base_url}, "
              f"Canvas emulator on {canvas.base_url}, SMTP sink on 127.0.0.1:{smtp.port}", flush=True)

        legacy = configs["demo_v11"]
        outcome = run_dag(legacy.dag_id, logical_date=now)
        print(f"{legacy.dag_id}: {outcome.state}", flush=True)
        lines, problems = _extract_summary(outcome, district.expected_counts("1.1"))
        summary += [f"\n{legacy.dag_id} (OneRoster 1.1), run {outcome.run_id}: {outcome.state}", *lines]
        failures += problems + (outcome.state != "success")

        nights = [now - timedelta(days=2), now - timedelta(days=1), now]
        provisioning_only = {"halves": "provisioning"}
        first = run_dag(demo.dag_id, logical_date=nights[0], run_conf=provisioning_only)
        print(f"{demo.dag_id} night 1: {first.state}", flush=True)
        lines, problems = _extract_summary(first, district.expected_counts("1.2"))
        summary += [f"\n{demo.dag_id} (OneRoster 1.2) night 1, run {first.run_id}: {first.state}", *lines]
        failures += problems + (first.state != "success")
        created = _provisioned(first)
        summary.append(
            f"  provisioned into the LMS: {len(lms.buildings)} buildings, {len(lms.grading_periods)} grading periods, "
            f"{len(lms.users)} users, {len(lms.courses)} courses, {len(lms.sections)} sections, "
            f"{len(lms.enrollments)} enrollments, {len(lms.associations)} guardian links"
        )
        summary.append("  sync report: " + ", ".join(f"{name} {count}" for name, count in sorted(created.items())))
        failures += not lms.users or created.get("failed", 0) > 0

        lms.reset_stats()
        second = run_dag(demo.dag_id, logical_date=nights[1], run_conf=provisioning_only)
        print(f"{demo.dag_id} night 2: {second.state}", flush=True)
        summary.append(f"\n{demo.dag_id} night 2 (nothing changed in IC): {second.state}; "
                       f"LMS write requests: {lms.write_requests} (must be 0)")
        failures += (second.state != "success") + (lms.write_requests != 0)

        canvas_first = run_dag(on_canvas.dag_id, logical_date=nights[0], run_conf=provisioning_only)
        canvas_second = run_dag(on_canvas.dag_id, logical_date=nights[1], run_conf=provisioning_only)
        imports_before = len(canvas.imports)
        print(f"{on_canvas.dag_id} nights 1 and 2: {canvas_first.state}, {canvas_second.state}", flush=True)
        summary.append(
            f"\n{on_canvas.dag_id} (Canvas) night 1: {canvas_first.state}; {imports_before} SIS imports; Canvas holds "
            + _canvas_holdings(canvas)
            + "\n  sync report: " + ", ".join(f"{name} {count}" for name, count in
                                               sorted(_provisioned(canvas_first).items()))
            + f"\n{on_canvas.dag_id} night 2 (nothing changed in IC): {canvas_second.state}; SIS imports: "
            f"{len(canvas.imports) - imports_before} (must be 0)"
        )
        failures += (canvas_first.state != "success") + (canvas_second.state != "success")
        failures += not canvas.users or _provisioned(canvas_first).get("failed", 0) > 0
        failures += len(canvas.imports) != imports_before
        imports_before = len(canvas.imports)
        canvas_grades = grade_canvas(canvas, seed=DEMO_SEED)

        renamed = district.modify("users", 2, nights[1] + timedelta(hours=12))
        dropped = district.modify("enrollments", 3, nights[1] + timedelta(hours=12))
        export = schoology_export(lms, seed=DEMO_SEED, columns=demo.grade_passback.columns)
        title = demo.grade_passback.export_title or "export"
        (export_dir / f"{title}-{nights[2]:%Y%m%d}.csv").write_bytes(export)
        lms.reset_stats()
        third = run_dag(demo.dag_id, logical_date=nights[2])
        print(f"{demo.dag_id} night 3: {third.state}", flush=True)
        totals = _provisioned(third)
        writes = [request for request in lms.requests if request.method in WRITES]
        summary.append(
            f"\n{demo.dag_id} night 3 ({len(renamed)} users renamed, {len(dropped)} enrollments dropped in IC): "
            f"{third.state}; updated {totals.get('updated', 0)}, deactivated {totals.get('deactivated', 0)}, "
            f"created {totals.get('created', 0)}; LMS write requests: "
            + ", ".join(f"{request.method} {request.path}" for request in writes)
        )
        failures += (third.state != "success") + (totals.get("created", 0) != 0) + (len(writes) > 2)
        failures += totals.get("updated", 0) > len(renamed) or totals.get("deactivated", 0) > len(dropped)
        failures += not totals.get("updated") or not totals.get("deactivated")
        graded = third.returned.get("grades.reconcile") or {}
        counts = graded.get("counts", {})
        export_rows = export.count(b"\n") - 1
        summary.append(
            f"  grade passback of {graded.get('export', '-')}: "
            + ", ".join(f"{outcome} {count}" for outcome, count in sorted(counts.items()))
            + f" (of {export_rows} rows); IC gradebook now holds {len(ic.gradebook.stored('results'))} "
            f"results, {len(ic.gradebook.duplicates())} duplicated"
        )
        failures += sum(counts.values()) != export_rows or counts.get("failed", 0) > 0
        failures += bool(ic.gradebook.duplicates())

        canvas_third = run_dag(on_canvas.dag_id, logical_date=nights[2])
        print(f"{on_canvas.dag_id} night 3: {canvas_third.state}", flush=True)
        changed = _provisioned(canvas_third)
        read = canvas_third.returned.get("grades.read_grades") or {}
        graded = canvas_third.returned.get("grades.reconcile") or {}
        counts = graded.get("counts", {})
        summary.append(
            f"\n{on_canvas.dag_id} night 3 (the same changes): {canvas_third.state}; updated {changed.get('updated', 0)}, "
            f"deactivated {changed.get('deactivated', 0)}, created {changed.get('created', 0)} in "
            f"{len(canvas.imports) - imports_before} SIS imports; Canvas holds " + _canvas_holdings(canvas)
            + f"\n  grade passback read from Canvas ({canvas_grades} grades and scores given there, "
            f"{read.get('sections', 0)} courses read: {read.get('row_count', 0)} final-grade rows, "
            f"{read.get('assignment_count', 0)} assignment rows, {read.get('quarantined_count', 0)} kept aside): "
            + ", ".join(f"{outcome} {count}" for outcome, count in sorted(counts.items()))
            + f"; IC gradebook now holds {sum('-canvas-' in key for key in ic.gradebook.stored('lineItems'))} "
            f"Canvas assignment lineItems, {sum('-canvas-' in key for key in ic.gradebook.stored('results'))} "
            f"assignment results, {len(ic.gradebook.duplicates())} duplicated"
        )
        failures += sum(counts.values()) != (read.get("row_count", -1) + read.get("quarantined_count", 0)
                                             + read.get("assignment_count", 0))
        failures += not counts.get("posted") or counts.get("failed", 0) > 0 or bool(ic.gradebook.duplicates())
        failures += (canvas_third.state != "success") + (changed.get("created", 0) != 0)
        failures += changed.get("updated", 0) > len(renamed) or changed.get("deactivated", 0) > len(dropped)
        failures += not changed.get("updated") or not changed.get("deactivated")
        summary.append(
            f"\nStaged Parquet, reports and state under {staging}; the IC emulator served {len(ic.requests)} requests; "
            f"{len(smtp.messages)} email(s) sent."
        )
    print("\n".join(summary))
    print("Demo OK." if not failures else f"Demo FAILED: {failures} problem(s).")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
