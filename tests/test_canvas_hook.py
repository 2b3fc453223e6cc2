"""The Canvas hook against the Canvas emulator over real HTTP on 127.0.0.1.

Expected values are read from the CSV each test uploads, not from the emulator."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import jsonschema
import pytest
import requests
import structlog

from include.sandbox.canvas_emulator import CanvasEmulator
from plugins.hooks.api_hook import SHARED_EXTRAS, TRANSPORT_EXTRAS, ConnectionSettingsError
from plugins.hooks.canvas import (
    CanvasCredentialsError,
    CanvasHook,
    CanvasImportPendingError,
    CanvasRequestError,
    CanvasUnavailableError,
    CanvasUploadUnconfirmedError,
    ImportPace,
)
from plugins.hooks.provider_info import CANVAS_CONN_TYPE, get_provider_info
from tests.test_connection_types import fresh_airflow_env, run_json

TOKEN = "canvas-admin-token-value"
CONN = "canvas_test"
FAST = {"backoff_base": 0.01, "backoff_max": 0.05}
AIRFLOW = Path(jsonschema.__file__).parent.parent / "airflow"  # the installed Airflow package

USERS = """user_id,login_id,first_name,last_name,email,status
u1,ada,Ada,Lovelace,ada@example.test,active
u2,alan,Alan,Turing,alan@example.test,active
t1,grace,Grace,Hopper,grace@example.test,active
"""
COURSES = """course_id,short_name,long_name,status
C1,ALG1,Algebra I,active
C2,BIO,"Biology, Honors",active
"""
SECTIONS = """section_id,course_id,name,status
S1,C1,Algebra P1,active
S2,C2,Biology P2,active
"""
ENROLLMENTS = """course_id,section_id,user_id,role,status
C1,S1,u1,student,active
C1,S1,t1,teacher,active
C2,S2,u2,student,active
"""
ROSTER = {"users.csv": USERS, "courses.csv": COURSES, "sections.csv": SECTIONS, "enrollments.csv": ENROLLMENTS}


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def connect(monkeypatch, canvas: CanvasEmulator, *, token: str = TOKEN, host: str | None = None,
            conn_id: str = CONN, **extras) -> str:
    """An Airflow connection to the emulator, as the environment variable Airflow reads."""
    extra = {"account_id": canvas.account_id, "poll_seconds": 0.02, **extras}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": CANVAS_CONN_TYPE, "host": host or canvas.base_url, "password": token,
        "extra": {name: value for name, value in extra.items() if value is not None}}))
    return conn_id


@pytest.fixture
def canvas():
    with CanvasEmulator(token=TOKEN, account_id="1") as emulator:
        yield emulator


@pytest.fixture
def hook(canvas, monkeypatch) -> CanvasHook:
    return CanvasHook(connect(monkeypatch, canvas), **FAST)


def posts(canvas: CanvasEmulator) -> list:
    return [r for r in canvas.requests if r.method == "POST"]


def import_courses(hook: CanvasHook, number: int) -> list[str]:
    course_ids = [f"K{n:03}" for n in range(number)]
    text = "course_id,short_name,long_name,status\n" + "".join(f"{c},{c},Course {c},active\n" for c in course_ids)
    assert hook.wait_for_sis_import(hook.start_sis_import(zipped({"courses.csv": text})), 10).succeeded
    return course_ids


def test_an_import_round_trip_uploads_the_zip_raw_and_reads_the_final_state(hook, canvas):
    data = zipped(ROSTER)
    import_id = hook.start_sis_import(data, diffing_data_set_identifier="district:roster", change_threshold=20)
    result = hook.wait_for_sis_import(import_id, timeout=10)

    assert result.id == import_id and result.workflow_state == "imported" and result.progress == 100
    assert result.finished and result.succeeded
    assert result.processing_warnings == [] and result.processing_errors == []
    for name, text in ROSTER.items():
        assert result.counts[name.removesuffix(".csv")] == len(rows(text)), name
    assert {u: (v["login_id"], v["status"]) for u, v in canvas.users.items()} == \
        {r["user_id"]: (r["login_id"], r["status"]) for r in rows(USERS)}
    assert set(canvas.courses) == {r["course_id"] for r in rows(COURSES)}
    assert set(canvas.sections) == {r["section_id"] for r in rows(SECTIONS)}
    assert set(canvas.enrollments) == {f"{r['course_id']}:{r['section_id']}:{r['user_id']}:{r['role']}"
                                       for r in rows(ENROLLMENTS)}

    upload, = posts(canvas)
    assert upload.path == "/api/v1/accounts/1/sis_imports" and upload.body == data
    assert upload.headers["Content-Type"] == "application/zip"
    assert upload.headers["Authorization"] == f"Bearer {TOKEN}"
    assert upload.query == {"import_type": "instructure_csv", "extension": "zip",
                            "diffing_data_set_identifier": "district:roster", "change_threshold": "20"}
    assert all(TOKEN not in json.dumps(r.query) for r in canvas.requests), "the token never goes in a URL"
    assert canvas.imports[import_id]["diffing_data_set_identifier"] == "district:roster"


def test_warnings_and_errors_are_mapped_into_the_result_and_not_logged(hook, canvas):
    users = USERS + "u9,,Nina,Noname,nina@example.test,active\n"
    with structlog.testing.capture_logs() as logs:
        result = hook.wait_for_sis_import(hook.start_sis_import(zipped({
            "users.csv": users, "grades.csv": "student,score\nu1,93\n"})), timeout=10)
    assert result.workflow_state == "failed_with_messages" and result.finished and not result.succeeded
    assert result.processing_warnings == [("users.csv", "No login_id given for user u9")]
    assert result.processing_errors == [("grades.csv", "Couldn't find Canvas CSV import headers")]
    assert result.counts["users"] == len(rows(USERS)) and result.counts["warning_count"] == 1
    logged = json.dumps(logs, default=str)
    assert f"SIS import {result.id} ended failed_with_messages: 1 warning(s), 1 error(s)" in logged
    assert "u9" not in logged and "Nina" not in logged and "login_id" not in logged and TOKEN not in logged


def test_get_all_follows_the_link_header_with_per_page_100(hook, canvas):
    course_ids = import_courses(hook, 250)
    before = len(canvas.requests)
    listed = hook.get_all("accounts/1/courses")
    assert sorted(course["sis_course_id"] for course in listed) == course_ids
    pages = canvas.requests[before:]
    assert [(r.method, r.path) for r in pages] == [("GET", "/api/v1/accounts/1/courses")] * 3
    assert [r.query["per_page"] for r in pages] == ["100"] * 3
    imports = hook.get_all("accounts/1/sis_imports", key="sis_imports")
    assert [record["workflow_state"] for record in imports] == ["imported"]


def test_a_next_link_to_another_host_is_not_followed(canvas, monkeypatch):
    """The emulator links its pages on 127.0.0.1; a connection to ``localhost`` sees another host."""
    hook = CanvasHook(connect(monkeypatch, canvas, host=canvas.base_url.replace("127.0.0.1", "localhost")), **FAST)
    import_courses(hook, 101)
    before = len(canvas.requests)
    with pytest.raises(CanvasRequestError, match="next-page link leaves"):
        hook.get_all("accounts/1/courses")
    assert len(canvas.requests) == before + 1, "the first page only"


@pytest.mark.parametrize("throttle_status", [403, 429])
def test_a_throttled_call_is_retried_with_backoff_until_it_succeeds(monkeypatch, throttle_status):
    with CanvasEmulator(token=TOKEN, throttle_status=throttle_status) as canvas:
        hook = CanvasHook(connect(monkeypatch, canvas), **FAST)
        import_id = hook.start_sis_import(zipped({"users.csv": USERS}))
        hook.wait_for_sis_import(import_id, timeout=10)
        canvas.inject("throttle", times=2)
        before = len(canvas.requests)
        assert hook.sis_import(import_id).workflow_state == "imported"
        answers = [r.status for r in canvas.requests[before:]]
    assert answers == [throttle_status, throttle_status, 200], "three attempts"
    assert hook.retry_count == 2 and canvas.rate_limited == 2


def test_a_spent_quota_is_waited_out(monkeypatch):
    with CanvasEmulator(token=TOKEN, rate_limit_quota=2, rate_limit_drain=20) as canvas:
        hook = CanvasHook(connect(monkeypatch, canvas), backoff_base=0.1, backoff_max=0.2)
        assert hook.get_all("accounts/1/sis_imports", key="sis_imports") == []
        for _ in range(4):
            hook.get_all("accounts/1/courses")
    assert canvas.rate_limited >= 1 and hook.retry_count == canvas.rate_limited


def test_a_wrong_token_fails_at_once_without_repeating_it(canvas, monkeypatch):
    wrong = "not-the-canvas-token"
    hook = CanvasHook(connect(monkeypatch, canvas, token=wrong), **FAST)
    with pytest.raises(CanvasCredentialsError) as raised:
        hook.start_sis_import(zipped({"users.csv": USERS}))
    message = str(raised.value)
    assert "401" in message and "Invalid access token." in message and "root account 1" in message
    assert wrong not in message and TOKEN not in message
    assert len(canvas.requests) == 1 and posts(canvas) == [], "not retried, nothing uploaded"


def test_a_403_that_is_not_the_throttle_is_a_permission_failure(hook, canvas, monkeypatch):
    """Canvas answers an action the token's user may not take with its JSON errors, not the
    throttle's text: not retried."""
    def forbidden(method, url, **kwargs):
        response = requests.Response()
        response.status_code, response.url = 403, url
        response.headers["X-Rate-Limit-Remaining"] = "600"
        response._content = json.dumps({"status": "unauthorized",
                                         "errors": [{"message": "user not authorized to perform that action"}]}).encode()
        return response

    monkeypatch.setattr(hook._session, "request", forbidden)
    with pytest.raises(CanvasCredentialsError, match="user not authorized to perform that action") as raised:
        hook.sis_import(1)
    assert "allowed to import SIS data" in str(raised.value) and TOKEN not in str(raised.value)
    assert hook.retry_count == 0


