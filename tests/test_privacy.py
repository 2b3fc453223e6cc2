"""No student data leaves the staged reports: a whole district night on a real Airflow (scheduler,
dag-processor, triggerer, api-server; include/sandbox/airflow_stack.py) with records that go wrong
in every way that makes the product talk about a person, and then every task log, trigger log,
XCom value and email is searched for the generator's students and guardians.

The night (one district, provisioning and grade passback, no retries, failure emails on):

- IC serves three student records malformed (no givenName, no role, a role of an unknown type):
  they are quarantined by the users extract;
- the LMS refuses three students' users with a message naming each (name, email, username);
- the grade export on SFTP holds malformed rows (a non-numeric grade, a row with a field too many
  that carries the student's email, a blank section), rows of the quarantined students (unknown to
  IC), a grade for a student in a class they are not in (IC's own 422 names the student's id) and
  grades IC refuses with a description naming the student by id and name.

A second run of the same district (provisioning only) sends the three refused users again and the
LMS answers that bulk call with a whole-call 400 naming the student: the task fails, and the failure
email's ``{{ exception }}`` carries the LMS's words. (It is a run of its own because in one run any
failed task holds back either the sync report or the grade reconciliation, which the first run must
produce.)

The forbidden strings come from the generator alone (not include/privacy.py, not the operators):
for every student and guardian, the 1.2 and 1.1 sourcedIds, username and email (whole tokens, any
case) and given, family and preferred names of four letters or more (whole words, as written;
school names, which are made of family names, are taken out first).
"""

from __future__ import annotations

import csv
import html
import io
import json
import random
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from include.config import DISTRICTS_DIR, DISTRICTS_DIR_ENV, ExportColumns, load_district
from include.oneroster.models import COLLECTIONS
from include.provisioning.steps import STEPS
from include.sandbox.airflow_stack import AirflowStack
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.grade_export import letter
from include.sandbox.ic_emulator import ICEmulator
from include.sandbox.lms_emulator import SchoologyEmulator, SchoologyError
from include.sandbox.sftp_server import SFTPServer
from include.sandbox.smtp_sink import ReceivedMail, SMTPSink
from tests.expected_provisioning import expected_provisioning
from tests.support import (
    CLIENT_ID,
    CLIENT_SECRET,
    LMS_KEY,
    LMS_SECRET,
    Spoiled,
    connection_uri_env,
    lms_connection_env,
    no_given_name,
)

DISTRICT = "privacy"
DAG_ID = f"oneroster_{DISTRICT}"
NIGHT_RUN, RETRY_RUN = "privacy_night", "privacy_retry"
TEAM = f"team@{DISTRICT}.invalid"
VENDOR = {"vendor_key": "test-vendor", "vendor_secret": "test-vendor-secret"}
NOT_DUE = "0 6 29 2 *"  # unpausing makes a run for 29 February 2024 only, skipped whole by first_night
EXTRACTS = [f"extract.{collection}" for collection in COLLECTIONS]
PROVISION = [f"provision.{step.task_id}" for step in STEPS]
GRADES = ["grades.wait_for_export", "grades.fetch_export", "grades.plan", "grades.post", "grades.reconcile"]
COLUMNS = ExportColumns()
TERM_TASK, OVERALL_TASK = "T-SEMESTER", "T-FINAL"  # demo.yaml's grading tasks


def _night() -> datetime:
    """1 December of the latest autumn that has begun (a past date: a manual run takes any): by
    demo.yaml's window rule semester 1 takes grades then, semester 2 does not yet."""
    now = datetime.now(UTC)
    night = datetime(now.year, 12, 1, 6, tzinfo=UTC)
    return night if night <= now else night.replace(year=now.year - 1)


NIGHT = _night()
SCHOOL_YEAR = NIGHT.year + 1  # years start on 1 July: December 2026 is in school year 2027


# -- IC serving three student records malformed --------------------------------------------------


def _no_role(record: dict) -> None:
    if "roles" in record:
        record["roles"] = []
    else:
        record["role"] = ""


def _unknown_role_type(record: dict) -> None:
    if "roles" in record:
        record["roles"] = [{**record["roles"][0], "roleType": "tertiary"}]
    else:
        record["role"] = "wizard"


SPOILED = {4: no_given_name, 9: _no_role, 13: _unknown_role_type}  # student (= users) indexes


