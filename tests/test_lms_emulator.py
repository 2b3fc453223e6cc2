"""The Schoology emulator over real HTTP on 127.0.0.1, signed the way Schoology's docs describe."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from oauthlib.oauth1 import SIGNATURE_HMAC, SIGNATURE_PLAINTEXT, Client
from requests_oauthlib import OAuth1

from include.sandbox import lms_emulator
from include.sandbox.lms_emulator import SchoologyEmulator

KEY = "lms-consumer-key"
SECRET = "lms-secret&value"


def oauth(key: str = KEY, secret: str = SECRET, **client: str) -> OAuth1:
    """Two-legged OAuth 1.0a, HMAC-SHA1, as Schoology's authentication docs describe: the
    consumer key and secret, no token; ``client`` overrides (a nonce, a timestamp, a token...)."""
    options = {"signature_method": SIGNATURE_HMAC, "realm": "Schoology API", **client}
    return OAuth1(key, client_secret=secret, **options)


def call(lms, method: str, path: str, body=None, auth=None, **params) -> requests.Response:
    return requests.request(method, f"{lms.base_url}/v1/{path}", json=body, params=params,
                            auth=auth or oauth(), timeout=5)


def user(uid: str, role: str = "1214", building: str | None = None, **fields) -> dict:
    return {"school_uid": uid, "name_first": "Ada", "name_last": f"L{uid}", "username": f"user-{uid}",
            "role_id": role, **({"building_id": building} if building else {}), **fields}


def bulk_users(lms, users: list[dict], update_existing: bool = True) -> requests.Response:
    params = {"update_existing": 1} if update_existing else {}
    return call(lms, "POST", "users", {"users": {"user": users}}, **params)


@pytest.fixture
def lms():
    with SchoologyEmulator(consumer_key=KEY, consumer_secret=SECRET) as emulator:
        yield emulator


@pytest.fixture
def school(lms):
    """A building, two grading periods and a course with a section: what enrollments need."""
    building = call(lms, "POST", f"schools/{lms.school_id}/buildings",
                    {"title": "North High", "building_code": "NH"}).json()["id"]
    periods = [call(lms, "POST", "gradingperiods", {"title": title, "start": start, "end": end}).json()["id"]
               for title, start, end in (("S1", "2026-08-20", "2027-01-15"), ("S2", "2027-01-16", "2027-06-10"))]
    course = call(lms, "POST", "courses", {"courses": {"course": [
        {"title": "Algebra", "course_code": "ALG1", "building_id": building}]}}).json()["course"][0]["id"]
    section = call(lms, "POST", f"courses/{course}/sections", {"sections": {"section": [
        {"title": "P1", "section_school_code": "ALG1-P1", "grading_periods": periods}]}}).json()["section"][0]["id"]
    return {"building": building, "periods": periods, "course": course, "section": section}


def test_two_legged_hmac_sha1_oauth_is_enforced(lms):
    assert lms.base_url.startswith("http://127.0.0.1:")
    assert call(lms, "GET", "roles").status_code == 200
    assert call(lms, "GET", "users", school_uids="a,b", start=0).status_code == 200, "the query is signed too"
    refused = {
        "wrong secret": oauth(secret="nope"),
        "wrong key": oauth(key="other"),
        "PLAINTEXT": oauth(signature_method=SIGNATURE_PLAINTEXT),
        "three-legged token": oauth(resource_owner_key="abc", resource_owner_secret="def"),
        "no nonce": oauth(nonce=""),
        "no timestamp": oauth(timestamp=""),
        "stale timestamp": oauth(timestamp=str(int(time.time()) - 3600)),
        "not OAuth": ("x", "y"),
    }
    for case, auth in refused.items():
        response = call(lms, "GET", "roles", auth=auth)
        assert response.status_code == 401, case
        assert "error" in response.json()
    assert requests.get(f"{lms.base_url}/v1/roles", timeout=5).status_code == 401


def test_plaintext_is_refused_though_it_carries_the_right_secret(lms):
    """PLAINTEXT sends the secret itself: the emulator, like the hook, will not have it."""
    response = call(lms, "GET", "roles", auth=oauth(signature_method=SIGNATURE_PLAINTEXT))
    assert response.status_code == 401 and "HMAC-SHA1" in response.json()["error"]


def test_a_signature_is_for_its_own_method_url_and_query_only(lms):
    """The emulator recomputes the signature from what arrived: a header signed for one call
    does not pass for another."""
    url, client = f"{lms.base_url}/v1/users", Client(KEY, client_secret=SECRET, realm="Schoology API")
    _, headers, _ = client.sign(f"{url}?building_id=1")
    assert requests.get(url, params={"building_id": "2"}, headers=headers, timeout=5).status_code == 401
    assert requests.delete(url, params={"building_id": "1"}, headers=headers, timeout=5).status_code == 401
    assert requests.get(url, params={"building_id": "1"}, headers=headers, timeout=5).status_code == 200
    form = {"title": "North High"}
    _, headers, _ = client.sign(url, "POST", body=form, headers={"Content-Type": lms_emulator.FORM})
    assert requests.post(url, data={"title": "South High"}, headers=headers, timeout=5).status_code == 401
    signed_form = requests.post(url, data=form, headers=headers, timeout=5)
    assert signed_form.status_code == 400 and "JSON" in signed_form.json()["error"], "signed; refused as not JSON"


def test_a_replayed_request_is_refused(lms):
    replayed = oauth(nonce=uuid.uuid4().hex, timestamp=str(int(time.time())))
    assert call(lms, "GET", "roles", auth=replayed).status_code == 200
    replay = call(lms, "GET", "roles", auth=replayed)
    assert replay.status_code == 401 and "replay" in replay.json()["error"]


def test_nonces_are_remembered_for_the_window_only(monkeypatch):
    """Replays are refused within the window; older nonces are let go, so each call costs the
    same after millions of them (the benchmark sends hundreds of thousands)."""
    monkeypatch.setattr(lms_emulator, "NONCE_WINDOW", 0.3)
    with SchoologyEmulator(consumer_key=KEY, consumer_secret=SECRET) as lms:
        for _ in range(5):
            assert call(lms, "GET", "roles").status_code == 200
        assert len(lms._nonces) == 5
        time.sleep(0.4)
        assert call(lms, "GET", "roles").status_code == 200
        assert len(lms._nonces) == 1


def test_roles_are_seeded_like_schoology_and_configurable():
    with SchoologyEmulator(consumer_key=KEY, consumer_secret=SECRET, roles={"1300": "Counselor"}) as lms:
        roles = {role["id"]: role["title"] for role in call(lms, "GET", "roles").json()["role"]}
    assert roles == {"1212": "School Admin", "1213": "Teacher", "1214": "Student", "1215": "Parent",
                     "1300": "Counselor"}


def test_bulk_calls_take_at_most_50_objects(lms):
    too_many = bulk_users(lms, [user(f"s{n}") for n in range(51)])
    assert too_many.status_code == 400 and "50" in too_many.json()["error"]
    assert lms.users == {}
    fifty = bulk_users(lms, [user(f"s{n}") for n in range(50)])
    assert fifty.status_code == 207
    assert [entry["response_code"] for entry in fifty.json()["user"]] == [200] * 50
    assert len(lms.users) == 50
    assert call(lms, "POST", "users", {"user": [user("x")]}).status_code == 400, "objects must be wrapped"


def test_207_answers_each_object_in_order_and_bad_ones_do_not_fail_the_call(lms, school):
    answer = bulk_users(lms, [
        user("ok1", building=school["building"]),
        user("bad-role", role="999"),
        user("bad-building", building="123"),
        user("no-login", username=""),
        user("dup-name", username="user-ok1"),
        user("ok2", additional_buildings=school["building"]),
    ])
    assert answer.status_code == 207
    entries = answer.json()["user"]
    assert [entry["response_code"] for entry in entries] == [200, 400, 400, 400, 400, 200]
    assert "role_id" in entries[1]["message"] and entries[1]["school_uid"] == "bad-role"
    assert "building_id" in entries[2]["message"]
    assert "username" in entries[3]["message"] and "username" in entries[4]["message"]
    assert {u["school_uid"] for u in lms.users.values()} == {"ok1", "ok2"}
    assert entries[0]["id"] in lms.users and entries[0]["location"].endswith(f"/v1/users/{entries[0]['id']}")


def test_update_existing_matches_school_uid_and_never_duplicates(lms):
    first = bulk_users(lms, [user("s1"), user("s2")]).json()["user"]
    again = bulk_users(lms, [user("s1", name_first="Grace"), user("s2")]).json()["user"]
    assert [entry["id"] for entry in again] == [entry["id"] for entry in first]
    assert len(lms.users) == 2
    assert lms.users[first[0]["id"]]["name_first"] == "Grace"
    without = bulk_users(lms, [user("s1")], update_existing=False).json()["user"][0]
    assert without["response_code"] == 400 and "already exists" in without["message"]
    assert len(lms.users) == 2


def test_buildings_and_grading_periods_keep_their_codes_and_titles_unique(lms, school):
    duplicate = call(lms, "POST", f"schools/{lms.school_id}/buildings", {"title": "Other", "building_code": "NH"})
    assert duplicate.status_code == 400 and "building_code" in duplicate.json()["error"]
    assert call(lms, "POST", "schools/999/buildings", {"title": "X", "building_code": "X"}).status_code == 404
    assert call(lms, "PUT", f"schools/{school['building']}", {"title": "North HS"}).status_code == 204
    assert lms.buildings[school["building"]]["title"] == "North HS"
    listed = call(lms, "GET", f"schools/{lms.school_id}/buildings").json()["building"]
    assert [(b["id"], b["building_code"]) for b in listed] == [(school["building"], "NH")]

    clash = call(lms, "POST", "gradingperiods", {"title": "S1", "start": "2026-08-01", "end": "2026-12-01"})
    assert clash.status_code == 400 and "already exists" in clash.json()["error"]
    backwards = call(lms, "POST", "gradingperiods", {"title": "S3", "start": "2027-01-01", "end": "2026-01-01"})
    assert backwards.status_code == 400
    period = school["periods"][0]
    assert call(lms, "PUT", f"gradingperiods/{period}", {"end": "2027-01-20"}).status_code == 204
    assert lms.grading_periods[period]["end"] == "2027-01-20"
    in_use = call(lms, "DELETE", f"gradingperiods/{period}")
    assert in_use.status_code == 400 and "sections" in in_use.json()["error"]
    titles = [p["title"] for p in call(lms, "GET", "gradingperiods").json()["gradingperiods"]]
    assert titles == ["S1", "S2"]


def test_courses_are_keyed_by_code_in_their_building_and_sections_by_school_code(lms, school):
    courses = call(lms, "POST", "courses", {"courses": {"course": [
        {"title": "Algebra I", "course_code": "ALG1", "building_id": school["building"]},
        {"title": "Nowhere", "course_code": "X1", "building_id": "42"},
        {"title": "Bio", "course_code": "BIO"},
    ]}}, update_existing=1).json()["course"]
    assert courses[0] == {"response_code": 200, "id": school["course"], "location": courses[0]["location"],
                          "course_code": "ALG1"}
    assert courses[1]["response_code"] == 400 and "building_id" in courses[1]["message"]
    assert lms.courses[school["course"]]["title"] == "Algebra I"
    assert len(lms.courses) == 2
    bio = courses[2]["id"]
    sections = call(lms, "POST", f"courses/{bio}/sections", {"sections": {"section": [
        {"title": "P1", "section_school_code": "ALG1-P1", "grading_periods": school["periods"]},
        {"title": "P2", "section_school_code": "BIO-P2", "grading_periods": ["1"]},
        {"title": "P3", "section_school_code": "BIO-P3", "grading_periods": []},
        {"title": "P4", "section_school_code": "BIO-P4", "grading_periods": school["periods"][:1]},
    ]}}, update_existing=1).json()["section"]
    assert [entry["response_code"] for entry in sections] == [400, 400, 400, 200]
    assert "another course" in sections[0]["message"]
    assert "grading period" in sections[1]["message"]
    again = call(lms, "POST", f"courses/{school['course']}/sections", {"sections": {"section": [
        {"title": "Period 1", "section_school_code": "ALG1-P1", "grading_periods": school["periods"]}]}},
        update_existing=1).json()["section"][0]
    assert again["id"] == school["section"] and lms.sections[school["section"]]["section_title"] == "Period 1"
    found = call(lms, "GET", "sections", section_school_codes="ALG1-P1,BIO-P4,nope").json()["section"]
    assert sorted(s["section_school_code"] for s in found) == ["ALG1-P1", "BIO-P4"]
    assert call(lms, "POST", "courses/1/sections", {"sections": {"section": []}}).status_code == 404


def test_enrollments_import_by_external_ids_and_drop(lms, school):
    bulk_users(lms, [user("t1", role="1213"), user("s1"), user("s2")])

    def enroll(*rows):
        answer = call(lms, "POST", "enrollments/import/course", {"enrollments": {"enrollment": list(rows)}})
        assert answer.status_code == 207
        return answer.json()["enrollments"]["enrollment"]

    entries = enroll(
        {"course_code": "ALG1", "section_school_code": "ALG1-P1", "school_uid": "t1", "admin": "1"},
        {"course_code": "ALG1", "section_school_code": "ALG1-P1", "school_uid": "s1", "admin": "0"},
        {"section_school_code": "ALG1-P1", "school_uid": "ghost"},
        {"section_school_code": "NOPE", "school_uid": "s2"},
        {"course_code": "BIO", "section_school_code": "ALG1-P1", "school_uid": "s2"},
    )
    assert [entry["response_code"] for entry in entries] == [200, 200, 404, 404, 400]
    assert "User" in entries[2]["message"] and "Section" in entries[3]["message"]
    assert entries[0]["course_code"] == "ALG1" and entries[0]["section_school_code"] == "ALG1-P1"
    enrolled = {(e["uid"], e["admin"]) for e in lms.enrollments.values()}
    uid = {u["school_uid"]: u["uid"] for u in lms.users.values()}
    assert enrolled == {(uid["t1"], 1), (uid["s1"], 0)}
    promoted = enroll({"section_school_code": "ALG1-P1", "school_uid": "s1", "admin": "1"})[0]
    assert promoted["id"] == entries[1]["id"] and lms.enrollments[promoted["id"]]["admin"] == 1
    assert len(lms.enrollments) == 2
    dropped = enroll({"section_school_code": "ALG1-P1", "school_uid": "s1", "delete": "1"})[0]
    assert dropped["response_code"] == 200 and promoted["id"] not in lms.enrollments
    assert enroll({"section_school_code": "ALG1-P1", "school_uid": "s1", "delete": "1"})[0]["response_code"] == 404


def test_parent_associations_by_school_uid(lms):
    bulk_users(lms, [user("kid"), user("mum", role="1215")])
    uid = {u["school_uid"]: u["uid"] for u in lms.users.values()}

    def associate(*rows):
        answer = call(lms, "POST", "users/import/associations/parents", {"associations": {"association": list(rows)}})
        assert answer.status_code == 207
        return answer.json()["association"]

    linked = associate({"student_school_uid": "kid", "parent_school_uid": "mum"},
                       {"student_school_uid": "kid", "parent_school_uid": "nobody"})
    assert linked[0] == {"response_code": 200, "student_school_uid": "kid", "student_uid": uid["kid"],
                         "parent_school_uid": "mum", "parent_uid": uid["mum"]}
    assert linked[1]["response_code"] == 404
    assert associate({"student_school_uid": "kid", "parent_school_uid": "mum"})[0]["response_code"] == 200
    assert list(lms.associations) == [f"{uid['mum']}:{uid['kid']}"]
    assert associate({"student_school_uid": "kid", "parent_school_uid": "mum", "delete": "1"})[0][
        "response_code"] == 200
    assert lms.associations == {}


def test_deleting_users_makes_them_inactive(lms):
    ids = [entry["id"] for entry in bulk_users(lms, [user("a"), user("b")]).json()["user"]]
    assert call(lms, "DELETE", "users", uids=ids[0], option_keep_enrollments=1).status_code == 204
    assert list(lms.users) == [ids[1]] and list(lms.inactive_users) == [ids[0]]
    assert call(lms, "GET", "users", school_uids="a,b").json()["user"][0]["school_uid"] == "b"
    assert call(lms, "DELETE", "users", uids=",".join(str(n) for n in range(51))).status_code == 400


def test_lists_are_paged_with_links_next(lms):
    bulk_users(lms, [user(f"s{n:02}") for n in range(45)])
    seen, url, pages = [], f"{lms.base_url}/v1/users", 0
    while url:
        payload = requests.get(url, auth=oauth(), timeout=5).json()
        assert payload["total"] == 45
        seen += [u["school_uid"] for u in payload["user"]]
        url, pages = payload["links"].get("next"), pages + 1
    assert pages == 3 and seen == [f"s{n:02}" for n in range(45)]


def test_429_with_retry_after_when_over_the_rate():
    with SchoologyEmulator(consumer_key=KEY, consumer_secret=SECRET, rate_limit=5, retry_after=2) as lms:
        statuses = [call(lms, "GET", "roles") for _ in range(12)]
        throttled = [response for response in statuses if response.status_code == 429]
        assert throttled and all(response.headers["Retry-After"] == "2" for response in throttled)
        assert [response.status_code for response in statuses[:5]] == [200] * 5
        time.sleep(0.25)
        assert call(lms, "GET", "roles").status_code == 200, "the bucket refills at the configured rate"


@pytest.mark.parametrize("fault", ["429", "500", "503"])
def test_injected_errors_hit_the_matching_requests_only(lms, fault):
    lms.inject(fault, path_contains="/users", after=1, retry_after=0.5)
    assert call(lms, "GET", "users").status_code == 200
    assert call(lms, "GET", "roles").status_code == 200
    hit = call(lms, "GET", "users")
    assert hit.status_code == int(fault)
    if fault == "429":
        assert hit.headers["Retry-After"] == "0.5"
    assert call(lms, "GET", "users").status_code == 200


def test_reject_items_fails_the_chosen_keys_with_a_message(lms):
    lms.inject("reject_items", keys=["s2"], message="account locked by the district")
    entries = bulk_users(lms, [user("s1"), user("s2")]).json()["user"]
    assert entries[1] == {"response_code": 400, "message": "account locked by the district", "school_uid": "s2"}
    lms.clear_faults()
    assert bulk_users(lms, [user("s2")]).json()["user"][0]["response_code"] == 200


def test_timeout_after_apply_applies_the_call_then_drops_the_connection(lms):
    lms.inject("timeout_after_apply", seconds=0.3)
    assert call(lms, "GET", "users").status_code == 200, "reads are never the ones stalled"
    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{lms.base_url}/v1/users", json={"users": {"user": [user("s1")]}}, auth=oauth(),
                      params={"update_existing": 1}, timeout=(5, 0.1))
    time.sleep(0.35)
    assert [u["school_uid"] for u in lms.users.values()] == ["s1"], "the LMS applied it all the same"
    assert lms.requests[-1].status == 0
    lms.inject("timeout_after_apply")
    with pytest.raises(requests.ConnectionError):
        bulk_users(lms, [user("s2")])
    assert len(lms.users) == 2


def test_request_log_counts_writes_and_resets(lms):
    call(lms, "GET", "roles")
    bulk_users(lms, [user("s1")])
    call(lms, "DELETE", "users", uids=next(iter(lms.users)))
    assert [(r.method, r.path, r.status) for r in lms.requests] == [
        ("GET", "/v1/roles", 200), ("POST", "/v1/users", 207), ("DELETE", "/v1/users", 204)]
    assert lms.write_requests == 2
    assert lms.requests[0].headers["Authorization"].startswith('OAuth realm="Schoology API"')
    lms.reset_stats()
    assert lms.requests == [] and lms.write_requests == 0


def test_unknown_faults_and_endpoints_are_refused(lms):
    with pytest.raises(ValueError, match="unknown fault"):
        lms.inject("explode")
    assert call(lms, "GET", "nothing/here").status_code == 404
    broken = requests.post(f"{lms.base_url}/v1/users", data=b"{not json", auth=oauth(), timeout=5)
    assert broken.status_code == 400


# -- Schoology as Schoology documents it (issue 17) -------------------------------------------


def _sections_of(lms, course: str, code: str, periods: list, section_school_code: str) -> requests.Response:
    return call(lms, "POST", f"courses/{course}/sections", {"sections": {"section": [
        {"title": "P1", "section_code": code, "section_school_code": section_school_code,
         "grading_periods": periods}]}}, update_existing=1)


def test_sections_of_grading_periods_that_have_all_ended_are_listed_only_with_include_past(lms, school):
    """Course Sections docs: include_past=1 "to include sections from expired/past grading periods"."""
    ended = call(lms, "POST", "gradingperiods", {"title": "Old", "start": "2020-08-20", "end": "2021-06-10"}).json()
    past = call(lms, "POST", f"courses/{school['course']}/sections", {"sections": {"section": [
        {"title": "Old P1", "section_school_code": "OLD-P1", "grading_periods": [ended["id"]]},
        {"title": "Mixed", "section_school_code": "MIX-P1", "grading_periods": [ended["id"], school["periods"][0]]},
    ]}}).json()["section"]
    assert all(entry["response_code"] == 200 for entry in past)
    listed = call(lms, "GET", "sections", section_school_codes="OLD-P1,MIX-P1,ALG1-P1").json()["section"]
    assert sorted(s["section_school_code"] for s in listed) == ["ALG1-P1", "MIX-P1"]
    listed = call(lms, "GET", "sections", section_school_codes="OLD-P1,MIX-P1,ALG1-P1", include_past=1).json()
    assert sorted(s["section_school_code"] for s in listed["section"]) == ["ALG1-P1", "MIX-P1", "OLD-P1"]
    of_course = call(lms, "GET", f"courses/{school['course']}/sections").json()["section"]
    assert "OLD-P1" not in [s["section_school_code"] for s in of_course]
    of_course = call(lms, "GET", f"courses/{school['course']}/sections", include_past=1).json()["section"]
    assert "OLD-P1" in [s["section_school_code"] for s in of_course]


def test_update_existing_matches_sections_by_section_code_and_grading_periods(lms, school):
    """Bulk sections docs: update_existing matches "by the section_code and grading_periods fields".
    Two objects with one section_code in one course and term are one section to Schoology."""
    course, periods = school["course"], school["periods"][:1]
    first = _sections_of(lms, course, "P1", periods, "class-a").json()["section"][0]
    second = _sections_of(lms, course, "P1", periods, "class-b").json()["section"][0]
    assert first["response_code"] == second["response_code"] == 200
    assert first["id"] == second["id"], "matched by section_code + grading_periods: the same section"
    assert lms.sections[first["id"]]["section_school_code"] == "class-b"
    other_term = _sections_of(lms, course, "P1", school["periods"][1:], "class-c").json()["section"][0]
    assert other_term["response_code"] == 200 and other_term["id"] != first["id"], "another grading period"
    without = call(lms, "POST", f"courses/{course}/sections", {"sections": {"section": [
        {"title": "P1", "section_code": "P1", "grading_periods": periods}]}}).json()["section"][0]
    assert without["response_code"] == 400, "unique across the course and grading period"


def test_a_user_field_left_out_keeps_its_value_and_an_empty_one_clears_it(lms):
    assert bulk_users(lms, [user("u1", primary_email="u1@school.org", name_first_preferred="Addie")]).ok
    uid = next(iter(lms.users))
    left_out = user("u1", name_first="Ada2")
    assert bulk_users(lms, [left_out]).json()["user"][0]["response_code"] == 200
    assert (lms.users[uid]["primary_email"], lms.users[uid]["name_first_preferred"]) == ("u1@school.org", "Addie")
    assert bulk_users(lms, [user("u1", primary_email="", name_first_preferred="")]).ok
    assert (lms.users[uid]["primary_email"], lms.users[uid]["name_first_preferred"]) == ("", "")


def test_inactive_users_are_listed_apart_and_reactivated_as_documented(lms):
    assert bulk_users(lms, [user("u1"), user("u2")]).ok
    uids = {u["school_uid"]: u["uid"] for u in lms.users.values()}
    assert call(lms, "DELETE", "users", uids=uids["u1"], option_keep_enrollments=1).status_code == 204
    assert call(lms, "GET", "users", school_uids="u1").json()["user"] == [], "inactive: not among the users"
    inactive = call(lms, "GET", "users/inactive").json()
    assert [(u["uid"], u["school_uid"]) for u in inactive["user"]] == [(uids["u1"], "u1")]
    answer = call(lms, "PUT", "users/reactivate", {"user": [{"uid": uids["u1"], "option_reenroll": "1"},
                                                            {"uid": uids["u2"], "option_reenroll": "1"}]})
    assert answer.status_code == 207
    entries = answer.json()["user"]
    assert [e["response_code"] for e in entries] == [200, 404], "u2 was never inactive"
    assert entries[0]["location"].endswith(f"/users/{uids['u1']}")
    assert uids["u1"] in lms.users and lms.inactive_users == {}
    assert call(lms, "GET", "users/inactive").json()["user"] == []


def test_a_401_fault_answers_like_a_reused_nonce_once(lms):
    lms.inject("401")
    first, second = call(lms, "GET", "roles"), call(lms, "GET", "roles")
    assert (first.status_code, second.status_code) == (401, 200)
    assert "nonce" in first.json()["error"]


def test_throttle_faults_with_and_without_retry_after(lms):
    lms.inject("429", retry_after=None)
    lms.inject("503", retry_after=2)
    lms.inject("503")
    answers = [call(lms, "GET", "roles") for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 503, 503, 200]
    assert [a.headers.get("Retry-After") for a in answers[:3]] == [None, "2", None]
