"""Grade passback under faults: whole DAG runs against the IC emulator (gradebook), a real SFTP
server and SMTP sink, with faults switched on; after each, what IC's gradebook holds and what the
run's reconciliation says are checked against what the rules say of the export file the test dropped
(tests/expected_grades.py: README's rules applied to the file's rows and the synthetic district,
never the run's plan), and a line goes into the fault ledger printed at the end of the session
(tests/fault_ledger.py): rows in, posted, skipped, failed, duplicates (must be 0), lost (must be 0).

One provisioned district serves every scenario: each starts from an empty gradebook, no posted
state, an empty export directory and no faults, and runs at its own logical date on the same
night (one run id per scenario). IC faults hit only the gradebook calls of ``grades.post``.
The scenarios that need Airflow's own machinery (a killed task process, a cleared run, two runs
at once) run under a real scheduler at the end of the module.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import psutil
import pytest
import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV
from include.grades.processed import last_export_path
from include.sandbox.airflow_stack import AirflowStack
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.grade_export import schoology_export
from include.sandbox.ic_emulator import PROFILES, ICEmulator
from include.sandbox.ic_gradebook import Gradebook
from include.sandbox.lms_emulator import SchoologyEmulator
from include.sandbox.sftp_server import SFTPServer
from include.sandbox.smtp_sink import SMTPSink
from include.staging import read_frame, state_path
from tests.fault_ledger import ScenarioLedger, record
from tests.expected_grades import Held, held_by_ic
from tests.expected_provisioning import expected_provisioning
from tests.fault_support import (
    CONFIG,
    DAG_ID,
    EXPORT_DIR,
    NIGHT,
    VENDOR,
    Run,
    assert_read_the_file,
    expected_of,
    export_rows,
    far_side_ledger,
    grade_environment,
    run_dag,
)
from tests.support import CLIENT_ID, CLIENT_SECRET, LMS_KEY, LMS_SECRET

YEAR = 2027
GRADEBOOK = "/gradebook/"
RESULTS = "/gradebook/v1p2/results/"


@dataclass
class Passback:
    """The provisioned district and the servers standing in for IC, the LMS, SFTP and the mail relay."""

    ic: ICEmulator
    lms: SchoologyEmulator
    sftp: SFTPServer
    smtp: SMTPSink
    district: SyntheticDistrict
    root: object  # the SFTP server's directory
    staging: str
    env: pytest.MonkeyPatch
    environment: dict[str, str]
    runs: int = 0
    data: bytes = field(default=b"")

    def next_night(self) -> datetime:
        """A logical date of its own (so a run id of its own) on the same night, window open."""
        self.runs += 1
        return NIGHT + timedelta(minutes=self.runs)

    def reset(self) -> None:
        """An empty gradebook, no posted state, no export, no faults, no mail."""
        self.ic.clear_faults()
        self.ic.restore_credentials()
        self.ic.latency = 0.0
        self.ic.gradebook = Gradebook(self.district)
        self.ic.reset_stats()
        self.sftp.clear_faults()
        if not self.sftp.running:
            self.sftp.start()
        for path in (self.root / EXPORT_DIR).iterdir():
            path.unlink()
        for path in (state_path(self.staging, "demo", YEAR, "grades/posted"),
                     last_export_path(self.staging, "demo")):
            if path.exists():
                path.unlink()
        self.smtp.clear()
        for key, value in self.environment.items():
            self.env.setenv(key, value)

    def export(self, *, seed: int = 7) -> bytes:
        return schoology_export(self.lms, seed=seed, columns=CONFIG.grade_passback.columns)

    def drop(self, data: bytes, name: str = "final-grades-20261201.csv") -> bytes:
        (self.root / EXPORT_DIR / name).write_bytes(data)
        self.data = data
        return data

    def ic_extras(self, **extras) -> None:
        """Change the IC connection's extras for this scenario (e.g. read_timeout)."""
        for key, value in grade_environment(ic=self.ic, lms=self.lms, sftp=self.sftp, smtp=self.smtp,
                                            staging_uri=self.staging, **extras).items():
            self.env.setenv(key, value)

    def puts(self, path: str = RESULTS) -> list:
        return [request for request in self.ic.requests if request.method == "PUT" and path in request.path]