class SpoiledDistrict(SyntheticDistrict):
    """The synthetic district as IC serves it tonight: three student records malformed."""

    def records(self, collection: str, version: str = "1.2", href_base: str = "") -> Sequence[dict]:
        records = super().records(collection, version, href_base)
        return Spoiled(records, SPOILED) if collection == "users" else records


class LockedLms(SchoologyEmulator):
    """Schoology, which can be told to refuse one whole call with a message of its own (a 400, as it
    answers a call it cannot take at all), while everything else goes on as usual."""

    whole_call: tuple[str, str, str] | None = None  # (method, path, message)

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, url: str):
        if self.whole_call and (method, path.rstrip("/")) == self.whole_call[:2]:
            raise SchoologyError(400, self.whole_call[2])
        return super().handle(method, path, query, body, url)


# -- who must not appear ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    index: int  # the user's index in the generator's users
    role: str
    sourced_id: str  # 1.2
    legacy_id: str  # 1.1
    username: str
    email: str
    given: str
    family: str
    preferred: str | None

    @property
    def label(self) -> str:
        return f"{self.role} #{self.index}"


def people(district: SyntheticDistrict, href_base: Callable[[str], str]) -> list[Person]:
    """Every student and guardian, from the generator's records as IC serves them in 1.2 and 1.1."""
    modern = district.records("users", "1.2", href_base("1.2"))
    legacy = district.records("users", "1.1", href_base("1.1"))
    found = []
    for index, (user, old) in enumerate(zip(modern, legacy, strict=True)):
        role = old["role"]
        if role not in ("student", "guardian"):
            continue
        assert old["sourcedId"] == user["metadata"]["ic.legacysourceId"]
        found.append(Person(index, role, user["sourcedId"], old["sourcedId"], user["username"], user["email"],
                            user["givenName"], user["familyName"], user.get("preferredFirstName")))
    return found


class Forbidden:
    """The students' and guardians' identifiers and names, found in a text as whole tokens/words."""

    MIN_NAME = 4  # shorter names are words of the logs' own vocabulary too ("Kai", "Mei", "Jo")

    def __init__(self, persons: list[Person], org_names: list[str]):
        self.tokens: dict[str, tuple[str, Person]] = {}  # lower-cased value -> (kind, person)
        self.names: dict[str, tuple[str, list[Person]]] = {}  # a name -> (kind, everyone who has it)
        for person in persons:
            for kind, value in (("sourcedId", person.sourced_id), ("1.1 sourcedId", person.legacy_id),
                                ("username", person.username), ("email", person.email)):
                if value:
                    self.tokens.setdefault(value.lower(), (kind, person))
            for kind, value in (("given name", person.given), ("family name", person.family),
                                ("preferred name", person.preferred)):
                if value and len(value) >= self.MIN_NAME:
                    self.names.setdefault(value, (kind, []))[1].append(person)
        alternatives = "|".join(map(re.escape, sorted(self.tokens, key=len, reverse=True)))
        self._tokens = re.compile(rf"(?<![0-9A-Za-z])(?:{alternatives})(?![0-9A-Za-z])", re.IGNORECASE)
        alternatives = "|".join(map(re.escape, sorted(self.names, key=len, reverse=True)))
        self._names = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
        # schools are named after families ("Smith Elementary School 1"): not a person
        self._orgs = re.compile("|".join(map(re.escape, sorted(org_names, key=len, reverse=True))))

    def __len__(self) -> int:
        return len(self.tokens) + len(self.names)

    def found(self, text: str) -> Iterator[tuple[str, str, str]]:
        """(kind, whose, the text around it with the value masked) for each forbidden value in ``text``."""
        for match in self._tokens.finditer(text):
            kind, person = self.tokens[match.group(0).lower()]
            yield kind, person.label, _around(text, match)
        without_schools = self._orgs.sub(lambda match: " " * len(match.group(0)), text)
        for match in self._names.finditer(without_schools):
            kind, persons = self.names[match.group(0)]
            whose = ", ".join(person.label for person in persons[:4]) + (" ..." if len(persons) > 4 else "")
            yield kind, f"{whose} (a name {len(persons)} of them have)" if len(persons) > 1 else whose, \
                _around(text, match)


