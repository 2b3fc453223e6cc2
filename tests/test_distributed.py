"""The demo districts on Airflow's distributed deployment (issue 20): PostgreSQL as the metadata
database (a throwaway cluster), the CeleryExecutor with Redis as its broker and two Celery workers,
each in a working directory and ``TMPDIR`` of its own, and staging on an S3 API server; the
api-server, scheduler, dag-processor and triggerer beside them, everything on 127.0.0.1.

Three nights and a grade passback as ``make demo`` runs them on SQLite and the LocalExecutor, with
the same outcomes, checked on the far side: what the Schoology emulator holds (computed from the
generator's data and the district file's rules, tests/expected_provisioning.py), what IC's gradebook
holds (tests/expected_grades.py), the LMS's writes on the unchanged night (none), and the staged
objects in the bucket. On the first night a Celery worker is killed while it provisions the
enrollments: the scheduler gives the task up, the other worker runs its retry, and nothing reaches
the LMS twice.

Two more districts, east and west, each with its own IC, provision into one shared Schoology whose
rate limit both district files give: their nights run together, and the LMS never counts a request
over its rate, because the LMS's pool lets one district's provisioning task at a time talk to it.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV, load_district
from include.oneroster.models import COLLECTIONS
from include.sandbox.airflow_stack import FINISHED, AirflowStack
from include.sandbox.distributed import CeleryEngine, PostgresCluster, RedisServer
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.grade_export import schoology_export
from include.sandbox.ic_emulator import ICEmulator
from include.sandbox.lms_emulator import SchoologyEmulator
from include.sandbox.object_store import ObjectStore
from include.sandbox.sftp_server import SFTPServer
from include.sandbox.smtp_sink import SMTPSink
from include.settings import read_settings
from tests.expected_grades import at_ic, expected_grades, held_by_ic
from tests.expected_provisioning import KINDS, assert_lms_holds_what_the_rules_say, expected_provisioning, held_by_lms
from tests.fault_ledger import ScenarioLedger, record
from tests.support import ROOT, CLIENT_ID, CLIENT_SECRET, LMS_KEY, LMS_SECRET, connection_uri_env, lms_connection_env

DEMO, LEGACY = "oneroster_demo", "oneroster_demo_v11"
NOW = datetime.now(UTC).replace(microsecond=0)
NIGHTS = [NOW - timedelta(days=2), NOW - timedelta(days=1), NOW]
PROVISIONING_ONLY = {"halves": "provisioning"}
NOT_DUE = "0 6 29 2 *"  # unpausing schedules only a 2024 run, before the start date: skipped whole
# a task given up on is retried a few seconds later; the scheduler gives up on a task whose worker
# stopped heartbeating after this many seconds (Airflow's default: 300)
RETRIES = {"count": 2, "delay_seconds": 5, "max_delay_seconds": 10}
HEARTBEAT_TIMEOUT = 30
OUTAGE_SECONDS = 30
WRITES = ("POST", "PUT", "DELETE")
SEED = 2027
# two districts provisioning into one Schoology: its rate limit (requests a second), which both
# district files give as theirs, and the pool of one slot both name
NEIGHBOURS = ("east", "west")
SHARED_RATE = 4.0
SHARED_LMS_POOL = "lms_shared"


def write_districts(directory: Path) -> None:
    """The demo districts' files as they are, on a schedule that is not due and with retries."""
    for name in ("demo", "demo_v11"):
        config = yaml.safe_load((DISTRICTS_DIR / f"{name}.yaml").read_text())
        config.update(schedule=NOT_DUE, task_retries=RETRIES)
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(config))


def write_neighbour(directory: Path, name: str, district: SyntheticDistrict) -> None:
    """A district with its own IC that provisions into the shared Schoology: the demo's settings,
    the shared LMS's connection, pool and rate, its own schools mapped and its own grading period
    titles (one Schoology wants them unique across the account)."""
    config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
    del config["grade_passback"]
    config.update(district=name, name=f"{name.title()} School District", schedule=NOT_DUE, task_retries=RETRIES)
    config["infinite_campus"].update(conn_id=f"ic_{name}", pool=f"ic_{name}")
    config["lms"].update(conn_id="lms_shared", pool=SHARED_LMS_POOL, requests_per_second=SHARED_RATE)
    config["provisioning"]["schools"] = {org["sourcedId"]: "create" for org in district.records("orgs")
                                         if org["type"] == "school"}
    config["provisioning"]["terms"]["title_template"] = f"{name.title()} {{school_year}} {{school}} {{title}}"
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(config))