@pytest.fixture(scope="module")
def world(airflow_db, tmp_path_factory):
    root = tmp_path_factory.mktemp("grade-faults")
    sftp_root = root / "sftp"
    (sftp_root / EXPORT_DIR).mkdir(parents=True)
    district = SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=YEAR))
    with (
        ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo",
                   **VENDOR) as ic,
        SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms,
        SFTPServer(sftp_root, username="exporter", password="sftp-test-secret") as sftp,
        SMTPSink() as smtp,
        pytest.MonkeyPatch.context() as env,
    ):
        staging = (root / "staging").as_uri()
        environment = grade_environment(ic=ic, lms=lms, sftp=sftp, smtp=smtp, staging_uri=staging)
        world = Passback(ic, lms, sftp, smtp, district, sftp_root, staging, env, environment)
        world.reset()
        provisioned = run_dag(NIGHT - timedelta(days=1), halves="provisioning")
        assert provisioned.state == "success", provisioned.task_states
        yield world


@pytest.fixture
def passback(world) -> Passback:
    world.reset()
    return world


def settle(passback: Passback, run: Run, scenario: str, *, faults: int) -> ScenarioLedger:
    """The ledger line of a run whose reconciliation ran, against what the rules say of the file the
    test dropped (not the run's plan); recorded (duplicates and lost must be 0)."""
    assert run.state == "success", run.task_states
    assert_read_the_file(run.returned["grades.fetch_export"], passback.data)
    expected = expected_of(passback.data, passback.district, run.logical_date.date())
    assert len(expected.rows) == export_rows(passback.data)
    return far_side_ledger(scenario, faults=faults, expected=expected,
                           reconciled=run.returned["grades.reconcile"], gradebook=passback.ic.gradebook,
                           requests=passback.ic.requests)


def refused_file_ledger(passback: Passback, scenario: str, *, faults: int, rows: int,
                        emailed: bool) -> ScenarioLedger:
    """The ledger line of an export refused as a whole: its rows count as failed when the failure
    email named the file (a person knows), what reached IC is counted at IC, the rest is lost."""
    stored = passback.ic.gradebook.writes["results"]
    posted = len({request.path for request in passback.puts() if request.status in (200, 201)})
    failed = rows - posted if emailed else 0
    duplicates = sum(max(0, entry.created - 1) for entry in stored.values())
    return ScenarioLedger(scenario, faults, rows, posted, 0, failed, duplicates, rows - posted - failed)


def planned_posts(run: Run) -> int:
    postings = read_frame(run.returned["grades.plan"]["uri"])
    return int((postings["action"] == "post").sum())


def assert_everything_planned_is_at_ic(passback: Passback, run: Run) -> None:
    postings = read_frame(run.returned["grades.plan"]["uri"])
    planned = set(postings.loc[postings["action"] == "post", "result_id"])
    assert planned and planned <= set(passback.ic.gradebook.stored("results"))


def created_once(passback: Passback) -> None:
    writes = passback.ic.gradebook.writes["results"]
    assert writes and all(entry.created == 1 for entry in writes.values())


# -- IC: faults on the gradebook calls of grades.post ------------------------------------------------


def test_ic_429_storm_waits_the_retry_after_and_posts_everything_once(passback):
    passback.drop(passback.export())
    # three storms of 429s, each answered with Retry-After: 1 s
    passback.ic.inject("429", times=3, path_contains=GRADEBOOK, retry_after=1)
    passback.ic.inject("429", times=4, path_contains=RESULTS, after=20, retry_after=1)
    passback.ic.inject("429", times=3, path_contains=RESULTS, after=60, retry_after=1)
    run = run_dag(passback.next_night(), halves="grades")
    assert_everything_planned_is_at_ic(passback, run)
    created_once(passback)
    requests = [r for r in passback.ic.requests if GRADEBOOK in r.path]
    refused = [n for n, r in enumerate(requests) if r.status == 429]
    assert len(refused) == 10
    for n in refused:  # the next call to the same record came no sooner than the Retry-After
        again = next(r for r in requests[n + 1:] if r.path == requests[n].path)
        assert again.started - requests[n].ended >= 0.95, "Retry-After not honoured"
    settle(passback, run, "grades: IC 429 storm (Retry-After)", faults=10)


