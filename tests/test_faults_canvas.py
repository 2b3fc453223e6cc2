"""Fault injection, provisioning half, Canvas rows: whole DAG runs (``halves=provisioning``) of a
district whose file says ``lms.target: canvas``, against the IC emulator and the Canvas emulator
(SIS imports over real HTTP on 127.0.0.1) with Canvas's faults switched on, each followed by a
line of the fault suite's ledger (``tests/fault_ledger.py``).

As in ``tests/test_faults_provisioning.py`` the expectation does not come from the code under
test: ``tests/expected_provisioning.expected_provisioning(..., courses_held=False)`` applies the
district file's rules to the raw records IC serves, and the far side is what the Canvas emulator
holds (``held_by_canvas``: active objects keyed by SIS id). A row the rules put in Canvas is
``posted`` if Canvas holds it, ``failed`` if the run lists it with Canvas's message, ``skipped``
only if the run says what it hangs off is not in Canvas and that is so; a row the rules leave out
is ``skipped`` if the run lists it with a reason the rules give. Anything else is lost; an object
in Canvas the rules leave out fails the scenario.

The Canvas emulator's faults: ``stuck`` holds the account's import queue until released (as a
stuck import in Canvas eventually ends or is aborted by an admin); ``500`` is answered before Canvas
takes the upload and ``taken_then_500`` after (the case the hook's look for the import before
posting again is for); each import's upload is kept, to count imports per batch.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections import Counter
from datetime import datetime

import pytest

from include.config import load_district
from include.sandbox.canvas_emulator import CanvasEmulator
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_emulator import ICEmulator
from tests import expected_provisioning as rules
from tests import provisioning_ledger
from tests.canvas_support import (
    DAG_ID,
    ROWS_PER_IMPORT,
    TOKEN,
    canvas_district_file,
    connect_canvas,
    connect_ic_and_smtp,
    run_night,
)
from tests.expected_provisioning import Expected, expected_provisioning, held_by_canvas
from tests.fault_ledger import ScenarioLedger
from tests.provisioning_ledger import listed
from tests.provisioning_support import counted, night, report_of
from tests.support import CLIENT_ID, CLIENT_SECRET

NOTIFIED = ("data-team@demo.invalid",)  # demo.yaml's notifications.emails
UPLOADS = "/sis_imports"  # the upload's path (and the list's); a poll's is ".../sis_imports/<id>"
POLLS = "/sis_imports/"


def files_of(upload: bytes) -> set[str]:
    with zipfile.ZipFile(io.BytesIO(upload)) as archive:
        return set(archive.namelist())


def batches(rows: int) -> int:
    return -(-rows // ROWS_PER_IMPORT)


# -- the stage --------------------------------------------------------------------------------------


@pytest.fixture
def district():
    return SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))


@pytest.fixture
def district_file(tmp_path, monkeypatch):
    """The Canvas district, with quick backoff."""
    return canvas_district_file(tmp_path / "districts", monkeypatch, backoff_seconds=0.05)


class Stage:
    def __init__(self, district, canvas, district_file, smtp, monkeypatch) -> None:
        self.district, self.canvas, self.smtp, self.monkeypatch = district, canvas, smtp, monkeypatch
        self.provisioning = load_district(district_file).provisioning

    def connect_canvas(self, **extras) -> None:
        connect_canvas(self.monkeypatch, self.canvas, **extras)

    def expected(self, when: datetime) -> Expected:
        return expected_provisioning(self.district, self.provisioning, on=when.date(), courses_held=False)

    def run(self, when: datetime, **conf):
        return run_night(when, **conf)


@pytest.fixture
def stage(district, canvas, district_file, smtp, monkeypatch, tmp_path, airflow_db):
    with ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as ic:
        connect_ic_and_smtp(monkeypatch, ic, smtp, tmp_path / "staging")
        stage = Stage(district, canvas, district_file, smtp, monkeypatch)
        stage.connect_canvas()
        yield stage


def imports_before(expectation: Expected, kind: str) -> int:
    """The imports a first night makes before the first of ``kind``'s (the steps run one after the
    other, each kind's creates in imports of ROWS_PER_IMPORT)."""
    order = ["building", "grading_period", "user", "guardian_link", "section", "enrollment"]
    return sum(batches(len(expectation.present[k])) for k in order[:order.index(kind)])


# -- the ledger: the rules' expectation, the far side, the run's own lists (as in the Schoology suite) --