@pytest.mark.parametrize("account_id", [None, ""])
def test_a_connection_without_account_id_fails_naming_it(canvas, monkeypatch, account_id):
    hook = CanvasHook(connect(monkeypatch, canvas, account_id=account_id), **FAST)
    with pytest.raises(ConnectionSettingsError, match=f"Connection '{CONN}': extra account_id"):
        hook.start_sis_import(zipped({"users.csv": USERS}))
    assert canvas.requests == []


def test_an_unknown_extra_or_a_bad_poll_interval_fails_naming_it(canvas, monkeypatch):
    with pytest.raises(ConnectionSettingsError, match="accountid"):
        CanvasHook(connect(monkeypatch, canvas, accountid="1")).sis_import(1)
    with pytest.raises(ConnectionSettingsError, match="poll_seconds must be a number of seconds above 0"):
        CanvasHook(connect(monkeypatch, canvas, poll_seconds=0)).sis_import(1)
    assert canvas.requests == []


def test_waiting_on_a_stuck_import_times_out_with_its_state_and_id(hook, canvas):
    canvas.inject("stuck")
    import_id = hook.start_sis_import(zipped({"users.csv": USERS}))
    with pytest.raises(CanvasImportPendingError) as raised:
        hook.wait_for_sis_import(import_id, timeout=0.3)
    error = raised.value
    assert error.import_id == import_id and error.workflow_state in {"created", "importing"}
    assert f"SIS import {import_id} is still {error.workflow_state}" in str(error) and "after 0.3 s" in str(error)
    assert canvas.imports_received == 1 and len(posts(canvas)) == 1, "waiting never uploads again"


