"""Provisioning into Canvas end to end: a district file with ``lms.target: canvas``, its DAG run
against the IC emulator and the Canvas emulator (SIS imports over real HTTP on 127.0.0.1), and
what Canvas holds checked against the district file's rules (tests/expected_provisioning.py),
not against the plan."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from include.config import load_district
from include.sandbox.canvas_emulator import CanvasEmulator
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_emulator import ICEmulator
from include.staging import read_frame
from tests.expected_provisioning import assert_canvas_holds_what_the_rules_say, expected_provisioning, user_uid
from tests.provisioning_support import counted, night, report_of
from tests.canvas_support import (
    ROWS_PER_IMPORT,
    canvas_import,
    canvas_district_file,
    connect_canvas,
    connect_ic_and_smtp,
    run_night,
)
from tests.support import CLIENT_ID, CLIENT_SECRET

@pytest.fixture
def district():
    return SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))


@pytest.fixture
def district_file(tmp_path, monkeypatch):
    return canvas_district_file(tmp_path / "districts", monkeypatch)


@pytest.fixture
def sync(district, canvas, district_file, smtp, monkeypatch, tmp_path, airflow_db):
    """Runs the Canvas district's provisioning on a night; the same night again re-runs that run."""
    with ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as ic:
        connect_ic_and_smtp(monkeypatch, ic, smtp, tmp_path / "staging")
        connect_canvas(monkeypatch, canvas)
        yield run_night


def imports(canvas: CanvasEmulator) -> int:
    return sum(1 for request in canvas.requests if request.method == "POST" and "sis_imports" in request.path)


def test_a_district_on_canvas_is_provisioned_as_its_rules_say_then_only_changes_are_imported(
        sync, district, canvas, district_file):
    provisioning = load_district(district_file).provisioning
    first = sync(night(0))
    assert first.state == "success", first.task_states
    assert "provision.courses" not in first.task_states, "Canvas holds no IC course: a class is a Canvas course"
    expected = assert_canvas_holds_what_the_rules_say(canvas, district, provisioning, night(0).date())
    report = report_of(first)
    assert counted(report, "user", "created") == len(expected.present["user"])
    assert counted(report, "user", "skipped", "username with spaces") == 1
    assert counted(report, "section", "created") == len(expected.present["section"])
    assert counted(report, "enrollment", "created") == len(expected.present["enrollment"])
    assert not counted(report, "enrollment", "failed") and canvas.user_observers, "guardians observe their children"
    assert imports(canvas) > len(expected.present["enrollment"]) // ROWS_PER_IMPORT, "rows_per_import bounds an import"

    before = imports(canvas)
    second = sync(night(1))
    assert second.state == "success", second.task_states
    assert imports(canvas) == before, "nothing changed in IC: no import"
    assert counted(report_of(second), "user", "unchanged") == len(expected.present["user"])

    renamed = district.modify("users", 2, night(1) + timedelta(hours=12))
    dropped = district.modify("enrollments", 3, night(1) + timedelta(hours=12))
    third = sync(night(2))
    assert third.state == "success", third.task_states
    after = assert_canvas_holds_what_the_rules_say(canvas, district, provisioning, night(2).date())
    uid = {user["sourcedId"]: user_uid(user) for user in district.records("users", "1.2")}
    changed = {uid[sourced_id] for sourced_id in renamed} & after.present["user"]
    assert counted(report_of(third), "user", "updated") == len(changed)
    assert {key for key in changed if canvas.users[key]["last_name"].endswith("-Lee")} == changed
    gone = {after.enrollment_keys[sourced_id] for sourced_id in dropped} & expected.present["enrollment"]
    assert gone, "the scenario drops enrollments that were in Canvas"
    held = {f"{e['section_id']}:{e['user_id']}": e["status"] for e in canvas.enrollments.values()
            if e["role"] in ("teacher", "student")}
    assert {held[key] for key in gone} == {"completed"}, "dropped_enrollments: completed"


