"""Fault injection, provisioning half: whole DAG runs (``halves=provisioning``) against the IC
and Schoology emulators with faults switched on, each followed by a ledger of what reached the
LMS against what should have.

The expectation does not come from the code under test: ``tests/expected_provisioning.py``
applies the district file's rules, as README.md states them, to the raw OneRoster records the
synthetic district serves, and says which objects the LMS must hold and which records must be
left out with which reason. After a scenario each object that must be in the LMS is there
(``posted``, read from the Schoology emulator's stores), or listed by the run as failed with
the LMS's message, or skipped because what it hangs off failed; each record that must be left
out is listed by the run as skipped with a reason the rules give for it. Anything else is
lost; an object in the LMS the rules leave out fails the scenario, and the LMS must hold
nothing twice. IC's faults hit the rostering reads of the extract tasks, the LMS's the
provisioning tasks' calls.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import pytest
import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV, load_district
from include.provisioning import plan  # only for the plan's own tests at the end
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_emulator import ICEmulator
from include.sandbox.smtp_sink import SMTPSink
from tests import expected_provisioning as rules
from tests.expected_provisioning import Expected, held_by_lms
from tests import provisioning_ledger
from tests.fault_ledger import ScenarioLedger
from tests.provisioning_ledger import listed
from tests.provisioning_support import FIRST_NIGHT, counted, extract_frames, night, report_of
from tests.support import CLIENT_ID, CLIENT_SECRET, LMS_SECRET, connection_uri_env, lms_connection_env

SPEC = DistrictSpec(seed=42, students=60, schools=3, school_year=2027)
ROSTERING = "/rostering/v1p2/"
DEMO_PROVISIONING = load_district(DISTRICTS_DIR / "demo.yaml").provisioning


# -- districts with awkward data (the generator itself is left as it is) ----------------------------


class TermlessDistrict(SyntheticDistrict):
    """IC serving classes scheduled in no term: the first regular class of each school but the
    first, and the first school's cross-listed pair's partner, come without ``terms``."""

    def termless(self) -> set[str]:
        if not hasattr(self, "_termless"):
            served = super()._classes  # IC's record as the plain district serves it
            first_school = [served(index, "1.2", "") for index in range(self.schools[0].classes)]
            cross_listed = [
                klass["sourcedId"]
                for klass in first_school
                if (klass.get("metadata") or {}).get("ic.crossListGroup")
            ]
            assert len(cross_listed) == 2, cross_listed
            firsts = {str(600_000 + school.first_class) for school in self.schools[1:]}
            self._termless = firsts | {cross_listed[1]}
        return self._termless

    def _classes(self, index: int, version: str, href_base: str) -> dict:
        record = super()._classes(index, version, href_base)
        if record["sourcedId"] in self.termless():
            record["terms"] = []
        return record


@pytest.fixture
def district(request):
    return getattr(request, "param", SyntheticDistrict)(SPEC)


# -- the stage: IC, the LMS and an SMTP relay behind the demo's connection ids ----------------------


@dataclass
class Stage:
    ic: ICEmulator
    lms: object
    smtp: SMTPSink
    district: SyntheticDistrict
    directory: object
    monkeypatch: pytest.MonkeyPatch

    def connect_ic(self, **extras) -> None:
        for key, value in connection_uri_env("ic_demo", self.ic, "1.2", **extras).items():
            self.monkeypatch.setenv(key, value)

    def connect_lms(self, **extras) -> None:
        for key, value in lms_connection_env("lms_demo", self.lms).items():
            connection = json.loads(value)
            connection["extra"].update(extras)
            self.monkeypatch.setenv(key, json.dumps(connection))

    def district_file(self, name: str, change=None) -> str:
        """A district file like demo.yaml (no task retries, quick LMS backoff), changed by ``change``."""
        config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
        config["district"] = name
        config["task_retries"] = {"count": 0, "delay_seconds": 0}
        config["lms"]["backoff_seconds"] = 0.05
        if change is not None:
            change(config)
        (self.directory / f"{name}.yaml").write_text(yaml.safe_dump(config))
        return f"oneroster_{name}"

    def config(self, dag_id: str):
        return load_district(self.directory / f"{dag_id.removeprefix('oneroster_')}.yaml")

    def run(self, dag_id: str, when: datetime = FIRST_NIGHT, **conf):
        from include.sandbox.runner import run_dag

        return run_dag(dag_id, logical_date=when, run_after=when, run_conf={"halves": "provisioning", **conf})


@pytest.fixture
def stage(district, lms, monkeypatch, tmp_path, airflow_db):
    directory = tmp_path / "districts"
    directory.mkdir()
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(directory))
    monkeypatch.setenv("AIRFLOW_VAR_ONEROSTER_STAGING_ROOT", (tmp_path / "staging").as_uri())
    with (
        ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as ic,
        SMTPSink() as smtp,
    ):
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEMO", json.dumps(smtp.connection("oneroster-tests@localhost")))
        stage = Stage(ic, lms, smtp, district, directory, monkeypatch)
        stage.connect_ic()
        stage.connect_lms()
        yield stage


# -- the ledger: the rules' expectation, the far side, the run's own lists -------------------------


def expected(stage: Stage, dag_id: str | None = None, provisioning=None) -> Expected:
    """What the rules say the LMS must hold for this district file (or ``provisioning``), from
    IC's raw records; see ``tests/expected_provisioning.py``. Nothing of the plan is used."""
    provisioning = provisioning if provisioning is not None else stage.config(dag_id).provisioning
    return rules.expected_provisioning(stage.district, provisioning)