def test_ic_5xx_bursts_are_retried_and_post_everything_once(passback):
    passback.drop(passback.export())
    passback.ic.inject("500", times=1, path_contains="/gradebook/v1p2/lineItems/")
    passback.ic.inject("500", times=2, path_contains=RESULTS, after=10)
    passback.ic.inject("503", times=2, path_contains=RESULTS, after=50)
    run = run_dag(passback.next_night(), halves="grades")
    assert_everything_planned_is_at_ic(passback, run)
    created_once(passback)
    assert sorted(r.status for r in passback.ic.requests if r.status >= 500) == [500, 500, 500, 503, 503]
    settle(passback, run, "grades: IC 5xx bursts", faults=5)


def test_ic_connections_reset_before_during_and_after_the_write(passback):
    """A reset after IC stored a result is the dangerous one: the retry must update, not add."""
    passback.drop(passback.export())
    passback.ic.inject("reset", times=2, path_contains=RESULTS, after=5)
    passback.ic.inject("reset_mid_body", times=2, path_contains=RESULTS, after=30)
    passback.ic.inject("reset_after_apply", times=3, path_contains=RESULTS, after=60)
    run = run_dag(passback.next_night(), halves="grades")
    assert_everything_planned_is_at_ic(passback, run)
    created_once(passback)
    assert sum(1 for r in passback.ic.requests if r.status == 0) == 7
    resent = sum(entry.updated for entry in passback.ic.gradebook.writes["results"].values())
    assert resent == 3, "a result is sent again only when IC's answer to it was lost"
    settle(passback, run, "grades: IC connections reset (before/mid-body/after the write)", faults=7)


def test_ic_latency_past_the_read_timeout_is_retried_without_duplicates(passback):
    passback.ic_extras(read_timeout=1)
    passback.drop(passback.export())
    passback.ic.inject("latency", times=3, seconds=2.5, path_contains=RESULTS, after=15)
    run = run_dag(passback.next_night(), halves="grades")
    slow = [r for r in passback.ic.requests if r.ended - r.started >= 2.4 and RESULTS in r.path]
    assert len(slow) == 3
    # the client gave up on each after 1 s and sent it again (IC carried out the slow ones too)
    assert len(passback.puts()) >= planned_posts(run) + 3
    assert_everything_planned_is_at_ic(passback, run)
    created_once(passback)
    settle(passback, run, "grades: IC latency past the read timeout", faults=3)


def test_ic_token_expiring_mid_post_is_renewed(passback):
    passback.drop(passback.export())
    passback.ic.inject("expire_token", times=1, path_contains=RESULTS, after=40)
    passback.ic.inject("expire_token", times=1, path_contains=RESULTS, after=200)
    run = run_dag(passback.next_night(), halves="grades")
    # an expired token also refuses the calls already in flight with it (up to 5 at a time)
    assert 2 <= sum(1 for r in passback.ic.requests if r.status == 401) <= 2 * 5
    assert run.tries["grades.post"] == 1
    assert_everything_planned_is_at_ic(passback, run)
    created_once(passback)
    settle(passback, run, "grades: IC token expiring mid-run", faults=2)


def test_ic_credentials_revoked_mid_post_fail_at_once_with_an_email_then_the_rerun_finishes(passback):
    from plugins.operators.grades import JOURNAL_BATCH

    passback.drop(passback.export())
    ic = passback.ic

    def revoke_after(posts: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            taken = [r for r in ic.requests
                     if r.method == "PUT" and RESULTS in r.path and r.status in (200, 201)]
            if len(taken) >= posts:
                ic.revoke_credentials()
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=revoke_after, args=(250,), daemon=True)
    watcher.start()
    when = passback.next_night()
    broken = run_dag(when, retries=1, halves="grades")
    watcher.join()
    assert broken.state == "failed" and broken.task_states["grades.post"] == "failed"
    assert broken.tries["grades.post"] == 1, "refused credentials are not retried"
    assert broken.task_states["grades.reconcile"] == "upstream_failed"
    stored_before = len(ic.gradebook.stored("results"))
    assert 250 <= stored_before < planned_posts(broken)
    (mail,) = passback.smtp.wait_for(1)
    assert "grades.post failed" in mail.subject
    assert "refused the OneRoster client key/secret" in mail.body and "Grading Services" in mail.body
    assert CLIENT_SECRET not in mail.body and "test-vendor-secret" not in mail.body

    ic.restore_credentials()  # the district renewed them; the run is cleared and run again
    ic.reset_stats()
    rerun = run_dag(when, halves="grades")
    assert_everything_planned_is_at_ic(passback, rerun)
    created_once(passback)
    resent = sum(entry.updated for entry in ic.gradebook.writes["results"].values())
    assert resent <= JOURNAL_BATCH, "only the batch in flight when the task failed is sent again"
    settle(passback, rerun, "grades: IC credentials revoked mid-run, renewed, re-run", faults=1)