def test_a_row_canvas_skips_is_reported_failed_and_imported_again_once_canvas_takes_it(
        sync, district, canvas, district_file):
    """A hand-made Canvas user already holds an IC user's login: Canvas skips that row with a warning
    naming both. The IC user is failed (with Canvas's words, ids masked), everything else is in, and
    the row goes again every night until Canvas takes it."""
    provisioning = load_district(district_file).provisioning
    expected = expected_provisioning(district, provisioning, on=night(0).date(), courses_held=False)
    taken = next(user for user in district.records("users", "1.2")
                 if user_uid(user) in expected.present["user"] and user["roles"][0]["role"] == "student")
    canvas_import(canvas, "users.csv", f"user_id,login_id,first_name,last_name,status\n"
                                       f"hand-made,{taken['username']},Hand,Made,active\n")
    first = sync(night(0))
    assert first.state == "success", first.task_states
    report = report_of(first)
    assert counted(report, "user", "failed") == 1
    errors = read_frame(first.returned["provision.users"]["errors_uri"])
    assert errors["key"].tolist() == [user_uid(taken)]
    message, = errors["error"].tolist()
    assert "already claimed" in message and taken["username"] not in message and user_uid(taken) not in message
    assert user_uid(taken) not in canvas.users
    theirs = {sourced_id for sourced_id, key in expected.enrollment_keys.items()
              if key in expected.present["enrollment"] and key.endswith(f":{user_uid(taken)}")}
    skipped = read_frame(first.returned["provision.enrollments"]["skipped_uri"])
    assert theirs and theirs <= set(skipped.loc[skipped["reason"] == "user not provisioned", "key"]), \
        "their enrollments wait for them, reported"

    canvas_import(canvas, "users.csv", "user_id,login_id,first_name,last_name,status\n"
                                       "hand-made,hand-made-login,Hand,Made,active\n")
    second = sync(night(1))
    assert second.state == "success", second.task_states
    assert counted(report_of(second), "user", "created") == 1
    assert_canvas_holds_what_the_rules_say(canvas, district, provisioning, night(1).date(),
                                           made_in_canvas=frozenset({"hand-made"}))


def test_schools_mapped_to_an_existing_sub_account_go_there_and_one_that_is_not_in_canvas_fails_naming_it(
        sync, district, canvas, district_file):
    canvas_import(canvas, "accounts.csv", "account_id,parent_account_id,name,status\n"
                                          "north-campus,,North Campus,active\n")
    config = yaml.safe_load(district_file.read_text())
    config["provisioning"]["schools"].update({"101": {"building_id": "north-campus"},
                                              "102": {"building_id": "south-campus"}})
    district_file.write_text(yaml.safe_dump(config))
    refused = sync(night(0))
    assert refused.task_states["provision.buildings"] == "failed"
    assert imports(canvas) == 1, "a map pointing at nothing stops the night before anything is imported"

    config["provisioning"]["schools"]["102"] = {"building_id": "north-campus"}  # two IC schools, one sub-account
    district_file.write_text(yaml.safe_dump(config))
    provisioning = load_district(district_file).provisioning
    second = sync(night(1))
    assert second.state == "success", second.task_states
    assert_canvas_holds_what_the_rules_say(canvas, district, provisioning, night(1).date())
    assert set(canvas.accounts) == {"north-campus", "school-100"}, "no sub-account made for a mapped school"


def test_an_import_canvas_fails_confirms_no_row_and_the_next_night_imports_them_all(
        sync, district, canvas, district_file, smtp):
    """Canvas ends the users' imports failed_with_messages having applied nothing: not one user is
    recorded as provisioned, the night says so by email (in counts), and the next night sends them
    all again: nothing lost, nothing twice."""
    provisioning = load_district(district_file).provisioning
    expected = expected_provisioning(district, provisioning, on=night(0).date(), courses_held=False)
    user_imports = -(-len(expected.present["user"]) // ROWS_PER_IMPORT)
    canvas.inject("import_fails", times=user_imports, after=2)  # the buildings' and the terms' imports go through
    first = sync(night(0))
    assert first.state == "success", first.task_states
    report = report_of(first)
    assert counted(report, "user", "failed") == len(expected.present["user"])
    assert not canvas.users and not canvas.enrollments
    assert counted(report, "enrollment", "created") == 0
    (mail,) = smtp.wait_for(1)
    assert f"user: {len(expected.present['user'])} failed" in mail.body
    errors = read_frame(first.returned["provision.users"]["errors_uri"])
    assert all("ended failed_with_messages: not confirmed" in error for error in errors["error"])

    second = sync(night(1))
    assert second.state == "success", second.task_states
    assert counted(report_of(second), "user", "created") == len(expected.present["user"])
    assert_canvas_holds_what_the_rules_say(canvas, district, provisioning, night(1).date())