def ledger(stage: Stage, scenario: str, faults: int, outcome, expectation: Expected,
           held_back: str | None = None) -> ScenarioLedger:
    """The scenario's ledger line (``tests/provisioning_ledger.py``) against what Schoology holds."""
    held = held_by_lms(stage.lms, stage.district, expectation)
    return provisioning_ledger.ledger(scenario, faults, outcome, expectation, held, stage.district, held_back)


def assert_extracted_in_full(stage: Stage, outcome) -> None:
    expected_counts = stage.district.expected_counts("1.2")
    extracted = {
        collection: outcome.returned[f"extract.{collection}"]["row_count"] for collection in expected_counts
    }
    assert extracted == expected_counts
    assert all(outcome.returned[f"extract.{c}"]["quarantined_count"] == 0 for c in expected_counts)


def assert_provisioned_in_full(stage: Stage, outcome, expectation: Expected) -> None:
    """Nothing failed, Schoology holds exactly what the rules put there, once each, and the run lists
    exactly what they leave out (``tests/provisioning_ledger.py``)."""
    held = held_by_lms(stage.lms, stage.district, expectation)
    provisioning_ledger.assert_provisioned_in_full(outcome, expectation, held, stage.district)


def retried_after(requests, faulted, wait: float) -> bool:
    """Each faulted request was sent again, no sooner than ``wait`` seconds after its answer."""
    for request in faulted:
        again = [
            later
            for later in requests
            if later.path == request.path
            and later.query == request.query
            and later.started > request.started
            and later.status == 200
        ]
        if not again or again[0].started - request.ended < wait - 0.05:
            return False
    return True


def revoke_after(ic: ICEmulator, requests: int, path_contains: str) -> None:
    """Revoke IC's client key/secret as the ``requests``-th rostering call containing
    ``path_contains`` arrives (it is then refused), as a district admin renewing them would."""
    take_fault = ic._take_fault
    seen = Counter()
    lock = threading.Lock()

    def counting(path: str):
        with lock:
            if path_contains in path:
                seen["calls"] += 1
                if seen["calls"] == requests:
                    ic.revoke_credentials()
        return take_fault(path)

    ic._take_fault = counting


def assert_no_secret(text: str) -> None:
    for secret in (CLIENT_SECRET, LMS_SECRET, "Bearer "):
        assert secret not in text


# -- IC faults on the extract's rostering reads -----------------------------------------------------