def _around(text: str, match: re.Match) -> str:
    start, end = match.span()
    return (text[max(0, start - 80):start] + "[…]" + text[end:end + 80]).replace("\n", " ")


# -- what the night leaves behind --------------------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif value is not None:
        yield str(value)


def _texts_of_line(line: str) -> list[str]:
    """A log line as text: a JSON line's strings decoded (escaped unicode, \\n), else the line."""
    if line.lstrip().startswith(("{", "[")):
        try:
            return [line, *_strings(json.loads(line))]
        except ValueError:
            pass
    return [line]


def log_texts(folder: Path) -> Iterator[tuple[str, str]]:
    """(where, text) for every line of every file under ``folder``."""
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            for text in _texts_of_line(line):
                yield f"{path.relative_to(folder)}:{number}", text


def xcom_texts(database: Path) -> Iterator[tuple[str, str]]:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as db:
        rows = db.execute("SELECT dag_id, run_id, task_id, map_index, key, value FROM xcom").fetchall()
    for dag_id, run_id, task_id, map_index, key, value in rows:
        raw = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        where = f"XCom {dag_id}/{run_id}/{task_id}[{map_index}]/{key}"
        yield where, raw
        try:
            decoded = json.loads(raw)
        except ValueError:
            continue
        for text in _strings(decoded):
            yield where, text


def mail_texts(mails: list[ReceivedMail]) -> Iterator[tuple[str, str]]:
    for number, mail in enumerate(mails, start=1):
        where = f"email {number} ({mail.subject[:90]!r})"
        yield f"{where} subject", mail.subject
        for part in mail.message.walk():
            if part.get_content_maintype() != "text":
                continue
            content = part.get_content()
            for line_number, line in enumerate(content.splitlines(), start=1):
                yield f"{where} {part.get_content_type()} line {line_number}", line
                yield f"{where} {part.get_content_type()} line {line_number}", html.unescape(line)


def leaks(forbidden: Forbidden, texts: Iterator[tuple[str, str]]) -> list[str]:
    seen, found = set(), []
    for where, text in texts:
        for kind, whose, context in forbidden.found(text):
            if (where, kind, whose) in seen:
                continue
            seen.add((where, kind, whose))
            found.append(f"{where}: {kind} of {whose}: ...{context}...")
    return found


# -- the grade export ---------------------------------------------------------------------------------


@dataclass
class Export:
    data: bytes
    malformed: int  # rows the export reader quarantines
    unknown: int  # rows of students IC does not serve (quarantined by the users extract)
    not_in_class: int  # rows of a student in a class they are not enrolled in (IC refuses)
    refused: list[str]  # result sourcedIds IC is told to refuse


def _student_number(user_id: str) -> int:
    return int(user_id.removeprefix("s")) - 1_000_000