def test_ic_refusing_a_closed_window_as_400_holds_back_its_results_and_skips_their_rows(passback):
    """Another make of server refuses a grading window it closed early as 400 ``invaliddata``, at the
    lineItem already: none of its results is sent (each would be answered "unknown lineItem"), and every
    row is skipped with the server's message; nothing fails, nobody is emailed."""
    profile = PROFILES["window-400"]
    passback.ic.gradebook = gradebook = Gradebook(
        passback.district, today=NIGHT.date(), window_refusal_status=profile.window_refusal_status,
        windows_bind_line_items=profile.windows_bind_line_items)
    first = next(session for session in passback.district.sessions if session["title"].startswith("Semester 1 "))
    gradebook.set_window(first["id"], first["start"], NIGHT.date() - timedelta(days=1))
    data = passback.drop(passback.export())
    column = CONFIG.grade_passback.columns.grading_period
    lines = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    title = expected_provisioning(passback.district, CONFIG.provisioning).period_titles[first["id"]]
    graded = sum(1 for line in lines if line[column] == title)  # rows of semester 1
    run = run_dag(passback.next_night(), halves="grades")
    line_items = passback.puts("/gradebook/v1p2/lineItems/")
    assert line_items and {request.status for request in line_items} == {400}
    assert not passback.puts(), "no result of a refused lineItem is sent"
    report = read_frame(run.returned["grades.reconcile"]["uri"])
    closed = report["reason"].str.startswith(f"window closed: grading window closed for {first['title']}")
    assert set(report["outcome"]) == {"skipped"} and closed.sum() == graded > 0
    assert not passback.smtp.messages
    settle(passback, run, "grades: IC refuses a closed window as 400 invaliddata, lineItems too", faults=1)


# -- SFTP ---------------------------------------------------------------------------------------------


def test_sftp_server_down_while_sensing_is_waited_out(passback):
    passback.drop(passback.export())
    passback.sftp.stop()
    restarted: list[float] = []
    back = threading.Timer(6, lambda: (passback.sftp.start(), restarted.append(time.time())))
    back.start()
    run = run_dag(passback.next_night(), halves="grades")
    back.join()
    assert run.tries["grades.wait_for_export"] == 1, "the outage is waited out, not failed and retried"
    assert run.started["grades.wait_for_export"].timestamp() < restarted[0], "the sensor met the outage"
    assert_everything_planned_is_at_ic(passback, run)
    settle(passback, run, "grades: SFTP server down while sensing", faults=1)