def test_ic_429_storm_is_waited_out_with_retry_after(stage):
    dag_id = stage.district_file("ic_429")
    expectation = expected(stage, dag_id)
    for collection, times, after in (
        ("orgs", 2, 0),
        ("users", 3, 1),
        ("classes", 2, 0),
        ("enrollments", 3, 4),
    ):
        stage.ic.inject(
            "429", times=times, after=after, retry_after=0.3, path_contains=f"{ROSTERING}{collection}"
        )
    outcome = stage.run(dag_id)
    assert_extracted_in_full(stage, outcome)
    assert_provisioned_in_full(stage, outcome, expectation)
    requests = stage.ic.requests
    storm = [request for request in requests if request.status == 429]
    assert len(storm) == 10 and all(r.response_headers.get("Retry-After") == "0.3" for r in storm)
    assert retried_after(requests, storm, 0.3), "Retry-After was not honoured"
    ledger(stage, "provisioning: IC 429 storm", len(storm), outcome, expectation)


def test_ic_5xx_burst_is_retried_with_backoff(stage):
    dag_id = stage.district_file("ic_5xx")
    expectation = expected(stage, dag_id)
    stage.ic.inject("500", times=2, path_contains=f"{ROSTERING}classes")
    stage.ic.inject("503", times=2, after=3, path_contains=f"{ROSTERING}enrollments")
    stage.ic.inject("500", times=1, path_contains=f"{ROSTERING}academicSessions")
    outcome = stage.run(dag_id)
    assert_extracted_in_full(stage, outcome)
    assert_provisioned_in_full(stage, outcome, expectation)
    requests = stage.ic.requests
    burst = [request for request in requests if request.status in (500, 503)]
    assert Counter(request.status for request in burst) == {500: 3, 503: 2}
    assert retried_after(requests, burst, 1.0), "5xx retried without backing off"
    ledger(stage, "provisioning: IC 5xx burst", len(burst), outcome, expectation)


def test_ic_connections_reset_mid_response_are_retried_without_losing_a_page(stage):
    dag_id = stage.district_file("ic_reset")
    expectation = expected(stage, dag_id)
    stage.ic.inject("reset", times=1, after=1, path_contains=f"{ROSTERING}users")
    stage.ic.inject("reset_mid_body", times=1, after=2, path_contains=f"{ROSTERING}users")
    stage.ic.inject("reset_mid_body", times=2, after=5, path_contains=f"{ROSTERING}enrollments")
    outcome = stage.run(dag_id)
    assert_extracted_in_full(stage, outcome)
    assert_provisioned_in_full(stage, outcome, expectation)
    requests = stage.ic.requests
    cut = [request for request in requests if request.status == 0]
    assert len(cut) == 4
    assert retried_after(requests, cut, 1.0)
    ledger(stage, "provisioning: IC connection reset mid-response", len(cut), outcome, expectation)


def test_ic_latency_past_the_read_timeout_is_retried(stage):
    dag_id = stage.district_file("ic_slow")
    expectation = expected(stage, dag_id)
    stage.connect_ic(read_timeout=1)
    stage.ic.inject("latency", times=1, seconds=2.5, path_contains=f"{ROSTERING}courses")
    stage.ic.inject("latency", times=1, after=2, seconds=2.5, path_contains=f"{ROSTERING}enrollments")
    stage.ic.inject("latency", times=1, seconds=0.3, path_contains=f"{ROSTERING}orgs")  # slow, not too slow
    outcome = stage.run(dag_id)
    assert_extracted_in_full(stage, outcome)
    assert_provisioned_in_full(stage, outcome, expectation)
    requests = stage.ic.requests
    slow = [request for request in requests if request.ended - request.started >= 2.4]
    assert len(slow) == 2, "the two calls past the timeout"
    for request in slow:
        again = [
            r for r in requests if r.path == request.path and r.query == request.query and r is not request
        ]
        assert again, "a call that timed out was not sent again"
    orgs_calls = [r for r in requests if r.path.endswith("/orgs")]
    assert len(orgs_calls) == 1, "a slow answer inside the timeout is not retried"
    ledger(stage, "provisioning: IC latency past the timeout", len(slow), outcome, expectation)