def reads_of_an_import(queued: float, importing: float, longest: float = 10.0) -> tuple[float, int]:
    """An import queued ``queued`` seconds after its upload, then under way ``importing`` seconds with
    its progress moving evenly (as Canvas reports it, whole percents), read as :class:`ImportPace`
    says: how long after its end the read that finds it finished comes, and how many reads it took."""
    pace, now, reads = ImportPace(longest), 0.0, 0
    while True:
        reads += 1
        if now >= queued + importing:
            return now - (queued + importing), reads
        progress = 0 if now < queued else min(99, int(100 * (now - queued) / importing))
        wait = pace.next_wait(progress, now)
        assert 0 < wait <= longest
        now += wait


@pytest.mark.parametrize("importing", [2.0, 10.0, 30.0, 120.0, 600.0, 3600.0])
def test_an_import_is_read_soon_after_it_ends_without_reading_it_all_the_time(importing):
    late, reads = reads_of_an_import(queued=1.0, importing=importing)
    assert late <= max(0.5, importing / 100), "Canvas runs the imports one after the other: a late read delays the next"
    assert reads <= importing / 10.0 + 20, "no more reads than one per poll_seconds, past the first few"


def test_while_an_import_is_queued_the_reads_space_out_up_to_poll_seconds():
    pace = ImportPace(longest=4.0)
    waits = [pace.next_wait(0, float(second)) for second in range(12)]
    assert waits[0] == 0.25 and waits[-1] == 4.0
    assert all(later == min(4.0, earlier * 1.5) for earlier, later in zip(waits, waits[1:], strict=False))