def held_once(canvas: CanvasEmulator) -> dict[str, Counter]:
    """What Canvas holds (``held_by_canvas``), plus an enrollment counted again for each other role
    one user has in one course (Canvas keys an enrollment by course, section, user and role: the
    same person twice in a class would be two enrollments)."""
    held = held_by_canvas(canvas)
    both = Counter(f"{e['section_id']}:{e['user_id']}" for e in canvas.enrollments.values()
                   if e["status"] != "deleted" and e["role"] in ("teacher", "student"))
    held["enrollment"] = Counter({key: max(count, both[key]) for key, count in held["enrollment"].items()})
    return held


def ledger(stage: Stage, scenario: str, faults: int, outcome, expectation: Expected) -> ScenarioLedger:
    """The scenario's ledger line (``tests/provisioning_ledger.py``) against what Canvas holds."""
    return provisioning_ledger.ledger(scenario, faults, outcome, expectation, held_once(stage.canvas),
                                      stage.district)


def assert_provisioned_in_full(stage: Stage, outcome, expectation: Expected) -> None:
    """Nothing failed, Canvas holds exactly what the rules put there, once each, and the run lists
    exactly what they leave out (``tests/provisioning_ledger.py``)."""
    provisioning_ledger.assert_provisioned_in_full(outcome, expectation, held_once(stage.canvas), stage.district)


def assert_each_batch_imported_once(canvas: CanvasEmulator) -> None:
    """No batch applied twice: the imports Canvas applied (imported, with or without messages) all
    carry different rows (the same files zipped again count as the same batch)."""
    twice = [ids for ids in _imports_by_content(canvas).values() if len(ids) > 1]
    assert not twice, f"one batch imported more than once: imports {twice}"


def contents(upload: bytes) -> tuple[tuple[str, bytes], ...]:
    """The CSV files of a zip, without the zip's own bytes (a timestamp differs if zipped again)."""
    with zipfile.ZipFile(io.BytesIO(upload)) as archive:
        return tuple((name, archive.read(name)) for name in sorted(archive.namelist()))


def users_csv(upload: bytes) -> bytes | None:
    return dict(contents(upload)).get("users.csv")


def _imports_by_content(canvas: CanvasEmulator) -> dict[tuple, list[int]]:
    """The applied imports (ids) per batch of rows."""
    states = canvas.imports
    by_content: dict[tuple, list[int]] = {}
    for import_id, upload in sorted(canvas.uploads.items()):
        if states[import_id]["workflow_state"] in ("imported", "imported_with_messages"):
            by_content.setdefault(contents(upload), []).append(import_id)
    return by_content


def _imports_by_upload(canvas: CanvasEmulator) -> dict[bytes, list[int]]:
    by_upload: dict[bytes, list[int]] = {}
    for import_id, upload in sorted(canvas.uploads.items()):
        by_upload.setdefault(upload, []).append(import_id)
    return by_upload


