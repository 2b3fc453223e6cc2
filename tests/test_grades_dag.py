"""Grade passback end to end: a real SFTP server with the LMS export, the IC gradebook
emulator, a real SMTP server; assertions on what IC stored and what the email said."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import threading
from datetime import date, datetime, timedelta, timezone
from urllib.parse import unquote

import pytest
import structlog
import yaml
from airflow.sdk.exceptions import TaskDeferred

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV, load_district
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.grade_export import schoology_export
from include.sandbox.ic_emulator import ICEmulator
from include.sandbox.sftp_server import SFTPServer
from include.sandbox.smtp_sink import SMTPSink
from include.staging import read_frame
from tests.expected_grades import at_ic, expected_grades, held_by_ic
from tests.expected_provisioning import assert_lms_holds_what_the_rules_say, expected_provisioning
from tests.fault_ledger import ScenarioLedger, record
from tests.support import CLIENT_ID, CLIENT_SECRET, connection_uri_env, lms_connection_env

NIGHT = datetime(2026, 12, 1, 6, tzinfo=timezone.utc)  # semester 1's window is open, semester 2's is not
VENDOR = {"vendor_key": "test-vendor", "vendor_secret": "test-vendor-secret"}
CONFIG = load_district(DISTRICTS_DIR / "demo.yaml")
EXPORT_DIR = CONFIG.grade_passback.remote_dir.strip("/")


@pytest.fixture
def district():
    return SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))


@pytest.fixture
def profile() -> str:
    """The IC emulator's server profile; a test parametrizes it to meet another make of server."""
    return "ic"


@pytest.fixture
def passback_settings() -> dict:
    """Changes to the demo district file's ``grade_passback``; a test parametrizes it (teacher_opt_in)."""
    return {}


@pytest.fixture
def provisioning_settings(request, lms, district) -> dict:
    """Changes to the demo district file's ``provisioning``; ``"mapped"`` (indirect): every semester
    mapped to a grading period the school made in the LMS beforehand, titled its own way."""
    if getattr(request, "param", None) != "mapped":
        return {}
    semesters = [session for session in district.sessions if session["type"] == "semester"]
    return {"terms": {"unlisted": "skip", "map": {
        term["id"]: {"grading_period_id": lms.add_grading_period(
            f"{term['title'][:10]} (school-made)", term["start"].isoformat(), term["end"].isoformat())}
        for term in semesters}}}


@pytest.fixture
def stack(district, lms, profile, passback_settings, provisioning_settings, monkeypatch, tmp_path, airflow_db):
    """IC (with gradebook), the LMS, SFTP and SMTP on 127.0.0.1, behind the demo's connection ids;
    the demo district with IC retries backing off from 50 ms (a 5xx storm gives up in ~2 s, not 31)
    and ``passback_settings``; ``config`` is that district file as the DAG reads it."""
    root = tmp_path / "sftp"
    (root / EXPORT_DIR).mkdir(parents=True)
    districts = tmp_path / "districts"
    districts.mkdir()
    demo = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
    demo["infinite_campus"]["backoff_seconds"] = 0.05
    demo["grade_passback"].update(passback_settings)
    demo["provisioning"].update(provisioning_settings)
    (districts / "demo.yaml").write_text(yaml.safe_dump(demo))
    config = load_district(districts / "demo.yaml")
    monkeypatch.setenv(DISTRICTS_DIR_ENV, str(districts))
    with (
        ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo", profile=profile,
                   **VENDOR) as ic,
        SFTPServer(root, username="exporter", password="sftp-test-secret") as sftp,
        SMTPSink() as smtp,
    ):
        environment = {
            **connection_uri_env("ic_demo", ic, "1.2", **VENDOR),
            **lms_connection_env("lms_demo", lms),
            "AIRFLOW_CONN_SFTP_DEMO": json.dumps(sftp.connection()),
            "AIRFLOW_CONN_SMTP_DEMO": json.dumps(smtp.connection("oneroster-tests@localhost")),
            "AIRFLOW_VAR_ONEROSTER_STAGING_ROOT": (tmp_path / "staging").as_uri(),
        }
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        yield {"ic": ic, "lms": lms, "sftp": sftp, "smtp": smtp, "root": root, "district": district,
               "config": config}


def run(when: datetime, **conf):
    from include.sandbox.runner import run_dag

    return run_dag("oneroster_demo", logical_date=when, run_after=when, run_conf=conf or None)