def test_a_refused_upload_fails_clearly_and_is_not_sent_again(hook, canvas):
    canvas.inject("refuse_zip")
    with pytest.raises(CanvasRequestError, match="400 to POST /api/v1/accounts/1/sis_imports: The uploaded file "
                                                 "could not be accepted"):
        hook.start_sis_import(zipped({"users.csv": USERS}))
    assert len(posts(canvas)) == 1 and canvas.imports_received == 0


def test_an_upload_answered_500_is_sent_again_once_canvas_lists_no_import_from_it(hook, canvas):
    canvas.inject("500", path_contains="sis_imports", after=1)  # the POST, after the look at the newest import
    import_id = hook.start_sis_import(zipped({"users.csv": USERS}))
    assert len(posts(canvas)) == 2 and canvas.imports_received == 1
    assert list(canvas.imports) == [import_id]


def test_an_upload_whose_answer_is_lost_is_found_in_canvas_and_not_sent_again(hook, canvas, monkeypatch):
    """Canvas took the zip but the answer never came back (a read timeout): the retry finds the
    import in Canvas's list, newer than the one listed before the upload, and returns it."""
    hook.wait_for_sis_import(hook.start_sis_import(zipped({"courses.csv": COURSES})), timeout=10)
    send = hook._session.request
    lost = []

    def answer_lost(method, url, **kwargs):
        response = send(method, url, **kwargs)
        if method == "POST" and not lost:
            lost.append(response)
            raise requests.ReadTimeout("read timed out")
        return response

    monkeypatch.setattr(hook._session, "request", answer_lost)
    import_id = hook.start_sis_import(zipped({"users.csv": USERS}), diffing_data_set_identifier="roster")
    assert import_id == lost[0].json()["id"] and canvas.imports_received == 2
    assert len(posts(canvas)) == 2, "one upload each"
    assert hook.wait_for_sis_import(import_id, timeout=10).counts["users"] == len(rows(USERS))


def test_an_upload_that_never_gets_an_answer_fails_saying_it_may_have_reached_canvas(canvas, monkeypatch):
    hook = CanvasHook(connect(monkeypatch, canvas), max_attempts=3, **FAST)
    send = hook._session.request

    def no_answer(method, url, **kwargs):
        if method == "POST":
            raise requests.ReadTimeout("read timed out")
        return send(method, url, **kwargs)

    monkeypatch.setattr(hook._session, "request", no_answer)
    with pytest.raises(CanvasUnavailableError, match="after 3 attempts.*may still have reached Canvas: look for a "
                                                     "SIS import newer than none"):
        hook.start_sis_import(zipped({"users.csv": USERS}))
    assert [r.path for r in canvas.requests] == ["/api/v1/accounts/1/sis_imports"] * 3, \
        "the newest import read once, then looked for before each of the two posts sent again"