def build_export(district: SyntheticDistrict, period_titles: dict[str, str], *, refused_students: list[int],
                 not_in_class: int, malformed_students: list[int], seed: int = 11) -> Export:
    """Schoology's final-grade export of two sections per school (a year-long one and a semester-1
    one), written from the generator's IC records: one row per active student enrollment and term
    (the section's grading periods), IC's 1.1 ids as Schoology's Unique User ID, the titles of the
    grading periods provisioned from the terms (``period_titles``). Then the rows that go wrong are
    put in."""
    chance = random.Random(seed)
    classes = [cls for cls in district.records("classes")
               if not (cls.get("metadata") or {}).get("ic.trialSchedule")
               and cls["periods"] in (["1"], ["7"])]
    wanted = {cls["sourcedId"]: cls for cls in classes}
    roster: dict[str, list[str]] = {class_id: [] for class_id in wanted}
    for enrollment in district.records("enrollments", "1.1"):
        class_id = enrollment["class"]["sourcedId"]
        if class_id in wanted and enrollment["role"] == "student" and enrollment["status"] == "active":
            roster[class_id].append(enrollment["user"]["sourcedId"])
    header = [COLUMNS.section, COLUMNS.student, COLUMNS.grading_period, COLUMNS.term_percent,
              COLUMNS.term_score, COLUMNS.course_percent, COLUMNS.course_score]
    rows: list[list[str]] = []
    first_semester = f"{SCHOOL_YEAR}01"
    refused: list[str] = []
    for class_id, cls in wanted.items():
        terms = [term["sourcedId"] for term in cls["terms"]]
        for student in roster[class_id]:
            grades = [round(chance.uniform(55, 100), 1) for _ in terms]
            course = round(sum(grades) / len(grades), 1)
            for term, grade in zip(terms, grades, strict=True):
                rows.append([class_id, student, period_titles[term], f"{grade}", letter(grade),
                             f"{course}", letter(course)])
                number = _student_number(student)
                if number in refused_students and term == first_semester and cls["periods"] == ["1"]:
                    refused += [f"{class_id}-{term}-{task}-{number + 1_000_000}"
                                for task in (TERM_TASK, OVERALL_TASK)]
    assert len(refused) == 2 * len(refused_students), "the refused students have year-long semester-1 grades"
    unknown = sum(_student_number(row[1]) in SPOILED for row in rows)
    # a grade for a student of another school, in a semester-1 section they are not in: IC refuses it
    outsider = f"s{1_000_000 + not_in_class}"
    semester_section = next(class_id for class_id, cls in wanted.items()
                            if cls["periods"] == ["7"] and outsider not in roster[class_id])
    rows.append([semester_section, outsider, period_titles[first_semester], "88.0", "B", "88.0", "B"])
    # rows the export reader cannot trust, for students IC serves
    spoiled_rows = 0
    spoils = ("non-numeric", "extra field", "blank section")
    for number, spoil in zip(malformed_students, spoils, strict=True):
        at = next(position for position, row in enumerate(rows) if _student_number(row[1]) == number)
        row = rows[at]
        if spoil == "non-numeric":
            row[3] = "ninety-one"
        elif spoil == "extra field":
            row.append(f"stu{1_000_000 + number}@students.example.org")
        else:
            row[0] = ""
        spoiled_rows += 1
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return Export(out.getvalue().encode("utf-8-sig"), malformed=spoiled_rows, unknown=unknown, not_in_class=1,
                  refused=refused)


# -- the district ---------------------------------------------------------------------------------------