def test_sftp_connection_dropped_mid_download_is_retried(passback):
    data = passback.drop(passback.export())
    passback.sftp.inject("drop_mid_download", after_bytes=len(data) // 2, path_contains="final-grades")
    run = run_dag(passback.next_night(), retries=1, halves="grades")
    assert run.tries["grades.fetch_export"] == 2
    fetched = run.returned["grades.fetch_export"]
    assert fetched["row_count"] + fetched["quarantined_count"] == export_rows(data)
    assert_everything_planned_is_at_ic(passback, run)
    settle(passback, run, "grades: SFTP connection dropped mid-download", faults=1)


def test_a_truncated_file_keeps_its_cut_off_last_row_aside_and_says_so(passback):
    whole = passback.export()
    cut = whole.rindex(b"\r\n", 0, len(whole) * 3 // 5) + 2 + 40  # 40 bytes into a line
    assert b"\r\n" not in whole[cut - 40:cut]
    data = passback.drop(whole[:cut])
    run = run_dag(passback.next_night(), halves="grades")
    report = read_frame(run.returned["grades.reconcile"]["uri"])
    last = report.iloc[-1]
    assert last["row"] == export_rows(data) and last["outcome"] == "skipped"
    assert "cut off" in last["reason"]
    (mail,) = passback.smtp.wait_for(1)
    assert "1 grade row(s) to fix in the export or IC" in mail.subject and "cut off" in mail.body
    settle(passback, run, "grades: SFTP truncated file", faults=1)


def test_an_empty_file_is_not_taken_and_the_wait_ends_with_an_email_naming_it(passback):
    passback.drop(b"")

    def short_wait(dag) -> None:
        sensor = dag.get_task("grades.wait_for_export")
        sensor.passback = sensor.passback.model_copy(update={"timeout_hours": 0.002})  # 7.2 s

    run = run_dag(passback.next_night(), tweak=short_wait, halves="grades")
    assert run.state == "failed" and run.task_states["grades.wait_for_export"] == "failed"
    assert run.task_states["grades.fetch_export"] == "upstream_failed"
    (mail,) = passback.smtp.wait_for(1)
    assert "grades.wait_for_export failed" in mail.subject
    assert "No grade export arrived" in mail.body
    assert "final-grades-20261201.csv is empty (0 bytes)" in mail.body
    assert not passback.puts(GRADEBOOK)
    record(refused_file_ledger(passback, "grades: SFTP empty file", faults=1, rows=export_rows(b""),
                               emailed="final-grades-20261201.csv" in mail.body))


def test_a_file_with_only_headers_posts_nothing_and_emails_that_it_had_no_rows(passback):
    header = passback.export().split(b"\r\n", 1)[0] + b"\r\n"
    passback.drop(header)
    run = run_dag(passback.next_night(), halves="grades")
    assert sum(run.counts().values()) == 0
    assert not passback.puts(GRADEBOOK)
    (mail,) = passback.smtp.wait_for(1)
    assert "no grade rows in the export" in mail.subject and "auto-export job" in mail.body
    settle(passback, run, "grades: SFTP file with only headers", faults=1)


def test_a_utf16_file_without_bom_is_read(passback):
    data = passback.export().decode("utf-8-sig").encode("utf-16-le")
    assert not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    passback.drop(data)
    run = run_dag(passback.next_night(), halves="grades")
    assert run.returned["grades.fetch_export"]["quarantined_count"] == 0
    assert_everything_planned_is_at_ic(passback, run)
    settle(passback, run, "grades: SFTP file in UTF-16 (no BOM)", faults=1)


def test_a_windows_1252_file_with_an_extra_accented_column_is_read(passback):
    lines = passback.export().decode("utf-8-sig").split("\r\n")
    lines = [f"{line},Commentaire" if n == 0 else f"{line},Très bien – élève" if line else line
             for n, line in enumerate(lines)]
    data = "\r\n".join(lines).encode("cp1252")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    passback.drop(data)
    run = run_dag(passback.next_night(), halves="grades")
    assert run.returned["grades.fetch_export"]["quarantined_count"] == 0
    assert_everything_planned_is_at_ic(passback, run)
    settle(passback, run, "grades: SFTP Windows-1252 file, extra column", faults=2)


def test_duplicate_rows_are_posted_once(passback):
    lines = passback.export().split(b"\r\n")
    data = passback.drop(b"\r\n".join([*lines[:-1], *lines[1:6], *lines[10:12], b""]))
    run = run_dag(passback.next_night(), halves="grades")
    report = read_frame(run.returned["grades.reconcile"]["uri"])
    duplicates = report[report["reason"].str.contains("duplicate of row", na=False)]
    assert len(duplicates) == 7 and set(duplicates["outcome"]) == {"skipped"}
    assert not passback.smtp.messages, "an exact duplicate needs nobody"
    created_once(passback)
    assert export_rows(data) == export_rows(passback.export()) + 7
    settle(passback, run, "grades: SFTP duplicate rows", faults=7)


def test_missing_and_renamed_columns_fail_the_file_with_the_headers_found(passback):
    lines = passback.export().decode("utf-8-sig").split("\r\n")
    header = lines[0].split(",")
    period = header.index(CONFIG.grade_passback.columns.grading_period)
    renamed = [("User Unique ID" if name == CONFIG.grade_passback.columns.student else name)
               for n, name in enumerate(header) if n != period]
    body = [",".join(field for n, field in enumerate(line.split(",")) if n != period) for line in lines[1:]]
    data = passback.drop("\r\n".join([",".join(renamed), *body]).encode("utf-8"))
    run = run_dag(passback.next_night(), halves="grades")
    assert run.state == "failed" and run.task_states["grades.fetch_export"] == "failed"
    assert not passback.puts(GRADEBOOK)
    (mail,) = passback.smtp.wait_for(1)
    assert "grades.fetch_export failed" in mail.subject and "final-grades-20261201.csv" in mail.body
    assert "missing the header(s) 'Unique User ID', 'Grading Period'" in mail.text
    assert "headers found: 'Section School Code', 'User Unique ID'" in mail.text
    assert expected_of(data, passback.district, NIGHT.date()).refused, "the rules refuse this file too"
    record(refused_file_ledger(passback, "grades: SFTP missing + renamed columns", faults=2, rows=export_rows(data),
                               emailed="final-grades-20261201.csv" in mail.body))


# -- bad data -----------------------------------------------------------------------------------------


def test_bad_rows_are_kept_aside_with_reasons_and_emailed(passback):
    lines = passback.export().decode("utf-8-sig").split("\r\n")
    columns = CONFIG.grade_passback.columns
    header = lines[0].split(",")
    at = {name: header.index(name) for name in header}
    rows = [line.split(",") for line in lines[1:] if line]
    first = next(session for session in passback.district.sessions if session["title"].startswith("Semester 1 "))
    title = expected_provisioning(passback.district, CONFIG.provisioning).period_titles[first["id"]]
    open_rows = [n for n, row in enumerate(rows) if row[at[columns.grading_period]] == title]

    def change(n: int, column: str, value: str) -> int:
        rows[n][at[column]] = value
        return n + 1  # the report's row number

    above = [change(n, columns.term_percent, "104.5") for n in open_rows[0:3]]
    text = [change(n, columns.term_percent, value) for n, value in zip(open_rows[3:5], ["A+", "ninety"])]
    unknown = [change(n, columns.student, value)
               for n, value in zip(open_rows[5:7], ["s9999998", "s9999999"])]
    no_term = [change(n, columns.grading_period, value)
               for n, value in zip(open_rows[7:10], ["", "", "Summer"])]
    no_section = [change(open_rows[10], columns.section, "")]
    passback.drop(("\r\n".join([lines[0], *(",".join(row) for row in rows)]) + "\r\n").encode("utf-8"))
    run = run_dag(passback.next_night(), halves="grades")
    report = read_frame(run.returned["grades.reconcile"]["uri"]).set_index("row")
    postings = read_frame(run.returned["grades.plan"]["uri"])
    stored = passback.ic.gradebook.stored("results")
    for row in above:  # extra credit is kept, as sent
        assert report.loc[row, "outcome"] == "posted"
        term = postings[(postings["row"] == row) & (postings["task_kind"] == "term")].iloc[0]
        assert stored[term["result_id"]]["score"] == 104.5
    assert [report.loc[row, "reason"] for row in text] == ["malformed: non-numeric grade 'A+'",
                                                          "malformed: non-numeric grade 'ninety'"]
    assert {report.loc[row, "reason"] for row in unknown} == {"student unknown to IC"}
    assert {report.loc[row, "reason"] for row in no_term} == {"unmapped term"}
    assert [report.loc[row, "reason"] for row in no_section] == ["malformed: blank section"]
    assert {report.loc[row, "outcome"] for row in text + unknown + no_term + no_section} == {"skipped"}
    (mail,) = passback.smtp.wait_for(1)
    assert "8 grade row(s) to fix in the export or IC" in mail.subject
    for row in text + unknown + no_term:
        assert f"row {row}," in mail.body
    assert f"row {no_section[0]}, section (blank): malformed: blank section" in mail.body
    settle(passback, run, "grades: bad data (above max, non-numeric, unknown student, no term, no section)",
           faults=11)


# -- Airflow: a killed task process, a cleared run, two runs at once (a real scheduler) -----------------

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


@dataclass
class Scheduled:
    stack: AirflowStack
    passback: Passback

    def trigger(self, run_id: str, when: datetime) -> None:
        self.stack.airflow("dags", "trigger", DAG_ID, "--run-id", run_id, "--logical-date", when.isoformat(),
                           "--conf", json.dumps({"halves": "grades"}))

    def ledger(self, scenario: str, run_id: str, *, faults: int,
               posted_before: dict[tuple[str, str], Held] | None = None) -> ScenarioLedger:
        """As :func:`settle`, on the run's own logical date; ``posted_before``: what IC held after
        the last run whose post finished (its grades are "unchanged" if the export has them again)."""
        assert_read_the_file(self.stack.returned(DAG_ID, run_id, "grades.fetch_export"), self.passback.data)
        logical_date = self.stack.api(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["logical_date"]
        run_date = datetime.fromisoformat(logical_date.replace("Z", "+00:00")).date()
        expected = expected_of(self.passback.data, self.passback.district, run_date)
        return far_side_ledger(scenario, faults=faults, expected=expected,
                               reconciled=self.stack.returned(DAG_ID, run_id, "grades.reconcile"),
                               gradebook=self.passback.ic.gradebook, requests=self.passback.ic.requests,
                               posted_before=posted_before)


@pytest.fixture(scope="module")
def scheduled(world, tmp_path_factory) -> Scheduled:
    """The demo district under a scheduler: one retry a second later, no deadline, nothing due;
    the same staging root, so the provisioning of the module serves it too."""
    root = tmp_path_factory.mktemp("grade-faults-scheduler")
    districts = root / "districts"
    districts.mkdir()
    config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
    config["notifications"].pop("deadline", None)
    config.update(schedule="0 6 29 2 *", start_date=date(2025, 7, 1),
                  task_retries={"count": 1, "delay_seconds": 1, "max_delay_seconds": 2})
    (districts / "demo.yaml").write_text(yaml.safe_dump(config))
    (root / "pools.json").write_text(json.dumps({"ic_demo": {"slots": 5, "description": "faults"},
                                                 "lms_demo": {"slots": 1, "description": "faults"}}))
    world.reset()
    with AirflowStack(root / "airflow", env={DISTRICTS_DIR_ENV: str(districts)}) as stack:
        with stack.logs_on_failure():
            stack.airflow("pools", "import", str(root / "pools.json"))
            stack.wait_for_dags([DAG_ID])
            stack.airflow("dags", "unpause", DAG_ID)
        yield Scheduled(stack, world)


def test_a_task_process_killed_mid_post_is_retried_without_posting_twice(scheduled):
    from plugins.operators.grades import JOURNAL_BATCH

    stack, passback = scheduled.stack, scheduled.passback
    passback.reset()
    passback.drop(passback.export())
    passback.ic.inject("latency", times=100_000, seconds=0.03, path_contains=RESULTS)  # keeps the post busy
    run_id = "faults_killed"
    with stack.logs_on_failure():
        scheduled.trigger(run_id, NOW - timedelta(minutes=10))
        gradebook = passback.ic.gradebook
        stack.wait_for(lambda: len(gradebook.stored("results")) >= 250, timeout=150, every=0.05,
                       what="the post task half way")
        ti_id = stack.task_instances(DAG_ID, run_id)["grades.post"]["id"]
        (task,) = [process for process in psutil.process_iter(["cmdline"])
                   if f"airflow worker -- {ti_id}" in " ".join(process.info["cmdline"] or [])]
        task.kill()  # SIGKILL: no cleanup, no journal flush, as a worker lost with its machine
        killed_at = len(gradebook.stored("results"))
        passback.ic.clear_faults()
        run = stack.wait_for_run(DAG_ID, run_id, timeout=150)
        post = stack.task_instances(DAG_ID, run_id)["grades.post"]
        assert run["state"] == "success" and post["try_number"] == 2, post
        assert killed_at < planned_posts_of(stack.returned(DAG_ID, run_id, "grades.plan"))
        writes = gradebook.writes["results"]
        assert all(entry.created == 1 for entry in writes.values())
        resent = sum(entry.updated for entry in writes.values())
        assert resent <= JOURNAL_BATCH + 5, "more than the batch in flight was sent again"
        assert not passback.smtp.messages, "the retry finished the job: nobody needs to act"
        scheduled.ledger("grades: task process killed mid-post, retried (scheduler)", run_id, faults=1)


def test_a_cleared_run_takes_its_export_again_and_posts_nothing_twice(scheduled):
    stack, passback = scheduled.stack, scheduled.passback
    passback.reset()
    passback.drop(passback.export())
    run_id, when = "faults_cleared", NOW - timedelta(minutes=8)
    with stack.logs_on_failure():
        scheduled.trigger(run_id, when)
        assert stack.wait_for_run(DAG_ID, run_id, timeout=150)["state"] == "success"
        first = stack.returned(DAG_ID, run_id, "grades.reconcile")
        assert first["counts"]["posted"] > 0
        posted_before = held_by_ic(passback.ic.gradebook)
        passback.ic.reset_stats()
        stack.airflow("tasks", "clear", DAG_ID, "--yes", "--start-date", when.isoformat(),
                      "--end-date", when.isoformat())  # as from the UI
        run = stack.wait_for_run(DAG_ID, run_id, timeout=150)
        assert run["state"] == "success", stack.task_instances(DAG_ID, run_id)
        again = stack.returned(DAG_ID, run_id, "grades.reconcile")
        assert again["export"] == first["export"] and again["created_at"] != first["created_at"]
        assert again["counts"]["posted"] == 0 and again["counts"]["unchanged"] == first["counts"]["posted"]
        assert not passback.puts(GRADEBOOK), "nothing IC already holds is sent again"
        created_once(passback)
        scheduled.ledger("grades: run cleared and re-run (scheduler)", run_id, faults=1,
                         posted_before=posted_before)


def test_two_runs_at_once_run_one_after_the_other_and_the_second_posts_only_changes(scheduled):
    stack, passback = scheduled.stack, scheduled.passback
    passback.reset()
    first = passback.drop(passback.export())
    with stack.logs_on_failure():
        scheduled.trigger("faults_twin_1", NOW - timedelta(minutes=5))
        scheduled.trigger("faults_twin_2", NOW - timedelta(minutes=4))
        one = stack.wait_for_run(DAG_ID, "faults_twin_1", timeout=150)
        assert one["state"] == "success"
        two = stack.api(f"/api/v2/dags/{DAG_ID}/dagRuns/faults_twin_2")
        assert two["state"] in ("queued", "running")
        posted_once = passback.ic.gradebook.stored("results")
        posted_before = held_by_ic(passback.ic.gradebook)
        passback.ic.reset_stats()
        lines = first.split(b"\r\n")
        changed = [b",".join([*line.split(b",")[:3], b"61.5", b"D", *line.split(b",")[5:]])
                   for line in lines[1:4]]
        passback.drop(b"\r\n".join([lines[0], *changed, *lines[4:]]), name="final-grades-20261202.csv")
        two = stack.wait_for_run(DAG_ID, "faults_twin_2", timeout=150)
        assert two["state"] == "success"
        tis_one = stack.task_instances(DAG_ID, "faults_twin_1")
        tis_two = stack.task_instances(DAG_ID, "faults_twin_2")
        assert max(ti["end_date"] for ti in tis_one.values() if ti["end_date"]) <= min(
            ti["start_date"] for ti in tis_two.values() if ti["start_date"]), "the two runs overlapped"
        assert len(passback.puts()) <= 3 * 2, "the second run sends only the changed grades"
        assert len(passback.ic.gradebook.stored("results")) == len(posted_once)
        created_once(passback)
        scheduled.ledger("grades: two runs attempted at once (scheduler)", "faults_twin_2", faults=1,
                         posted_before=posted_before)


def planned_posts_of(plan_manifest: dict) -> int:
    postings = read_frame(plan_manifest["uri"])
    return int((postings["action"] == "post").sum())