def pools_file(path: Path) -> Path:
    """airflow_settings.yaml's pools, as ``airflow pools import`` reads them, and the neighbours':
    an IC pool each, and the shared LMS's pool of one slot."""
    pools = {pool.pool_name: {"slots": pool.pool_slot, "description": pool.pool_description}
             for pool in read_settings(ROOT / "airflow_settings.yaml").airflow.pools}
    for name in NEIGHBOURS:
        pools[f"ic_{name}"] = {"slots": 5, "description": f"Concurrent OneRoster calls to {name}'s IC"}
    pools[SHARED_LMS_POOL] = {"slots": 1, "description": "Provisioning tasks writing to the shared Schoology"}
    path.write_text(json.dumps(pools))
    return path


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    districts = root / "districts"
    districts.mkdir()
    write_districts(districts)
    config = load_district(districts / "demo.yaml")
    export_dir = root / "sftp" / config.grade_passback.remote_dir.strip("/")
    export_dir.mkdir(parents=True)
    school_year = config.active_year.school_year_of(NOW)
    district = SyntheticDistrict(DistrictSpec(seed=SEED, students=120, school_year=school_year))
    neighbours = {name: SyntheticDistrict(DistrictSpec(seed=SEED, students=120, school_year=school_year,
                                                       namespace=name)) for name in NEIGHBOURS}
    for name, neighbour in neighbours.items():
        write_neighbour(districts, name, neighbour)
    vendor = {"vendor_key": "test-vendor", "vendor_secret": "test-vendor-secret"}
    with (
        PostgresCluster() as postgres,
        RedisServer() as redis,
        ObjectStore(conn_id="staging_s3") as store,
        ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo", **vendor) as ic,
        SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms,
        ICEmulator(neighbours["east"], client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="east",
                   **vendor) as ic_east,
        ICEmulator(neighbours["west"], client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="west",
                   **vendor) as ic_west,
        SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET, rate_limit=SHARED_RATE) as shared_lms,
        SMTPSink() as smtp,
        SFTPServer(root / "sftp", username="exporter", password="sftp-test-secret") as sftp,
    ):
        env = {
            DISTRICTS_DIR_ENV: str(districts),
            "AIRFLOW_VAR_ONEROSTER_STAGING_ROOT": store.staging_root(),
            **store.connection_env(),
            **connection_uri_env("ic_demo", ic, "1.2", **vendor),
            **connection_uri_env("ic_demo_v11", ic, "1.1", **vendor),
            **lms_connection_env("lms_demo", lms),
            **connection_uri_env("ic_east", ic_east, "1.2", app_name="east", **vendor),
            **connection_uri_env("ic_west", ic_west, "1.2", app_name="west", **vendor),
            **lms_connection_env("lms_shared", shared_lms),
            "AIRFLOW_CONN_SMTP_DEMO": json.dumps(smtp.connection("oneroster@localhost")),
            "AIRFLOW_CONN_SFTP_DEMO": json.dumps(sftp.connection()),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
        }
        engine = CeleryEngine(postgres, redis, workers=2, concurrency=4)
        with AirflowStack(root / "airflow", env=env, engine=engine, startup_timeout=240) as stack:
            with stack.logs_on_failure():
                stack.airflow("pools", "import", str(pools_file(root / "pools.json")))
                every_dag = [DEMO, LEGACY, *(f"oneroster_{name}" for name in NEIGHBOURS)]
                stack.wait_for_dags(every_dag, timeout=180)
                stack.airflow("dags", "unpause", "--treat-dag-id-as-regex", "--yes", "^oneroster_")
                stack.wait_for(lambda: all(run["state"] in FINISHED for dag in every_dag
                                           for run in stack.dag_runs(dag)),
                               timeout=240, what="the runs unpausing made to finish")
                yield {"stack": stack, "ic": ic, "lms": lms, "smtp": smtp, "store": store, "district": district,
                       "config": config, "export_dir": export_dir, "neighbours": neighbours,
                       "neighbour_configs": {name: load_district(districts / f"{name}.yaml") for name in NEIGHBOURS},
                       "shared_lms": shared_lms}