def drop_export(stack, name: str, *, seed: int = 7, data: bytes | None = None) -> bytes:
    data = data if data is not None else schoology_export(stack["lms"], seed=seed, columns=CONFIG.grade_passback.columns)
    (stack["root"] / EXPORT_DIR / name).write_bytes(data)
    return data


def rows_in(data: bytes) -> int:
    return len(data.decode("utf-8-sig").strip().splitlines()) - 1


def reconciliation(outcome) -> dict[str, int]:
    return outcome.returned["grades.reconcile"]["counts"]


def report_of(outcome):
    return read_frame(outcome.returned["grades.reconcile"]["uri"]).set_index("row")


def export_lines(data: bytes) -> dict[int, dict[str, str]]:
    """The export's lines by report row number (the first line under the header is row 1)."""
    lines = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    return dict(enumerate(lines, start=1))


def period_title(district: SyntheticDistrict, term: dict) -> str:
    """The title of the LMS grading period provisioned from an IC term, by the district file's rule."""
    return expected_provisioning(district, CONFIG.provisioning).period_titles[term["id"]]


def rows_of_term(data: bytes, district: SyntheticDistrict, term: dict) -> list[int]:
    """The rows graded for an IC term: those of the LMS grading period provisioned from it."""
    column, title = CONFIG.grade_passback.columns.grading_period, period_title(district, term)
    return [row for row, line in export_lines(data).items() if line[column] == title]


def semester(district: SyntheticDistrict, number: int) -> dict:
    """The generator's semester as IC serves it: its academicSession id, title, first and last day."""
    return next(session for session in district.sessions
                if session["type"] == "semester" and session["title"].startswith(f"Semester {number} "))


def district_window(term: dict) -> tuple[date, date]:
    """The grading window the district file's rule gives a term (demo.yaml lists no windows)."""
    rule = CONFIG.grade_passback.window_rule
    return (term["end"] - timedelta(days=rule.opens_days_before_end),
            term["end"] + timedelta(days=rule.closes_days_after_end))


def puts_to(ic: ICEmulator, collection: str) -> list:
    return [request for request in ic.requests if request.method == "PUT" and f"/{collection}/" in request.path]


def test_a_dry_run_with_a_new_export_posts_nothing_to_ic_and_leaves_the_export_for_the_real_run(stack):
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    data = drop_export(stack, "final-grades-20261201.csv")
    stack["ic"].reset_stats()
    dry = run(NIGHT, halves="grades", dry_run=True)
    assert dry.state == "success", dry.task_states
    assert dry.task_states["grades.post"] == "skipped" and dry.task_states["grades.reconcile"] == "skipped"
    writes = [request for request in stack["ic"].requests if request.method in ("PUT", "POST", "DELETE")
              and "/token" not in request.path]
    assert not writes, "a dry run wrote to IC's gradebook"
    assert stack["ic"].gradebook.stored("results") == {}
    real = run(NIGHT + timedelta(hours=1), halves="grades")
    assert real.state == "success", real.task_states
    assert real.returned["grades.wait_for_export"]["name"] == "final-grades-20261201.csv", \
        "the dry run left the export for the real run"
    counts = reconciliation(real)
    assert counts["posted"] > 0
    record(ScenarioLedger("dry run with a new export", faults=0, rows_in=rows_in(data), posted=len(writes),
                          skipped=rows_in(data), failed=0, duplicates=0,
                          lost=rows_in(data) - sum(counts.values())))


def test_grades_are_posted_once_and_every_row_is_accounted_for(stack):
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    data = drop_export(stack, "final-grades-20261201.csv")
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    counts = reconciliation(outcome)
    assert sum(counts.values()) == rows_in(data)
    assert counts["posted"] > 0 and counts["skipped"] > 0, "semester 2 rows wait for their window"
    report = read_frame(outcome.returned["grades.reconcile"]["uri"])
    second_opens, _ = district_window(semester(stack["district"], 2))
    assert set(report.loc[report["outcome"] == "skipped", "reason"]) == {f"window opens on {second_opens}"}
    gradebook = stack["ic"].gradebook
    results = gradebook.stored("results")
    postings = read_frame(outcome.returned["grades.plan"]["uri"])
    assert len(results) == int((postings["action"] == "post").sum())
    assert not gradebook.duplicates()
    tasks = {item["title"].split(" - ")[0] for item in gradebook.stored("lineItems").values()}
    assert tasks == {"T-SEMESTER", "T-FINAL"}
    letters = {result.get("textScore") for result in results.values()}
    assert letters <= {"A", "B", "C", "D", "F"} and letters

    stack["ic"].reset_stats()
    same = drop_export(stack, "final-grades-20261202.csv", data=data)
    again = run(NIGHT + timedelta(days=1), halves="grades")
    assert again.state == "success", again.task_states
    assert reconciliation(again).get("posted", 0) == 0 and sum(reconciliation(again).values()) == rows_in(same)
    puts = [request for request in stack["ic"].requests if request.method == "PUT"]
    assert puts == [], "no grade changed, nothing may be posted"


