"""Provisioning end to end: the demo DAG against the IC and Schoology emulators, asserting on
what the LMS received."""

from __future__ import annotations

import os
from collections import Counter
from datetime import timedelta

import pytest
import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.staging import read_frame
from tests.provisioning_support import counted, night, provisioning_runs, report_of
from tests.support import Spoiled



@pytest.fixture
def district():
    """Its own district: tests here edit it."""
    return SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))


@pytest.fixture
def sync(district, lms, smtp, monkeypatch, tmp_path, airflow_db):
    """Runs a district's DAG with both emulators and an SMTP sink behind its connections; returns a runner."""
    with provisioning_runs(district, lms, smtp, monkeypatch, (tmp_path / "staging").as_uri()) as run:
        yield run


@pytest.fixture
def variant(tmp_path, monkeypatch):
    """A district file like demo.yaml with some settings changed; returns its DAG id."""
    directory = tmp_path / "districts"
    directory.mkdir()
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(directory))

    def write(name: str, change) -> str:
        config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
        config["district"] = name
        config["task_retries"] = {"count": 0}
        change(config)
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(config))
        return f"oneroster_{name}"

    return write


def test_the_demo_district_is_provisioned_then_only_changes_are_sent(sync, district, lms):
    first = sync(night(0))
    assert first.state == "success", first.task_states
    report = report_of(first)
    users = list(district.records("users"))
    spaced = {user["sourcedId"] for user in users if " " in user["username"]}
    active = [user for user in users if user["status"] == "active" and user["sourcedId"] not in spaced]
    provisioned = {user["school_uid"] for user in lms.users.values()}
    assert provisioned == {user["metadata"]["ic.legacysourceId"] for user in active}
    assert counted(report, "user", "skipped", "username with spaces") == len(spaced) == 1
    assert len(lms.buildings) == 3
    trial = {course["sourcedId"] for course in district.records("courses") if course.get("metadata")}
    assert trial and not trial & {course["course_code"] for course in lms.courses.values()}
    assert counted(report, "course", "skipped", "trial schedule") == len(trial)
    assert lms.associations, "guardians are linked to their children"
    admins = Counter(enrollment["admin"] for enrollment in lms.enrollments.values())
    assert admins[True] > 0 and admins[False] > admins[True]
    manifests = objects_recorded(first)
    assert manifests["enrollment"]["row_count"] == len(lms.enrollments)
    assert manifests["user"]["row_count"] == len(lms.users)

    lms.reset_stats()
    second = sync(night(1))
    assert second.state == "success", second.task_states
    assert lms.write_requests == 0, "nothing changed in IC, nothing may be written"
    assert counted(report_of(second), "user", "unchanged") == len(active)

    renamed = district.modify("users", 2, night(1) + timedelta(hours=12))
    dropped = district.modify("enrollments", 3, night(1) + timedelta(hours=12))
    hand_added = add_course_admin_by_hand(lms, district, dropped[0], teacher="t3000001")
    lms.reset_stats()
    third = sync(night(2))
    assert third.state == "success", third.task_states
    report = report_of(third)
    legacy = {user["sourcedId"]: user["metadata"]["ic.legacysourceId"] for user in users}
    changed_users = {legacy[sourced_id] for sourced_id in renamed} - {legacy[s] for s in spaced}
    assert counted(report, "user", "updated") == len(changed_users)
    assert {user["school_uid"] for user in lms.users.values() if user["name_last"].endswith("-Lee")} == changed_users
    dropped_in_lms = counted(report, "enrollment", "deactivated")
    assert 0 < dropped_in_lms <= len(dropped)
    assert counted(report, "user", "created") == counted(report, "course", "created") == 0
    writes = [request for request in lms.requests if request.method in ("POST", "PUT", "DELETE")]
    assert len(writes) == 2, [f"{request.method} {request.path}" for request in writes]
    assert hand_added in {(e["section_id"], e["uid"]) for e in lms.enrollments.values()}, "LMS-only admin kept"


def objects_recorded(outcome) -> dict[str, dict]:
    """Each step's manifest, checked: a table of the objects with their LMS ids for the kinds later
    steps read, counted in ``row_count`` like the objects of every kind."""
    from include.provisioning.steps import READ_BY_LATER_STEPS, STEPS

    manifests = {step.kind: outcome.returned[f"provision.{step.task_id}"] for step in STEPS}
    for kind, manifest in manifests.items():
        assert (manifest["result_uri"] is not None) == (kind in READ_BY_LATER_STEPS), kind
        if manifest["result_uri"]:
            assert len(read_frame(manifest["result_uri"])) == manifest["row_count"], kind
    return manifests


def add_course_admin_by_hand(lms, district, enrollment_id: str, teacher: str) -> tuple[str, str]:
    """What a school admin does in the LMS's own UI: one more teacher as admin of the section
    an IC enrollment is about to be dropped from."""
    from include.lms.target import Enrollment
    from plugins.hooks.schoology import SchoologyHook

    enrollment = next(record for record in district.records("enrollments") if record["sourcedId"] == enrollment_id)
    cls = next(record for record in district.records("classes") if record["sourcedId"] == enrollment["class"]["sourcedId"])
    section_id = next(lms_id for lms_id, section in lms.sections.items() if section["section_school_code"] == cls["sourcedId"])
    item = Enrollment(key=f"{cls['sourcedId']}:{teacher}", course_key=cls["course"]["sourcedId"],
                      section_key=cls["sourcedId"], section_id=section_id, user_key=teacher, admin=True)
    (result,) = SchoologyHook("lms_demo").apply("create", [item])
    assert result.ok, result.error
    return section_id, next(lms_id for lms_id, user in lms.users.items() if user["school_uid"] == teacher)