def test_ic_token_expiring_mid_run_is_renewed(stage):
    dag_id = stage.district_file("ic_token")
    expectation = expected(stage, dag_id)
    # one expiry per task (each task has its own token): a token refused again right after its
    # renewal is revoked credentials, which a token's real lifetime never produces
    stage.ic.inject("expire_token", times=1, after=2, path_contains=f"{ROSTERING}users")
    stage.ic.inject("expire_token", times=1, after=1, path_contains=f"{ROSTERING}classes")
    stage.ic.inject("expire_token", times=1, after=3, path_contains=f"{ROSTERING}enrollments")
    outcome = stage.run(dag_id)
    assert_extracted_in_full(stage, outcome)
    assert_provisioned_in_full(stage, outcome, expectation)
    expired = [request for request in stage.ic.requests if request.status == 401]
    # an expired token also refuses the calls already in flight with it (up to 2 x 5 per task)
    assert 3 <= len(expired) <= 3 * 10
    assert stage.ic.token_requests == 6 + 3, "each task gets a token, each expiry exactly one more"
    assert not stage.smtp.messages, "a renewed token is not a failure anyone must act on"
    ledger(stage, "provisioning: IC token expires mid-run", len(expired), outcome, expectation)


def test_ic_credentials_revoked_mid_run_email_then_the_next_run_finishes(stage):
    dag_id = stage.district_file("ic_revoked")
    expectation = expected(stage, dag_id)
    revoke_after(stage.ic, 2, f"{ROSTERING}users")
    broken = stage.run(dag_id)
    assert broken.state == "failed"
    assert broken.task_states["extract.users"] == "failed"
    assert all(
        state != "success" for task, state in broken.task_states.items() if task.startswith("provision.")
    )
    assert stage.lms.write_requests == 0, "nothing reaches the LMS from a half-read roster"
    failed_extracts = sorted(
        task
        for task, state in broken.task_states.items()
        if task.startswith("extract.") and state == "failed"
    )
    mails = stage.smtp.wait_for(len(failed_extracts))
    assert len(mails) == len(failed_extracts), "one email per task that failed, none for the ones not run"
    subjects = {f"[oneroster {dag_id}] {task} failed in run {broken.run_id}" for task in failed_extracts}
    assert {mail.subject for mail in mails} == subjects, "each email names its own task"
    for mail in mails:
        assert mail.envelope_to == ("data-team@demo.invalid",)
        assert "refused the OneRoster client key/secret of connection 'ic_demo'" in mail.text
        assert "generate new ones in Campus" in mail.body and "update the Airflow connection" in mail.body
        assert_no_secret(mail.body)
        for user in list(stage.district.records("users"))[:50]:
            assert user["familyName"] not in mail.body
    refused = [request for request in stage.ic.requests if request.status == 401]

    stage.ic.restore_credentials()  # the district renewed them; the connection has the new ones
    stage.smtp.clear()
    renewed = stage.run(dag_id, night(1))
    assert_extracted_in_full(stage, renewed)
    assert_provisioned_in_full(stage, renewed, expectation)
    assert not stage.smtp.messages
    assert refused, "IC refused the calls after the revocation"
    ledger(stage, "provisioning: IC credentials revoked mid-run", 1, renewed, expectation)


# -- LMS faults on the provisioning calls -----------------------------------------------------------