def test_oneroster_1_1_posts_percents_to_its_gradebook_and_keeps_letter_only_rows_aside(stack, monkeypatch):
    for key, value in connection_uri_env("ic_demo", stack["ic"], "1.1", **VENDOR).items():
        monkeypatch.setenv(key, value)
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    columns = CONFIG.grade_passback.columns
    lines = schoology_export(stack["lms"], seed=7, columns=columns).decode("utf-8-sig").split("\r\n")
    header = lines[0].split(",")
    rows = [line.split(",") for line in lines[1:] if line]
    first = period_title(stack["district"], semester(stack["district"], 1))
    letter_only = [n + 1 for n, row in enumerate(rows) if row[header.index(columns.grading_period)] == first][:3]
    for number in letter_only:
        for column in (columns.term_percent, columns.course_percent):
            rows[number - 1][header.index(column)] = ""
    data = drop_export(stack, "final-grades-20261201.csv",
                       data=("\r\n".join([lines[0], *(",".join(row) for row in rows)]) + "\r\n").encode())
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    counts = reconciliation(outcome)
    assert sum(counts.values()) == rows_in(data) and counts["posted"] > 0
    report = read_frame(outcome.returned["grades.reconcile"]["uri"]).set_index("row")
    assert set(report.loc[letter_only, "reason"]) == {"letter grade only: OneRoster 1.1 takes a percent"}
    (mail,) = stack["smtp"].wait_for(1)
    assert "3 grade row(s) to fix in the export or IC" in mail.subject

    ic = stack["ic"]
    puts = [request.path for request in ic.requests if request.method == "PUT"]
    assert puts and all("/ims/oneroster/v1p1/" in path for path in puts), "1.1 writes go to the 1.1 base"
    gradebook = ic.gradebook
    results = gradebook.stored("results")
    postings = read_frame(outcome.returned["grades.plan"]["uri"])
    assert len(results) == int((postings["action"] == "post").sum()) and not gradebook.duplicates()
    assert all(result["student"]["sourcedId"].startswith("s") for result in results.values()), "1.1 student ids"
    assert not any("textScore" in result for result in results.values())
    assert not gradebook.stored("scoreScales")
    assert not any("school" in item for item in gradebook.stored("lineItems").values())

    ic.reset_stats()
    drop_export(stack, "final-grades-20261202.csv", data=data)
    again = run(NIGHT + timedelta(days=1), halves="grades")
    assert again.state == "success", again.task_states
    assert [request for request in ic.requests if request.method == "PUT"] == [], "nothing changed"

    for key, value in connection_uri_env("ic_demo", ic, "1.2", **VENDOR).items():  # switched mid-year
        monkeypatch.setenv(key, value)
    drop_export(stack, "final-grades-20261203.csv", data=data)
    switched = run(NIGHT + timedelta(days=2), halves="grades")
    assert switched.task_states["grades.plan"] == "failed"
    assert [request for request in ic.requests if request.method == "PUT"] == [], "no second result per grade"
    body = " ".join(mail.body for mail in stack["smtp"].wait_for(2))
    assert "posted to IC over OneRoster 1.1, and the connection now reads OneRoster 1.2" in body


def test_rows_ic_rejects_are_failed_with_its_message_and_emailed(stack):
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    data = drop_export(stack, "final-grades-20261201.csv")
    stack["district"].modify("enrollments", 40, NIGHT - timedelta(hours=2))  # dropped in IC, not yet in the LMS
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    counts = reconciliation(outcome)
    assert counts["failed"] > 0 and sum(counts.values()) == rows_in(data)
    report = read_frame(outcome.returned["grades.reconcile"]["uri"])
    assert report.loc[report["outcome"] == "failed", "reason"].str.contains("not").all()
    (mail,) = stack["smtp"].wait_for(1)
    assert "grade row(s) not accepted by IC" in mail.subject and "demo" in mail.body
    assert "givenName" not in mail.body


