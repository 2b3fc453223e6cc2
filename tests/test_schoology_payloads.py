"""Schoology's payloads (``include/lms/schoology.py``), without HTTP: what each item becomes on the
wire, and what Schoology's answers become."""

from __future__ import annotations

import json
from datetime import date

import pytest

from include.lms import schoology as wire
from include.lms.target import Building, Course, Enrollment, GradingPeriod, GuardianLink, ItemResult
from include.lms.target import Section, User


def person(**fields) -> User:
    values = {"key": "stu-1", "given_name": "Ada", "family_name": "Lovelace", "preferred_first_name": None,
              "email": None, "username": None, "role_id": "1214", "building_id": "b1",
              "additional_building_ids": []}
    return User(**{**values, **fields})


def enrollment(admin: bool = False) -> Enrollment:
    return Enrollment(key="S1:stu-1", course_key="MATH", section_key="S1", section_id="900", user_key="stu-1",
                      admin=admin)


LINK = GuardianLink(key="par-1:stu-1", guardian_key="par-1", student_key="stu-1")


def test_a_building_and_a_grading_period_are_sent_by_title_and_code_or_dates():
    assert json.dumps(wire.building_body(Building(key="k", title="North High", building_code="NH"))) == \
        '{"title": "North High", "building_code": "NH"}'
    period = GradingPeriod(key="t1", title="Term 1", start=date(2026, 8, 20), end=date(2026, 12, 18))
    assert json.dumps(wire.grading_period_body(period)) == \
        '{"title": "Term 1", "start": "2026-08-20", "end": "2026-12-18"}'


def test_a_user_missing_an_email_username_or_preferred_name_in_ic_is_sent_without_those_keys():
    """Schoology's update_existing keeps what an object leaves out; "" may clear what a school set."""
    assert list(wire.user_payload(person()).items()) == [
        ("school_uid", "stu-1"), ("name_first", "Ada"), ("name_last", "Lovelace"), ("role_id", "1214"),
        ("building_id", "b1"), ("additional_buildings", ""), ("synced", 1),
    ]
    full = wire.user_payload(person(preferred_first_name="Addie", email="ada@example.org", username="ada",
                                    additional_building_ids=["b2", "b3"]))
    assert (full["name_first_preferred"], full["primary_email"], full["username"], full["additional_buildings"]) \
        == ("Addie", "ada@example.org", "ada", "b2,b3")


def test_a_section_is_matched_by_its_key_alone_never_by_the_ic_class_code():
    """update_existing matches sections on section_code + grading_periods; IC class codes repeat in
    a course and term, so section_code carries the section's key (as section_school_code does)."""
    one, other = (Section(building_id="b", key=key, course_key="MATH", course_id="77", title="Math 1", section_code="P1",
                          grading_period_ids=["5"]) for key in ("class-a", "class-b"))
    sent = [wire.section_payload(one), wire.section_payload(other)]
    assert [(s["section_code"], s["section_school_code"]) for s in sent] == [("class-a", "class-a"),
                                                                             ("class-b", "class-b")]


def test_a_course_and_a_section_carry_their_codes_and_are_synced():
    assert list(wire.course_payload(Course(key="MATH", title="Math", building_id="b1")).items()) == [
        ("title", "Math"), ("course_code", "MATH"), ("building_id", "b1"), ("synced", 1)]
    section = Section(building_id="b", key="S1", course_key="MATH", course_id="77", title="Math 1", section_code="P1",
                      grading_period_ids=["5", "6"])
    assert list(wire.section_payload(section).items()) == [
        ("title", "Math 1"), ("section_code", "S1"), ("section_school_code", "S1"), ("grading_periods", [5, 6]),
        ("synced", 1)]


def test_an_enrollment_goes_by_external_codes_and_a_drop_adds_delete():
    assert wire.enrollment_payload(enrollment(admin=True)) == {
        "course_code": "MATH", "section_school_code": "S1", "school_uid": "stu-1", "admin": 1}
    assert wire.enrollment_payload(enrollment(), drop=True) == {
        "course_code": "MATH", "section_school_code": "S1", "school_uid": "stu-1", "admin": 0, "delete": 1}


def test_a_parent_link_goes_by_both_school_uids_and_a_drop_adds_delete():
    assert wire.guardian_link_payload(LINK) == {"student_school_uid": "stu-1", "parent_school_uid": "par-1"}
    assert wire.guardian_link_payload(LINK, drop=True) == {
        "student_school_uid": "stu-1", "parent_school_uid": "par-1", "delete": 1}


