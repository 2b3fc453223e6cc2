"""Shapes real districts' data has (issue 17, "What else real data held (each ended green)"), run end
to end: the demo DAG against the IC emulator serving the shape and the Schoology emulator, checked
on the far side (what the LMS holds, what the sync report and the email say) against the district
file's rules as ``tests/expected_provisioning.py`` models them, independently of the plan.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV, Provisioning, load_district
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.staging import read_frame
from tests import real_data_shapes as shapes
from tests.expected_provisioning import KINDS, TASKS, expected_provisioning, held_by_lms
from tests.provisioning_support import counted, night, provisioning_runs, report_of

DEMO = "oneroster_demo"


@pytest.fixture
def district():
    """Its own district: each test serves it in a shape."""
    return SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))


@pytest.fixture
def districts_dir(tmp_path, monkeypatch):
    """District files of the test's own (demo.yaml among them), read by the DAGs it runs."""
    directory = tmp_path / "districts"
    directory.mkdir()
    (directory / "demo.yaml").write_text((DISTRICTS_DIR / "demo.yaml").read_text())
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(directory))
    return directory


@pytest.fixture
def variant(districts_dir):
    """A district file like demo.yaml with some settings changed; returns its DAG id."""

    def write(name: str, change=lambda config: None) -> str:
        config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
        config["district"] = name
        config["task_retries"] = {"count": 0}
        change(config)
        (districts_dir / f"{name}.yaml").write_text(yaml.safe_dump(config))
        return f"oneroster_{name}"

    return write


@pytest.fixture
def sync(district, lms, smtp, monkeypatch, tmp_path, airflow_db):
    """Runs a district's DAG with both emulators and an SMTP sink behind its connections; returns a runner."""
    with provisioning_runs(district, lms, smtp, monkeypatch, (tmp_path / "staging").as_uri()) as run:
        yield run


def provisioning_of(dag_id: str) -> Provisioning:
    """The provisioning settings of the district file the DAG is made from."""
    directory = Path(os.environ.get(DISTRICTS_DIR_ENV) or DISTRICTS_DIR)
    return load_district(directory / f"{dag_id.removeprefix('oneroster_')}.yaml").provisioning


def assert_the_lms_holds_what_the_rules_say(outcome, district, lms, provisioning: Provisioning, when: datetime):
    """The LMS holds exactly what the rules put there, once each, enrollments as admin or member as
    they say; the run lists every record it leaves out, once, with a reason they give for it; and
    the sync report counts the same."""
    assert outcome.state == "success", outcome.task_states
    rules = expected_provisioning(district, provisioning, when.date())
    held = held_by_lms(lms, district, rules)
    report = report_of(outcome)
    for kind in KINDS:
        assert set(held[kind]) == rules.present[kind], (
            kind, "missing:", sorted(rules.present[kind] - set(held[kind]))[:5],
            "not the rules':", sorted(set(held[kind]) - rules.present[kind])[:5])
        assert not [key for key, count in held[kind].items() if count > 1], f"{kind}: stored twice"
        left_out = read_frame(outcome.returned[f"provision.{TASKS[kind]}"]["skipped_uri"])
        keys = left_out["key"].map(rules.enrollment_keys) if kind == "enrollment" else left_out["key"]
        reasons = dict(zip(keys, left_out["reason"], strict=True))
        assert len(reasons) == len(left_out) and set(reasons) == set(rules.skipped[kind]), (
            kind, sorted(set(reasons) ^ set(rules.skipped[kind]))[:5])
        wrong = {key: reason for key, reason in reasons.items() if reason not in rules.skipped[kind][key]}
        assert not wrong, f"{kind} skipped with a reason the rules do not give: {list(wrong.items())[:5]}"
        assert counted(report, kind, "skipped") == len(left_out), kind
    uid = {user["uid"]: user["school_uid"] for user in lms.users.values()}
    code = {lms_id: section["section_school_code"] for lms_id, section in lms.sections.items()}
    admins = {f"{code[e['section_id']]}:{uid[e['uid']]}": bool(int(e["admin"])) for e in lms.enrollments.values()}
    assert admins == {key: rules.admin[key] for key in admins}, "admin or member as the rules say"


# -- 1. a course owned by the district org ---------------------------------------------------------