def wrong_rows(report, expected) -> list[str]:
    """Rows the run accounted for otherwise than the rules say (the report against ``expected``)."""
    assert set(report.index) == set(expected.rows)
    wrong = []
    for number, row in sorted(expected.rows.items()):
        said, reason = report.loc[number, "outcome"], report.loc[number, "reason"]
        if row.grades and said != "posted":
            wrong.append(f"row {number}: the rules post it, the run says {said} {reason!r}")
        elif not row.grades and not (said == "skipped" and row.skip_is_right(reason)):
            wrong.append(f"row {number}: the rules skip it ({sorted(row.reasons)}), "
                         f"the run says {said} {reason!r}")
    return wrong


def assert_graded_as_the_rules_say(stack, outcome, data: bytes, **rules) -> None:
    """Every postable row reached IC on its term's lineItem, once; every other row is reported with
    a reason the rules give."""
    expected = expected_grades(data, stack["district"], stack["config"], NIGHT.date(), **rules)
    assert not wrong_rows(report_of(outcome), expected)[:5]
    gradebook = stack["ic"].gradebook
    held, grades = held_by_ic(gradebook), expected.grades()
    assert grades and set(held) == set(grades)
    assert all(at_ic(grade, held) for grade in grades.values())
    assert not gradebook.duplicates()


ALIKE = SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027, terms_per_school=True))


@pytest.mark.parametrize("district", [ALIKE], ids=["terms-per-school"])
def test_three_schools_titling_their_terms_alike_get_their_own_periods_sections_and_grades(stack):
    """Issue 17, item 1: IC gives each school its own "Semester 1"; each is its own period."""
    sessions = [session for session in stack["district"].sessions if session["type"] == "semester"]
    assert len(sessions) == 6 and len({session["title"] for session in sessions}) == 2
    provisioned = run(NIGHT - timedelta(days=1), halves="provisioning")
    assert provisioned.state == "success", provisioned.task_states
    assert len(stack["lms"].grading_periods) == 6
    assert_lms_holds_what_the_rules_say(stack["lms"], stack["district"], stack["config"].provisioning,
                                        (NIGHT - timedelta(days=1)).date())
    assert not stack["smtp"].messages, "nothing was left for a person"
    data = drop_export(stack, "final-grades-20261201.csv")
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    assert reconciliation(outcome)["posted"] > 0
    assert_graded_as_the_rules_say(stack, outcome, data)
    again = run(NIGHT + timedelta(days=1), halves="provisioning")  # the next night matches, merges nothing
    assert again.state == "success" and len(stack["lms"].grading_periods) == 6
    assert_lms_holds_what_the_rules_say(stack["lms"], stack["district"], stack["config"].provisioning, NIGHT.date())


@pytest.mark.parametrize("provisioning_settings", ["mapped"], indirect=True)
def test_terms_mapped_to_existing_grading_periods_pass_their_grades_back(stack):
    """Issue 17, item 2: the district's own periods, named in the map, carry the grades back."""
    before = stack["lms"].grading_periods
    provisioned = run(NIGHT - timedelta(days=1), halves="provisioning")
    assert provisioned.state == "success", provisioned.task_states
    assert stack["lms"].grading_periods == before, "no period is created for a mapped term"
    assert_lms_holds_what_the_rules_say(stack["lms"], stack["district"], stack["config"].provisioning,
                                        (NIGHT - timedelta(days=1)).date())
    data = drop_export(stack, "final-grades-20261201.csv")
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    assert reconciliation(outcome)["posted"] > 0
    assert_graded_as_the_rules_say(stack, outcome, data,
                                   existing_periods={lms_id: period["title"] for lms_id, period in before.items()})


OPT_IN_VARIABLE = "oneroster_grade_opt_in_demo"  # README "Variables and pools"
OPT_IN_ENV = f"AIRFLOW_VAR_{OPT_IN_VARIABLE.upper()}"


