"""The Canvas SIS Import emulator over real HTTP on 127.0.0.1, driven the way Canvas's docs describe.

Expected values are read from the CSV each test sends, not from the emulator."""

from __future__ import annotations

import csv
import io
import re
import time
import zipfile

import pytest
import requests

from include.sandbox.canvas_emulator import CanvasEmulator

TOKEN = "canvas-test-token"
FINAL = {"imported", "imported_with_messages", "aborted", "failed", "failed_with_messages"}
IMPORTS = "accounts/1/sis_imports"
ZIP = {"Content-Type": "application/zip"}
CSV = {"Content-Type": "text/csv"}

ACCOUNTS = """account_id,parent_account_id,name,status
A1,,North High,active
A2,A1,Math Department,active
"""
TERMS = """term_id,name,status,start_date,end_date
T1,Fall 2026,active,2026-08-20T00:00:00Z,2026-12-20T00:00:00Z
T2,Spring 2027,active,,
"""
COURSES = """course_id,short_name,long_name,account_id,term_id,status
C1,ALG1,Algebra I,A2,T1,active
C2,BIO,"Biology, Honors",A1,T1,active
C3,ART,Art,A1,T2,active
"""
SECTIONS = """section_id,course_id,name,status,start_date,end_date
S1,C1,Algebra P1,active,,
S2,C2,Biology P2,active,,
S3,C3,Art P3,active,,
"""
USERS = """user_id,login_id,first_name,last_name,email,status
u1,ada,Ada,Lovelace,ada@example.test,active
u2,alan,Alan,Turing,alan@example.test,active
t1,grace,Grace,Hopper,grace@example.test,active
p1,parent1,Pat,Lovelace,pat@example.test,active
"""
ENROLLMENTS = """course_id,section_id,user_id,role,status,associated_user_id
C1,S1,u1,student,active,
C1,S1,t1,teacher,active,
C2,S2,u2,student,active,
C3,S3,u1,student,active,
C1,S1,p1,observer,active,u1
"""
DISTRICT = {"accounts.csv": ACCOUNTS, "terms.csv": TERMS, "courses.csv": COURSES, "sections.csv": SECTIONS,
            "users.csv": USERS, "enrollments.csv": ENROLLMENTS}


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def enrollment_key(row: dict[str, str]) -> str:
    """The emulator's documented key: course_id:section_id:user_id:role[:associated_user_id]."""
    key = f"{row['course_id']}:{row['section_id']}:{row['user_id']}:{row['role']}"
    observed = row["role"] == "observer" and row.get("associated_user_id")
    return key + (f":{row['associated_user_id']}" if observed else "")


