"""Fault injection, provisioning half: whole DAG runs (``halves=provisioning``) against the IC
and Schoology emulators with faults switched on, each followed by a ledger of what reached the
LMS against what should have.

The reference is computed on the far side's terms: the synthetic district's records, put
through the plan with the district file's maps (as a dry run would, without the emulators),
give every object the district should have in the LMS and every record that is to be left
out. After a scenario each of those rows is either in the LMS (``posted``, read from the
Schoology emulator's stores), listed by the run as failed with the LMS's message or as
skipped with a reason, or lost. The LMS must hold nothing twice. IC's faults hit the
rostering reads of the extract tasks, the LMS's the provisioning tasks' calls.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV, load_district
from include.provisioning import plan
from include.provisioning.steps import STEPS
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_emulator import ICEmulator
from include.sandbox.smtp_sink import SMTPSink
from include.staging import read_frame
from tests.fault_ledger import ScenarioLedger, record
from tests.provisioning_support import counted, extract_frames, report_of
from tests.support import CLIENT_ID, CLIENT_SECRET, LMS_SECRET, connection_uri_env, lms_connection_env

FIRST_NIGHT = datetime(2026, 11, 2, 6, tzinfo=timezone.utc)
SPEC = DistrictSpec(seed=42, students=60, schools=3, school_year=2027)
ROSTERING = "/rostering/v1p2/"
KINDS = [step.kind for step in STEPS]


def night(n: int) -> datetime:
    return FIRST_NIGHT + timedelta(days=n)


# -- districts with awkward data (the generator itself is left as it is) ----------------------------


class TermlessDistrict(SyntheticDistrict):
    """IC serving classes scheduled in no term: the first regular class of each school but the
    first, and the cross-listed pair's partner, come without ``terms``."""

    def termless(self) -> set[str]:
        return {str(600_000 + school.first_class) for school in self.schools[1:]} | {"600001"}

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


# -- the ledger: reference, far side, the run's own lists ------------------------------------------


def reference(district: SyntheticDistrict, provisioning) -> dict[str, set[str]]:
    """Per kind, every row of the district that must end up posted, skipped or failed: what the
    plan makes of the generator's records with the district's maps, each step fed the one
    before as a dry run would (no LMS involved). Skipped enrollments are named like the
    provisioned ones, ``<section>:<user>``."""
    return planned(district, provisioning)[0]