def test_a_dry_run_reports_the_plan_and_writes_nothing(sync, lms):
    outcome = sync(night(0), dry_run=True)
    assert outcome.state == "success", outcome.task_states
    assert lms.write_requests == 0 and not lms.users and not lms.buildings
    report = report_of(outcome)
    assert counted(report, "user", "would create") > 0
    assert counted(report, "enrollment", "would create") > 0
    assert objects_recorded(outcome)["enrollment"]["row_count"] == counted(report, "enrollment", "would create")
    assert outcome.returned["provision.sync_report"]["dry_run"] is True
    real = sync(night(1))
    assert counted(report_of(real), "user", "created") == counted(report, "user", "would create")


def test_items_the_lms_rejects_are_reported_and_retried_next_run_alone(sync, lms, district, smtp):
    users = list(district.records("users"))[3:5]
    rejected = [user["metadata"]["ic.legacysourceId"] for user in users]
    lms.inject("reject_items", keys=rejected, message="username already taken in another school")
    first = sync(night(0))
    assert first.state == "success", first.task_states
    report = report_of(first)
    assert counted(report, "user", "failed", "username already taken in another school") == 2
    (mail,) = smtp.wait_for(1)
    assert "provisioning: 2 record(s) need attention" in mail.subject and "user: 2 failed" in mail.body
    people = {str(user[key]) for user in users for key in ("sourcedId", "username", "givenName", "familyName", "email")}
    people |= set(rejected)
    assert not [value for value in people if value in mail.subject + mail.body], "student data in the email"
    errors = read_frame(first.returned["provision.users"]["errors_uri"])
    assert sorted(errors["key"]) == sorted(rejected)
    assert not set(rejected) & {user["school_uid"] for user in lms.users.values()}

    lms.clear_faults()
    lms.reset_stats()
    smtp.clear()
    second = sync(night(1))
    report = report_of(second)
    assert counted(report, "user", "created") == 2 and counted(report, "user", "failed") == 0
    assert smtp.messages == [], "a night that reached the LMS whole sends no email"
    assert counted(report, "user", "unchanged") == counted(report_of(first), "user", "created"), "the rest not re-sent"
    sent = [request for request in lms.requests if request.method == "POST" and request.path.endswith("/users")]
    assert len(sent) == 1, "the two rejected users in one call, nothing else"
    assert set(rejected) <= {user["school_uid"] for user in lms.users.values()}


def test_records_ic_serves_that_cannot_be_staged_are_in_the_sync_report_and_emailed(sync, district, smtp,
                                                                                    monkeypatch):
    records = district.records
    monkeypatch.setattr(district, "records", lambda collection, version="1.2", href_base="": Spoiled(
        records(collection, version, href_base), {4, 9, 13} if collection == "users" else set()))
    outcome = sync(night(0))
    assert outcome.state == "success", outcome.task_states
    assert counted(report_of(outcome), "users", "quarantined") == 3
    (mail,) = smtp.wait_for(1)
    assert "users: 3 quarantined" in mail.body and "3 record(s) need attention" in mail.subject
    spoiled = [records("users")[index] for index in (4, 9, 13)]
    people = {str(user[key]) for user in spoiled for key in ("sourcedId", "username", "familyName", "email")}
    assert not [value for value in people if value in mail.subject + mail.body], "student data in the email"


def test_a_load_that_dies_half_way_is_rerun_without_creating_anything_twice(sync, lms, variant):
    dag_id = variant("fragile", lambda config: config["lms"].update(max_attempts=1))
    lms.inject("500", times=1000, after=6)
    broken = sync(night(0), dag_id)
    assert broken.state == "failed"
    assert "success" in broken.task_states.values() and "failed" in broken.task_states.values()
    lms.clear_faults()
    rerun = sync(night(0), dag_id)
    assert rerun.state == "success", rerun.task_states
    assert rerun.run_id == broken.run_id
    for store, key in ((lms.users, "school_uid"), (lms.courses, "course_code"), (lms.sections, "section_school_code")):
        keys = Counter(item[key] for item in store.values())
        assert keys and max(keys.values()) == 1, f"duplicated {key}"
    pairs = Counter((e["section_id"], e["uid"]) for e in lms.enrollments.values())
    assert max(pairs.values()) == 1


def test_a_mapping_to_an_unknown_building_fails_naming_the_file_and_value(sync, lms, variant):
    from airflow.sdk.exceptions import AirflowFailException

    from include.sandbox.runner import load_dag
    from plugins.hooks.lms import lms_target

    dag_id = variant("mapped", lambda config: config["provisioning"]["schools"].update({"101": {"building_id": "999999"}}))
    task = load_dag(dag_id).get_task("provision.buildings")
    with pytest.raises(AirflowFailException) as raised:
        task._check_references(lms_target(task.lms))
    assert str(raised.value) == (
        f"{os.environ[DISTRICTS_DIR_ENV]}/mapped.yaml: "
        "provisioning.schools.101.building_id: the LMS has no building '999999'"
    ), "the district file as it is named on disk"
    outcome = sync(night(0), dag_id)
    assert outcome.task_states["provision.buildings"] == "failed" and lms.write_requests == 0


def test_task_logs_carry_no_student_names_or_emails(sync, district, lms, capfd):
    """Logs are read by many; student records are not theirs to read (FERPA)."""
    lms.inject("reject_items", keys=[user["metadata"]["ic.legacysourceId"] for user in list(district.records("users"))[:3]],
               message="rejected for the test")
    outcome = sync(night(0))
    assert outcome.state == "success", outcome.task_states
    logged = capfd.readouterr()
    text = logged.out + logged.err
    assert "District demo, user:" in text, "the task logs were captured"
    for user in district.records("users"):
        assert user["email"] not in text
        assert f"{user['givenName']} {user['familyName']}" not in text
