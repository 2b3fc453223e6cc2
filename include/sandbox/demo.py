"""``make demo``: the demo districts end to end on the embedded default.

Creates an Airflow home in ``.airflow/`` (SQLite metadata DB), loads
``airflow_settings.yaml``, starts the IC emulator where the demo connections point,
runs each demo district's DAG (OneRoster 1.2 and 1.1), prints what was extracted next
to what the generator holds, and stops what it started. Exits non-zero on any mismatch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from urllib.parse import urlsplit

from include.sandbox.environment import PROJECT_ROOT as ROOT
from include.sandbox.environment import use_project_airflow

DEMO_DISTRICTS = ("demo", "demo_v11")
DEMO_STUDENTS = 120
DEMO_SEED = 2027


def main() -> int:
    use_project_airflow(ROOT / ".airflow")
    # Task logs would bury the summary; AIRFLOW__LOGGING__LOGGING_LEVEL=INFO make demo shows them.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    from include.config import DISTRICTS_DIR, load_district
    from include.sandbox.generator import DistrictSpec, SyntheticDistrict
    from include.sandbox.ic_emulator import ICEmulator
    from include.settings import import_settings, read_settings

    print("Preparing Airflow in .airflow/ (SQLite) ...", flush=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    settings = read_settings(ROOT / "airflow_settings.yaml")
    import_settings(settings)
    connections = {entry.conn_id: entry for entry in settings.airflow.connections}

    from include.sandbox.runner import run_dag

    now = datetime.now(timezone.utc)
    configs = [load_district(DISTRICTS_DIR / f"{name}.yaml") for name in DEMO_DISTRICTS]
    demo_ic = connections[configs[0].infinite_campus.conn_id]
    address = urlsplit(demo_ic.conn_host)
    school_year = configs[0].active_year.school_year_of(now)
    district = SyntheticDistrict(DistrictSpec(seed=DEMO_SEED, students=DEMO_STUDENTS, school_year=school_year))

    failures = 0
    summary: list[str] = []
    with ICEmulator(
        district,
        client_id=demo_ic.conn_login,
        client_secret=demo_ic.conn_password,
        app_name=demo_ic.conn_extra["app_name"],
        port=address.port,
    ) as ic:
        print(f"IC emulator serving {DEMO_STUDENTS} students on {ic.base_url}", flush=True)
        for config in configs:
            version = connections[config.infinite_campus.conn_id].conn_extra["oneroster_version"]
            outcome = run_dag(config.dag_id, logical_date=now)
            expected = district.expected_counts(version)
            print(f"{config.dag_id}: {outcome.state}", flush=True)
            summary.append(f"\n{config.dag_id} (OneRoster {version}), run {outcome.run_id}: {outcome.state}")
            summary.append(f"  {'collection':<18}{'extracted':>10}{'generator':>11}{'quarantined':>13}")
            for collection, count in expected.items():
                manifest = outcome.returned.get(f"extract.{collection}") or {}
                extracted = manifest.get("row_count")
                ok = extracted == count and manifest.get("quarantined_count") == 0
                failures += not ok
                summary.append(
                    f"  {collection:<18}{extracted if extracted is not None else '-':>10}{count:>11}"
                    f"{manifest.get('quarantined_count', '-'):>13}  {'ok' if ok else 'MISMATCH'}"
                )
            failures += outcome.state != "success"
        staging = next(entry.variable_value for entry in settings.airflow.variables
                       if entry.variable_name == "oneroster_staging_root")
        summary.append(f"\nStaged Parquet under {staging}; the emulator served {len(ic.requests)} requests.")
    print("\n".join(summary))
    print("Demo OK." if not failures else f"Demo FAILED: {failures} problem(s).")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