def planned(district: SyntheticDistrict, provisioning) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The reference (see :func:`reference`) and, per kind, the keys of it meant for the LMS."""
    extracts = extract_frames(district)
    results: dict[str, pd.DataFrame] = {}
    universe, desired_keys = {}, {}
    for step in STEPS:
        desired = step.build(extracts, results, provisioning)
        rows = desired.rows.copy()
        rows["lms_id"] = plan.PENDING + rows["key"]
        results[step.kind] = rows
        skipped = set(desired.skipped["key"])
        if step.kind == "enrollment":
            skipped = {enrollment_pairs(extracts)[key] for key in skipped}
        universe[step.kind] = set(rows["key"]) | skipped
        desired_keys[step.kind] = set(rows["key"])
    return universe, desired_keys


def enrollment_pairs(extracts: dict[str, pd.DataFrame]) -> dict[str, str]:
    """IC enrollment sourcedId -> ``<section key>:<user key>``, the key the LMS knows it by."""
    users = dict(zip(extracts["users"]["sourced_id"], plan.user_key(extracts["users"]), strict=True))
    enrollments = extracts["enrollments"]
    return {
        sourced_id: f"{section}:{users.get(user, '?')}"
        for sourced_id, section, user in zip(
            enrollments["sourced_id"],
            enrollments["class_sourced_id"],
            enrollments["user_sourced_id"],
            strict=True,
        )
    }


def far_side(lms, district: SyntheticDistrict) -> dict[str, Counter]:
    """Per kind, the plan keys of what the LMS holds, counted (a count above 1 is a duplicate)."""
    extracts = extract_frames(district)
    orgs = extracts["orgs"]
    code_key = {
        str(code): plan.school_key(school)
        for code, school in zip(
            orgs["identifier"].fillna(orgs["sourced_id"]), orgs["sourced_id"], strict=True
        )
    }
    sessions = extracts["academicSessions"]
    title_key = {
        title: plan.term_key(session)
        for title, session in zip(sessions["title"], sessions["sourced_id"], strict=True)
    }
    users = lms.users
    uid = {user["uid"]: user["school_uid"] for user in users.values()}
    sections = lms.sections
    section_code = {lms_id: section["section_school_code"] for lms_id, section in sections.items()}
    courses = lms.courses
    return {
        "building": Counter(
            code_key.get(b["building_code"], b["building_code"]) for b in lms.buildings.values()
        ),
        "grading_period": Counter(
            title_key.get(p["title"], p["title"]) for p in lms.grading_periods.values()
        ),
        "user": Counter(user["school_uid"] for user in users.values()),
        "guardian_link": Counter(
            f"{uid[link['parent_uid']]}:{uid[link['student_uid']]}" for link in lms.associations.values()
        ),
        "course": Counter(f"{course['building_id']}/{course['course_code']}" for course in courses.values()),
        "section": Counter(section["section_school_code"] for section in sections.values()),
        "enrollment": Counter(
            f"{section_code[e['section_id']]}:{uid[e['uid']]}" for e in lms.enrollments.values()
        ),
    }


def duplicates(held: dict[str, Counter]) -> int:
    return sum(count - 1 for counter in held.values() for count in counter.values() if count > 1)


def listed(outcome, district: SyntheticDistrict) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per kind, what the run lists as failed (key -> the LMS's message) and skipped (key ->
    reason), from the staged lists of the provisioning tasks that ran."""
    pairs = enrollment_pairs(extract_frames(district))
    failed, skipped = {}, {}
    for step in STEPS:
        manifest = outcome.returned.get(f"provision.{step.task_id}")
        if manifest is None:
            failed[step.kind], skipped[step.kind] = {}, {}
            continue
        errors = read_frame(manifest["errors_uri"])
        left_out = read_frame(manifest["skipped_uri"])
        keys = left_out["key"].map(pairs) if step.kind == "enrollment" else left_out["key"]
        failed[step.kind] = dict(zip(errors["key"], errors["error"], strict=True))
        skipped[step.kind] = dict(zip(keys, left_out["reason"], strict=True))
    return failed, skipped


def ledger(
    stage: Stage,
    scenario: str,
    faults: int,
    outcome,
    universe: dict[str, set[str]],
    held_back: str | None = None,
) -> ScenarioLedger:
    """Every reference row in exactly one of posted / failed / skipped / lost; the LMS's
    duplicates counted from its stores. ``held_back``: the run failed before writing and the
    failure email gave this reason, so the rows it did not post count as failed with it."""
    held = far_side(stage.lms, stage.district)
    failed, skipped = listed(outcome, stage.district)
    for kind in KINDS:
        reasons = [*failed[kind].values(), *skipped[kind].values()]
        assert all(isinstance(reason, str) and reason.strip() for reason in reasons), (
            f"{kind}: a row without reason"
        )
    if "provision.sync_report" in outcome.returned:  # the report a person reads says the same
        report = report_of(outcome)
        for kind in KINDS:
            assert counted(report, kind, "failed") == len(failed[kind]), kind
            assert counted(report, kind, "skipped") == len(skipped[kind]), kind
    counts = Counter()
    lost_examples = []
    for kind in KINDS:
        present = {key.rsplit("/", 1)[-1] for key in held[kind]} if kind == "course" else set(held[kind])
        unexpected = present - universe[kind]
        assert not unexpected, f"the LMS holds {len(unexpected)} {kind}(s) IC never asked for"
        for key in universe[kind]:
            if key in present:
                counts["posted"] += 1
            elif key in failed[kind]:
                counts["failed"] += 1
            elif key in skipped[kind]:
                counts["skipped"] += 1
            elif held_back:
                counts["failed"] += 1
            else:
                counts["lost"] += 1
                lost_examples.append(f"{kind} {key}")
    rows_in = sum(len(keys) for keys in universe.values())
    entry = ScenarioLedger(
        scenario,
        faults,
        rows_in,
        counts["posted"],
        counts["skipped"],
        counts["failed"],
        duplicates(held),
        rows_in - counts["posted"] - counts["skipped"] - counts["failed"],
    )
    try:
        return record(entry)
    except AssertionError as error:
        raise AssertionError(f"{error}; for example {lost_examples[:5]}") from None