@pytest.mark.parametrize("passback_settings", [{"teacher_opt_in": True}])
def test_with_teacher_opt_in_only_the_opted_in_sections_are_posted_and_the_rest_skipped_not_opted_in(
        stack, monkeypatch):
    assert stack["config"].grade_passback.teacher_opt_in
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    data = drop_export(stack, "final-grades-20261201.csv")
    district, config = stack["district"], stack["config"]
    in_export = {line[config.grade_passback.columns.section] for line in export_lines(data).values()}
    everyone = expected_grades(data, district, config, NIGHT.date(), opt_in=in_export)  # as if all opted in
    postable = sorted({grade.section for grade in everyone.grades().values()})
    assert len(postable) >= 2, "the export must give grades in several sections tonight"
    opted_in = set(postable[::2])
    monkeypatch.setenv(OPT_IN_ENV, json.dumps(sorted(opted_in)))
    expected = expected_grades(data, district, config, NIGHT.date(), opt_in=opted_in)
    assert {grade.section for grade in expected.grades().values()} == opted_in

    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    assert outcome.returned["grades.fetch_export"]["content_sha256"] == hashlib.sha256(data).hexdigest()
    report = report_of(outcome)
    wrong = wrong_rows(report, expected)
    assert not wrong, wrong[:5]
    held_back = [number for number, row in everyone.rows.items()
                 if row.grades and row.section not in opted_in]  # posted tonight but for opt-in
    assert held_back
    assert set(zip(report.loc[held_back, "outcome"], report.loc[held_back, "reason"])) == {
        ("skipped", "not opted in")}

    gradebook = stack["ic"].gradebook
    held = held_by_ic(gradebook)
    grades = expected.grades()
    assert set(held) == set(grades), "IC holds the results of the opted-in sections and no others"
    assert all(at_ic(grade, held) for grade in grades.values())
    assert {item["class"]["sourcedId"] for item in gradebook.stored("lineItems").values()} == opted_in
    assert not gradebook.duplicates()
    assert all(entry.created == 1 for entry in gradebook.writes["results"].values())
    assert not stack["smtp"].messages, "an opted-out teacher is the district's setting, nobody's error"


@pytest.mark.parametrize("passback_settings", [{"teacher_opt_in": True}])
@pytest.mark.parametrize("stored", [pytest.param(None, id="missing"),
                                    pytest.param("1521311,1521312", id="not-json")])
def test_with_teacher_opt_in_a_missing_or_malformed_variable_fails_the_plan_naming_it_and_posts_nothing(
        stack, monkeypatch, stored):
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    drop_export(stack, "final-grades-20261201.csv")
    if stored is None:
        monkeypatch.delenv(OPT_IN_ENV, raising=False)
    else:
        monkeypatch.setenv(OPT_IN_ENV, stored)
    ic = stack["ic"]
    ic.reset_stats()
    stack["smtp"].clear()
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "failed"
    assert outcome.task_states["grades.fetch_export"] == "success", outcome.task_states
    assert outcome.task_states["grades.plan"] == "failed", outcome.task_states
    assert outcome.task_states["grades.post"] == "upstream_failed", outcome.task_states
    assert puts_to(ic, "results") == [], "no result may be posted on a guess"
    assert [request for request in ic.requests if request.method == "PUT"] == []
    assert ic.gradebook.stored("results") == {}
    (mail,) = stack["smtp"].wait_for(1)
    assert "grades.plan failed" in mail.subject
    assert OPT_IN_VARIABLE in mail.body and "JSON list of IC class sourcedIds" in mail.body, mail.body


