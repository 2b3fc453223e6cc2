"""Shared fixtures: an isolated Airflow home, the IC emulator, Airflow connections to it.

Airflow reads its configuration when first imported, so the environment is set here,
before any test module imports airflow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from include.sandbox.environment import use_project_airflow
from tests.fault_ledger import LEDGER, ScenarioLedger, summary_lines
from tests.support import CLIENT_ID, CLIENT_SECRET, LMS_KEY, LMS_SECRET, connection_uri_env

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="oneroster-airflow-home-"))
use_project_airflow(_AIRFLOW_HOME)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated SQLite metadata database, once per test session."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True, env=os.environ
    )
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def demo_district():
    from include.sandbox.generator import DistrictSpec, SyntheticDistrict

    return SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))


@pytest.fixture
def ic(demo_district) -> Iterator:
    from include.sandbox.ic_emulator import ICEmulator

    with ICEmulator(
        demo_district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo", port=0
    ) as emulator:
        yield emulator


@pytest.fixture(params=["1.2", "1.1"])
def ic_conn(request, ic, monkeypatch) -> str:
    """An Airflow connection id for the emulator, once per OneRoster version."""
    for key, value in connection_uri_env("ic_test", ic, request.param).items():
        monkeypatch.setenv(key, value)
    return "ic_test"


@pytest.fixture
def lms() -> Iterator:
    from include.sandbox.lms_emulator import SchoologyEmulator

    with SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as emulator:
        yield emulator


def pytest_sessionfinish(session) -> None:
    """Under pytest-xdist a worker hands its ledger lines to the controller, which prints the table."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["fault_ledger"] = [asdict(entry) for entry in LEDGER]


def pytest_testnodedown(node, error) -> None:
    LEDGER.extend(ScenarioLedger(**entry) for entry in node.workeroutput.get("fault_ledger", []))


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault suite's table: scenarios, faults, rows in, posted, skipped, failed, duplicates, lost."""
    lines = summary_lines()
    if lines:
        terminalreporter.section("fault-injection ledger")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def canvas() -> Iterator:
    """The Canvas emulator on 127.0.0.1, root account 1, taking the Canvas district's token
    (tests/canvas_support.py)."""
    from include.sandbox.canvas_emulator import CanvasEmulator
    from tests.canvas_support import TOKEN

    with CanvasEmulator(token=TOKEN, account_id="1") as emulator:
        yield emulator


@pytest.fixture
def smtp() -> Iterator:
    """A real SMTP server on 127.0.0.1 that keeps what it is sent."""
    from include.sandbox.smtp_sink import SMTPSink

    with SMTPSink() as sink:
        yield sink


@pytest.fixture
def object_store(monkeypatch) -> Iterator:
    """An S3 API server on 127.0.0.1 with an empty bucket, and its Airflow connection. Both are named
    anew each time: moto keeps every server's objects in one store per process, and Airflow a file
    system per connection id."""
    from include.sandbox.object_store import ObjectStore

    name = uuid.uuid4().hex[:8]
    with ObjectStore(conn_id=f"staging_s3_{name}", bucket=f"staging-{name}") as store:
        for name, value in store.connection_env().items():
            monkeypatch.setenv(name, value)
        yield store