def assert_extracted_in_full(stage: Stage, outcome) -> None:
    expected = stage.district.expected_counts("1.2")
    extracted = {
        collection: outcome.returned[f"extract.{collection}"]["row_count"] for collection in expected
    }
    assert extracted == expected
    assert all(outcome.returned[f"extract.{c}"]["quarantined_count"] == 0 for c in expected)


def assert_provisioned_in_full(stage: Stage, outcome, universe) -> None:
    """A fault that was ridden out leaves no trace: nothing failed, and the LMS holds exactly
    what a run without faults would have put there."""
    assert outcome.state == "success", outcome.task_states
    report = report_of(outcome)
    assert counted(report, "user", "failed") == 0 and not (report["outcome"] == "failed").any(), report[
        report["outcome"] == "failed"
    ].to_string()
    failed, skipped = listed(outcome, stage.district)
    held = far_side(stage.lms, stage.district)
    for kind in KINDS:
        present = {key.rsplit("/", 1)[-1] for key in held[kind]} if kind == "course" else set(held[kind])
        assert present == universe[kind] - set(skipped[kind]), kind


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
    universe = reference(stage.district, stage.config(dag_id).provisioning)
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
    assert_provisioned_in_full(stage, outcome, universe)
    requests = stage.ic.requests
    storm = [request for request in requests if request.status == 429]
    assert len(storm) == 10 and all(r.response_headers.get("Retry-After") == "0.3" for r in storm)
    assert retried_after(requests, storm, 0.3), "Retry-After was not honoured"
    ledger(stage, "provisioning: IC 429 storm", len(storm), outcome, universe)


def test_ic_5xx_burst_is_retried_with_backoff(stage):
    dag_id = stage.district_file("ic_5xx")
    universe = reference(stage.district, stage.config(dag_id).provisioning)
    stage.ic.inject("500", times=2, path_contains=f"{ROSTERING}classes")
    stage.ic.inject("503", times=2, after=3, path_contains=f"{ROSTERING}enrollments")
    stage.ic.inject("500", times=1, path_contains=f"{ROSTERING}academicSessions")
    outcome = stage.run(dag_id)
    assert_extracted_in_full(stage, outcome)
    assert_provisioned_in_full(stage, outcome, universe)
    requests = stage.ic.requests
    burst = [request for request in requests if request.status in (500, 503)]
    assert Counter(request.status for request in burst) == {500: 3, 503: 2}
    assert retried_after(requests, burst, 1.0), "5xx retried without backing off"
    ledger(stage, "provisioning: IC 5xx burst", len(burst), outcome, universe)


def test_ic_connections_reset_mid_response_are_retried_without_losing_a_page(stage):
    dag_id = stage.district_file("ic_reset")
    universe = reference(stage.district, stage.config(dag_id).provisioning)
    stage.ic.inject("reset", times=1, after=1, path_contains=f"{ROSTERING}users")
    stage.ic.inject("reset_mid_body", times=1, after=2, path_contains=f"{ROSTERING}users")
    stage.ic.inject("reset_mid_body", times=2, after=5, path_contains=f"{ROSTERING}enrollments")
    outcome = stage.run(dag_id)
    assert_extracted_in_full(stage, outcome)
    assert_provisioned_in_full(stage, outcome, universe)
    requests = stage.ic.requests
    cut = [request for request in requests if request.status == 0]
    assert len(cut) == 4
    assert retried_after(requests, cut, 1.0)
    ledger(stage, "provisioning: IC connection reset mid-response", len(cut), outcome, universe)


