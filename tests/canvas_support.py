"""A district on Canvas for the tests that run one (tests/test_canvas_provisioning.py,
tests/test_canvas_grades.py, the fault suite's Canvas rows): its district file, beside demo.yaml's
settings, the Airflow connections to the IC emulator, the Canvas emulator and the SMTP sink, and a
Canvas admin's own SIS import."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import requests
import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV, EXPORT_SETTINGS
from plugins.hooks.provider_info import CANVAS_CONN_TYPE
from tests.support import connection_uri_env

TOKEN = "canvas-district-token"
DAG_ID = "oneroster_canvas"
ROWS_PER_IMPORT = 40  # several imports per kind in the 60-student district
CANVAS_ROLES = {"student": "student", "teacher": "teacher", "administrator": "teacher", "guardian": "observer"}


def canvas_district_file(directory: Path, monkeypatch, *, grades: bool = False, passback: dict | None = None,
                         **lms) -> Path:
    """demo.yaml's district on Canvas (no task retries, so a failure is the run's), alone in
    ``directory``, which the DAG files are pointed at; with ``grades``, demo.yaml's grade passback
    read from Canvas's API (its export file settings left out, ``passback`` added), else none."""
    directory.mkdir(exist_ok=True)
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(directory))
    config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
    config.update(district="canvas", task_retries={"count": 0, "delay_seconds": 0},
                  lms={"target": "canvas", "conn_id": "lms_canvas", "pool": "lms_demo",
                       "rows_per_import": ROWS_PER_IMPORT, "dropped_enrollments": "completed", **lms})
    config["provisioning"]["roles"] = dict(CANVAS_ROLES)
    if grades:
        config["grade_passback"] = {**{name: value for name, value in config["grade_passback"].items()
                                       if name not in EXPORT_SETTINGS}, **(passback or {})}
    else:
        del config["grade_passback"]
    path = directory / "canvas.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def connect_canvas(monkeypatch, canvas, **extras) -> None:
    """The district's Canvas connection to the emulator (polled every 0.02 s), with ``extras``."""
    monkeypatch.setenv("AIRFLOW_CONN_LMS_CANVAS", json.dumps({
        "conn_type": CANVAS_CONN_TYPE, "host": canvas.base_url, "password": TOKEN,
        "extra": {"account_id": canvas.account_id, "poll_seconds": 0.02, **extras}}))


def connect_ic_and_smtp(monkeypatch, ic, smtp, staging: Path, **extras) -> None:
    """IC (OneRoster 1.2, the connection's ``extras`` added) and the SMTP sink behind demo.yaml's
    connection ids; staging under ``staging``."""
    for key, value in connection_uri_env("ic_demo", ic, "1.2", **extras).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEMO", json.dumps(smtp.connection("oneroster-tests@localhost")))
    monkeypatch.setenv("AIRFLOW_VAR_ONEROSTER_STAGING_ROOT", staging.as_uri())


def run_night(when, **conf):
    """One provisioning run of the Canvas district on the night ``when`` (again: that run re-run);
    ``halves`` in ``conf`` runs another half."""
    from include.sandbox.runner import run_dag

    return run_dag(DAG_ID, logical_date=when, run_after=when, run_conf={"halves": "provisioning", **conf})


def canvas_import(canvas, name: str, text: str) -> None:
    """An import made by hand in Canvas (not by the integration), waited for."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, text)
    answer = requests.post(f"{canvas.base_url}/api/v1/accounts/{canvas.account_id}/sis_imports",
                           params={"import_type": "instructure_csv", "extension": "zip"}, data=buffer.getvalue(),
                           headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/zip"},
                           timeout=10)
    answer.raise_for_status()
    deadline = time.monotonic() + 20
    while canvas.imports[answer.json()["id"]]["workflow_state"] != "imported":
        assert time.monotonic() < deadline, canvas.imports[answer.json()["id"]]
        time.sleep(0.02)


def active_students(canvas) -> dict[str, set[str]]:
    """Course SIS id -> the SIS ids of its active students, as the Canvas emulator holds them."""
    students: dict[str, set[str]] = {}
    for enrollment in canvas.enrollments.values():
        if enrollment["role"] == "student" and enrollment["status"] == "active" and enrollment["user_id"]:
            students.setdefault(enrollment["course_id"], set()).add(enrollment["user_id"])
    return students