def run_night(stack: AirflowStack, dag_id: str, run_id: str, logical_date: datetime, conf: dict | None = None,
              *, while_running=None) -> dict:
    stack.trigger(dag_id, run_id, logical_date, conf=conf)
    if while_running is not None:
        while_running()
    run = stack.wait_for_run(dag_id, run_id, timeout=600)
    states = {task: ti["state"] for task, ti in stack.task_instances(dag_id, run_id).items()}
    assert run["state"] == "success", states
    return states


def assert_staged_on_the_object_store(deployment, run_id: str) -> None:
    """The run's datasets are objects in the bucket, every manifest names one, and no temporary
    object was left anywhere."""
    stack, store = deployment["stack"], deployment["store"]
    keys = set(store.keys())
    assert not [key for key in keys if key.rsplit("/", 1)[-1].startswith(".")], "a temporary object was left"
    for task in [f"extract.{collection}" for collection in COLLECTIONS]:
        uri = stack.returned(DEMO, run_id, task)["uri"]
        assert uri.startswith(store.staging_root()), uri
        assert uri.split(f"@{store.bucket}/", 1)[1] in keys, uri
    assert any(key.startswith("staging/demo/state/") for key in keys)


def test_three_nights_and_a_grade_passback_on_postgres_celery_and_s3(deployment):
    stack, lms, ic, district, config = (deployment[name] for name in ("stack", "lms", "ic", "district", "config"))
    with stack.logs_on_failure():
        legacy = run_night(stack, LEGACY, "legacy_night", NOW)
        expected_counts = district.expected_counts("1.1")
        for collection in COLLECTIONS:
            manifest = stack.returned(LEGACY, "legacy_night", f"extract.{collection}")
            assert manifest["row_count"] == expected_counts[collection], collection
        assert set(legacy.values()) == {"success"}

        # night 1: everything created; one worker dies while the enrollments are being sent
        killed = {}

        # the second batch of enrollments is applied, then its answer hangs: the worker dies before
        # the batch is journaled, so the retry must send it again without storing anything twice
        lms.inject("timeout_after_apply", path_contains="enrollments", after=1, seconds=600)

        def kill_the_enrollments_worker() -> None:
            def hanging() -> int | None:
                ti = stack.task_instances(DEMO, "night_1").get("provision.enrollments", {})
                started = ti.get("state") == "running" and ti.get("pid")
                return ti["pid"] if started and lms.enrollments else None

            pid = stack.wait_for(hanging, timeout=480, what="provision.enrollments sending", every=0.2)
            worker = stack.component_running(pid)
            assert worker in stack.workers, (pid, worker)
            killed.update(worker=worker, enrollments=len(lms.enrollments))
            stack.kill(worker)
            lms.clear_faults()

        run_night(stack, DEMO, "night_1", NIGHTS[0], PROVISIONING_ONLY, while_running=kill_the_enrollments_worker)
        tries = stack.task_instances(DEMO, "night_1")["provision.enrollments"]
        assert tries["try_number"] >= 2, tries
        rules, held = assert_lms_holds_what_the_rules_say(lms, district, config.provisioning, NIGHTS[0].date())
        enrollments = rules.present["enrollment"]
        assert 0 < killed["enrollments"] < len(lms.enrollments)
        report = stack.returned(DEMO, "night_1", "provision.sync_report")
        assert not report["totals"].get("failed"), report
        assert_staged_on_the_object_store(deployment, "night_1")
        record(ScenarioLedger("Celery worker killed mid-task, retried on the other", faults=1,
                              rows_in=len(enrollments), posted=len(enrollments & set(held["enrollment"])),
                              skipped=0, failed=0,
                              duplicates=sum(held["enrollment"].values()) - len(held["enrollment"]),
                              lost=len(enrollments - set(held["enrollment"]))))

        # night 2: nothing changed in IC, nothing written to the LMS; the object store answers 503
        # SlowDown to everything for the night's first half minute
        lms.reset_stats()
        store = deployment["store"]
        store.unavailable(seconds=OUTAGE_SECONDS)
        run_night(stack, DEMO, "night_2", NIGHTS[1], PROVISIONING_ONLY)
        assert lms.write_requests == 0 and store.refused > 0
        assert_staged_on_the_object_store(deployment, "night_2")
        staged = [stack.returned(DEMO, "night_2", f"extract.{collection}") for collection in COLLECTIONS]
        whole = [manifest for manifest in staged
                 if manifest["row_count"] == district.expected_counts("1.2")[manifest["dataset"]]]
        record(ScenarioLedger(f"object store answering 503 for {OUTAGE_SECONDS} s", faults=store.refused,
                              rows_in=len(COLLECTIONS), posted=len(whole), skipped=0, failed=0, duplicates=0,
                              lost=len(COLLECTIONS) - len(whole)))

        # night 3: two users renamed and three enrollments dropped in IC; the export passed back
        district.modify("users", 2, NIGHTS[1] + timedelta(hours=12))
        district.modify("enrollments", 3, NIGHTS[1] + timedelta(hours=12))
        export = schoology_export(lms, seed=SEED, columns=config.grade_passback.columns)
        title = config.grade_passback.export_title
        (deployment["export_dir"] / f"{title}-{NIGHTS[2]:%Y%m%d}.csv").write_bytes(export)
        lms.reset_stats()
        run_night(stack, DEMO, "night_3", NIGHTS[2])
        totals = stack.returned(DEMO, "night_3", "provision.sync_report")["totals"]
        assert totals.get("created", 0) == 0, totals
        assert 0 < totals.get("updated", 0) <= 2 and 0 < totals.get("deactivated", 0) <= 3, totals
        assert_lms_holds_what_the_rules_say(lms, district, config.provisioning, NIGHTS[2].date())

        expected = expected_grades(export, district, config, NIGHTS[2].date())
        held, grades = held_by_ic(ic.gradebook), expected.grades()
        assert grades and set(held) == set(grades)
        assert all(at_ic(grade, held) for grade in grades.values())
        assert not ic.gradebook.duplicates()
        counts = stack.returned(DEMO, "night_3", "grades.reconcile")["counts"]
        assert sum(counts.values()) == export.count(b"\n") - 1 and not counts.get("failed"), counts
        assert_staged_on_the_object_store(deployment, "night_3")