def test_lms_207_with_rejected_items_lists_each_with_its_message(stage):
    dag_id = stage.district_file("lms_207")
    expectation = expected(stage, dag_id)
    desired = expectation.present
    # teachers: no guardian links hang off them
    rejected_users = sorted(key for key in desired["user"] if key.startswith("t"))[1:3]
    rejected_course = sorted(desired["course"])[1]
    of_course = {
        klass["sourcedId"]
        for klass in stage.district.records("classes")
        if klass["course"]["sourcedId"] == rejected_course
    }
    rejected_enrollments = sorted(
        key
        for key in desired["enrollment"]
        if key.endswith(":s1000004") and key.split(":")[0] not in of_course
    )[:3]
    for keys, message in (
        (rejected_users, "username already taken in another school"),
        ([rejected_course], "course code reserved by a district course"),
        (rejected_enrollments, "section is full"),
    ):
        stage.lms.inject("reject_items", keys=keys, message=message)
    outcome = stage.run(dag_id)
    assert outcome.state == "success", outcome.task_states
    report = report_of(outcome)
    assert counted(report, "user", "failed", "username already taken in another school") == 2
    assert counted(report, "course", "failed", "course code reserved by a district course") == 1
    assert counted(report, "enrollment", "failed", "section is full") == len(rejected_enrollments) == 3
    failed, skipped = listed(outcome, stage.district)
    assert set(failed["user"]) == set(rejected_users) and set(failed["course"]) == {rejected_course}
    assert set(failed["enrollment"]) == set(rejected_enrollments)
    # what hangs off a refused object is skipped, with why, not silently dropped
    assert of_course and {
        key for key, reason in skipped["section"].items() if reason == rules.COURSE_NOT_PROVISIONED
    } == of_course
    assert rules.USER_NOT_PROVISIONED in set(skipped["enrollment"].values())
    assert rules.SECTION_NOT_PROVISIONED in set(skipped["enrollment"].values())
    for reason in (rules.COURSE_NOT_PROVISIONED, rules.USER_NOT_PROVISIONED, rules.SECTION_NOT_PROVISIONED):
        kind = "section" if reason == rules.COURSE_NOT_PROVISIONED else "enrollment"
        assert counted(report, kind, "skipped", reason) == sum(r == reason for r in skipped[kind].values())
    faults = len(rejected_users) + 1 + len(rejected_enrollments)
    ledger(stage, "provisioning: LMS 207, items rejected", faults, outcome, expectation)


def test_lms_429_is_waited_out_with_retry_after(stage):
    dag_id = stage.district_file("lms_429")
    expectation = expected(stage, dag_id)
    stage.lms.inject("429", times=2, retry_after=0.3, path_contains="/v1/users")
    stage.lms.inject("429", times=2, after=1, retry_after=0.3, path_contains="/enrollments/import")
    stage.lms.inject("429", times=1, retry_after=0.3, path_contains="/sections")
    outcome = stage.run(dag_id)
    assert_provisioned_in_full(stage, outcome, expectation)
    requests = stage.lms.requests
    throttled = [request for request in requests if request.status == 429]
    assert len(throttled) == 5
    for request in throttled:
        # calls already on the wire when the 429 left cannot be recalled (bulk calls are pipelined);
        # once the hook has read it, nothing more goes out until Retry-After has passed
        too_soon = [r for r in requests if request.ended + 0.05 < r.started < request.ended + 0.25]
        assert not too_soon, "Retry-After was not honoured"
        assert any(r.path == request.path and r.started >= request.ended + 0.25 for r in requests)
    ledger(stage, "provisioning: LMS 429", len(throttled), outcome, expectation)


def test_lms_5xx_on_bulk_calls_is_retried(stage):
    dag_id = stage.district_file("lms_5xx")
    expectation = expected(stage, dag_id)
    stage.lms.inject("500", times=2, path_contains="/v1/courses")
    stage.lms.inject("503", times=2, after=2, path_contains="/enrollments/import")
    stage.lms.inject("500", times=1, path_contains="/associations/parents")
    outcome = stage.run(dag_id)
    assert_provisioned_in_full(stage, outcome, expectation)
    burst = [request for request in stage.lms.requests if request.status in (500, 503)]
    assert Counter(request.status for request in burst) == {500: 3, 503: 2}
    ledger(stage, "provisioning: LMS 5xx", len(burst), outcome, expectation)