def test_ic_latency_past_the_read_timeout_is_retried(stage):
    dag_id = stage.district_file("ic_slow")
    universe = reference(stage.district, stage.config(dag_id).provisioning)
    stage.connect_ic(read_timeout=1)
    stage.ic.inject("latency", times=1, seconds=2.5, path_contains=f"{ROSTERING}courses")
    stage.ic.inject("latency", times=1, after=2, seconds=2.5, path_contains=f"{ROSTERING}enrollments")
    stage.ic.inject("latency", times=1, seconds=0.3, path_contains=f"{ROSTERING}orgs")  # slow, not too slow
    outcome = stage.run(dag_id)
    assert_extracted_in_full(stage, outcome)
    assert_provisioned_in_full(stage, outcome, universe)
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
    ledger(stage, "provisioning: IC latency past the timeout", len(slow), outcome, universe)


def test_ic_token_expiring_mid_run_is_renewed(stage):
    dag_id = stage.district_file("ic_token")
    universe = reference(stage.district, stage.config(dag_id).provisioning)
    # one expiry per task (each task has its own token): a token refused again right after its
    # renewal is revoked credentials, which a token's real lifetime never produces
    stage.ic.inject("expire_token", times=1, after=2, path_contains=f"{ROSTERING}users")
    stage.ic.inject("expire_token", times=1, after=1, path_contains=f"{ROSTERING}classes")
    stage.ic.inject("expire_token", times=1, after=3, path_contains=f"{ROSTERING}enrollments")
    outcome = stage.run(dag_id)
    assert_extracted_in_full(stage, outcome)
    assert_provisioned_in_full(stage, outcome, universe)
    expired = [request for request in stage.ic.requests if request.status == 401]
    # an expired token also refuses the calls already in flight with it (up to 2 x 5 per task)
    assert 3 <= len(expired) <= 3 * 10
    assert stage.ic.token_requests == 6 + 3, "each task gets a token, each expiry exactly one more"
    assert not stage.smtp.messages, "a renewed token is not a failure anyone must act on"
    ledger(stage, "provisioning: IC token expires mid-run", len(expired), outcome, universe)


def test_ic_credentials_revoked_mid_run_email_then_the_next_run_finishes(stage):
    dag_id = stage.district_file("ic_revoked")
    universe = reference(stage.district, stage.config(dag_id).provisioning)
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
        assert "refused the OneRoster client key/secret of connection 'ic_demo'" in mail.body
        assert "generate new ones in Campus" in mail.body and "update the Airflow connection" in mail.body
        assert_no_secret(mail.body)
        for user in list(stage.district.records("users"))[:50]:
            assert user["familyName"] not in mail.body
    refused = [request for request in stage.ic.requests if request.status == 401]

    stage.ic.restore_credentials()  # the district renewed them; the connection has the new ones
    stage.smtp.clear()
    renewed = stage.run(dag_id, night(1))
    assert_extracted_in_full(stage, renewed)
    assert_provisioned_in_full(stage, renewed, universe)
    assert not stage.smtp.messages
    assert refused, "IC refused the calls after the revocation"
    ledger(stage, "provisioning: IC credentials revoked mid-run", 1, renewed, universe)


# -- LMS faults on the provisioning calls -----------------------------------------------------------