def test_two_districts_on_one_lms_never_exceed_its_rate_together(deployment):
    """East and west provision into one Schoology at once; it answers 429 to any request over its
    rate (the rate both district files give). The LMS's pool of one slot lets one district's
    provisioning task at a time talk to it, each paced at that rate: none is ever refused, though both
    districts had provisioning to do at the same time; and the LMS holds each district's objects once."""
    stack, lms = deployment["stack"], deployment["shared_lms"]
    dags = {name: f"oneroster_{name}" for name in NEIGHBOURS}
    with stack.logs_on_failure():
        for dag_id in dags.values():
            stack.trigger(dag_id, "together", NIGHTS[2])
        for dag_id in dags.values():
            run = stack.wait_for_run(dag_id, "together", timeout=600)
            states = {task: ti["state"] for task, ti in stack.task_instances(dag_id, "together").items()}
            assert run["state"] == "success", states
        assert lms.rate_limited == 0, f"the shared LMS refused {lms.rate_limited} request(s) over its rate"

        talking = {name: sorted((datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]))
                                for task, ti in stack.task_instances(dag_id, "together").items()
                                if task.startswith("provision.") and task != "provision.sync_report")
                   for name, dag_id in dags.items()}
        east, west = (talking[name] for name in NEIGHBOURS)
        assert len(east) == len(west) == len(KINDS)
        assert all(a_end <= b_start or b_end <= a_start for a_start, a_end in east for b_start, b_end in west), \
            "two districts' provisioning tasks talked to the shared LMS at the same time"
        assert east[0][0] < west[-1][1] and west[0][0] < east[-1][1], \
            "the districts' provisioning did not overlap: nothing was shared, nothing proven"

        objects = {kind: 0 for kind in KINDS}
        for name, neighbour in deployment["neighbours"].items():
            expected = expected_provisioning(neighbour, deployment["neighbour_configs"][name].provisioning,
                                             on=NIGHTS[2].date())
            held = held_by_lms(lms, neighbour, expected)
            for kind in KINDS:
                assert expected.present[kind] <= set(held[kind]), (name, kind)
                assert all(held[kind][key] == 1 for key in expected.present[kind]), f"{name}: {kind} stored twice"
                objects[kind] += len(expected.present[kind])
        assert {kind: sum(held[kind].values()) for kind in KINDS} == objects, "the LMS holds more than the two"