def test_a_post_task_that_dies_half_way_is_rerun_without_posting_twice(stack):
    """IC drops every result PUT from a point past the first journaled batch on, until the post task
    gives up: it dies with results posted and journaled, and others not. Its rerun sends only what
    the journal does not hold: IC ends with every result once, and of the results it already held
    the rerun sends again at most the batch that was in flight when the task died."""
    from plugins.operators.grades import JOURNAL_BATCH

    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    data = drop_export(stack, "final-grades-20261201.csv")
    grades = expected_grades(data, stack["district"], stack["config"], NIGHT.date()).grades()
    dies_at = JOURNAL_BATCH + JOURNAL_BATCH // 2  # the first batch is answered (and journaled) by then
    assert len(grades) > dies_at, f"the export gives {len(grades)} results: too few to die after a batch"
    ic = stack["ic"]
    ic.inject("reset", times=10**9, after=dies_at, path_contains="/results/")
    broken = run(NIGHT, halves="grades")
    assert broken.task_states["grades.post"] == "failed", broken.task_states
    assert broken.returned["grades.fetch_export"]["content_sha256"] == hashlib.sha256(data).hexdigest()
    before = set(ic.gradebook.stored("results"))
    assert JOURNAL_BATCH < len(before) < len(grades), \
        f"IC held {len(before)} of {len(grades)} results when the task died: not past a journaled batch"

    ic.clear_faults()
    ic.reset_stats()
    rerun = run(NIGHT, halves="grades")
    assert rerun.state == "success", rerun.task_states
    gradebook = ic.gradebook
    held = held_by_ic(gradebook)
    assert set(held) == set(grades), "IC holds exactly the results the rules post"
    wrong = [grade for grade in grades.values() if not at_ic(grade, held)]
    assert not wrong, f"{len(wrong)} result(s) at IC with another value or lineItem, e.g. {wrong[0]}"
    assert not gradebook.duplicates()
    writes = gradebook.writes["results"]
    assert len(writes) == len(grades) and all(entry.created == 1 for entry in writes.values())
    puts = puts_to(ic, "results")
    assert puts and {request.status for request in puts} <= {200, 201}
    sent = [unquote(request.path.rsplit("/", 1)[1]) for request in puts]
    assert len(sent) == len(set(sent)), "the rerun sent a result twice"
    assert before | set(sent) == set(writes), "the rerun sent every result IC lacked"
    resent = before & set(sent)
    assert len(resent) <= JOURNAL_BATCH, (
        f"the rerun sent {len(resent)} results IC already held: more than the batch in flight "
        f"({JOURNAL_BATCH}); results journaled before the task died were sent again")


def test_expired_credentials_fail_the_run_with_an_email_saying_what_to_do(stack):
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    drop_export(stack, "final-grades-20261201.csv")
    stack["ic"].revoke_credentials()
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "failed"
    mails = stack["smtp"].wait_for(1)
    body = " ".join(mail.body for mail in mails)
    assert "refused the OneRoster client key/secret" in body and "Grading Services" in body
    assert CLIENT_SECRET not in body


def sensor(staging_root: str, **changes):
    from plugins.sensors.export import ExportFileSensor

    passback = CONFIG.grade_passback.model_copy(update=changes)
    return ExportFileSensor(task_id="wait_for_export", district="demo", passback=passback, staging_root=staging_root)


def test_the_sensor_takes_the_titled_export_or_the_newest_by_name_and_not_a_growing_file(stack, tmp_path):
    folder = stack["root"] / EXPORT_DIR
    for name in ("final-grades-20261130.csv", "final-grades-20261201.csv", "zz-other-export.csv", "notes.txt"):
        (folder / name).write_text("Section School Code\n")
    titled = sensor((tmp_path / "staging").as_uri())
    assert titled._newest(None)["name"] == "final-grades-20261201.csv"
    untitled = sensor(titled.staging_root, export_title=None)
    assert untitled._newest(None)["name"] == "zz-other-export.csv"

    growing = folder / "final-grades-20261201.csv"
    context = {"run_id": "manual__test"}
    patient = sensor(titled.staging_root, stable_seconds=60)
    with pytest.raises(TaskDeferred):
        patient.found(context, {"status": "success"})  # seen once: checked again in a minute, in the triggerer
    with growing.open("a") as handle:
        handle.write("600000,s1000000,Semester 1,91,A,90,A\n")
    with pytest.raises(TaskDeferred):
        patient.settled(context)  # it grew meanwhile: not taken, checked again later
    settled = patient.settled(context)
    assert settled["name"] == "final-grades-20261201.csv" and settled["size"] == growing.stat().st_size

    def grow() -> None:
        with growing.open("a") as handle:
            handle.write("600000,s1000001,Semester 1,88,B,90,A\n")

    quick = sensor(titled.staging_root, stable_seconds=0.6)  # a wait this short is slept in the task
    writer = threading.Timer(0.3, grow)
    writer.start()
    taken = quick._wait({"run_id": "manual__quick"})  # already there: taken without a deferral
    writer.join()
    assert taken["name"] == "final-grades-20261201.csv" and taken["size"] == growing.stat().st_size