def test_lms_207_with_rejected_items_lists_each_with_its_message(stage):
    dag_id = stage.district_file("lms_207")
    universe, desired = planned(stage.district, stage.config(dag_id).provisioning)
    # teachers: no guardian links hang off them
    rejected_users = sorted(key for key in desired["user"] if key.startswith("t"))[1:3]
    rejected_course = sorted(desired["course"])[1]
    classes = extract_frames(stage.district)["classes"]
    of_course = set(classes.loc[classes["course_sourced_id"] == rejected_course, "sourced_id"])
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
    assert set(skipped["section"].values()) >= {plan.COURSE_NOT_PROVISIONED}
    assert plan.USER_NOT_PROVISIONED in set(skipped["enrollment"].values())
    assert plan.SECTION_NOT_PROVISIONED in set(skipped["enrollment"].values())
    for reason in (plan.COURSE_NOT_PROVISIONED, plan.USER_NOT_PROVISIONED, plan.SECTION_NOT_PROVISIONED):
        kind = "section" if reason == plan.COURSE_NOT_PROVISIONED else "enrollment"
        assert counted(report, kind, "skipped", reason) == sum(r == reason for r in skipped[kind].values())
    faults = len(rejected_users) + 1 + len(rejected_enrollments)
    ledger(stage, "provisioning: LMS 207, items rejected", faults, outcome, universe)


def test_lms_429_is_waited_out_with_retry_after(stage):
    dag_id = stage.district_file("lms_429")
    universe = reference(stage.district, stage.config(dag_id).provisioning)
    stage.lms.inject("429", times=2, retry_after=0.3, path_contains="/v1/users")
    stage.lms.inject("429", times=2, after=1, retry_after=0.3, path_contains="/enrollments/import")
    stage.lms.inject("429", times=1, retry_after=0.3, path_contains="/sections")
    outcome = stage.run(dag_id)
    assert_provisioned_in_full(stage, outcome, universe)
    requests = stage.lms.requests
    throttled = [request for request in requests if request.status == 429]
    assert len(throttled) == 5
    for request in throttled:
        # calls already on the wire when the 429 left cannot be recalled (bulk calls are pipelined);
        # once the hook has read it, nothing more goes out until Retry-After has passed
        too_soon = [r for r in requests if request.ended + 0.05 < r.started < request.ended + 0.25]
        assert not too_soon, "Retry-After was not honoured"
        assert any(r.path == request.path and r.started >= request.ended + 0.25 for r in requests)
    ledger(stage, "provisioning: LMS 429", len(throttled), outcome, universe)


def test_lms_5xx_on_bulk_calls_is_retried(stage):
    dag_id = stage.district_file("lms_5xx")
    universe = reference(stage.district, stage.config(dag_id).provisioning)
    stage.lms.inject("500", times=2, path_contains="/v1/courses")
    stage.lms.inject("503", times=2, after=2, path_contains="/enrollments/import")
    stage.lms.inject("500", times=1, path_contains="/associations/parents")
    outcome = stage.run(dag_id)
    assert_provisioned_in_full(stage, outcome, universe)
    burst = [request for request in stage.lms.requests if request.status in (500, 503)]
    assert Counter(request.status for request in burst) == {500: 3, 503: 2}
    ledger(stage, "provisioning: LMS 5xx", len(burst), outcome, universe)


def test_lms_bulk_call_that_timed_out_after_applying_is_resent_without_duplicates(stage):
    dag_id = stage.district_file("lms_timeout")
    universe = reference(stage.district, stage.config(dag_id).provisioning)
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
    assert_provisioned_in_full(stage, outcome, universe)
    requests = stage.lms.requests
    timed_out = [request for request in requests if request.status == 0]
    assert len(timed_out) == 7
    for request in timed_out:
        again = [r for r in requests if r.path == request.path and r.started > request.started and r.status]
        assert again, f"{request.method} {request.path}: not sent again"
    ledger(stage, "provisioning: LMS bulk call timed out after applying", len(timed_out), outcome, universe)


# -- bad configuration and awkward data -----------------------------------------------------------