def test_lms_bulk_call_that_timed_out_after_applying_is_resent_without_duplicates(stage):
    dag_id = stage.district_file("lms_timeout")
    expectation = expected(stage, dag_id)
    stage.connect_lms(read_timeout=1)
    for path in (
        "/buildings",
        "/gradingperiods",
        "/associations/parents",
        "/v1/users",
        "/v1/courses",
        "/sections",
        "/enrollments/import",
    ):
        stage.lms.inject("timeout_after_apply", times=1, seconds=1.5, path_contains=path)
    outcome = stage.run(dag_id)
    assert_provisioned_in_full(stage, outcome, expectation)
    requests = stage.lms.requests
    timed_out = [request for request in requests if request.status == 0]
    assert len(timed_out) == 7
    for request in timed_out:
        again = [r for r in requests if r.path == request.path and r.started > request.started and r.status]
        assert again, f"{request.method} {request.path}: not sent again"
    scenario = "provisioning: LMS bulk call timed out after applying"
    ledger(stage, scenario, len(timed_out), outcome, expectation)


# -- bad configuration and awkward data -----------------------------------------------------------


def test_a_map_naming_unknown_schools_terms_and_roles_fails_before_writing_and_emails(stage):
    def bad_maps(config):
        provisioning = config["provisioning"]
        provisioning["schools"].update({"102": {"building_id": "999999"}, "1O3": "create"})
        provisioning["terms"]["map"] = {"202711": {"grading_period_id": "424242"}}
        provisioning["roles_by_school"] = {"101": {"teacher": "9999"}}

    dag_id = stage.district_file("bad_map", bad_maps)
    expectation = expected(stage, provisioning=DEMO_PROVISIONING)  # what the district should have had
    outcome = stage.run(dag_id)
    assert outcome.state == "failed"
    assert outcome.task_states["provision.buildings"] == "failed"
    assert stage.lms.write_requests == 0, "a bad map writes nothing at all, not half a district"
    problems = [
        "provisioning.schools.1O3: IC serves no school '1O3'",
        "provisioning.schools.102.building_id: the LMS has no building '999999'",
        "provisioning.terms.map.202711.grading_period_id: the LMS has no grading period '424242'",
        "provisioning.roles_by_school.101.teacher: the LMS has no role '9999'",
    ]
    (mail,) = stage.smtp.wait_for(1)
    assert mail.subject == f"[oneroster {dag_id}] provision.buildings failed in run {outcome.run_id}"
    assert f"{stage.directory / 'bad_map.yaml'}: " in mail.body, "the district file as it is named on disk"
    for problem in problems:
        assert problem in mail.text, problem
    assert_no_secret(mail.body)
    ledger(
        stage,
        "provisioning: unknown school/term/role in the map",
        len(problems),
        outcome,
        expectation,
        held_back="the district file's map (emailed)",
    )


def test_schools_and_roles_left_out_of_the_map_are_skipped_with_the_reason(stage):
    def narrow(config):
        config["provisioning"]["schools"] = {"100": "create", "101": "create"}  # IC's school 102 unmapped
        config["provisioning"]["roles"]["guardian"] = "do_not_sync"

    dag_id = stage.district_file("narrow_map", narrow)
    expectation = expected(stage, dag_id)
    outcome = stage.run(dag_id)
    assert outcome.state == "success", outcome.task_states
    report = report_of(outcome)
    assert counted(report, "building", "skipped", rules.UNMAPPED_SCHOOL) == 1
    for kind in ("user", "course", "section"):
        assert counted(report, kind, "skipped", rules.UNMAPPED_SCHOOL) > 0
        skipped_schools = set(
            report[(report["kind"] == kind) & (report["reason"] == rules.UNMAPPED_SCHOOL)]["school"]
        )
        assert skipped_schools == {"102"}
    # active guardians of the mapped schools have no other reason to be left out
    only_role = {key for key, why in expectation.skipped["user"].items() if why == {rules.DO_NOT_SYNC_ROLE}}
    _, skipped = listed(outcome, stage.district)
    as_role = {key for key, reason in skipped["user"].items() if reason == rules.DO_NOT_SYNC_ROLE}
    assert only_role and as_role >= only_role
    assert counted(report, "user", "skipped", rules.DO_NOT_SYNC_ROLE) == len(as_role)
    assert "1215" not in {user["role_id"] for user in stage.lms.users.values()}
    assert not stage.lms.associations
    assert {building["building_code"] for building in stage.lms.buildings.values()} == {"1000", "1001"}
    assert not (report["outcome"] == "failed").any()
    ledger(stage, "provisioning: school and role left out of the map", 2, outcome, expectation)