def test_the_people_of_a_bulk_call_are_every_person_field_of_every_object():
    people = wire.people_in([wire.user_payload(person(username="ada")), wire.guardian_link_payload(LINK)])
    assert {"stu-1", "Ada", "Lovelace", "ada", "par-1"} <= set(people)
    assert "1214" not in people and "b1" not in people


@pytest.mark.parametrize("entry, lms_id", [
    ({"id": 42}, "42"),
    ({"id": "", "location": "https://api.schoology.com/v1/users/43/"}, "43"),
    ({"location": "/v1/sections/44"}, "44"),
    ({}, None),
])
def test_an_entrys_id_is_its_id_else_the_end_of_its_location(entry, lms_id):
    assert wire.entry_id(entry) == lms_id


def test_a_created_or_updated_entry_is_ok_with_its_id_and_a_refused_one_carries_the_message():
    assert wire.created_result("k", {"response_code": 201, "id": 7}) == ItemResult(key="k", ok=True, lms_id="7")
    assert wire.created_result("k", {"response_code": 200, "location": "x/8"}).lms_id == "8"
    assert wire.created_result("k", {"response_code": 400, "message": "bad role"}) == \
        ItemResult(key="k", ok=False, error="bad role")
    assert wire.created_result("k", {"response_code": 409}).error == "response_code 409"
    assert wire.created_result("k", {}).error == "response_code 0"


def test_an_enrollment_entry_has_an_id_when_made_and_a_drop_of_one_already_gone_is_ok():
    assert wire.enrollment_result(enrollment(), {"response_code": 200, "id": 9}).lms_id == "9"
    assert wire.enrollment_result(enrollment(), {"response_code": 200, "id": 9}, drop=True) == \
        ItemResult(key="S1:stu-1", ok=True)
    assert wire.enrollment_result(enrollment(), {"response_code": 404}, drop=True).ok
    assert not wire.enrollment_result(enrollment(), {"response_code": 404, "message": "no such"}).ok


def test_a_parent_link_entry_is_identified_by_parent_and_student_uids():
    entry = {"response_code": 200, "parent_uid": "par-1", "student_uid": "stu-1"}
    assert wire.guardian_link_result(LINK, entry).lms_id == "par-1:stu-1"
    assert wire.guardian_link_result(LINK, entry, drop=True).lms_id is None
    assert wire.guardian_link_result(LINK, {"response_code": 404}, drop=True).ok


def test_a_bulk_answers_entries_are_found_along_the_path_the_objects_went_under():
    answer = {"enrollments": {"enrollment": [{"response_code": 200}]}}
    assert wire.bulk_entries(answer, ("enrollments", "enrollment")) == [{"response_code": 200}]
    assert wire.bulk_entries({"user": [1, 2]}, ("user",)) == [1, 2]
    assert wire.bulk_entries({}, ("enrollments", "enrollment")) is None
    assert wire.bulk_entries(None, ("user",)) is None


def test_list_records_become_ids_by_external_key_and_catalogs_by_id():
    records = [{"id": 1, "title": "Term 1", "course_code": "MATH"},
               {"id": 2, "title": "Term 2", "course_code": "ART"}]
    assert wire.ids_by(records, "title") == {"Term 1": "1", "Term 2": "2"}
    assert wire.ids_by([{"uid": "stu-1", "id": 5}], "uid") == {"stu-1": "5"}
    assert wire.ids_by([{"section_school_code": "S1", "id": 5}], "section_school_code", "id") == {"S1": "5"}
    with pytest.raises(KeyError):
        wire.ids_by([{"id": 3}], "course_code")
    assert wire.buildings_by_code([{"id": 1, "building_code": "NH"}, {"id": 2}]) == {"NH": "1", None: "2"}
    assert wire.catalog_of(records) == {"1": "Term 1", "2": "Term 2"}
    assert wire.created_id({"id": 12}) == "12"


def test_roles_are_the_schools_and_the_buildings():
    answer = {"role": [{"id": 1, "title": "Student"}], "building_role": [{"id": 2, "title": "Principal"}]}
    assert wire.catalog_of(wire.role_records(answer)) == {"1": "Student", "2": "Principal"}
    assert wire.role_records({"role": None}) == []


def test_items_go_in_batches_of_at_most_50_in_order():
    chunks = wire.batches(list(range(120)))
    assert [len(chunk) for chunk in chunks] == [50, 50, 20]
    assert [n for chunk in chunks for n in chunk] == list(range(120))
    assert wire.batches([]) == []