def wait_until_final(canvas: CanvasEmulator, import_id: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while (state := canvas.imports[import_id])["workflow_state"] in ("created", "importing"):
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    return state


def assert_no_student_data(stage: Stage, text: str) -> None:
    assert TOKEN not in text and CLIENT_SECRET not in text and "Bearer " not in text
    for user in stage.district.records("users", "1.2"):
        for value in (user.get("username"), user.get("familyName"), rules.user_uid(user), user.get("email")):
            if value and len(str(value)) > 3:
                assert str(value) not in text, "a person's data in the message"


# -- the scenarios ----------------------------------------------------------------------------------


def test_canvas_import_failed_with_messages_fails_its_rows_skips_their_enrollments_next_night_imports(stage):
    """Canvas ends the sections' import (24 classes: one import) failed_with_messages, having applied
    nothing: its sections are listed failed with Canvas's state, their enrollments skipped as their
    section is not in Canvas, everything else is in; the next night imports them, nothing lost,
    nothing twice."""
    canvas = stage.canvas
    expectation = stage.expected(night(0))
    sections = len(expectation.present["section"])
    canvas.inject("import_fails", times=batches(sections), after=imports_before(expectation, "section"))
    first = stage.run(night(0))
    assert first.state == "success", first.task_states
    failed_imports = [number for number, job in canvas.imports.items()
                      if job["workflow_state"] == "failed_with_messages"]
    assert len(failed_imports) == batches(sections)
    assert all(files_of(canvas.uploads[number]) == {"courses.csv", "sections.csv"}
               for number in failed_imports)
    failed, skipped = listed(first, stage.district)
    assert set(failed["section"]) == expectation.present["section"]
    assert all(any(f"Canvas SIS import {number} ended failed_with_messages: not confirmed" in error
                   for number in failed_imports) for error in failed["section"].values())
    assert not set(failed["section"]) & set(canvas.courses), "a failed import applied nothing"
    orphans = {key for key in expectation.present["enrollment"] if key.split(":")[0] in failed["section"]}
    assert orphans and {skipped["enrollment"].get(key) for key in orphans} == {rules.SECTION_NOT_PROVISIONED}
    report = report_of(first)
    assert counted(report, "section", "failed") == len(failed["section"])
    assert counted(report, "enrollment", "skipped", rules.SECTION_NOT_PROVISIONED) >= len(orphans)
    (mail,) = stage.smtp.wait_for(1)
    assert mail.envelope_to == NOTIFIED and f"section: {len(failed['section'])} failed" in mail.body
    assert_no_student_data(stage, mail.body)
    ledger(stage, "provisioning: Canvas import failed_with_messages", len(failed_imports), first, expectation)

    second = stage.run(night(1))
    assert_provisioned_in_full(stage, second, stage.expected(night(1)))
    assert counted(report_of(second), "section", "created") == len(failed["section"])
    assert counted(report_of(second), "enrollment", "created") == len(orphans)
    assert_each_batch_imported_once(canvas)


def test_canvas_throttling_403_on_uploads_and_polls_is_retried_and_everything_imported(stage):
    """Canvas answers 403 (Rate Limit Exceeded), no Retry-After: the first upload twice, polls five
    times. Each is retried after a backoff; the run is clean and no batch is imported twice."""
    canvas = stage.canvas
    expectation = stage.expected(night(0))
    # the hook reads the newest import, posts, and before posting again lists the imports since:
    # the first POST is the 2nd call to the imports' path, the retried one the 4th
    canvas.inject("throttle", times=1, after=1, path_contains=UPLOADS)
    canvas.inject("throttle", times=1, after=2, path_contains=UPLOADS)
    canvas.inject("throttle", times=3, path_contains=POLLS)
    canvas.inject("throttle", times=2, after=10, path_contains=POLLS)  # later polls, of whichever import
    outcome = stage.run(night(0))
    assert_provisioned_in_full(stage, outcome, expectation)
    requests = canvas.requests
    throttled = [request for request in requests if request.status == 403]
    assert Counter(request.method for request in throttled) == {"POST": 2, "GET": 5}
    assert all(POLLS in request.path for request in throttled if request.method == "GET")
    assert all(request.response_headers.get("X-Rate-Limit-Remaining") == "0" for request in throttled)
    for request in throttled:
        again = [later for later in requests if later.method == request.method and later.path == request.path
                 and later.started > request.ended and later.status == 200]
        assert again and again[0].started - request.ended >= 0.05 - 0.01, f"{request.method} {request.path}"
    posted = [request for request in requests if request.method == "POST" and request.status == 200]
    assert len(posted) == len(canvas.imports) == canvas.imports_received
    assert_each_batch_imported_once(canvas)
    ledger(stage, "provisioning: Canvas 403 Rate Limit Exceeded", len(throttled), outcome, expectation)


def test_canvas_import_stuck_past_the_timeout_fails_the_task_loudly_then_the_rerun_imports_it_all(stage):
    """The users' first import stays importing past import_timeout_seconds (2 s): provision.users
    fails (the run fails, the district is emailed) and records no user. Once the stuck import is
    released (it finishes) the night's re-run waits for that import (its id is in the task's
    receipts) instead of uploading the batch again, and imports the rest; nothing is held twice."""
    canvas = stage.canvas
    stage.connect_canvas(import_timeout_seconds=2)
    expectation = stage.expected(night(0))
    canvas.inject("stuck", times=1, after=imports_before(expectation, "user"))
    started = time.monotonic()
    broken = stage.run(night(0))
    assert broken.state == "failed", broken.task_states
    assert broken.task_states["provision.users"] == "failed"
    before = ("buildings", "grading_periods")
    assert {broken.task_states[f"provision.{task}"] for task in before} == {"success"}
    assert "provision.users" not in broken.returned, "no user recorded"
    later = ("guardian_links", "sections", "enrollments", "sync_report")
    assert all(broken.task_states[f"provision.{task}"] != "success" for task in later)
    (stuck,) = [number for number, job in canvas.imports.items() if job["workflow_state"] == "importing"]
    assert "users.csv" in files_of(canvas.uploads[stuck])
    assert max(canvas.imports) == stuck, "nothing uploaded behind the stuck import"
    assert not canvas.users and not canvas.enrollments, "the stuck import applied nothing"
    assert time.monotonic() - started < 120
    (mail,) = stage.smtp.wait_for(1)
    assert mail.envelope_to == NOTIFIED
    assert mail.subject == f"[oneroster {DAG_ID}] provision.users failed in run {broken.run_id}"
    assert f"Canvas SIS import {stuck} is still importing" in mail.text and "after 2 s" in mail.text
    assert_no_student_data(stage, mail.body)

    canvas.release_stuck()
    assert wait_until_final(canvas, stuck)["workflow_state"] == "imported"
    stage.smtp.clear()
    rerun = stage.run(night(0))  # the night re-run: its failed task cleared
    assert rerun.run_id == broken.run_id
    assert_provisioned_in_full(stage, rerun, expectation)
    report = report_of(rerun)
    assert counted(report, "user", "created") == len(expectation.present["user"]), "the failed try kept none"
    assert counted(report, "building", "unchanged") == len(expectation.present["building"])
    assert len(canvas.users) == len(expectation.present["user"]), "every user once, nothing else"
    stuck_rows = users_csv(canvas.uploads[stuck])
    again = [number for number, upload in canvas.uploads.items() if users_csv(upload) == stuck_rows]
    assert again == [stuck], "the re-run waited for the stuck import: its batch was not uploaded again"
    assert_each_batch_imported_once(canvas)
    assert not stage.smtp.messages
    ledger(stage, "provisioning: Canvas import stuck past import_timeout", 1, rerun, expectation)


def test_a_zip_canvas_refuses_fails_the_task_naming_canvas_answer_then_the_next_night_imports_it_all(stage):
    """Canvas answers the users' first upload 400: provision.users fails at once (no retry of a
    refusal), the email names Canvas's answer and no person; nothing is lost: the next night imports
    everything."""
    canvas = stage.canvas
    expectation = stage.expected(night(0))
    canvas.inject("refuse_zip", times=1, after=imports_before(expectation, "user"))
    broken = stage.run(night(0))
    assert broken.state == "failed", broken.task_states
    assert broken.task_states["provision.users"] == "failed"
    refused = [request for request in canvas.requests if request.status == 400]
    assert len(refused) == 1 and refused[0].method == "POST" and "users.csv" in files_of(refused[0].body)
    posted = [request.body for request in canvas.requests if request.method == "POST"]
    assert posted.count(refused[0].body) == 1, "a refusal is not retried"
    assert not canvas.users
    (mail,) = stage.smtp.wait_for(1)
    assert mail.envelope_to == NOTIFIED
    assert mail.subject == f"[oneroster {DAG_ID}] provision.users failed in run {broken.run_id}"
    assert ("Canvas answered 400 to POST /api/v1/accounts/1/sis_imports: "
            "The uploaded file could not be accepted") in mail.text
    assert_no_student_data(stage, mail.body)

    stage.smtp.clear()
    after = stage.expected(night(1))
    second = stage.run(night(1))
    assert_provisioned_in_full(stage, second, after)
    assert counted(report_of(second), "user", "created") == len(after.present["user"])
    assert_each_batch_imported_once(canvas)
    ledger(stage, "provisioning: Canvas refuses a zip (400)", 1, second, after)


def test_canvas_500_on_uploads_is_retried_without_importing_a_batch_twice(stage):
    """Canvas answers 500 to the first upload before taking it (the emulator's ``500``), and to the
    users' first upload after taking it. The first is posted again; the second is found among
    Canvas's imports and not posted again. Each batch is one import; everything is in."""
    canvas = stage.canvas
    expectation = stage.expected(night(0))
    canvas.inject("500", times=1, after=1, path_contains=UPLOADS)  # the first POST, after the newest is read
    # the users' first upload: the uploads this fault sees are those after the first POST (the 500's)
    canvas.inject("taken_then_500", times=1, after=imports_before(expectation, "user"), path_contains=UPLOADS)
    outcome = stage.run(night(0))
    assert_provisioned_in_full(stage, outcome, expectation)
    requests = canvas.requests
    errors = [request for request in requests if request.status == 500]
    assert [request.method for request in errors] == ["POST", "POST"]
    unread, taken = errors
    posts = Counter(request.body for request in requests if request.method == "POST")
    assert posts[unread.body] == 2, "not taken: posted again"
    assert posts[taken.body] == 1, "taken: found among the imports, not posted again"
    by_upload = _imports_by_upload(canvas)
    assert len(by_upload[unread.body]) == 1 and len(by_upload[taken.body]) == 1
    assert "users.csv" in files_of(taken.body)
    assert_each_batch_imported_once(canvas)
    assert len(canvas.imports) == len(by_upload)
    ledger(stage, "provisioning: Canvas 500 on upload", len(errors), outcome, expectation)