def test_a_course_owned_by_the_district_is_in_the_building_of_each_school_its_classes_are_in(sync, district, lms):
    shape = shapes.district_owned_course(district)
    outcome = sync(night(0), DEMO)
    assert_the_lms_holds_what_the_rules_say(outcome, district, lms, provisioning_of(DEMO), night(0))
    building_of_code = {b["building_code"]: lms_id for lms_id, b in lms.buildings.items()}
    placed = {c["course_code"]: c for c in lms.courses.values() if c["course_code"].startswith(f"{shape.course}@")}
    assert {code: course["building_id"] for code, course in placed.items()} == {
        f"{shape.course}@100": building_of_code["1000"], f"{shape.course}@101": building_of_code["1001"]}
    classes = {c["sourcedId"]: c["school"]["sourcedId"] for c in district.records("classes")
               if c["course"]["sourcedId"] == shape.course and not (c.get("metadata") or {}).get("ic.trialSchedule")}
    in_course = {s["section_school_code"]: s["course_id"] for s in lms.sections.values()
                 if s["section_school_code"] in classes}
    assert set(in_course) == set(classes), "every class of the district's course is a section"
    assert all(in_course[klass] == placed[f"{shape.course}@{school}"]["id"] for klass, school in classes.items())
    assert counted(report_of(outcome), "course", "skipped", "unmapped school") == 0


# -- 2. a school whose identifier is empty ---------------------------------------------------------


def test_a_school_with_an_empty_identifier_is_provisioned_with_its_users_courses_and_sections(sync, district, lms,
                                                                                              smtp):
    shapes.school_without_identifier(district, "101")
    outcome = sync(night(0), DEMO)
    assert_the_lms_holds_what_the_rules_say(outcome, district, lms, provisioning_of(DEMO), night(0))
    assert sorted(b["building_code"] for b in lms.buildings.values()) == ["1000", "1002", "101"]
    report = report_of(outcome)
    assert counted(report, "user", "skipped", "unmapped school") == 0
    assert counted(report, "building", "failed") == 0 and smtp.messages == []


def test_records_of_a_school_whose_building_the_lms_refuses_wait_for_it_and_a_person_is_emailed(sync, district,
                                                                                                lms, smtp):
    lms.inject("reject_items", keys=["1001"], message="building refused for the test")
    outcome = sync(night(0), DEMO)
    assert outcome.state == "success", outcome.task_states
    report = report_of(outcome)
    waiting = report[(report["outcome"] == "skipped") & (report["reason"] == "building not created yet")]
    assert set(waiting["kind"]) >= {"user", "course", "section"} and set(waiting["school"]) == {"101"}
    assert not (report["reason"] == "unmapped school").any(), "the map says create: never 'unmapped'"
    (mail,) = smtp.wait_for(1)
    users = counted(report, "user", "skipped", "building not created yet")
    assert f"user: {users} skipped: building not created yet" in mail.body
    assert "building: 1 failed" in mail.body

    lms.clear_faults()
    smtp.clear()
    second = sync(night(1), DEMO)
    assert_the_lms_holds_what_the_rules_say(second, district, lms, provisioning_of(DEMO), night(1))
    assert counted(report_of(second), "user", "created") == users, "they follow their building the night it is in"


# -- 3. enrollment roles aide and proctor -----------------------------------------------------------


def test_aides_and_proctors_are_section_admins(sync, district, lms):
    added = shapes.staff_enrollments(district, roles=("aide", "proctor"))
    outcome = sync(night(0), DEMO)
    assert_the_lms_holds_what_the_rules_say(outcome, district, lms, provisioning_of(DEMO), night(0))
    code = {lms_id: section["section_school_code"] for lms_id, section in lms.sections.items()}
    uid = {user["uid"]: user["school_uid"] for user in lms.users.values()}
    admin = {(code[e["section_id"]], uid[e["uid"]]): bool(int(e["admin"])) for e in lms.enrollments.values()}
    assert [admin.get((klass, f"t{teacher}")) for klass, teacher in added.values()] == [True, True]


def test_an_enrollment_role_the_district_file_sets_to_skip_is_reported_not_enrolled(sync, district, lms, variant):
    added = shapes.staff_enrollments(district, roles=("aide", "proctor"))
    dag_id = variant("proctorless", lambda config: config["provisioning"].update(
        enrollment_roles={"proctor": "skip", "aide": "member"}))
    outcome = sync(night(0), dag_id)
    assert_the_lms_holds_what_the_rules_say(outcome, district, lms, provisioning_of(dag_id), night(0))
    assert counted(report_of(outcome), "enrollment", "skipped", "enrollment role set to skip") == 1
    (aide, proctor) = added.values()
    code = {lms_id: section["section_school_code"] for lms_id, section in lms.sections.items()}
    uid = {user["uid"]: user["school_uid"] for user in lms.users.values()}
    admin = {(code[e["section_id"]], uid[e["uid"]]): bool(int(e["admin"])) for e in lms.enrollments.values()}
    assert admin.get((aide[0], f"t{aide[1]}")) is False and (proctor[0], f"t{proctor[1]}") not in admin