def zipped(files: dict[str, str | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def api(canvas: CanvasEmulator, method: str, path: str, *, token: str | None = TOKEN,
        **kwargs) -> requests.Response:
    headers = {**({"Authorization": f"Bearer {token}"} if token else {}), **kwargs.pop("headers", {})}
    url = path if path.startswith("http") else f"{canvas.base_url}/api/v1/{path}"
    return requests.request(method, url, headers=headers, timeout=10, **kwargs)


def upload(canvas: CanvasEmulator, files: dict[str, str | bytes], **params) -> dict:
    """POST a zip of ``files`` as a multipart ``attachment``; the SisImport answered."""
    response = api(canvas, "POST", IMPORTS, params={"import_type": "instructure_csv"}, data=params,
                   files={"attachment": ("sis_upload.zip", zipped(files), "application/zip")})
    assert response.status_code == 200, response.text
    return response.json()


def wait_final(canvas: CanvasEmulator, import_id: int, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api(canvas, "GET", f"{IMPORTS}/{import_id}").json()
        if status["workflow_state"] in FINAL:
            return status
        time.sleep(0.02)
    raise AssertionError(f"import {import_id} did not finish: {status}")


def imported(canvas: CanvasEmulator, files: dict[str, str | bytes], **params) -> dict:
    return wait_final(canvas, upload(canvas, files, **params)["id"])


def links(response: requests.Response) -> dict[str, str]:
    found = re.findall(r'<([^>]+)>; rel="([^"]+)"', response.headers.get("Link", ""))
    return {rel: url for url, rel in found}


@pytest.fixture
def canvas():
    with CanvasEmulator(token=TOKEN, account_id="1") as emulator:
        yield emulator


def test_bearer_token_is_required(canvas):
    assert canvas.base_url.startswith("http://127.0.0.1:")
    missing = api(canvas, "GET", IMPORTS, token=None)
    assert missing.status_code == 401
    assert missing.json() == {"status": "unauthenticated",
                              "errors": [{"message": "user authorization required"}]}
    wrong = api(canvas, "GET", IMPORTS, token="not-the-token")
    assert wrong.status_code == 401 and wrong.json()["errors"][0]["message"] == "Invalid access token."
    assert api(canvas, "GET", IMPORTS).status_code == 200
    assert api(canvas, "GET", IMPORTS, token=None, params={"access_token": TOKEN}).status_code == 200


def test_a_zip_posted_as_multipart_attachment_is_imported_into_canvas_state(canvas):
    answer = upload(canvas, DISTRICT)
    assert answer["workflow_state"] == "created" and answer["data"]["import_type"] == "instructure_csv"
    assert "processing_warnings" not in answer and "processing_errors" not in answer
    final = wait_final(canvas, answer["id"])
    assert final["workflow_state"] == "imported" and final["progress"] == 100
    assert final["data"]["supplied_batches"] == ["account", "term", "course", "section", "user", "enrollment"]
    counts = final["data"]["counts"]
    for name, text in DISTRICT.items():
        assert counts[name.removesuffix(".csv")] == len(rows(text)), name
    assert counts["error_count"] == counts["warning_count"] == 0

    assert {a: (v["parent_account_id"], v["name"]) for a, v in canvas.accounts.items()} == \
        {r["account_id"]: (r["parent_account_id"], r["name"]) for r in rows(ACCOUNTS)}
    assert {t: v["name"] for t, v in canvas.terms.items()} == {r["term_id"]: r["name"] for r in rows(TERMS)}
    assert {u: (v["login_id"], v["email"], v["status"]) for u, v in canvas.users.items()} == \
        {r["user_id"]: (r["login_id"], r["email"], r["status"]) for r in rows(USERS)}
    course_fields = ("short_name", "long_name", "account_id", "term_id")
    assert {c: tuple(v[f] for f in course_fields) for c, v in canvas.courses.items()} == \
        {r["course_id"]: tuple(r[f] for f in course_fields) for r in rows(COURSES)}
    assert {s: (v["course_id"], v["name"]) for s, v in canvas.sections.items()} == \
        {r["section_id"]: (r["course_id"], r["name"]) for r in rows(SECTIONS)}
    assert {k: (v["status"], v["associated_user_id"]) for k, v in canvas.enrollments.items()} == \
        {enrollment_key(r): (r["status"], r["associated_user_id"]) for r in rows(ENROLLMENTS)}

    course = rows(COURSES)[0]
    shown = api(canvas, "GET", f"courses/sis_course_id:{course['course_id']}").json()
    assert shown["name"] == course["long_name"] and shown["course_code"] == course["short_name"]
    assert shown["account_id"] == canvas.accounts[course["account_id"]]["id"]
    assert shown["enrollment_term_id"] == canvas.terms[course["term_id"]]["id"]
    assert shown["workflow_state"] == "unpublished" and shown["sis_import_id"] == answer["id"]


def test_raw_body_uploads_take_their_kind_from_content_type_or_extension(canvas):
    as_zip = api(canvas, "POST", IMPORTS, params={"import_type": "instructure_csv"},
                 data=zipped({"users.csv": USERS}), headers=ZIP)
    assert as_zip.status_code == 200 and as_zip.json()["workflow_state"] == "created"
    assert wait_final(canvas, as_zip.json()["id"])["workflow_state"] == "imported"
    assert set(canvas.users) == {r["user_id"] for r in rows(USERS)}

    as_csv = api(canvas, "POST", IMPORTS, data=COURSES.encode(), headers=CSV)
    assert wait_final(canvas, as_csv.json()["id"])["data"]["counts"]["courses"] == len(rows(COURSES))
    by_extension = api(canvas, "POST", IMPORTS, params={"extension": "csv"}, data=TERMS.encode(),
                       headers={"Content-Type": "application/octet-stream"})
    assert wait_final(canvas, by_extension.json()["id"])["workflow_state"] == "imported"
    assert set(canvas.terms) == {r["term_id"] for r in rows(TERMS)}
    one_csv = api(canvas, "POST", IMPORTS,
                  files={"attachment": ("accounts.csv", ACCOUNTS.encode(), "text/csv")})
    assert wait_final(canvas, one_csv.json()["id"])["data"]["supplied_batches"] == ["account"]

    latin = api(canvas, "POST", IMPORTS, data=USERS.encode(),
                headers={"Content-Type": "text/csv; charset=iso-8859-1"})
    assert latin.status_code == 400 and "UTF-8" in latin.json()["error"]
    no_attachment = api(canvas, "POST", IMPORTS, files={"file": ("users.csv", USERS.encode(), "text/csv")})
    assert no_attachment.status_code == 400 and no_attachment.json()["error_message"] == "Missing attachment"
    other_type = api(canvas, "POST", IMPORTS, params={"import_type": "ims_xml"}, data=b"<x/>",
                     headers={"Content-Type": "text/xml"})
    assert other_type.status_code == 400


def test_an_import_waits_as_created_then_reports_progress_while_importing():
    with CanvasEmulator(token=TOKEN, upload_seconds=0.3, seconds_per_row=0.05) as canvas:
        answer = upload(canvas, DISTRICT)
        seen = [(answer["workflow_state"], answer["progress"])]
        while seen[-1][0] not in FINAL:
            status = api(canvas, "GET", f"{IMPORTS}/{answer['id']}").json()
            seen.append((status["workflow_state"], status["progress"]))
            time.sleep(0.02)
    states = [state for index, (state, _) in enumerate(seen) if index == 0 or seen[index - 1][0] != state]
    assert states == ["created", "importing", "imported"]
    progress = [value for state, value in seen if state == "importing"]
    assert progress == sorted(progress) and any(0 < value < 100 for value in progress)
    assert seen[-1] == ("imported", 100)


def test_rows_canvas_would_refuse_are_skipped_with_its_warnings(canvas):
    users = """user_id,login_id,first_name,last_name,status
u1,ada,Ada,Lovelace,active
u2,,Alan,Turing,active
u3,bob,Bob,Stone,retired
u1,ada,Ada,Lovelace,active
u4,ADA,Copy,Cat,active
"""
    courses = """course_id,short_name,long_name,status
C1,ALG,Algebra,active
C2,BIO,,active
C3,ART,Art,archived
"""
    courses_without_long_name = "course_id,short_name,status\nC4,GEO,active\n"
    sections = "section_id,course_id,name,status\nS1,C1,P1,active\nS9,C9,P9,active\n"
    enrollments = """course_id,section_id,user_id,role,status,associated_user_id
C1,S1,u1,student,active,
C1,S1,u9,student,active,
C1,S8,u1,student,active,
C7,S1,u1,student,active,
C7,,u1,student,active,
C1,S1,u1,principal,active,
C1,S1,u1,teacher,pending,
C1,S1,u1,observer,active,u77
"""
    final = imported(canvas, {"users.csv": users, "courses.csv": courses,
                              "more_courses.csv": courses_without_long_name, "sections.csv": sections,
                              "enrollments.csv": enrollments})
    expected = [
        ["users.csv", "No login_id given for user u2"],
        ["users.csv", "Improper status for user u3"],
        ["users.csv", "Duplicate user id u1"],
        ["users.csv", "user u1 has already claimed u4's requested login information, skipping"],
        ["courses.csv", "No long_name given for course C2"],
        ["courses.csv", 'Improper status "archived" for course C3'],
        ["more_courses.csv", "No long_name given for course C4"],
        ["sections.csv", "Section S9 references course C9 which doesn't exist"],
        ["enrollments.csv", "User not found for enrollment (User ID: u9, Course ID: C1, Section ID: S1)"],
        ["enrollments.csv", "An enrollment referenced a non-existent section S8"],
        ["enrollments.csv", "An enrollment referenced a non-existent course C7"],
        ["enrollments.csv", "Neither course nor section existed for user enrollment "
                            "(Course ID: C7, Section ID: , User ID: u1)"],
        ["enrollments.csv", 'Improper role "principal" for an enrollment'],
        ["enrollments.csv", 'Improper status "pending" for an enrollment'],
        ["enrollments.csv", "An enrollment referenced a non-existent associated user u77"],
    ]
    assert final["workflow_state"] == "imported_with_messages"
    assert sorted(final["processing_warnings"]) == sorted(expected)
    assert "processing_errors" not in final
    assert final["data"]["counts"]["warning_count"] == len(expected)
    assert set(canvas.users) == {"u1"} and set(canvas.courses) == {"C1"} and set(canvas.sections) == {"S1"}
    assert set(canvas.enrollments) == {"C1:S1:u1:student"}


def test_a_file_with_unknown_headers_is_skipped_and_fails_the_import(canvas):
    final = imported(canvas, {"users.csv": USERS, "grades.csv": "student,score\nu1,93\n"})
    assert final["workflow_state"] == "failed_with_messages"
    assert final["processing_errors"] == [["grades.csv", "Couldn't find Canvas CSV import headers"]]
    assert set(canvas.users) == {r["user_id"] for r in rows(USERS)}, "the other files are still applied"


def test_uploads_that_hold_nothing_canvas_can_import_fail(canvas):
    not_a_zip = api(canvas, "POST", IMPORTS, data=b"this is not a zip archive", headers=ZIP)
    final = wait_final(canvas, not_a_zip.json()["id"])
    assert final["workflow_state"] == "failed_with_messages"
    assert final["processing_errors"][0][1].startswith("Error while importing CSV. Please contact support.")

    no_csv = imported(canvas, {"readme.txt": "nothing to see"})
    assert no_csv["workflow_state"] == "failed_with_messages"
    assert no_csv["processing_warnings"] == [["readme.txt", "Skipping unknown file type"]]
    assert no_csv["processing_errors"]

    latin = "user_id,login_id,status\nu1,jos\xe9,active\n".encode("latin-1")
    assert imported(canvas, {"users.csv": latin})["processing_errors"] == [["users.csv", "Invalid UTF-8"]]
    assert canvas.users == {}


def test_a_deleted_row_marks_the_object_deleted_and_a_deleted_user_loses_enrollments(canvas):
    imported(canvas, DISTRICT)
    dropped_section, dropped_user = rows(SECTIONS)[1], rows(USERS)[0]
    changes = {
        "sections.csv": "section_id,course_id,name,status\n"
                        f"{dropped_section['section_id']},{dropped_section['course_id']},x,deleted\n",
        "users.csv": "user_id,login_id,first_name,last_name,status\n"
                     f"{dropped_user['user_id']},{dropped_user['login_id']},A,L,deleted\n",
    }
    assert imported(canvas, changes)["workflow_state"] == "imported"
    assert canvas.sections[dropped_section["section_id"]]["status"] == "deleted"
    assert canvas.users[dropped_user["user_id"]]["status"] == "deleted", "users are never removed"
    for row in rows(ENROLLMENTS):
        expected = "deleted" if row["user_id"] == dropped_user["user_id"] else row["status"]
        assert canvas.enrollments[enrollment_key(row)]["status"] == expected
    listed = api(canvas, "GET", f"courses/sis_course_id:{dropped_section['course_id']}/sections").json()
    assert dropped_section["section_id"] not in {section["sis_section_id"] for section in listed}


def difference(before: str, after: str, key: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """The rows of ``after`` that are new or changed, and the rows of ``before`` missing from it."""
    old = {tuple(r[k] for k in key): r for r in rows(before)}
    new = {tuple(r[k] for k in key): r for r in rows(after)}
    return [r for k, r in new.items() if old.get(k) != r], [r for k, r in old.items() if k not in new]


def test_diffing_applies_only_the_difference_and_drops_missing_rows(canvas):
    imported(canvas, {"courses.csv": COURSES, "sections.csv": SECTIONS})
    user_header = "user_id,login_id,first_name,last_name,status\n"
    enrollment_header = "course_id,section_id,user_id,role,status\n"
    first_users = user_header + "u1,ada,Ada,L,active\nu2,alan,Alan,T,active\nu3,cleo,Cleo,P,active\n"
    first_enrollments = enrollment_header + "C1,S1,u1,student,active\nC1,S1,u2,student,active\n"
    second_users = user_header + "u1,ada,Ada,L,active\nu2,alan,Alan,Turing,active\nu4,dina,Dina,K,active\n"
    second_enrollments = enrollment_header + "C1,S1,u1,student,active\nC2,S2,u4,student,active\n"
    first = imported(canvas, {"users.csv": first_users, "enrollments.csv": first_enrollments},
                     diffing_data_set_identifier="district:roster")
    assert first["workflow_state"] == "imported" and first["diffed_against_import_id"] is None
    second = imported(canvas, {"users.csv": second_users, "enrollments.csv": second_enrollments},
                      diffing_data_set_identifier="district:roster", diffing_drop_status="completed")

    changed_users, removed_users = difference(first_users, second_users, ("user_id",))
    changed_enrollments, removed_enrollments = difference(first_enrollments, second_enrollments,
                                                          ("course_id", "section_id", "user_id", "role"))
    assert second["workflow_state"] == "imported" and second["diffed_against_import_id"] == first["id"]
    assert second["diffing_threshold_exceeded"] is False
    assert second["data"]["counts"]["users"] == len(changed_users) + len(removed_users)
    assert second["data"]["counts"]["enrollments"] == len(changed_enrollments) + len(removed_enrollments)
    users = canvas.users
    for row in changed_users:
        assert users[row["user_id"]]["last_name"] == row["last_name"]
        assert users[row["user_id"]]["sis_import_id"] == second["id"]
    for row in removed_users:
        assert users[row["user_id"]]["status"] == "deleted"
    unchanged = {r["user_id"] for r in rows(second_users)} - {r["user_id"] for r in changed_users}
    assert unchanged and all(users[user]["sis_import_id"] == first["id"] for user in unchanged), \
        "unchanged rows are not applied again"
    for row in removed_enrollments:
        assert canvas.enrollments[enrollment_key(row)]["status"] == "completed", "diffing_drop_status"

    applied = canvas.rows_applied
    same_again = imported(canvas, {"users.csv": second_users, "enrollments.csv": second_enrollments},
                          diffing_data_set_identifier="district:roster")
    assert same_again["workflow_state"] == "imported"
    assert canvas.rows_applied == applied, "an empty diff applies nothing"


def test_diffing_is_skipped_when_the_files_size_changes_beyond_change_threshold(canvas):
    header = "user_id,login_id,first_name,last_name,status\n"
    first_users = header + "".join(f"u{n},login{n},First{n},Last{n},active\n" for n in range(10))
    second_users = header + "u0,login0,First0,Changed,active\nu1,login1,First1,Last1,active\n"
    threshold = 20
    assert abs(1 - len(second_users.encode()) / len(first_users.encode())) * 100 > threshold
    imported(canvas, {"users.csv": first_users}, diffing_data_set_identifier="users")
    second = imported(canvas, {"users.csv": second_users}, diffing_data_set_identifier="users",
                      change_threshold=threshold)
    assert second["workflow_state"] == "imported_with_messages"
    assert second["processing_warnings"] == [
        [None, "Diffing not performed because file size difference exceeded threshold"]]
    assert second["diffing_threshold_exceeded"] is True and second["diffed_against_import_id"] is None
    assert second["data"]["counts"]["users"] == len(rows(second_users)), "the whole import is applied"
    assert all(user["status"] == "active" for user in canvas.users.values()), "no diff, nothing dropped"


def batch_files() -> tuple[dict[str, str], set[str], set[str], set[str]]:
    """A batch for term T1 naming only C1, its section and one enrollment; the courses, sections
    and enrollments of T1 it leaves out, worked out from the CSV."""
    def first_row_only(text: str) -> str:
        return "\n".join(text.splitlines()[:2]) + "\n"

    files = {"courses.csv": first_row_only(COURSES), "sections.csv": first_row_only(SECTIONS),
             "enrollments.csv": first_row_only(ENROLLMENTS)}
    in_term = {r["course_id"] for r in rows(COURSES) if r["term_id"] == "T1"}
    gone_courses = in_term - {r["course_id"] for r in rows(files["courses.csv"])}
    gone_sections = {r["section_id"] for r in rows(SECTIONS) if r["course_id"] in in_term} - \
        {r["section_id"] for r in rows(files["sections.csv"])}
    gone_enrollments = {enrollment_key(r) for r in rows(ENROLLMENTS) if r["course_id"] in in_term} - \
        {enrollment_key(r) for r in rows(files["enrollments.csv"])}
    return files, gone_courses, gone_sections, gone_enrollments


def test_batch_mode_deletes_what_the_term_had_and_the_batch_left_out(canvas):
    imported(canvas, DISTRICT)
    files, gone_courses, gone_sections, gone_enrollments = batch_files()
    final = imported(canvas, files, batch_mode="1", batch_mode_term_id="sis_term_id:T1")
    assert final["workflow_state"] == "imported" and final["batch_mode"] is True
    assert final["batch_mode_term_id"] == canvas.terms["T1"]["id"]
    counts = final["data"]["counts"]
    assert counts["batch_courses_deleted"] == len(gone_courses)
    assert counts["batch_sections_deleted"] == len(gone_sections)
    assert counts["batch_enrollments_deleted"] == len(gone_enrollments)
    for course_id, course in canvas.courses.items():
        assert course["status"] == ("deleted" if course_id in gone_courses else "active"), course_id
    for section_id, section in canvas.sections.items():
        assert section["status"] == ("deleted" if section_id in gone_sections else "active"), section_id
    for key, enrollment in canvas.enrollments.items():
        assert enrollment["status"] == ("deleted" if key in gone_enrollments else "active"), key
    listed = {c["sis_course_id"] for c in api(canvas, "GET", "accounts/1/courses").json()}
    assert listed == {r["course_id"] for r in rows(COURSES)} - gone_courses


def test_batch_mode_aborts_when_deletions_exceed_change_threshold(canvas):
    imported(canvas, DISTRICT)
    files, gone_courses, _, _ = batch_files()
    threshold = 10
    assert len(gone_courses) * 100 / len([r for r in rows(COURSES) if r["term_id"] == "T1"]) > threshold
    final = imported(canvas, files, batch_mode="1", batch_mode_term_id="sis_term_id:T1",
                     change_threshold=threshold)
    assert final["workflow_state"] == "aborted"
    assert final["processing_errors"] == [
        [None, f"{len(gone_courses)} courses would be deleted and exceeds the set threshold of {threshold}%"]]
    assert all(course["status"] == "active" for course in canvas.courses.values())
    assert all(enrollment["status"] == "active" for enrollment in canvas.enrollments.values())


def test_batch_mode_needs_an_active_term_and_imports_need_the_root_account(canvas):
    refused = api(canvas, "POST", IMPORTS, params={"batch_mode": "1", "batch_mode_term_id": "T9"},
                  data=USERS.encode(), headers=CSV)
    assert refused.status_code == 400 and "batch_mode_term_id cannot be found" in refused.json()["message"]
    imported(canvas, {"accounts.csv": ACCOUNTS})
    sub_account = rows(ACCOUNTS)[0]["account_id"]
    on_sub_account = api(canvas, "POST", f"accounts/sis_account_id:{sub_account}/sis_imports",
                         data=USERS.encode(), headers=CSV)
    assert on_sub_account.status_code == 400
    assert on_sub_account.json() == {"errors": ["SIS imports can only be executed on root accounts"]}
    assert api(canvas, "GET", "accounts/999/sis_imports").status_code == 404
    assert api(canvas, "GET", "accounts/self/sis_imports").status_code == 200
    bad_drop_status = api(canvas, "POST", IMPORTS, params={"diffing_drop_status": "gone"},
                          data=USERS.encode(), headers=CSV)
    assert bad_drop_status.status_code == 400


def test_lists_are_paged_by_link_headers_with_per_page_capped_at_100(canvas):
    course_ids = [f"K{n:03}" for n in range(120)]
    text = "course_id,short_name,long_name,status\n" + "".join(
        f"{c},{c},Course {c},active\n" for c in course_ids)
    imported(canvas, {"courses.csv": text})

    first = api(canvas, "GET", "accounts/1/courses", params={"per_page": 10})
    assert len(first.json()) == 10
    assert set(links(first)) == {"current", "next", "first", "last"}
    assert "page=12" in links(first)["last"] and "per_page=10" in links(first)["next"]
    last = api(canvas, "GET", links(first)["last"])
    assert set(links(last)) == {"current", "prev", "first", "last"} and len(last.json()) == 10

    seen, response = [], api(canvas, "GET", "accounts/1/courses", params={"per_page": 50})
    while True:
        seen += [course["sis_course_id"] for course in response.json()]
        if "next" not in links(response):
            break
        response = api(canvas, "GET", links(response)["next"])
    assert sorted(seen) == course_ids
    assert len(api(canvas, "GET", "accounts/1/courses", params={"per_page": 1000}).json()) == 100
    assert len(api(canvas, "GET", "accounts/1/courses").json()) == 10, "10 by default"

    for _ in range(2):
        imported(canvas, {"users.csv": USERS})
    listed = api(canvas, "GET", IMPORTS, params={"per_page": 2})
    assert [i["id"] for i in listed.json()["sis_imports"]] == [3, 2], "newest first"
    assert "last" not in links(listed) and "next" in links(listed), "Canvas does not count SIS imports"


def test_courses_and_sections_are_listed_by_sis_ids(canvas):
    imported(canvas, DISTRICT)
    math = rows(ACCOUNTS)[1]["account_id"]
    in_math = api(canvas, "GET", f"accounts/sis_account_id:{math}/courses").json()
    assert {c["sis_course_id"] for c in in_math} == \
        {r["course_id"] for r in rows(COURSES) if r["account_id"] == math}
    course = rows(COURSES)[0]["course_id"]
    sections = api(canvas, "GET", f"courses/sis_course_id:{course}/sections").json()
    assert {s["sis_section_id"]: s["name"] for s in sections} == \
        {r["section_id"]: r["name"] for r in rows(SECTIONS) if r["course_id"] == course}
    assert all(s["sis_course_id"] == course for s in sections)
    assert api(canvas, "GET", "courses/sis_course_id:NOPE/sections").status_code == 404


def test_a_spent_rate_limit_answers_403_with_the_remaining_quota():
    with CanvasEmulator(token=TOKEN, rate_limit_quota=3, rate_limit_drain=0.001) as canvas:
        answers = [api(canvas, "GET", IMPORTS) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 403]
        remaining = [float(a.headers["X-Rate-Limit-Remaining"]) for a in answers[:3]]
        assert remaining == pytest.approx([2, 1, 0], abs=0.01)
        assert all("X-Request-Cost" in a.headers for a in answers)
        assert answers[3].text.strip() == "403 Forbidden (Rate Limit Exceeded)"
        assert float(answers[3].headers["X-Rate-Limit-Remaining"]) < 1
        assert canvas.rate_limited == 1
    with CanvasEmulator(token=TOKEN, rate_limit_quota=2, rate_limit_drain=20) as canvas:
        assert [api(canvas, "GET", IMPORTS).status_code for _ in range(3)][-1] == 403
        time.sleep(0.2)  # 4 units drained
        assert api(canvas, "GET", IMPORTS).status_code == 200
    with CanvasEmulator(token=TOKEN, rate_limit_quota=1, rate_limit_drain=0.001,
                        throttle_status=429) as canvas:
        assert [api(canvas, "GET", IMPORTS).status_code for _ in range(2)] == [200, 429]


def test_no_rate_limit_by_default_but_every_answer_has_a_request_cost(canvas):
    answers = [api(canvas, "GET", IMPORTS) for _ in range(30)]
    assert {a.status_code for a in answers} == {200}
    assert all("X-Request-Cost" in a.headers and "X-Rate-Limit-Remaining" not in a.headers for a in answers)


def test_request_faults_throttle_500_and_refuse_zip(canvas):
    canvas.inject("throttle")
    throttled = api(canvas, "GET", IMPORTS)
    assert throttled.status_code == 403 and "Rate Limit Exceeded" in throttled.text
    assert "X-Rate-Limit-Remaining" in throttled.headers
    assert api(canvas, "GET", IMPORTS).status_code == 200

    canvas.inject("500", path_contains="sis_imports")
    assert api(canvas, "GET", "accounts/1/courses").status_code == 200, "another path"
    assert api(canvas, "GET", IMPORTS).status_code == 500
    assert api(canvas, "GET", IMPORTS).status_code == 200

    canvas.inject("refuse_zip")
    assert api(canvas, "GET", IMPORTS).status_code == 200, "uploads only"
    refused = api(canvas, "POST", IMPORTS, data=zipped({"users.csv": USERS}), headers=ZIP)
    assert refused.status_code == 400 and canvas.imports_received == 0
    assert imported(canvas, {"users.csv": USERS})["workflow_state"] == "imported"
    with pytest.raises(ValueError):
        canvas.inject("meteor")


def test_import_fails_fault_fails_the_next_import_only(canvas):
    canvas.inject("import_fails")
    failed = imported(canvas, {"users.csv": USERS})
    assert failed["workflow_state"] == "failed_with_messages"
    assert failed["processing_errors"][0][1].startswith("Error while importing CSV")
    assert canvas.users == {}
    assert imported(canvas, {"users.csv": USERS})["workflow_state"] == "imported"
    assert set(canvas.users) == {r["user_id"] for r in rows(USERS)}


def test_stuck_fault_keeps_the_import_importing_and_the_queue_behind_it(canvas):
    canvas.inject("stuck")
    stuck = upload(canvas, {"users.csv": USERS})
    queued = upload(canvas, {"terms.csv": TERMS})
    time.sleep(0.5)
    assert api(canvas, "GET", f"{IMPORTS}/{stuck['id']}").json()["workflow_state"] == "importing"
    assert api(canvas, "GET", f"{IMPORTS}/{queued['id']}").json()["workflow_state"] == "created"
    assert canvas.users == {} and canvas.terms == {}
    canvas.release_stuck()
    assert wait_final(canvas, stuck["id"])["workflow_state"] == "imported"
    assert wait_final(canvas, queued["id"])["workflow_state"] == "imported"
    assert set(canvas.users) == {r["user_id"] for r in rows(USERS)} and canvas.terms


def test_taken_then_500_keeps_the_upload_as_an_import_and_loses_its_answer(canvas):
    canvas.inject("taken_then_500")
    assert api(canvas, "GET", IMPORTS).status_code == 200, "uploads only"
    data = zipped({"users.csv": USERS})
    lost = api(canvas, "POST", IMPORTS, data=data, headers=ZIP)
    assert lost.status_code == 500 and canvas.imports_received == 1
    (number,) = canvas.imports
    assert canvas.uploads == {number: data}
    assert wait_final(canvas, number)["workflow_state"] == "imported"
    assert api(canvas, "POST", IMPORTS, data=data, headers=ZIP).status_code == 200, "once"


def test_requests_are_recorded_and_counted(canvas):
    data = zipped(DISTRICT)
    response = api(canvas, "POST", IMPORTS, data=data, headers=ZIP)
    wait_final(canvas, response.json()["id"])
    posts = [r for r in canvas.requests if r.method == "POST"]
    assert len(posts) == 1 and posts[0].body == data and posts[0].status == 200
    assert posts[0].path == "/api/v1/accounts/1/sis_imports"
    assert canvas.imports_received == 1
    assert canvas.rows_applied == sum(len(rows(text)) for text in DISTRICT.values())
    assert canvas.imports[response.json()["id"]]["workflow_state"] == "imported"


# -- user_observers.csv ---------------------------------------------------------------------------

OBSERVERS = """observer_id,student_id,status
p1,u1,active
p1,u2,active
"""


def observer_key(enrollment: dict[str, str], observer: str) -> str:
    """The key of the observer enrollment an observer link makes for a student enrollment."""
    return f"{enrollment['course_id']}:{enrollment['section_id']}:{observer}:observer:{enrollment['user_id']}"


def student_rows(student: str) -> list[dict[str, str]]:
    return [r for r in rows(ENROLLMENTS) if r["role"] == "student" and r["user_id"] == student]


def test_user_observers_csv_is_imported_last_and_enrolls_observers_in_their_students_courses(canvas):
    # listed first in the zip: Canvas still imports it after users and enrollments
    final = imported(canvas, {"user_observers.csv": OBSERVERS, **DISTRICT})
    assert final["workflow_state"] == "imported", final
    assert final["data"]["supplied_batches"][-2:] == ["enrollment", "user_observer"]
    assert final["data"]["counts"]["user_observers"] == len(rows(OBSERVERS))
    links_made = canvas.user_observers
    assert set(links_made) == {f"{r['observer_id']}:{r['student_id']}" for r in rows(OBSERVERS)}
    assert all(link["workflow_state"] == "active" and link["sis_import_id"] == final["id"]
               for link in links_made.values())
    enrollments = canvas.enrollments
    for link in rows(OBSERVERS):
        assert student_rows(link["student_id"])
        for row in student_rows(link["student_id"]):
            linked = enrollments[observer_key(row, link["observer_id"])]
            assert linked["role"] == "observer" and linked["associated_user_id"] == link["student_id"]
            assert linked["course_id"] == row["course_id"] and linked["status"] == "active"


def test_a_students_later_enrollments_carry_their_observers_along(canvas):
    imported(canvas, {**DISTRICT, "user_observers.csv": OBSERVERS})
    header = "course_id,section_id,user_id,role,status\n"
    new = {"course_id": "C3", "section_id": "S3", "user_id": "u2", "role": "student", "status": "active"}
    old = student_rows("u2")[0]
    imported(canvas, {"enrollments.csv": header + ",".join(new[k] for k in header.strip().split(",")) + "\n"})
    assert canvas.enrollments[observer_key(new, "p1")]["status"] == "active", "after_create"
    assert canvas.enrollments[observer_key(new, "p1")]["sis_import_id"] is None, "made by Canvas, not SIS"

    for status in ("completed", "deleted", "active"):  # after_save: the state follows, a drop is restored
        line = f"{old['course_id']},{old['section_id']},u2,student,{status}\n"
        imported(canvas, {"enrollments.csv": header + line})
        assert canvas.enrollments[observer_key(old, "p1")]["status"] == status

    untied = {"course_id": "C2", "section_id": "S2", "user_id": "u9", "role": "student", "status": "active"}
    imported(canvas, {"users.csv": "user_id,login_id,status\nu9,nine,active\n",
                      "enrollments.csv": header + "C2,S2,u9,student,active\n"})
    assert observer_key(untied, "p1") not in canvas.enrollments, "only linked observers follow"


def test_user_observer_rows_canvas_would_refuse_are_skipped_with_its_warnings(canvas):
    imported(canvas, DISTRICT)
    text = """observer_id,student_id,status
,u1,active
p1,,active
u1,u1,active
p1,u1,pending
p1,u1,activated
p9,u1,active
p1,u9,active
p1,u2,deleted
p1,u1,ACTIVE
"""
    final = imported(canvas, {"user_observers.csv": text})
    expected = [
        ["user_observers.csv", "No observer_id given for a user observer"],
        ["user_observers.csv", "No user_id given for a user observer"],
        ["user_observers.csv", "Can't observe yourself user u1"],
        ["user_observers.csv", 'Improper status "pending" for a user_observer'],
        ["user_observers.csv", 'Improper status "activated" for a user_observer'],
        ["user_observers.csv", "An observer referenced a non-existent user p9"],
        ["user_observers.csv", "A student referenced a non-existent user u9"],
        ["user_observers.csv", "Can't delete a non-existent observer for observer: p1, student: u2"],
    ]
    assert final["workflow_state"] == "imported_with_messages"
    assert final["processing_warnings"] == expected
    assert final["data"]["counts"]["user_observers"] == 1 and set(canvas.user_observers) == {"p1:u1"}

    dropped = rows(USERS)[3]
    imported(canvas, {"users.csv": "user_id,login_id,status\n"
                                   f"{dropped['user_id']},{dropped['login_id']},deleted\n"})
    link = f"observer_id,student_id,status\n{dropped['user_id']},u2,active\n"
    again = imported(canvas, {"user_observers.csv": link})
    gone = f"An observer referenced a non-existent user {dropped['user_id']}"
    assert again["processing_warnings"] == [["user_observers.csv", gone]], "a deleted user is not found"


def test_a_deleted_user_observer_row_removes_the_link_and_its_observer_enrollments(canvas):
    imported(canvas, {**DISTRICT, "user_observers.csv": OBSERVERS})
    u1_courses = student_rows("u1")
    delete = "observer_id,student_id,status\np1,u1,deleted\n"

    skipped = imported(canvas, {"user_observers.csv": delete}, skip_deletes="true")
    assert skipped["workflow_state"] == "imported" and skipped["data"]["counts"]["user_observers"] == 0
    assert canvas.user_observers["p1:u1"]["workflow_state"] == "active", "skip_deletes skips the row"

    assert imported(canvas, {"user_observers.csv": delete})["data"]["counts"]["user_observers"] == 1
    assert canvas.user_observers["p1:u1"]["workflow_state"] == "deleted", "links are kept, deleted"
    enrollments = canvas.enrollments
    assert all(enrollments[observer_key(row, "p1")]["status"] == "deleted" for row in u1_courses)
    from_csv = next(r for r in rows(ENROLLMENTS) if r["role"] == "observer")
    assert enrollments[enrollment_key(from_csv)]["status"] == "deleted", "every observer enrollment of u1"
    assert all(enrollments[observer_key(row, "p1")]["status"] == "active" for row in student_rows("u2"))

    imported(canvas, {"user_observers.csv": "observer_id,student_id,status\np1,u1,active\n"})
    assert canvas.user_observers["p1:u1"]["workflow_state"] == "active"
    assert all(canvas.enrollments[observer_key(row, "p1")]["status"] == "active" for row in u1_courses)


def test_diffing_deletes_a_user_observer_row_the_data_set_lost(canvas):
    first = imported(canvas, {**DISTRICT, "user_observers.csv": OBSERVERS},
                     diffing_data_set_identifier="district")
    kept, lost = rows(OBSERVERS)
    shorter = "observer_id,student_id,status\n" + ",".join(kept.values()) + "\n"
    second = imported(canvas, {**DISTRICT, "user_observers.csv": shorter},
                      diffing_data_set_identifier="district")
    assert second["diffed_against_import_id"] == first["id"]
    assert second["data"]["counts"]["user_observers"] == 1, "only the lost row is applied"
    links_now = canvas.user_observers
    assert links_now[f"{lost['observer_id']}:{lost['student_id']}"]["workflow_state"] == "deleted"
    assert links_now[f"{kept['observer_id']}:{kept['student_id']}"]["sis_import_id"] == first["id"]


# -- accounts, terms, roles -----------------------------------------------------------------------

def test_sub_accounts_lists_children_or_with_recursive_every_descendant(canvas):
    tree = ACCOUNTS + "A3,,South High,active\nA4,A2,Algebra Team,active\nA5,,Closed School,deleted\n"
    imported(canvas, {"accounts.csv": tree})
    ids = {sis: account["id"] for sis, account in canvas.accounts.items()}
    direct = api(canvas, "GET", "accounts/1/sub_accounts")
    assert direct.status_code == 200
    assert [a["sis_account_id"] for a in direct.json()] == ["A1", "A3"], "by id, deleted left out"
    first = direct.json()[0]
    assert {k: first[k] for k in ("id", "name", "parent_account_id", "root_account_id", "sis_account_id",
                                  "workflow_state")} == \
        {"id": ids["A1"], "name": "North High", "parent_account_id": 1, "root_account_id": 1,
         "sis_account_id": "A1", "workflow_state": "active"}
    everything = api(canvas, "GET", "accounts/self/sub_accounts", params={"recursive": "true"}).json()
    assert sorted(a["sis_account_id"] for a in everything) == ["A1", "A2", "A3", "A4"]
    under_a1 = api(canvas, "GET", "accounts/sis_account_id:A1/sub_accounts").json()
    assert [(a["sis_account_id"], a["parent_account_id"]) for a in under_a1] == [("A2", ids["A1"])]
    deep = api(canvas, "GET", f"accounts/{ids['A1']}/sub_accounts", params={"recursive": "1"}).json()
    assert {a["sis_account_id"] for a in deep} == {"A2", "A4"}

    paged = api(canvas, "GET", "accounts/1/sub_accounts", params={"per_page": 1})
    assert len(paged.json()) == 1 and {"next", "last"} <= set(links(paged))
    recursive = api(canvas, "GET", "accounts/1/sub_accounts", params={"per_page": 1, "recursive": "true"})
    assert "next" in links(recursive) and "last" not in links(recursive), "Canvas does not count it"
    assert api(canvas, "GET", "accounts/sis_account_id:A5/sub_accounts").status_code == 404


def test_terms_lists_the_root_accounts_terms_with_the_default_term(canvas):
    imported(canvas, {"terms.csv": TERMS + "T3,Old Term,deleted,2020-01-01T00:00:00Z,\n"})
    listed = api(canvas, "GET", "accounts/1/terms")
    assert listed.status_code == 200 and set(listed.json()) == {"enrollment_terms"}
    terms = listed.json()["enrollment_terms"]
    assert [t["sis_term_id"] for t in terms] == [None, "T2", "T1"], "start_at DESC, NULLs first, then id"
    assert {k: terms[0][k] for k in ("name", "start_at", "end_at", "workflow_state")} == \
        {"name": "Default Term", "start_at": None, "end_at": None, "workflow_state": "active"}
    fall = rows(TERMS)[0]
    assert {k: terms[2][k] for k in ("id", "name", "start_at", "end_at")} == \
        {"id": canvas.terms["T1"]["id"], "name": fall["name"], "start_at": fall["start_date"],
         "end_at": fall["end_date"]}
    deleted = api(canvas, "GET", "accounts/self/terms", params={"workflow_state[]": "deleted"}).json()
    assert [(t["sis_term_id"], t["workflow_state"]) for t in deleted["enrollment_terms"]] == \
        [("T3", "deleted")]
    every = api(canvas, "GET", "accounts/1/terms", params={"workflow_state": "all", "per_page": 3})
    assert len(every.json()["enrollment_terms"]) == 3 and "page=2" in links(every)["last"]

    imported(canvas, {"accounts.csv": ACCOUNTS})
    on_sub_account = api(canvas, "GET", "accounts/sis_account_id:A1/terms")
    assert on_sub_account.status_code == 400
    assert on_sub_account.json() == {"message": "Terms only belong to root_accounts."}


BUILT_IN = [("AccountAdmin", "Account Admin", "AccountMembership"),
            ("StudentEnrollment", "Student", "StudentEnrollment"),
            ("TeacherEnrollment", "Teacher", "TeacherEnrollment"), ("TaEnrollment", "TA", "TaEnrollment"),
            ("DesignerEnrollment", "Designer", "DesignerEnrollment"),
            ("ObserverEnrollment", "Observer", "ObserverEnrollment")]


def test_roles_lists_the_built_in_roles(canvas):
    listed = api(canvas, "GET", "accounts/1/roles", params={"per_page": 100})
    assert listed.status_code == 200
    assert [(r["role"], r["label"], r["base_role_type"]) for r in listed.json()] == BUILT_IN
    assert all(r["workflow_state"] == "built_in" and isinstance(r["id"], int) for r in listed.json())
    paged = api(canvas, "GET", "accounts/self/roles", params={"per_page": 4})
    assert len(paged.json()) == 4 and "page=2" in links(paged)["last"]
    assert api(canvas, "GET", "accounts/1/roles", params={"state[]": "inactive"}).json() == []
    assert api(canvas, "GET", "accounts/77/roles").status_code == 404


def test_custom_course_roles_follow_the_built_in_ones():
    with CanvasEmulator(token=TOKEN, custom_roles={"Parent Liaison": "ObserverEnrollment",
                                                   "Co-Teacher": "TeacherEnrollment"}) as canvas:
        listed = api(canvas, "GET", "accounts/1/roles").json()
        assert [(r["role"], r["label"], r["base_role_type"]) for r in listed[:6]] == BUILT_IN
        custom = listed[6:]
        assert [(r["role"], r["label"], r["base_role_type"], r["workflow_state"]) for r in custom] == [
            ("Parent Liaison", "Parent Liaison", "ObserverEnrollment", "active"),
            ("Co-Teacher", "Co-Teacher", "TeacherEnrollment", "active")]
        assert custom[0]["id"] < custom[1]["id"]
        assert not {r["id"] for r in custom} & {r["id"] for r in listed[:6]}
        imported(canvas, {"accounts.csv": ACCOUNTS})
        on_sub_account = api(canvas, "GET", "accounts/sis_account_id:A1/roles").json()
        assert len(on_sub_account) == 6, "a sub-account's own custom roles: none"
        inherited = api(canvas, "GET", "accounts/sis_account_id:A1/roles", params={"show_inherited": "true"})
        assert len(inherited.json()) == 8
    for label, base in (("Teacher", "TeacherEnrollment"), ("Helper", "AccountAdmin")):
        with pytest.raises(ValueError):
            CanvasEmulator(token=TOKEN, custom_roles={label: base})


# -- the gradebook's read side: grading periods, enrollments with grades, assignments, submissions ------

PAST_PERIOD = ("Q1", "2000-08-20T00:00:00Z", "2000-10-20T00:00:00Z")  # closed long ago
LATER_PERIOD = ("Q2", "2999-10-20T00:00:00Z", "2999-12-20T00:00:00Z")  # closes far ahead


def test_a_course_lists_the_grading_periods_of_its_terms_set(canvas):
    imported(canvas, {**DISTRICT, "courses.csv": COURSES + "C9,NOTERM,No Term,A1,,active\n"})
    later = canvas.add_grading_period("T1", *LATER_PERIOD)
    past = canvas.add_grading_period("T1", *PAST_PERIOD, close_date="2000-10-27T00:00:00Z", weight=40.0)
    listed = api(canvas, "GET", "courses/sis_course_id:C1/grading_periods")
    assert listed.status_code == 200
    assert listed.json()["meta"] == {"primaryCollection": "grading_periods"}
    periods = listed.json()["grading_periods"]
    assert [p["id"] for p in periods] == [past, later], "by start date"
    assert periods[0] == {"id": past, "title": PAST_PERIOD[0], "start_date": PAST_PERIOD[1],
                          "end_date": PAST_PERIOD[2], "close_date": "2000-10-27T00:00:00Z", "weight": 40.0,
                          "is_closed": True, "is_last": False}
    assert {k: periods[1][k] for k in ("title", "close_date", "weight", "is_closed", "is_last")} == \
        {"title": LATER_PERIOD[0], "close_date": LATER_PERIOD[2], "weight": None, "is_closed": False,
         "is_last": True}, "close_date defaults to end_date"
    same_term = {r["course_id"] for r in rows(COURSES) if r["term_id"] == "T1"}
    for course in same_term:
        shown = api(canvas, "GET", f"courses/sis_course_id:{course}/grading_periods").json()
        assert [p["id"] for p in shown["grading_periods"]] == [past, later]
    other_term = next(r["course_id"] for r in rows(COURSES) if r["term_id"] != "T1")
    elsewhere = api(canvas, "GET", f"courses/sis_course_id:{other_term}/grading_periods").json()
    assert elsewhere["grading_periods"] == []
    assert api(canvas, "GET", "courses/sis_course_id:C9/grading_periods").json()["grading_periods"] == []
    default_term = canvas.add_grading_period(None, *LATER_PERIOD)
    assert [p["id"] for p in api(canvas, "GET", "courses/sis_course_id:C9/grading_periods").json()[
        "grading_periods"]] == [default_term], "a course without a term is in the default term"
    paged = api(canvas, "GET", "courses/sis_course_id:C1/grading_periods", params={"per_page": 1})
    assert len(paged.json()["grading_periods"]) == 1 and "next" in links(paged)
    assert api(canvas, "GET", "courses/sis_course_id:NOPE/grading_periods").status_code == 404


MORE_USERS = """user_id,login_id,first_name,last_name,status
u3,cleo,Cleo,Park,active
u4,dina,Dina,Kay,active
"""
MORE_ENROLLMENTS = """course_id,section_id,user_id,role,status
C1,S1,u2,student,inactive
C1,S1,u3,student,completed
C1,S1,u4,student,deleted
"""


ALAN_IN_ALGEBRA = "course_id,section_id,user_id,role,status\nC1,S1,u2,student,active\n"


def listed_enrollments(canvas, course: str, **params) -> list[dict]:
    response = api(canvas, "GET", f"courses/sis_course_id:{course}/enrollments",
                   params={"per_page": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_course_enrollments_filter_by_type_state_and_user(canvas):
    first = imported(canvas, DISTRICT)
    imported(canvas, {"users.csv": MORE_USERS, "enrollments.csv": MORE_ENROLLMENTS})
    types = {"student": "StudentEnrollment", "teacher": "TeacherEnrollment", "observer": "ObserverEnrollment"}
    every = [r for r in rows(ENROLLMENTS) + rows(MORE_ENROLLMENTS) if r["course_id"] == "C1"]

    def expected(*states: str, role: str | None = None) -> set:
        return {(r["user_id"], types[r["role"]], r["status"]) for r in every
                if r["status"] in states and role in (None, r["role"])}

    def shown(enrollments: list[dict]) -> set:
        return {(e["sis_user_id"], e["type"], e["enrollment_state"]) for e in enrollments}

    default = listed_enrollments(canvas, "C1")
    assert shown(default) == expected("active", "inactive"), "an admin sees inactive ones too"
    assert [e["type"] for e in default] == sorted(e["type"] for e in default), "ordered by type first"
    students = [e for e in default if e["type"] == "StudentEnrollment"]
    assert [e["sis_user_id"] for e in students] == ["u1", "u2"], "then by sortable name: Lovelace, Turing"
    assert shown(listed_enrollments(canvas, "C1", **{"type[]": "StudentEnrollment"})) == \
        expected("active", "inactive", role="student")
    assert shown(listed_enrollments(canvas, "C1", **{"role[]": "TeacherEnrollment"})) == \
        expected("active", role="teacher")
    for state in ("completed", "deleted", "inactive"):
        assert shown(listed_enrollments(canvas, "C1", **{"state[]": state})) == expected(state), state

    ada = listed_enrollments(canvas, "C1", user_id="sis_user_id:u1", **{"type[]": "StudentEnrollment"})
    assert len(ada) == 1
    users, courses, sections = canvas.users, canvas.courses, canvas.sections
    record = ada[0]
    assert {k: record[k] for k in ("course_id", "sis_course_id", "course_section_id", "sis_section_id",
                                   "user_id", "sis_user_id", "type", "role", "enrollment_state",
                                   "root_account_id", "associated_user_id", "created_for_sis_id",
                                   "sis_import_id")} == \
        {"course_id": courses["C1"]["id"], "sis_course_id": "C1", "course_section_id": sections["S1"]["id"],
         "sis_section_id": "S1", "user_id": users["u1"]["id"], "sis_user_id": "u1",
         "type": "StudentEnrollment", "role": "StudentEnrollment", "enrollment_state": "active",
         "root_account_id": 1, "associated_user_id": None, "created_for_sis_id": True,
         "sis_import_id": first["id"]}
    assert record["id"] == canvas.enrollments["C1:S1:u1:student"]["id"]
    assert record["user"] == {"id": users["u1"]["id"], "name": "Ada Lovelace",
                              "sortable_name": "Lovelace, Ada", "short_name": "Ada Lovelace",
                              "sis_user_id": "u1", "login_id": "ada"}
    by_canvas_id = listed_enrollments(canvas, "C1", user_id=str(users["u1"]["id"]))
    assert {e["type"] for e in by_canvas_id} == {"StudentEnrollment"}
    assert listed_enrollments(canvas, "C1", user_id="sis_user_id:u2") == [], \
        "with user_id, only active (and invited) ones by default"
    observer = listed_enrollments(canvas, "C1", **{"type[]": "ObserverEnrollment"})[0]
    assert observer["associated_user_id"] == users["u1"]["id"] and "grades" not in observer
    assert "grades" not in listed_enrollments(canvas, "C1", **{"type[]": "TeacherEnrollment"})[0]
    assert api(canvas, "GET", "courses/sis_course_id:C1/enrollments",
               params={"user_id": "sis_user_id:nobody"}).status_code == 404
    assert api(canvas, "GET", "courses/sis_course_id:NOPE/enrollments").status_code == 404


def test_student_enrollments_carry_the_grades_of_the_course_or_of_a_grading_period(canvas):
    imported(canvas, DISTRICT)
    imported(canvas, {"enrollments.csv": ALAN_IN_ALGEBRA})
    past = canvas.add_grading_period("T1", *PAST_PERIOD)
    later = canvas.add_grading_period("T1", *LATER_PERIOD)
    other_term = canvas.add_grading_period("T2", *LATER_PERIOD)
    canvas.set_grades("C1", "u1", current_score=91.5, final_score=80.0, current_grade="A-", final_grade="B-",
                      override_score=85.0, override_grade="B")
    canvas.set_grades("C1", "u1", grading_period_id=past, current_score=88.0, final_score=70.0,
                      unposted_current_score=90.0, unposted_final_score=72.0)
    course, ada, alan = canvas.courses["C1"]["id"], canvas.users["u1"]["id"], canvas.users["u2"]["id"]
    empty = dict.fromkeys(("current_score", "final_score", "current_grade", "final_grade",
                           "unposted_current_score", "unposted_final_score", "unposted_current_grade",
                           "unposted_final_grade", "override_score", "override_grade"))

    def grades(**params) -> dict[str, dict]:
        listed = listed_enrollments(canvas, "C1", **{"type[]": "StudentEnrollment", **params})
        return {e["sis_user_id"]: e["grades"] for e in listed}

    whole = grades()
    assert whole["u1"] == {**empty, "html_url": f"{canvas.base_url}/courses/{course}/grades/{ada}",
                           "current_score": 91.5, "final_score": 80.0, "current_grade": "A-",
                           "final_grade": "B-", "unposted_current_score": 91.5, "unposted_final_score": 80.0,
                           "unposted_current_grade": "A-", "unposted_final_grade": "B-",
                           "override_score": 85.0, "override_grade": "B"}
    assert whole["u2"] == {**empty, "html_url": f"{canvas.base_url}/courses/{course}/grades/{alan}"}, \
        "nothing set: all null"
    in_past = grades(grading_period_id=past)
    assert {k: in_past["u1"][k] for k in empty} == {**empty, "current_score": 88.0, "final_score": 70.0,
                                                    "unposted_current_score": 90.0,
                                                    "unposted_final_score": 72.0}
    assert {k: grades(grading_period_id=later)["u1"][k] for k in empty} == empty
    for wrong in (other_term, 999_999):
        refused = api(canvas, "GET", "courses/sis_course_id:C1/enrollments",
                      params={"grading_period_id": wrong})
        assert refused.status_code == 400 and refused.json() == {"error": "invalid grading_period_id"}


def test_an_enrollment_made_in_canvas_survives_imports_diffing_and_batch_mode(canvas):
    imported(canvas, DISTRICT)
    made = canvas.add_enrollment_made_in_canvas("C1", "u2")
    visitor = canvas.add_enrollment_made_in_canvas("C1", None, "student", name="Sam Visitor")
    teacher = canvas.add_enrollment_made_in_canvas("C1", "t1", "ta")
    ours = {made, visitor, teacher}

    def made_in_canvas() -> dict[int, dict]:
        return {e["id"]: e for e in listed_enrollments(canvas, "C1") if e["id"] in ours}

    listed = made_in_canvas()
    assert set(listed) == ours
    assert all(e["created_for_sis_id"] is False and e["sis_import_id"] is None for e in listed.values())
    assert listed[made]["sis_user_id"] == "u2" and listed[made]["user"]["login_id"] == "alan"
    assert listed[teacher]["type"] == "TaEnrollment" and "grades" not in listed[teacher]
    sam = listed[visitor]
    assert sam["sis_user_id"] is None and sam["grades"]["current_score"] is None
    assert {k: sam["user"][k] for k in ("name", "sortable_name", "sis_user_id", "login_id")} == \
        {"name": "Sam Visitor", "sortable_name": "Visitor, Sam", "sis_user_id": None, "login_id": None}
    assert sam["user_id"] in canvas.canvas_users
    assert sam["user_id"] not in {u["id"] for u in canvas.users.values()}

    header = "course_id,section_id,user_id,role,status\n"
    roster = header + "C1,S1,u1,student,active\nC1,S1,t1,teacher,active\n"
    imported(canvas, {"enrollments.csv": roster}, diffing_data_set_identifier="roster")
    diffed = imported(canvas, {"enrollments.csv": header + "C1,S1,u1,student,active\n"},
                      diffing_data_set_identifier="roster")
    assert diffed["diffed_against_import_id"] is not None
    assert canvas.enrollments["C1:S1:t1:teacher"]["status"] == "deleted", "the diff dropped the missing row"
    files, _, _, gone_enrollments = batch_files()
    batch = imported(canvas, files, batch_mode="1", batch_mode_term_id="sis_term_id:T1")
    assert batch["workflow_state"] == "imported"
    stale = {key for key, e in canvas.enrollments.items() if e["status"] == "deleted"}
    assert gone_enrollments <= stale
    assert batch["data"]["counts"]["batch_enrollments_deleted"] == \
        len(gone_enrollments - {"C1:S1:t1:teacher"}), "only what imports made, and not deleted already"
    enrollments = canvas.enrollments
    assert all(enrollments[f"canvas:{number}"]["status"] == "active" for number in ours)
    assert set(made_in_canvas()) == ours

    imported(canvas, {"users.csv": "user_id,login_id,first_name,last_name,status\n"
                                   "u2,alan,Alan,Turing,deleted\n"})
    assert canvas.enrollments[f"canvas:{made}"]["status"] == "deleted", \
        "a user deleted by SIS loses all its enrollments, as Canvas documents"
    assert set(made_in_canvas()) == {visitor, teacher}


def test_course_enrollments_are_paged_by_link_headers(canvas):
    students = [f"s{n:02}" for n in range(23)]
    imported(canvas, {
        "courses.csv": COURSES, "sections.csv": SECTIONS,
        "users.csv": "user_id,login_id,first_name,last_name,status\n" + "".join(
            f"{s},{s}login,First,Last{s},active\n" for s in students),
        "enrollments.csv": "course_id,section_id,user_id,role,status\n" + "".join(
            f"C1,S1,{s},student,active\n" for s in students)})
    response = api(canvas, "GET", "courses/sis_course_id:C1/enrollments", params={"per_page": 10})
    assert len(response.json()) == 10 and "next" in links(response)
    assert "last" not in links(response), "Canvas pages enrollments by bookmark: no last page"
    seen = []
    while True:
        seen += [e["sis_user_id"] for e in response.json()]
        if "next" not in links(response):
            break
        response = api(canvas, "GET", links(response)["next"])
    assert seen == students, "one page after another, by sortable name (Lasts00 ...)"
    assert "prev" in links(response) and len(response.json()) == len(students) % 10


def test_assignment_groups_and_assignments_leave_deleted_ones_out(canvas):
    imported(canvas, DISTRICT)
    quizzes = canvas.add_assignment_group("C1", "Quizzes", position=2, group_weight=40.0)
    homework = canvas.add_assignment_group("C1", "Homework", position=1, group_weight=60.0)
    first = canvas.add_assignment("C1", "HW 1", assignment_group_id=homework, points_possible=10.0,
                                  due_at="2026-09-10T23:59:00Z", unlock_at="2026-09-01T00:00:00Z",
                                  created_at="2026-08-25T12:00:00Z")
    draft = canvas.add_assignment("C1", "HW 2", assignment_group_id=homework, points_possible=20.0,
                                  published=False)
    quiz = canvas.add_assignment("C1", "Quiz 1", assignment_group_id=quizzes, points_possible=None,
                                 omit_from_final_grade=True, grading_type="pass_fail")
    gone = canvas.add_assignment("C1", "HW 0", assignment_group_id=homework, points_possible=5.0)
    canvas.delete_assignment(gone)

    groups = api(canvas, "GET", "courses/sis_course_id:C1/assignment_groups")
    assert groups.status_code == 200
    assert groups.json() == [
        {"id": homework, "name": "Homework", "position": 1, "group_weight": 60.0, "rules": {}},
        {"id": quizzes, "name": "Quizzes", "position": 2, "group_weight": 40.0, "rules": {}}]
    with_assignments = api(canvas, "GET", "courses/sis_course_id:C1/assignment_groups",
                           params={"include[]": "assignments"}).json()
    assert [[a["id"] for a in g["assignments"]] for g in with_assignments] == [[first, draft], [quiz]]

    listed = api(canvas, "GET", "courses/sis_course_id:C1/assignments").json()
    assert [a["id"] for a in listed] == [first, draft, quiz], "group position, then position; no deleted"
    hw1 = listed[0]
    assert {k: hw1[k] for k in ("name", "course_id", "assignment_group_id", "points_possible", "due_at",
                                "unlock_at", "lock_at", "created_at", "published", "workflow_state",
                                "omit_from_final_grade", "grading_type")} == \
        {"name": "HW 1", "course_id": canvas.courses["C1"]["id"], "assignment_group_id": homework,
         "points_possible": 10.0, "due_at": "2026-09-10T23:59:00Z", "unlock_at": "2026-09-01T00:00:00Z",
         "lock_at": None, "created_at": "2026-08-25T12:00:00Z", "published": True,
         "workflow_state": "published", "omit_from_final_grade": False, "grading_type": "points"}
    assert (listed[1]["published"], listed[1]["workflow_state"]) == (False, "unpublished")
    assert listed[2]["omit_from_final_grade"] is True and listed[2]["points_possible"] is None

    assert api(canvas, "GET", f"courses/sis_course_id:C1/assignments/{first}").json()["name"] == "HW 1"
    assert api(canvas, "GET", f"courses/sis_course_id:C1/assignments/{gone}").status_code == 404
    assert api(canvas, "GET", "courses/sis_course_id:C1/assignments/999999").status_code == 404
    assert api(canvas, "GET", f"courses/sis_course_id:C2/assignments/{first}").status_code == 404

    canvas.update_assignment(draft, name="HW 2 (final)", published=True, points_possible=25.0)
    shown = api(canvas, "GET", f"courses/{canvas.courses['C1']['id']}/assignments/{draft}").json()
    assert (shown["name"], shown["workflow_state"], shown["points_possible"]) == \
        ("HW 2 (final)", "published", 25.0)
    assert shown["updated_at"] >= shown["created_at"]
    assert api(canvas, "GET", "courses/sis_course_id:C2/assignment_groups").json() == []


def test_submissions_for_students_lists_every_students_submission_of_published_assignments(canvas):
    imported(canvas, DISTRICT)
    imported(canvas, {"enrollments.csv": ALAN_IN_ALGEBRA})
    students = {r["user_id"] for r in rows(ENROLLMENTS) if r["course_id"] == "C1" and r["role"] == "student"}
    students.add("u2")
    q1 = canvas.add_grading_period("T1", "Q1", "2026-08-20T00:00:00Z", "2026-10-20T00:00:00Z")
    q2 = canvas.add_grading_period("T1", "Q2", "2026-10-20T00:00:00Z", "2026-12-20T00:00:00Z")
    group = canvas.add_assignment_group("C1", "Work")
    essay = canvas.add_assignment("C1", "Essay", assignment_group_id=group, points_possible=10.0,
                                  due_at="2026-09-10T23:59:00Z")
    exam = canvas.add_assignment("C1", "Exam", assignment_group_id=group, points_possible=20.0)
    draft = canvas.add_assignment("C1", "Draft", assignment_group_id=group, points_possible=5.0,
                                  published=False)
    gone = canvas.add_assignment("C1", "Gone", assignment_group_id=group, points_possible=5.0)
    canvas.grade("C1", essay, "u1", score=8.5, graded_at="2026-09-01T10:00:00Z")
    canvas.grade("C1", essay, "u2", excused=True, graded_at="2026-09-03T10:00:00Z")
    canvas.grade("C1", exam, "u1", score=15.0, graded_at="2026-09-05T10:00:00Z", posted=False, late=True,
                 late_policy_status="late")
    canvas.grade("C1", draft, "u1", score=3.0)
    canvas.grade("C1", gone, "u1", score=4.0)
    canvas.delete_assignment(gone)
    path = "courses/sis_course_id:C1/students/submissions"

    def submissions(**params) -> dict[tuple[int, str], dict]:
        response = api(canvas, "GET", path, params={"student_ids[]": "all", "include[]": "user",
                                                    "per_page": 100, **params})
        assert response.status_code == 200, response.text
        listed = response.json()
        assert [s["id"] for s in listed] == sorted(s["id"] for s in listed), "ordered by id"
        return {(s["assignment_id"], s["user"]["sis_user_id"]): s for s in listed}

    every = submissions()
    assert set(every) == {(a, s) for a in (essay, exam) for s in students}, \
        "each student's, unsubmitted too; no unpublished or deleted assignment"
    graded = every[(essay, "u1")]
    assert {k: graded[k] for k in ("score", "grade", "entered_score", "entered_grade", "excused", "late",
                                   "missing", "late_policy_status", "workflow_state", "graded_at",
                                   "posted_at", "submitted_at")} == \
        {"score": 8.5, "grade": "8.5", "entered_score": 8.5, "entered_grade": "8.5", "excused": False,
         "late": False, "missing": False, "late_policy_status": None, "workflow_state": "graded",
         "graded_at": "2026-09-01T10:00:00Z", "posted_at": "2026-09-01T10:00:00Z", "submitted_at": None}
    assert graded["user_id"] == canvas.users["u1"]["id"] == graded["user"]["id"]
    excused = every[(essay, "u2")]
    assert (excused["excused"], excused["score"], excused["grade"], excused["workflow_state"]) == \
        (True, None, None, "graded")
    hidden = every[(exam, "u1")]
    assert (hidden["score"], hidden["grade"], hidden["posted_at"], hidden["late"],
            hidden["late_policy_status"]) == (15.0, "15", None, True, "late"), "not posted: hidden"
    unsubmitted = every[(exam, "u2")]
    assert (unsubmitted["workflow_state"], unsubmitted["score"], unsubmitted["graded_at"]) == \
        ("unsubmitted", None, None)

    assert set(submissions(graded_since="2026-09-03T10:00:00Z")) == {(essay, "u2"), (exam, "u1")}, \
        "graded at or after"
    assert set(submissions(**{"assignment_ids[]": exam})) == {(exam, s) for s in students}
    assert set(submissions(workflow_state="unsubmitted")) == {(exam, "u2")}
    assert set(submissions(grading_period_id=q1)) == {(essay, s) for s in students}, "due in Q1"
    assert set(submissions(grading_period_id=q2)) == {(exam, s) for s in students}, "no due date: the last"
    unknown_period = api(canvas, "GET", path, params={"student_ids[]": "all", "grading_period_id": 999999})
    assert unknown_period.status_code == 404
    one = api(canvas, "GET", path, params={"student_ids[]": "sis_user_id:u2"}).json()
    assert {(s["assignment_id"], s["user_id"]) for s in one} == \
        {(essay, canvas.users["u2"]["id"]), (exam, canvas.users["u2"]["id"])} and "user" not in one[0]
    assert api(canvas, "GET", path).json() == [], "without student_ids: the caller's own, an admin's: none"
    assert api(canvas, "GET", path, params={"student_ids[]": "sis_user_id:t1"}).status_code == 401
    paged = api(canvas, "GET", path, params={"student_ids[]": "all", "per_page": 3})
    assert len(paged.json()) == 3 and "page=2" in links(paged)["last"]

    canvas.inject("500", path_contains="students/submissions")
    assert api(canvas, "GET", path, params={"student_ids[]": "all"}).status_code == 500
    assert api(canvas, "GET", path, token=None).status_code == 401
    assert api(canvas, "GET", path, params={"student_ids[]": "all"}).status_code == 200