def test_a_map_naming_unknown_schools_terms_and_roles_fails_before_writing_and_emails(stage):
    def bad_maps(config):
        provisioning = config["provisioning"]
        provisioning["schools"].update({"102": {"building_id": "999999"}, "1O3": "create"})
        provisioning["terms"]["map"] = {"202711": {"grading_period_id": "424242"}}
        provisioning["roles_by_school"] = {"101": {"teacher": "9999"}}

    dag_id = stage.district_file("bad_map", bad_maps)
    universe = reference(stage.district, stage.config(stage.district_file("good_map")).provisioning)
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
    assert "include/districts/bad_map.yaml: " in mail.body
    for problem in problems:
        assert problem.replace("'", "&#39;") in mail.body or problem in mail.body, problem
    assert_no_secret(mail.body)
    ledger(
        stage,
        "provisioning: unknown school/term/role in the map",
        len(problems),
        outcome,
        universe,
        held_back="the district file's map (emailed)",
    )


def test_schools_and_roles_left_out_of_the_map_are_skipped_with_the_reason(stage):
    def narrow(config):
        config["provisioning"]["schools"] = {"100": "create", "101": "create"}  # IC's school 102 unmapped
        config["provisioning"]["roles"]["guardian"] = "do_not_sync"

    dag_id = stage.district_file("narrow_map", narrow)
    universe = reference(stage.district, stage.config(stage.district_file("whole_map")).provisioning)
    outcome = stage.run(dag_id)
    assert outcome.state == "success", outcome.task_states
    report = report_of(outcome)
    assert counted(report, "building", "skipped", plan.UNMAPPED_SCHOOL) == 1
    for kind in ("user", "course", "section"):
        assert counted(report, kind, "skipped", plan.UNMAPPED_SCHOOL) > 0
        skipped_schools = set(
            report[(report["kind"] == kind) & (report["reason"] == plan.UNMAPPED_SCHOOL)]["school"]
        )
        assert skipped_schools == {"102"}
    users = extract_frames(stage.district)["users"]
    guardians = users[users["primary_role"] == "guardian"]
    synced_schools = guardians["roles"].map(lambda roles: roles[0]["org_sourced_id"] in ("100", "101"))
    active = (guardians["status"] == "active") & guardians["enabled_user"]
    assert (
        counted(report, "user", "skipped", plan.DO_NOT_SYNC_ROLE) == int((synced_schools & active).sum()) > 0
    )
    assert "1215" not in {user["role_id"] for user in stage.lms.users.values()}
    assert not stage.lms.associations
    assert {building["building_code"] for building in stage.lms.buildings.values()} == {"1000", "1001"}
    assert not (report["outcome"] == "failed").any()
    universe["guardian_link"] = set()  # links of guardians not synced are not rows of this district's LMS
    ledger(stage, "provisioning: school and role left out of the map", 2, outcome, universe)


@pytest.mark.parametrize("district", [TermlessDistrict], indirect=True)
def test_a_section_without_a_term_is_skipped_with_its_enrollments(stage):
    dag_id = stage.district_file("termless")
    universe = reference(stage.district, stage.config(dag_id).provisioning)
    termless = stage.district.termless()
    outcome = stage.run(dag_id)
    assert outcome.state == "success", outcome.task_states
    assert_extracted_in_full(stage, outcome)
    failed, skipped = listed(outcome, stage.district)
    assert {key for key, reason in skipped["section"].items() if reason == plan.NO_TERM_IN_IC} == termless
    assert not termless & {section["section_school_code"] for section in stage.lms.sections.values()}
    orphaned = {key for key in universe["enrollment"] if key.split(":")[0] in termless}
    assert orphaned and all(
        skipped["enrollment"].get(key) == plan.SECTION_NOT_PROVISIONED for key in orphaned
    )
    assert not any(failed.values())
    ledger(stage, "provisioning: section without a term", len(termless), outcome, universe)


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

    notifier = failure_notifier(load_district(DISTRICTS_DIR / "demo.yaml"))
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