def test_the_sensor_waits_out_an_sftp_server_that_is_down_in_the_triggerer_or_for_a_short_pause_in_the_task(
        stack, tmp_path):
    (stack["root"] / EXPORT_DIR / "final-grades-20261201.csv").write_text("Section School Code\n")
    staging_root = (tmp_path / "staging").as_uri()
    stack["sftp"].stop()
    patient = sensor(staging_root, poke_interval_seconds=60, stable_seconds=0)
    with pytest.raises(TaskDeferred) as deferred:
        patient._wait({"run_id": "manual__patient"})
    resumes_in = deferred.value.trigger.moment - datetime.now(timezone.utc)
    assert deferred.value.method_name == "resume" and timedelta(seconds=50) < resumes_in <= timedelta(seconds=60)

    quick = sensor(staging_root, poke_interval_seconds=0.5, stable_seconds=0)
    back = threading.Timer(1.2, stack["sftp"].start)
    back.start()
    taken = quick._wait({"run_id": "manual__quick"})  # paused in the task until the server is back
    back.join()
    assert taken["name"] == "final-grades-20261201.csv"


@pytest.mark.parametrize("profile", ["window-400"])
def test_a_line_item_refused_for_a_closed_window_as_400_sends_none_of_its_results_and_skips_their_rows(stack):
    """A server that refuses a closed window as 400 ``invaliddata``, at the lineItem already: its results
    are not sent (each would come back "unknown lineItem") and their rows are skipped with IC's message."""
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    data = drop_export(stack, "final-grades-20261201.csv")
    first = semester(stack["district"], 1)
    opens, closes = district_window(first)
    assert opens <= NIGHT.date() <= closes, "by the district's rule semester 1 takes grades tonight"
    ic = stack["ic"]
    ic.gradebook.today = NIGHT.date()
    ic.gradebook.set_window(first["id"], first["start"], NIGHT.date() - timedelta(days=1))  # IC closed it early
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    assert puts_to(ic, "lineItems") and {request.status for request in puts_to(ic, "lineItems")} == {400}
    assert puts_to(ic, "results") == [], "no result is sent for a lineItem IC refused"
    report = report_of(outcome)
    rows = rows_of_term(data, stack["district"], first)
    assert rows and set(report.loc[rows, "outcome"]) == {"skipped"}
    said = f"window closed: grading window closed for {first['title']} ({first['id']})"
    reasons = set(report.loc[rows, "reason"])
    assert all(reason.startswith(said) for reason in reasons), reasons
    assert not any("404" in reason or "lineItem" in reason for reason in reasons)
    assert reconciliation(outcome)["failed"] == 0 and sum(reconciliation(outcome).values()) == rows_in(data)
    assert not stack["smtp"].messages, "a closed window is the district's calendar, nobody's error"


def test_a_refused_score_scale_or_category_stops_the_line_items_and_results_that_need_it(stack):
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    data = drop_export(stack, "final-grades-20261201.csv")
    columns = CONFIG.grade_passback.columns
    lines = export_lines(data)
    rows = rows_of_term(data, stack["district"], semester(stack["district"], 1))
    section = lines[rows[0]][columns.section]
    (group,) = set(CONFIG.grade_passback.task_score_groups.values())
    scale = f"{section}-{group}"  # a score scale per section and score group
    ic = stack["ic"]
    ic.gradebook.refuse("scoreScales", scale, f"scoreScale {scale}: the section's score groups are locked")
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    assert [request.status for request in puts_to(ic, "scoreScales")
            if request.path.endswith(f"/{scale}")] == [422]
    sent = puts_to(ic, "lineItems") + puts_to(ic, "results")
    assert sent and {request.status for request in sent} == {201}, "nothing that needs the scale is sent"
    gradebook = ic.gradebook
    assert not [item for item in gradebook.stored("lineItems").values() if item["class"]["sourcedId"] == section]
    report = report_of(outcome)
    refused = [row for row in rows if lines[row][columns.section] == section]
    assert set(report.loc[refused, "outcome"]) == {"failed"}
    assert all("score groups are locked" in reason for reason in report.loc[refused, "reason"])
    assert set(report.loc[sorted(set(rows) - set(refused)), "outcome"]) == {"posted"}
    (mail,) = stack["smtp"].wait_for(1)
    assert f"{len(refused)} grade row(s) not accepted by IC" in mail.subject and "locked" in mail.body
    (category,) = gradebook.stored("categories")
    for item in gradebook.stored("lineItems").values():  # gradebook objects live under the gradebook's base
        assert item["category"]["href"] == f"{ic.gradebook_url}/categories/{category}"
        assert item["scoreScale"]["href"].startswith(f"{ic.gradebook_url}/scoreScales/")

    ic.reset_stats()  # the next night IC refuses the category too
    stack["smtp"].clear()
    gradebook.refuse("categories", category, f"category {category}: categories are managed in Campus")
    drop_export(stack, "final-grades-20261202.csv", data=data)
    again = run(NIGHT + timedelta(days=1), halves="grades")
    assert again.state == "success", again.task_states
    assert [request.status for request in puts_to(ic, "categories")] == [422]
    assert puts_to(ic, "lineItems") == puts_to(ic, "results") == [], "no lineItem without its category"
    report = report_of(again)
    assert set(report.loc[refused, "outcome"]) == {"failed"}
    assert all("categories are managed in Campus" in reason for reason in report.loc[refused, "reason"])
    assert set(report.loc[sorted(set(rows) - set(refused)), "outcome"]) == {"unchanged"}
    (mail,) = stack["smtp"].wait_for(1)
    assert "managed in Campus" in mail.body