def write_district(directory: Path) -> dict[str, int]:
    """demo.yaml as district ``privacy``: provisioning, the LMS and grade passback kept, no retries,
    failure emails to the team, a schedule that is not due; returns the pools it needs."""
    config = yaml.safe_load((DISTRICTS_DIR / "demo.yaml").read_text())
    config.update({"district": DISTRICT, "schedule": NOT_DUE, "start_date": date(2025, 7, 1),
                   "task_retries": {"count": 0},
                   "notifications": {"emails": [TEAM], "smtp_conn_id": "smtp_privacy"}})
    config["infinite_campus"].update(conn_id="ic_privacy", pool="ic_privacy")
    config["lms"].update(conn_id="lms_privacy", pool="lms_privacy")
    config["grade_passback"].update(sftp_conn_id="sftp_privacy")
    (directory / f"{DISTRICT}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    return {"ic_privacy": config["infinite_campus"]["max_concurrency"], "lms_privacy": 1}


def _names_long_enough(user: dict) -> bool:
    return min(len(user["givenName"]), len(user["familyName"])) >= Forbidden.MIN_NAME


def _states(stack: AirflowStack, run_id: str) -> dict[str, str]:
    return {task: ti["state"] for task, ti in stack.task_instances(DAG_ID, run_id).items()}


def _mails(smtp: SMTPSink, run_id: str) -> list[ReceivedMail]:
    return [mail for mail in smtp.messages if f"run {run_id}" in mail.subject]


def test_a_district_night_with_bad_records_leaves_no_student_data_in_logs_xcoms_or_emails(tmp_path):
    started = time.monotonic()
    root = tmp_path
    districts = root / "districts"
    districts.mkdir()
    pools = write_district(districts)
    (root / "pools.json").write_text(json.dumps({name: {"slots": slots, "description": "privacy"}
                                                 for name, slots in pools.items()}))
    spec = DistrictSpec(seed=42, students=60, schools=3, school_year=SCHOOL_YEAR)
    plain = SyntheticDistrict(spec)  # the generator as it is: where the forbidden strings come from
    served = SpoiledDistrict(spec)
    users = list(plain.records("users"))

    def student(number: int) -> dict:
        return users[number]

    # three students of the second school the LMS refuses, by their school_uid (IC's 1.1 id), naming them
    lms_refused = [21, 26, 31]
    # three of the second school whose export rows are malformed, one of the third graded in a class of
    # the first, and two of the third whose semester-1 grades IC refuses, naming them
    malformed = [27, 28, 29]
    not_in_class = 45
    ic_refused = [number for number in range(40, 60) if number not in (not_in_class,)
                  and _names_long_enough(student(number)) and users[number]["status"] == "active"][:2]
    assert len(ic_refused) == 2
    titles = expected_provisioning(plain, load_district(districts / f"{DISTRICT}.yaml").provisioning).period_titles
    export = build_export(plain, titles, refused_students=ic_refused, not_in_class=not_in_class,
                          malformed_students=malformed)

    sftp_root = root / "sftp"
    (sftp_root / "exports" / "grades").mkdir(parents=True)
    (sftp_root / "exports" / "grades" / f"final-grades-{NIGHT:%Y%m%d}.csv").write_bytes(export.data)

    with (
        ICEmulator(served, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo", **VENDOR) as ic,
        LockedLms(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms,
        SMTPSink() as smtp,
        SFTPServer(sftp_root, username="exporter", password="sftp-test-secret") as sftp,
    ):
        forbidden = Forbidden(people(plain, ic.rostering_url),
                              [org["name"] for org in plain.records("orgs")])
        for number in lms_refused:
            user = student(number)
            lms.inject("reject_items", keys=[user["metadata"]["ic.legacysourceId"]],
                       message=f"User {user['givenName']} {user['familyName']} <{user['email']}> "
                               f"({user['username']}) could not be saved")
        for number in ic_refused:
            user = student(number)
            for result_id in [rid for rid in export.refused if rid.endswith(f"-{user['sourcedId']}")]:
                ic.gradebook.refuse("results", result_id, f"student {user['sourcedId']} "
                                                          f"({user['givenName']} {user['familyName']}) "
                                                          "is not actively enrolled")
        env = {
            DISTRICTS_DIR_ENV: str(districts),
            "AIRFLOW_VAR_ONEROSTER_STAGING_ROOT": (root / "staging").as_uri(),
            "AIRFLOW_CONN_SMTP_PRIVACY": json.dumps(smtp.connection("oneroster@localhost")),
            "AIRFLOW_CONN_SFTP_PRIVACY": json.dumps(sftp.connection()),
            **connection_uri_env("ic_privacy", ic, "1.2", **VENDOR),
            **lms_connection_env("lms_privacy", lms),
        }
        with AirflowStack(root / "airflow", env=env) as stack, stack.logs_on_failure():
            stack.airflow("pools", "import", str(root / "pools.json"))
            stack.wait_for_dags([DAG_ID])
            stack.airflow("dags", "unpause", DAG_ID)
            stack.airflow("dags", "trigger", DAG_ID, "--run-id", NIGHT_RUN,
                          "--logical-date", NIGHT.isoformat())
            night = stack.wait_for_run(DAG_ID, NIGHT_RUN, timeout=1500)
            states = _states(stack, NIGHT_RUN)
            assert night["state"] == "success", states
            assert set(states.values()) == {"success"}, states
            designed = {"first_night", *EXTRACTS, *PROVISION, "provision.sync_report", *GRADES}
            assert designed <= set(states), states

            # the night did what it was designed to: records quarantined ...
            users_manifest = stack.returned(DAG_ID, NIGHT_RUN, "extract.users")
            assert users_manifest["quarantined_count"] == len(SPOILED), users_manifest
            # ... the LMS refused users ...
            provisioned = stack.returned(DAG_ID, NIGHT_RUN, "provision.users")
            assert provisioned["counts"]["failed"] == len(lms_refused), provisioned
            report = stack.returned(DAG_ID, NIGHT_RUN, "provision.sync_report")
            assert report["totals"].get("failed", 0) >= len(lms_refused), report
            assert report["totals"].get("quarantined", 0) == len(SPOILED), report
            held = {user["school_uid"] for user in lms.users.values()}
            assert not {student(number)["metadata"]["ic.legacysourceId"] for number in lms_refused} & held
            # ... the export reader quarantined rows, IC refused results ...
            fetched = stack.returned(DAG_ID, NIGHT_RUN, "grades.fetch_export")
            assert fetched["quarantined_count"] == export.malformed, fetched
            posted = stack.returned(DAG_ID, NIGHT_RUN, "grades.post")
            refusals = 2 * len(ic_refused) + 2 * export.not_in_class
            assert posted["counts"].get("rejected", 0) >= refusals, posted
            assert posted["counts"].get("created", 0) > 0, posted
            refused_at_ic = [request for request in ic.requests if request.method == "PUT"
                             and "/results/" in request.path and request.status == 422]
            assert len(refused_at_ic) >= refusals
            reconciled = stack.returned(DAG_ID, NIGHT_RUN, "grades.reconcile")
            counts = reconciled["counts"]
            assert counts.get("failed", 0) >= len(ic_refused) + export.not_in_class, reconciled
            assert counts.get("skipped", 0) >= export.malformed + export.unknown, reconciled
            assert counts.get("posted", 0) > 0, reconciled
            # ... and emails went out about both halves
            mails = stack.wait_for(lambda: _mails(smtp, NIGHT_RUN)[1:] and _mails(smtp, NIGHT_RUN),
                                   timeout=60, what="the night's two emails")
            subjects = [mail.subject for mail in mails]
            assert any("provisioning:" in subject and "need attention" in subject
                       for subject in subjects), subjects
            assert any("not accepted by IC" in subject for subject in subjects), subjects
            assert all(mail.envelope_to == (TEAM,) for mail in mails)

            # The next night sends the refused users again; the LMS refuses that whole call, naming one.
            lms.clear_faults()
            again = student(lms_refused[0])
            lms.whole_call = ("POST", "/v1/users",
                              f"User {again['givenName']} {again['familyName']} <{again['email']}> "
                              f"({again['username']}, IC id {again['sourcedId']}) could not be saved: "
                              "the import is locked by another import")
            stack.airflow("dags", "trigger", DAG_ID, "--run-id", RETRY_RUN,
                          "--logical-date", (NIGHT + timedelta(days=1)).isoformat(),
                          "--conf", json.dumps({"halves": "provisioning"}))
            retry = stack.wait_for_run(DAG_ID, RETRY_RUN, timeout=900)
            states = _states(stack, RETRY_RUN)
            assert retry["state"] == "failed", states
            assert states["provision.users"] == "failed", states
            assert {states[task] for task in EXTRACTS} == {"success"}, states
            # grades are not this run's half (those after the sync report wait on it: upstream_failed)
            assert {states[task] for task in GRADES} <= {"skipped", "upstream_failed"}, states
            whole_calls = [request for request in lms.requests if request.method == "POST"
                           and request.path.rstrip("/") == "/v1/users" and request.status == 400]
            assert whole_calls, "the LMS refused the retried users' call"
            (failure,) = stack.wait_for(
                lambda: [mail for mail in _mails(smtp, RETRY_RUN)
                         if "provision.users failed" in mail.subject],
                timeout=120, what="the failure email of provision.users")
            assert "Schoology answered 400 to POST /v1/users" in failure.body, failure.body
            assert "the import is locked by another import" in failure.body, failure.body

            # Where student data must never be: task and trigger logs, XComs, emails.
            time.sleep(5)  # the last log lines are flushed after the run's state is set
            logs = stack.home / "logs"
            assert any(logs.rglob("attempt=1.log")), f"no task logs under {logs}"
            log_leaks = leaks(forbidden, log_texts(logs))
            xcom_leaks = leaks(forbidden, xcom_texts(stack.database))
            mail_leaks = leaks(forbidden, mail_texts(smtp.messages))
            component_leaks = leaks(forbidden, log_texts(stack.logs))  # the components' own output
            found = log_leaks + xcom_leaks + mail_leaks
            print(f"\nprivacy night: {len(forbidden)} forbidden values; searched "
                  f"{sum(1 for path in logs.rglob('*') if path.is_file())} log files, "
                  f"{len(list(xcom_texts(stack.database)))} XCom texts, {len(smtp.messages)} emails; "
                  f"{len(found)} leak(s) ({len(log_leaks)} in logs, {len(xcom_leaks)} in XComs, "
                  f"{len(mail_leaks)} in emails); {len(component_leaks)} in component output; "
                  f"{time.monotonic() - started:.0f} s")
            for mail in smtp.messages:
                print(f"  email: {mail.subject}")
            for line in found + [f"(component output) {line}" for line in component_leaks]:
                print("  " + line)
            assert not found, f"{len(found)} place(s) hold student data:\n" + "\n".join(found[:80])