# -- 4. enrollment dates ----------------------------------------------------------------------------


def test_an_enrollment_that_ended_is_left_out_and_deactivated_the_night_after_its_last_day(sync, district, lms):
    students = [r for r in district.records("enrollments") if r["role"] == "student" and r["status"] == "active"]
    ended, ending = students[0]["sourcedId"], students[1]["sourcedId"]
    shapes.dated_enrollments(district, {ended: (None, "2026-10-01"), ending: (None, "2026-11-02")})
    first = sync(night(0), DEMO)
    assert_the_lms_holds_what_the_rules_say(first, district, lms, provisioning_of(DEMO), night(0))
    assert counted(report_of(first), "enrollment", "skipped", "ended on 2026-10-01") == 1
    rules = expected_provisioning(district, provisioning_of(DEMO))
    assert rules.enrollment_keys[ending] in held_by_lms(lms, district, rules)["enrollment"], \
        "its last day is the run's: still enrolled"

    second = sync(night(1), DEMO)  # the same records, a day later: the one that ended on the 2nd is gone
    assert_the_lms_holds_what_the_rules_say(second, district, lms, provisioning_of(DEMO), night(1))
    report = report_of(second)
    assert counted(report, "enrollment", "deactivated") == 1
    assert counted(report, "enrollment", "skipped", "ended on 2026-11-02") == 1


def test_an_enrollment_not_begun_is_held_when_the_district_file_says_hold(sync, district, lms, variant):
    students = [r for r in district.records("enrollments") if r["role"] == "student" and r["status"] == "active"]
    soon = students[0]["sourcedId"]
    shapes.dated_enrollments(district, {soon: ("2026-11-03", None)})
    dag_id = variant("held", lambda config: config["provisioning"].update(enrollment_dates={"future": "hold"}))
    first = sync(night(0), dag_id)
    assert_the_lms_holds_what_the_rules_say(first, district, lms, provisioning_of(dag_id), night(0))
    report = report_of(first)
    assert counted(report, "enrollment", "skipped", "begins on 2026-11-03") == 1
    assert counted(report, "enrollment", "skipped", "begins on 2027-01-05") > 0, "second semester waits"

    second = sync(night(1), dag_id)  # its first day: enrolled
    assert_the_lms_holds_what_the_rules_say(second, district, lms, provisioning_of(dag_id), night(1))
    assert counted(report_of(second), "enrollment", "created") == 1


# -- 5. a duplicate enrollment ----------------------------------------------------------------------


def test_a_duplicate_enrollment_is_enrolled_once_and_reported_as_a_duplicate(sync, district, lms):
    original, duplicate = shapes.duplicate_enrollment(district)
    outcome = sync(night(0), DEMO)
    assert_the_lms_holds_what_the_rules_say(outcome, district, lms, provisioning_of(DEMO), night(0))
    report = report_of(outcome)
    assert counted(report, "enrollment", "skipped",
                   "duplicate of another enrollment of the same user and class") == 1
    left_out = read_frame(outcome.returned["provision.enrollments"]["skipped_uri"])
    assert duplicate in set(left_out["key"]) and original not in set(left_out["key"])
    pairs = Counter((e["section_id"], e["uid"]) for e in lms.enrollments.values())
    assert max(pairs.values()) == 1
    accounted = counted(report, "enrollment", "created") + counted(report, "enrollment", "skipped")
    assert accounted == len(district.records("enrollments")), "every IC enrollment ends in one outcome"


# -- 6. a username with spaces around it -----------------------------------------------------------


def test_a_username_with_spaces_around_it_is_provisioned_trimmed(sync, district, lms):
    student, username = shapes.padded_username(district)
    outcome = sync(night(0), DEMO)
    assert_the_lms_holds_what_the_rules_say(outcome, district, lms, provisioning_of(DEMO), night(0))
    legacy = next(u["metadata"]["ic.legacysourceId"] for u in district.records("users") if u["sourcedId"] == student)
    (user,) = [u for u in lms.users.values() if u["school_uid"] == legacy]
    assert user["username"] == username