def test_a_window_not_yet_open_is_skipped_saying_when_it_opens(stack):
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    data = drop_export(stack, "final-grades-20261201.csv")
    first, second = semester(stack["district"], 1), semester(stack["district"], 2)
    second_opens, _ = district_window(second)
    assert NIGHT.date() < second_opens, "by the district's rule semester 2 takes grades later"
    ic = stack["ic"]
    ic.gradebook.today = NIGHT.date()
    ic_opens = NIGHT.date() + timedelta(days=2)  # IC opens semester 1 later than the district's rule says
    ic.gradebook.set_window(first["id"], ic_opens, first["end"] + timedelta(days=14))
    outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    report = report_of(outcome)
    later = rows_of_term(data, stack["district"], second)
    assert later and set(zip(report.loc[later, "outcome"], report.loc[later, "reason"])) == {
        ("skipped", f"window opens on {second_opens}")}
    now = rows_of_term(data, stack["district"], first)
    assert now and set(report.loc[now, "outcome"]) == {"skipped"}
    reasons = set(report.loc[now, "reason"])
    assert all(reason.startswith(f"window opens on {ic_opens}: ") and first["id"] in reason
               for reason in reasons), reasons
    assert reconciliation(outcome)["skipped"] == rows_in(data) == len(later) + len(now)
    assert not stack["smtp"].messages


def student_ids(district: SyntheticDistrict) -> set[str]:
    """Every student's IC sourcedId as 1.2 and 1.1 spell it."""
    return {user["sourcedId"] for version in ("1.2", "1.1") for user in district.records("users", version)
            if "student" in [user.get("role"), *(role["role"] for role in user.get("roles", []))]}


def test_the_grade_task_logs_name_no_student(stack):
    """A result's sourcedId holds its student's IC id and IC's messages may name the student: logs carry
    counts, lineItem ids and IC's messages with the student left out; the staged report names each
    refused row's student in its own column."""
    assert run(NIGHT - timedelta(days=1), halves="provisioning").state == "success"
    drop_export(stack, "final-grades-20261201.csv")
    stack["district"].modify("enrollments", 40, NIGHT - timedelta(hours=2))  # dropped in IC, not yet in the LMS
    stack["ic"].inject("500", times=2, path_contains="/results/", after=5)  # a retry is logged
    with structlog.testing.capture_logs() as logs:
        outcome = run(NIGHT, halves="grades")
    assert outcome.state == "success", outcome.task_states
    logged = json.dumps(logs, default=str)
    assert "District demo: posted to IC" in logged and "retry 1 of" in logged, "the task logs were captured"
    report = report_of(outcome)
    failed = report.loc[report["outcome"] == "failed"]
    students = student_ids(stack["district"])

    def naming(text: str) -> list[str]:
        return [student for student in students if re.search(rf"(?<![0-9A-Za-z]){student}(?![0-9A-Za-z])", text)]

    assert len(failed) and set(failed["student"]) <= students, "the staged report names the refused rows' students"
    assert naming(" ".join(failed["reason"])) == [], "IC's messages are kept less the student they name"
    assert naming(logged) == []
    assert "is not actively enrolled as a student in class" in logged, "IC's message is logged, less the student"
