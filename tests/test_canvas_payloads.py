"""Canvas SIS import files and Canvas's answers read per row (include/lms/canvas.py), pure: the
files are read back as CSV, the answers written as Canvas words them (its importers' messages)."""

from __future__ import annotations

import csv
import io
import zipfile
from datetime import date

from include.lms import canvas
from include.lms.target import Building, Enrollment, GradingPeriod, GuardianLink, Section, User


def person(key: str, username: str | None = "login") -> User:
    return User(key=key, given_name="Ada", family_name="Lovelace", preferred_first_name=None, email=None,
                username=username and f"{username}-{key}", role_id="student", building_id="school-1",
                additional_building_ids=[])


def enrolment(section: str, user: str, admin: bool = False) -> Enrollment:
    return Enrollment(key=f"{section}:{user}", course_key="C", section_key=section, section_id=section,
                      user_key=user, admin=admin)


def read(zip_bytes: bytes) -> dict[str, list[dict[str, str]]]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        return {name: list(csv.DictReader(io.StringIO(archive.read(name).decode("utf-8"))))
                for name in archive.namelist()}


def outcome(state: str = "imported_with_messages", warnings=(), errors=()) -> canvas.SisImportResult:
    return canvas.SisImportResult.from_answer({"id": 7, "workflow_state": state, "progress": 100,
                                               "processing_warnings": [list(w) for w in warnings],
                                               "processing_errors": [list(e) for e in errors]})


def test_each_kind_is_the_canvas_csv_file_of_its_object_with_the_status_of_its_action():
    section = Section(key="class-1", course_key="ALG", course_id="", building_id="school-1", title="Algebra, P1",
                      section_code="ALG-1", grading_period_ids=["term-1"])
    files = read(canvas.zipped({
        **canvas.import_files("create", [Building(key="school-1", title="North", building_code="N")]),
        **canvas.import_files("create", [GradingPeriod(key="term-1", title="S1", start=date(2026, 8, 1),
                                                       end=date(2026, 12, 20))]),
        **canvas.import_files("create", [section]),
    }))
    assert files["accounts.csv"] == [{"account_id": "school-1", "parent_account_id": "", "name": "North",
                                      "status": "active"}]
    assert files["terms.csv"] == [{"term_id": "term-1", "name": "S1", "status": "active",
                                   "start_date": "2026-08-01", "end_date": "2026-12-20"}]
    assert files["courses.csv"] == [{"course_id": "class-1", "short_name": "ALG-1", "long_name": "Algebra, P1",
                                     "account_id": "school-1", "term_id": "term-1", "status": "active"}]
    assert files["sections.csv"] == [{"section_id": "class-1", "course_id": "class-1", "name": "Algebra, P1",
                                      "status": "active"}]
    two_terms = section.model_copy(update={"grading_period_ids": ["term-1", "term-2"]})
    assert canvas.import_files("create", [two_terms])["courses.csv"][1][4] == "", "several terms: no term"
    gone = canvas.import_files("deactivate", [section])
    assert list(gone) == ["courses.csv"] and gone["courses.csv"][1][-1] == "completed"
    assert canvas.import_files("deactivate", [person("u1")])["users.csv"][1][-1] == "suspended", "never deleted"
    assert canvas.import_files("deactivate", [enrolment("class-1", "u1")], dropped_enrollments="completed")[
        "enrollments.csv"][1] == ("class-1", "class-1", "u1", "student", "completed")
    assert canvas.import_files("create", [enrolment("class-1", "t1", admin=True)])["enrollments.csv"][1][3] == \
        "teacher"
    assert canvas.import_files("create", [GuardianLink(key="g1:u1", guardian_key="g1", student_key="u1")])[
        "user_observers.csv"] == [("observer_id", "student_id", "status"), ("g1", "u1", "active")]


def test_a_message_refuses_the_rows_it_names_and_the_others_are_confirmed():
    users = [person("u1"), person("u12"), person("u2")]
    results = canvas.item_results(users, outcome(warnings=[
        ("users.csv", "user hand-made has already claimed u1's requested login information, skipping")]))
    assert [(r.key, r.ok, r.lms_id) for r in results] == [("u1", False, None), ("u12", True, "u12"),
                                                           ("u2", True, "u2")]
    assert results[0].error == ("Canvas SIS import 7: user hand-made has already claimed <id>'s requested login "
                                "information, skipping")
    enrolled = [enrolment("c1", "u1"), enrolment("c1", "u2"), enrolment("c2", "u1")]
    results = canvas.item_results(enrolled, outcome(warnings=[
        ("enrollments.csv", "User not found for enrollment (User ID: u1, Course ID: c2, Section ID: c2)")]))
    assert [r.ok for r in results] == [True, True, False], "an enrollment is named by its user and its course"


def test_what_canvas_does_not_place_on_a_row_leaves_every_other_row_unconfirmed():
    users = [person("u1"), person("u2"), person("u3")]
    cut_short = canvas.item_results(users, outcome(warnings=[("users.csv", "No login_id given for user u1"),
                                                             ("", "and 3 more warnings")]))
    assert [r.ok for r in cut_short] == [False, False, False]
    assert cut_short[0].error.endswith("No login_id given for user <id>")
    assert "not confirmed" in cut_short[1].error and "sent again next run" in cut_short[1].error
    nameless = canvas.item_results(users, outcome(warnings=[("users.csv", 'Improper status "x" for a user')]))
    assert not any(r.ok for r in nameless)
    for state in ("failed", "failed_with_messages", "aborted"):
        assert not any(r.ok for r in canvas.item_results(users, outcome(state))), state
    assert all(r.ok for r in canvas.item_results(users, outcome("imported")))


def test_a_user_with_no_username_is_refused_before_any_import():
    users = [person("u1"), person("u2", username=None)]
    refused = canvas.unsendable(users)
    assert refused == {"u2": canvas.NO_LOGIN}
    results = canvas.item_results(users, outcome("imported"), refused)
    assert [(r.ok, r.error) for r in results] == [(True, None), (False, canvas.NO_LOGIN)]
    assert [r.ok for r in canvas.item_results([users[1]], None, refused)] == [False]


def test_the_same_batch_zips_to_the_same_bytes_so_a_retry_knows_its_import():
    files = canvas.import_files("create", [person("u1"), person("u2")])
    first = canvas.zipped(files)
    assert canvas.zipped(canvas.import_files("create", [person("u1"), person("u2")])) == first
    assert canvas.zipped(canvas.import_files("create", [person("u2"), person("u1")])) != first
    assert read(first)["users.csv"][0]["user_id"] == "u1"
