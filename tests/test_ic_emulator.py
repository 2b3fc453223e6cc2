"""The IC emulator and the synthetic district it serves, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import pytest
import requests

from include.oneroster.models import COLLECTIONS
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from include.sandbox.ic_emulator import MAX_LIMIT, ICEmulator
from tests.support import CLIENT_ID, CLIENT_SECRET


def token(ic, secret=CLIENT_SECRET) -> requests.Response:
    return requests.post(ic.token_url, data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, secret), timeout=5)


def get(ic, version, collection, bearer=None, **params) -> requests.Response:
    bearer = bearer or token(ic).json()["access_token"]
    return requests.get(
        f"{ic.rostering_url(version)}/{collection}",
        params=params,
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=5,
    )


def test_serves_ic_url_forms_and_only_on_loopback(ic):
    assert ic.base_url.startswith("http://127.0.0.1:")
    assert ic.rostering_url("1.2").endswith("/campus/api/oneroster/v1p2/demo/ims/oneroster/rostering/v1p2")
    assert ic.rostering_url("1.1").endswith("/campus/api/oneroster/v1p1/demo/ims/oneroster/v1p1")
    assert get(ic, "1.2", "orgs").status_code == 200
    assert get(ic, "1.1", "orgs").status_code == 200
    wrong_app = ic.rostering_url("1.2").replace("/demo/", "/other/")
    response = requests.get(f"{wrong_app}/orgs", headers={"Authorization": "Bearer x"}, timeout=5)
    assert response.status_code == 404 and response.json()["imsx_codeMajor"] == "failure"


def test_tokens_need_the_right_secret_and_expire(demo_district):
    with ICEmulator(demo_district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo",
                    token_ttl=1) as ic:
        refused = token(ic, secret="wrong")
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_client", "a token endpoint answers as RFC 6749 says"
        granted = token(ic).json()
        assert granted["token_type"] == "Bearer" and granted["expires_in"] == 1
        assert get(ic, "1.2", "orgs", bearer=granted["access_token"]).status_code == 200
        time.sleep(1.1)
        assert get(ic, "1.2", "orgs", bearer=granted["access_token"]).status_code == 401
        ic.revoke_credentials()
        assert token(ic).status_code == 401
        ic.restore_credentials()
        assert token(ic).status_code == 200
        anonymous = requests.get(f"{ic.rostering_url('1.2')}/orgs", timeout=5)
        assert anonymous.status_code == 401 and anonymous.json()["imsx_severity"] == "error"


def test_pages_carry_total_and_links(ic, demo_district):
    total = demo_district.expected_counts()["users"]
    response = get(ic, "1.2", "users", limit=10, offset=20, filter="status='active' OR status='tobedeleted'")
    assert response.status_code == 200
    assert int(response.headers["X-Total-Count"]) == total
    links = {link["rel"]: link["url"] for link in requests.utils.parse_header_links(response.headers["Link"])}
    assert set(links) == {"first", "prev", "next", "last"}
    assert "offset=30" in links["next"] and "offset=10" in links["prev"]
    assert f"offset={(total - 1) // 10 * 10}" in links["last"]
    assert "filter=" in links["next"], "links keep the query"
    ids = [user["sourcedId"] for user in response.json()["users"]]
    assert ids == [user["sourcedId"] for user in demo_district.records("users")[20:30]]
    last = get(ic, "1.2", "users", limit=10, offset=(total - 1) // 10 * 10)
    assert "next" not in {link["rel"] for link in requests.utils.parse_header_links(last.headers["Link"])}


def test_limit_defaults_to_100_and_is_capped_at_50000(ic):
    big = SyntheticDistrict(DistrictSpec(seed=3, students=2_000, schools=3, school_year=2027))
    ic.district = big
    assert len(get(ic, "1.2", "enrollments").json()["enrollments"]) == 100
    capped = get(ic, "1.2", "enrollments", limit=MAX_LIMIT * 2)
    assert len(capped.json()["enrollments"]) == min(MAX_LIMIT, big.expected_counts()["enrollments"])
    bad = get(ic, "1.2", "users", limit="ten")
    assert bad.status_code == 400 and "limit" in bad.json()["imsx_description"]


def test_filters_follow_the_oneroster_grammar(ic, demo_district):
    users = demo_district.records("users")
    tobedeleted = [user["sourcedId"] for user in users if user["status"] == "tobedeleted"]
    response = get(ic, "1.2", "users", limit=1000, filter="status='tobedeleted'")
    assert [user["sourcedId"] for user in response.json()["users"]] == tobedeleted
    both = get(ic, "1.2", "users", limit=1000, filter="status='active' AND givenName~'zo'")
    expected = [u["sourcedId"] for u in users if u["status"] == "active" and "zo" in u["givenName"].lower()]
    assert [user["sourcedId"] for user in both.json()["users"]] == expected
    too_many = get(ic, "1.2", "users", filter="status='active' AND status='active' AND status='active'")
    assert too_many.status_code == 400
    assert too_many.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"] == \
        "invalid_filter_field"
    assert get(ic, "1.2", "users", filter="status=active").status_code == 400


def test_delta_filter_serves_what_changed_since(ic):
    district = SyntheticDistrict(DistrictSpec(seed=9, students=300, schools=3, school_year=2027))
    ic.district = district
    since = "2026-11-01T00:00:00.000Z"
    assert get(ic, "1.2", "enrollments", filter=f"dateLastModified>'{since}'").json()["enrollments"] == []
    changed = district.modify("enrollments", 25, datetime(2026, 11, 2, 3, tzinfo=timezone.utc))
    assert len(changed) == 25
    served = get(ic, "1.2", "enrollments", limit=100, filter=f"dateLastModified>'{since}'").json()["enrollments"]
    assert [record["sourcedId"] for record in served] == changed
    assert {record["dateLastModified"] for record in served} == {"2026-11-02T03:00:00.000Z"}
    # an old cut-off goes the slow way and must agree
    slow = get(ic, "1.2", "enrollments", limit=50_000, filter="dateLastModified>'2026-01-01T00:00:00Z'")
    assert len(slow.json()["enrollments"]) == district.expected_counts()["enrollments"]


def test_sort_and_order_by(ic, demo_district):
    response = get(ic, "1.2", "users", limit=1000, sort="familyName", orderBy="desc")
    names = [user["familyName"] for user in response.json()["users"]]
    assert names == sorted(names, reverse=True) and len(names) == demo_district.expected_counts()["users"]
    assert get(ic, "1.2", "users", sort="noSuchField").status_code == 400


def test_single_records_and_unknown_ids(ic, demo_district):
    first = demo_district.records("classes")[3]
    bearer = token(ic).json()["access_token"]
    one = requests.get(f"{ic.rostering_url('1.2')}/classes/{first['sourcedId']}",
                       headers={"Authorization": f"Bearer {bearer}"}, timeout=5)
    assert one.json()["class"]["sourcedId"] == first["sourcedId"]
    missing = requests.get(f"{ic.rostering_url('1.2')}/classes/nope", headers={"Authorization": f"Bearer {bearer}"},
                           timeout=5)
    assert missing.status_code == 404 and "nope" in missing.json()["imsx_description"]


@pytest.mark.parametrize("fault", ["reset", "reset_mid_body"])
def test_dropped_connections_are_dropped(ic, fault):
    bearer = token(ic).json()["access_token"]
    ic.inject(fault)
    with pytest.raises(requests.exceptions.RequestException):
        get(ic, "1.2", "users", bearer=bearer)
    assert get(ic, "1.2", "users", bearer=bearer).status_code == 200
    assert [request.status for request in ic.requests if "oauth2" not in request.path] == [0, 200]


def test_faults_wait_their_turn_and_match_paths(ic):
    bearer = token(ic).json()["access_token"]
    ic.inject("503", after=1, times=2, path_contains="/enrollments")
    assert get(ic, "1.2", "users", bearer=bearer).status_code == 200
    statuses = [get(ic, "1.2", "enrollments", bearer=bearer).status_code for _ in range(4)]
    assert statuses == [200, 503, 503, 200]
    ic.inject("429", retry_after=7)
    limited = get(ic, "1.2", "users", bearer=bearer)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "7"
    ic.inject("latency", seconds=0.3)
    started = time.monotonic()
    assert get(ic, "1.2", "orgs", bearer=bearer).status_code == 200
    assert time.monotonic() - started >= 0.3
    with pytest.raises(ValueError, match="unknown fault"):
        ic.inject("meteor")


def test_1_1_ids_are_role_prefixed_and_1_2_keeps_them_as_legacy(demo_district):
    v11, v12 = demo_district.records("users", "1.1"), demo_district.records("users", "1.2")
    prefixes = Counter(user["sourcedId"][0] for user in v11)
    assert set(prefixes) == {"s", "t", "a", "p"}
    for old, new in zip(v11, v12):
        assert new["metadata"]["ic.legacysourceId"] == old["sourcedId"]
        assert old["sourcedId"][1:] == new["sourcedId"]
        assert old["status"] == new["status"]
        assert "roles" in new and "role" not in new and "role" in old and "orgs" in old
    assert {new["enabledUser"] for new in v12} <= {"true", "false"}


def test_the_district_has_the_awkward_cases(demo_district):
    users = list(demo_district.records("users"))
    by_id = {user["sourcedId"]: user for user in users}
    classes = list(demo_district.records("classes"))
    courses = list(demo_district.records("courses"))
    sessions = list(demo_district.records("academicSessions"))
    roles = Counter(user["roles"][0]["role"] for user in users)
    assert set(roles) == {"student", "teacher", "siteAdministrator", "guardian"}
    assert any(" " in user["username"] for user in users), "usernames with spaces"
    assert any(not user["givenName"].isascii() or not user["familyName"].isascii() for user in users)
    assert any(user.get("preferredFirstName") for user in users)
    assert {user["status"] for user in users} == {"active", "tobedeleted"}
    assert any(enrollment["status"] == "tobedeleted" for enrollment in demo_district.records("enrollments"))
    guardians = [user for user in users if user["roles"][0]["role"] == "guardian"]
    for guardian in guardians:
        for child in guardian["agents"]:
            assert guardian["sourcedId"] in [agent["sourcedId"] for agent in by_id[child["sourcedId"]]["agents"]]
    multi_school = [user for user in users if len({role["org"]["sourcedId"] for role in user["roles"]}) > 1]
    assert {user["roles"][0]["role"] for user in multi_school} >= {"student", "teacher"}
    assert any(len(cls["terms"]) == 2 for cls in classes) and any(len(cls["terms"]) == 1 for cls in classes)
    groups = Counter(cls.get("metadata", {}).get("ic.crossListGroup") for cls in classes)
    assert any(count == 2 for group, count in groups.items() if group)
    assert any(course.get("metadata", {}).get("ic.trialSchedule") == "true" for course in courses)
    assert any(cls.get("metadata", {}).get("ic.trialSchedule") == "true" for cls in classes)
    assert {session["schoolYear"] for session in sessions} == {"2027"}, "only the active school year"
    assert Counter(session["type"] for session in sessions) == {"schoolYear": 1, "semester": 2, "gradingPeriod": 4}


def test_references_resolve_in_both_versions(demo_district):
    for version in ("1.1", "1.2"):
        ids = {name: {record["sourcedId"] for record in demo_district.records(name, version)} for name in COLLECTIONS}
        for name in COLLECTIONS:
            assert len(ids[name]) == demo_district.expected_counts(version)[name], f"{name} ids are unique"
        for enrollment in demo_district.records("enrollments", version):
            assert enrollment["user"]["sourcedId"] in ids["users"]
            assert enrollment["class"]["sourcedId"] in ids["classes"]
            assert enrollment["school"]["sourcedId"] in ids["orgs"]
        for cls in demo_district.records("classes", version):
            assert cls["course"]["sourcedId"] in ids["courses"]
            assert {term["sourcedId"] for term in cls["terms"]} <= ids["academicSessions"]


def test_two_namespaced_districts_share_no_id_username_email_or_identifier():
    """What two districts provisioned into one LMS must not share: every key the LMS keeps (ids,
    usernames, emails, identifiers, building codes); the references still resolve within each."""
    def keys(district: SyntheticDistrict, version: str) -> set[str]:
        found = set()
        for name in COLLECTIONS:
            for record in district.records(name, version):
                found.add(record["sourcedId"])
                found.update(str(record[field]) for field in ("username", "email", "identifier")
                             if record.get(field) and " " not in str(record[field]))
        return found

    east, west = (SyntheticDistrict(DistrictSpec(seed=2027, students=60, schools=3, school_year=2027,
                                                 namespace=namespace)) for namespace in ("east", "west"))
    for version in ("1.1", "1.2"):
        assert keys(east, version) & keys(west, version) == set()
        ids = {name: {record["sourcedId"] for record in east.records(name, version)} for name in COLLECTIONS}
        for enrollment in east.records("enrollments", version):
            assert enrollment["user"]["sourcedId"] in ids["users"]
            assert enrollment["class"]["sourcedId"] in ids["classes"]
        for cls in east.records("classes", version):
            assert {term["sourcedId"] for term in cls["terms"]} <= ids["academicSessions"]
    with pytest.raises(ValueError, match="namespace"):
        DistrictSpec(seed=1, students=10, school_year=2027, namespace="East-1")


def test_the_generator_is_seeded_and_reaches_a_million_students_without_materialising():
    spec = DistrictSpec(seed=7, students=60, schools=3, school_year=2027)
    assert list(SyntheticDistrict(spec).records("users")) == list(SyntheticDistrict(spec).records("users"))
    other = SyntheticDistrict(DistrictSpec(seed=8, students=60, schools=3, school_year=2027))
    assert list(other.records("users")) != list(SyntheticDistrict(spec).records("users"))
    large = SyntheticDistrict(DistrictSpec(seed=7, students=1_000_000, school_year=2027))
    counts = large.expected_counts()
    assert 1_250_000 <= counts["users"] <= 1_350_000
    assert 7_500_000 <= counts["enrollments"] <= 8_500_000
    enrollments = large.records("enrollments")
    last = enrollments[len(enrollments) - 1]
    its_class = large.records("classes")[int(last["class"]["sourcedId"]) - 600_000]
    assert its_class["sourcedId"] == last["class"]["sourcedId"]
    assert its_class["school"]["sourcedId"] == last["school"]["sourcedId"]
    page = enrollments[8_000_000:8_000_100]
    assert len(page) == 100 and len({record["sourcedId"] for record in page}) == 100


def test_prerendered_pages_are_the_pages_it_would_build_and_go_stale_on_an_edit():
    district = SyntheticDistrict(DistrictSpec(seed=9, students=300, school_year=2027))
    with ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as ic:
        built = get(ic, "1.2", "users", limit=100, offset=100).json()
        assert ic.prerender("1.2", 100, collections=["users"], workers=1) == 4
        assert get(ic, "1.2", "users", limit=100, offset=100).json() == built
        (changed,) = district.modify("users", 1, datetime(2026, 11, 1, tzinfo=timezone.utc))
        served = [user for offset in range(0, 400, 100)
                  for user in get(ic, "1.2", "users", limit=100, offset=offset).json()["users"]]
        assert next(user for user in served if user["sourcedId"] == changed)["familyName"].endswith("-Lee")


def test_a_rate_limit_answers_429_with_when_to_come_back(demo_district):
    with ICEmulator(demo_district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo",
                    rate_limit=3) as ic:
        bearer = token(ic).json()["access_token"]
        answers = [get(ic, "1.2", "orgs", bearer=bearer) for _ in range(5)]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
        assert 0 < float(answers[3].headers["Retry-After"]) <= 1 and ic.rate_limited == 2


def test_a_page_takes_ic_s_time_per_record_served(demo_district):
    """``record_latency`` models IC's own time: a filtered page (built when asked for) of N records at
    5 ms each is answered after at least N × 5 ms, however fast the emulator built it."""
    with ICEmulator(demo_district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo",
                    record_latency=0.005) as ic:
        bearer = token(ic).json()["access_token"]
        started = time.perf_counter()
        page = get(ic, "1.2", "users", bearer=bearer, limit=200, filter="status='active'")
        served = len(page.json()["users"])
        assert page.status_code == 200 and served > 50
        assert time.perf_counter() - started >= served * 0.005