@pytest.mark.parametrize("district", [TermlessDistrict], indirect=True)
def test_a_section_without_a_term_is_skipped_with_its_enrollments(stage):
    dag_id = stage.district_file("termless")
    expectation = expected(stage, dag_id)
    termless = stage.district.termless()
    outcome = stage.run(dag_id)
    assert outcome.state == "success", outcome.task_states
    assert_extracted_in_full(stage, outcome)
    failed, skipped = listed(outcome, stage.district)
    assert {key for key, reason in skipped["section"].items() if reason == rules.NO_TERM_IN_IC} == termless
    assert not termless & {section["section_school_code"] for section in stage.lms.sections.values()}
    orphaned = {key for key in expectation.rows("enrollment") if key.split(":")[0] in termless}
    assert orphaned and all(
        skipped["enrollment"].get(key) in expectation.skipped["enrollment"][key]
        and rules.SECTION_NOT_PROVISIONED in expectation.skipped["enrollment"][key]
        for key in orphaned
    )
    assert not any(failed.values())
    ledger(stage, "provisioning: section without a term", len(termless), outcome, expectation)


# -- what the scenarios found that belongs to include/provisioning/plan.py --------------------------


def test_a_section_without_a_term_says_so():
    district = TermlessDistrict(SPEC)
    extracts = extract_frames(district)
    classes = extracts["classes"]
    termless = classes[classes["term_sourced_ids"].map(len) == 0]
    desired = plan.desired_sections(
        termless,
        {"100": "b", "101": "b", "102": "b"},
        {key: "c" for key in termless["course_sourced_id"]},
        {},
    )
    assert set(desired.skipped["reason"]) == {"no term in IC"}


def test_guardian_links_of_a_user_not_provisioned_are_skipped_with_the_reason():
    extracts = extract_frames(SyntheticDistrict(SPEC))
    users = extracts["users"]
    keys = plan.user_key(users)
    guardians = users[users["primary_role"] == "guardian"]
    child = guardians["agent_sourced_ids"].iloc[0][0]
    refused = keys[users["sourced_id"] == child].iloc[0]
    provisioned = pd.DataFrame({"key": keys[keys != refused], "school": "100"})
    desired = plan.desired_guardian_links(users, provisioned)
    link = f"{keys[guardians.index[0]]}:{refused}"
    assert link in set(desired.skipped["key"])
    assert set(desired.skipped["reason"]) == {plan.USER_NOT_PROVISIONED}


# -- and to plugins/notifications/alerts.py ---------------------------------------------------------


def test_each_failed_task_is_emailed_under_its_own_name(monkeypatch):
    from types import SimpleNamespace

    from airflow.sdk import DAG

    from plugins.notifications.alerts import failure_notifier

    notifier = failure_notifier(load_district(DISTRICTS_DIR / "demo.yaml").notifications)
    dag = DAG("oneroster_demo", schedule=None)
    with SMTPSink() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEMO", json.dumps(smtp.connection("oneroster-tests@localhost")))
        for task_id in ("extract.users", "extract.orgs"):
            ti = SimpleNamespace(task_id=task_id, try_number=1, log_url="http://127.0.0.1/log")
            notifier(
                {
                    "dag": dag,
                    "ti": ti,
                    "run_id": "manual__1",
                    "logical_date": FIRST_NIGHT,
                    "exception": "IC refused the key",
                }
            )
        subjects = [mail.subject for mail in smtp.wait_for(2)]
    assert subjects == [
        f"[oneroster oneroster_demo] {task} failed in run manual__1"
        for task in ("extract.users", "extract.orgs")
    ]