def test_a_lost_answer_with_several_candidate_imports_fails_naming_them(hook, canvas, monkeypatch):
    send = hook._session.request

    def two_uploads_then_lost(method, url, **kwargs):
        if method == "POST":
            send(method, url, **kwargs)  # another uploader's import, arriving meanwhile
            send(method, url, **kwargs)
            raise requests.ConnectionError("connection reset")
        return send(method, url, **kwargs)

    monkeypatch.setattr(hook._session, "request", two_uploads_then_lost)
    with pytest.raises(CanvasUploadUnconfirmedError, match=r"lists 2 SIS imports newer than none \(2, 1\)"):
        hook.start_sis_import(zipped({"users.csv": USERS}))
    assert canvas.imports_received == 2


# -- the connection form ------------------------------------------------------------------------

def test_test_connection_reads_the_root_accounts_sis_imports(hook, canvas):
    ok, message = hook.test_connection()
    assert ok, message
    assert "root account 1" in message and "no SIS import yet" in message and TOKEN not in message
    assert [(r.method, r.path, r.query) for r in canvas.requests] == [
        ("GET", "/api/v1/accounts/1/sis_imports", {"per_page": "1"})]


def test_test_connection_fails_with_the_reason(canvas, monkeypatch):
    wrong = "a-wrong-token-typed-in-the-form"
    ok, message = CanvasHook(connect(monkeypatch, canvas, token=wrong)).test_connection()
    assert not ok and "refused the access token" in message and wrong not in message, message
    ok, message = CanvasHook(connect(monkeypatch, canvas, account_id="999")).test_connection()
    assert not ok and "404" in message and "does not exist" in message, message
    ok, message = CanvasHook(connect(monkeypatch, canvas, account_id="")).test_connection()
    assert not ok and "account_id" in message, message
    assert len(canvas.requests) == 2, "nothing is sent for a connection set up wrongly"


def test_the_provider_info_declares_the_canvas_form():
    info = get_provider_info()
    jsonschema.validate(info, json.loads((AIRFLOW / "provider_info.schema.json").read_text()))
    entry, = [entry for entry in info["connection-types"] if entry["connection-type"] == CANVAS_CONN_TYPE]
    assert entry["hook-class-name"] == f"{CanvasHook.__module__}.{CanvasHook.__name__}"
    assert entry["connection-type"] == CanvasHook.conn_type
    fields = set(entry["conn-fields"])
    assert CanvasHook.OWN_EXTRAS <= fields <= CanvasHook.OWN_EXTRAS | SHARED_EXTRAS
    assert not fields & TRANSPORT_EXTRAS
    assert all(field.get("description") for field in entry["conn-fields"].values())
    behaviour = entry["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"schema", "port", "login"}
    assert behaviour["relabeling"]["password"] == "Access token"
    assert behaviour["placeholders"]["host"] == "https://district.instructure.com"


LIST_CANVAS = r"""
import json
from airflow.providers_manager import ProvidersManager

manager = ProvidersManager()
hook = manager.hooks["canvas"]
print(json.dumps({
    "hook": {"class": hook.hook_class_name, "name": hook.hook_name, "testable": hook.connection_testable,
             "conn_id_attr": hook.connection_id_attribute_name},
    "fields": sorted(w.field_name for key, w in manager.connection_form_widgets.items()
                     if key.startswith("extra__canvas__")),
    "behaviour": manager.field_behaviours.get("canvas"),
}))
"""


def test_providers_manager_lists_the_canvas_type_with_its_fields(tmp_path):
    listed = run_json(LIST_CANVAS, fresh_airflow_env(tmp_path))
    assert listed["hook"] == {"class": "plugins.hooks.canvas.CanvasHook", "name": "Canvas", "testable": True,
                              "conn_id_attr": "canvas_conn_id"}
    assert listed["fields"] == sorted(CanvasHook.OWN_EXTRAS | {"read_timeout"})
    assert listed["behaviour"]["relabeling"]["password"] == "Access token"
    assert "login" in listed["behaviour"]["hidden_fields"]
