"""The Schoology hook against the Schoology emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import io
import json
import time
from datetime import date
from urllib.parse import quote

import pytest
import requests
import structlog

from include.lms.target import Building, Course, Enrollment, GradingPeriod, GuardianLink, Section, User
from include.sandbox import lms_emulator
from include.sandbox.lms_emulator import SchoologyEmulator
from plugins.hooks.api_hook import ConnectionSettingsError
from plugins.hooks.schoology import (
    SchoologyCredentialsError,
    SchoologyHook,
    SchoologyRequestError,
    SchoologyUnavailableError,
)

KEY = "lms-consumer-key"
SECRET = "lms-secret-value"
CONN = "lms_test"
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, "requests_per_second": 1000}


def connection_env(lms, secret: str = SECRET, **extras) -> str:
    return json.dumps({"conn_type": "schoology", "host": lms.base_url, "login": KEY, "password": secret,
                       "extra": {"school_id": lms.school_id, **extras}})


@pytest.fixture
def lms():
    with SchoologyEmulator(consumer_key=KEY, consumer_secret=SECRET) as emulator:
        yield emulator


@pytest.fixture
def hook(lms, monkeypatch) -> SchoologyHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms))
    return SchoologyHook(CONN, **FAST)


def person(key: str, building: str, role: str = "1214", **fields) -> User:
    values = {"given_name": "Ada", "family_name": "Lovelace", "preferred_first_name": None,
              "email": f"{key}@example.org", "username": key, "role_id": role, "building_id": building,
              "additional_building_ids": [], **fields}
    return User(key=key, **values)


def ids(results) -> list[str | None]:
    assert all(result.ok for result in results), [result.error for result in results if not result.ok]
    return [result.lms_id for result in results]


@pytest.fixture
def school(hook):
    """Buildings, terms, people, a course and a section through the hook: the ids later kinds need."""
    building, = ids(hook.apply("create", [Building(key="org-1", title="North High", building_code="NH")]))
    terms = ids(hook.apply("create", [
        GradingPeriod(key="t1", title="S1 2027", start=date(2026, 8, 20), end=date(2027, 1, 15)),
        GradingPeriod(key="t2", title="S2 2027", start=date(2027, 1, 16), end=date(2027, 6, 10)),
    ]))
    hook.apply("create", [person("teach", building, role="1213"), person("kid1", building),
                          person("kid2", building), person("mum", building, role="1215")])
    course, = ids(hook.apply("create", [Course(key="ALG1", title="Algebra", building_id=building)]))
    section, = ids(hook.apply("create", [Section(building_id="b", key="ALG1-P1", course_key="ALG1", course_id=course, title="P1",
                                                 section_code="P1", grading_period_ids=terms)]))
    return {"building": building, "terms": terms, "course": course, "section": section}


def enrollment(user_key: str, section_id: str, admin: bool = False) -> Enrollment:
    return Enrollment(key=f"ALG1-P1:{user_key}", course_key="ALG1", section_key="ALG1-P1", section_id=section_id,
                      user_key=user_key, admin=admin)


def writes(lms) -> list[str]:
    return [f"{r.method} {r.path}" for r in lms.requests if r.method != "GET"]


def test_catalog_lists_buildings_grading_periods_and_roles(hook, lms, school):
    assert hook.catalog("building") == {school["building"]: "North High"}
    assert hook.catalog("grading_period") == dict(zip(school["terms"], ["S1 2027", "S2 2027"]))
    assert hook.catalog("role") == {"1212": "School Admin", "1213": "Teacher", "1214": "Student", "1215": "Parent"}
    with pytest.raises(ValueError):
        hook.catalog("course")


def test_catalog_follows_pages_of_200(hook, lms):
    ids(hook.apply("create", [Building(key=f"org-{n}", title=f"School {n}", building_code=f"B{n}")
                              for n in range(450)]))
    lms.reset_stats()
    assert len(hook.catalog("building")) == 450
    assert len(lms.requests) == 3, "200 a page: three pages, where Schoology's default of 20 takes 23"


def test_batches_overlap_the_callers_recording_and_never_exceed_max_in_flight(lms, monkeypatch, school):
    """While the caller records a batch's answers (its journal), the next batch is already with
    the LMS; and however the batches overlap, no more calls are under way than allowed."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms))
    hook = SchoologyHook(CONN, max_in_flight=3, **FAST)
    batches = [[person(f"b{batch}-{n:03}", school["building"]) for n in range(150)] for batch in range(4)]
    lms.reset_stats()
    lms.latency = 0.1
    recorded, results = [], []
    for answers in hook.apply_batches("create", batches):
        results.append(answers)
        time.sleep(0.3)  # the caller journals the answers
        recorded.append(time.monotonic())
    assert [[r.key for r in answers] for answers in results] == [[p.key for p in batch] for batch in batches]
    assert all(r.ok for answers in results for r in answers)
    calls = [r for r in lms.requests if r.method == "POST"]
    assert len(calls) == 12
    started = sorted(r.started for r in calls)
    assert sum(start < recorded[0] for start in started) == 6, "batch 2 went out while batch 1 was recorded"
    most = max(sum(r.started <= call.started < r.ended for r in calls) for call in calls)
    assert most <= 3, f"{most} calls under way at once, 3 allowed"


def test_every_call_in_flight_keeps_its_connection(lms, monkeypatch, school, caplog):
    """More calls in flight than requests' default pool of 10 still reuse their connections."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms))
    hook = SchoologyHook(CONN, max_in_flight=16, **FAST)
    lms.latency = 0.05
    with caplog.at_level("WARNING", logger="urllib3"):
        results = hook.apply("create", [person(f"p{n:04}", school["building"]) for n in range(1600)])
    assert len(results) == 1600 and all(r.ok for r in results)
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


def test_users_go_in_batches_of_50_and_each_result_matches_its_item(hook, lms, school):
    people = [person(f"s{n:03}", school["building"]) for n in range(120)]
    people[77] = person("s077", school["building"], role="4242")
    lms.reset_stats()
    results = hook.apply("create", people)
    assert [r.key for r in results] == [p.key for p in people]
    assert writes(lms) == ["POST /v1/users"] * 3
    assert not results[77].ok and "role_id" in results[77].error and results[77].lms_id is None
    assert all(r.ok for n, r in enumerate(results) if n != 77)
    by_uid = {u["uid"]: u for u in lms.users.values()}
    assert all(by_uid[r.lms_id]["school_uid"] == r.key for r in results if r.ok)
    stored = next(u for u in by_uid.values() if u["school_uid"] == "s001")
    assert stored["building_id"] == school["building"] and stored["synced"] == 1


def test_applying_everything_twice_updates_instead_of_duplicating(hook, lms, school):
    section = school["section"]
    links = [GuardianLink(key="mum:kid1", guardian_key="mum", student_key="kid1")]
    enrollments = [enrollment("teach", section, admin=True), enrollment("kid1", section)]
    first = ids(hook.apply("create", enrollments)) + ids(hook.apply("create", links))
    counts = {name: len(getattr(lms, name)) for name in
              ("buildings", "grading_periods", "users", "courses", "sections", "enrollments", "associations")}
    again = [
        hook.apply("create", [Building(key="org-1", title="North High School", building_code="NH")]),
        hook.apply("update", [GradingPeriod(key="t1", title="S1 2027", start=date(2026, 8, 21),
                                            end=date(2027, 1, 15))]),
        hook.apply("create", [person("kid1", school["building"], given_name="Grace")]),
        hook.apply("create", [Course(key="ALG1", title="Algebra I", building_id=school["building"])]),
        hook.apply("update", [Section(building_id="b", key="ALG1-P1", course_key="ALG1", course_id=school["course"],
                                      title="Period 1", section_code="P1", grading_period_ids=school["terms"])]),
    ]
    kid1 = next(u["uid"] for u in lms.users.values() if u["school_uid"] == "kid1")
    assert [ids(results)[0] for results in again] == [school["building"], school["terms"][0], kid1,
                                                       school["course"], section]
    assert ids(hook.apply("create", enrollments)) + ids(hook.apply("create", links)) == first
    assert {name: len(getattr(lms, name)) for name in counts} == counts
    assert lms.buildings[school["building"]]["title"] == "North High School"
    assert lms.grading_periods[school["terms"][0]]["start"] == "2026-08-21"
    assert lms.users[kid1]["name_first"] == "Grace"
    assert lms.courses[school["course"]]["title"] == "Algebra I"
    assert lms.sections[section]["section_title"] == "Period 1"


def _kinds(school):
    building, terms, course = school["building"], school["terms"], school["course"]
    return {
        "building": [Building(key="org-2", title="South High", building_code="SH")],
        "grading_period": [GradingPeriod(key="t3", title="Summer", start=date(2027, 6, 20), end=date(2027, 8, 1))],
        "user": [person("new1", building), person("new2", building)],
        "course": [Course(key="BIO", title="Biology", building_id=building)],
        "section": [Section(building_id="b", key="ALG1-P2", course_key="ALG1", course_id=course, title="P2", section_code="P2",
                            grading_period_ids=terms)],
        "enrollment": [enrollment("kid2", school["section"])],
        "guardian_link": [GuardianLink(key="mum:kid2", guardian_key="mum", student_key="kid2")],
    }


STORES = {"building": "buildings", "grading_period": "grading_periods", "user": "users", "course": "courses",
          "section": "sections", "enrollment": "enrollments", "guardian_link": "associations"}


@pytest.mark.parametrize("kind", list(STORES))
def test_a_call_that_timed_out_after_the_lms_applied_it_is_retried_without_duplicates(lms, monkeypatch, school,
                                                                                      kind):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms))
    hook = SchoologyHook(CONN, timeout=(2.0, 0.2), **FAST)
    items = _kinds(school)[kind]
    before = len(getattr(lms, STORES[kind]))
    lms.inject("timeout_after_apply", seconds=0.3)
    results = hook.apply("create", items)
    assert all(r.ok and r.lms_id for r in results), results
    assert hook.retry_count == 1
    assert lms.requests and any(r.status == 0 for r in lms.requests), "the fault was met"
    assert len(getattr(lms, STORES[kind])) == before + len(items)


@pytest.mark.parametrize("fault", ["500", "503"])
def test_server_errors_are_retried(hook, lms, school, fault):
    lms.inject(fault, path_contains="/users", times=2)
    assert ids(hook.apply("create", [person("late", school["building"])]))
    assert hook.retry_count == 2


def test_gives_up_after_the_retry_cap_with_a_clear_error(lms, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms))
    hook = SchoologyHook(CONN, max_attempts=3, **FAST)
    lms.inject("503", times=10)
    with pytest.raises(SchoologyUnavailableError, match="still failing after 3 attempts"):
        hook.catalog("role")
    assert len(lms.requests) == 3


def test_honours_retry_after_on_429(hook, lms):
    lms.inject("429", retry_after=0.3)
    started = time.monotonic()
    assert hook.catalog("role")
    assert time.monotonic() - started >= 0.3
    assert [r.status for r in lms.requests] == [429, 200]


def test_paces_requests_to_stay_under_the_lms_rate(lms, monkeypatch):
    rate = 40
    with SchoologyEmulator(consumer_key=KEY, consumer_secret=SECRET, rate_limit=rate) as limited:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(limited))
        hook = SchoologyHook(CONN, backoff_base=0.01, requests_per_second=rate)
        for _ in range(45):
            hook.catalog("role")
        started = [r.started for r in limited.requests]
    assert [r.status for r in limited.requests] == [200] * 45, "the hook never met a 429"
    assert hook.retry_count == 0
    assert (started[-1] - started[0]) >= 44 / rate * 0.95
    assert max(sum(1 for t in started if s <= t < s + 1.0) for s in started) <= rate + 1


def test_a_client_faster_than_the_lms_is_slowed_by_429_and_still_finishes(monkeypatch):
    with SchoologyEmulator(consumer_key=KEY, consumer_secret=SECRET, rate_limit=20, retry_after=0.05) as limited:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(limited))
        hook = SchoologyHook(CONN, **FAST)
        for _ in range(40):
            hook.catalog("role")
        statuses = [r.status for r in limited.requests]
    assert statuses.count(200) == 40 and statuses.count(429) == hook.retry_count > 0


def test_refused_credentials_fail_at_once_with_what_to_do(lms, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms, secret="revoked-secret"))
    hook = SchoologyHook(CONN, **FAST)
    with pytest.raises(SchoologyCredentialsError) as raised:
        hook.apply("create", [Building(key="org-1", title="North High", building_code="NH")])
    message = str(raised.value)
    assert CONN in message and "consumer key/secret" in message and "API" in message
    assert "revoked-secret" not in message and SECRET not in message
    assert len(lms.requests) == 2, "signed afresh once (a 401 may be a reused nonce), then not retried"


def test_a_connection_without_school_id_is_a_clear_error(lms, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", json.dumps(
        {"conn_type": "schoology", "host": lms.base_url, "login": KEY, "password": SECRET}))
    with pytest.raises(SchoologyRequestError, match="school_id"):
        SchoologyHook(CONN, **FAST).catalog("building")


def test_every_call_is_signed_hmac_sha1_two_legged(lms, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms, read_timeout=30))
    hook = SchoologyHook(CONN, **FAST)
    hook.catalog("role")
    hook.catalog("role")
    assert "school_id" not in hook._session.headers
    oauth = [r.headers["Authorization"] for r in lms.requests]
    assert all(value.startswith('OAuth realm="Schoology API"') for value in oauth)
    assert all('oauth_signature_method="HMAC-SHA1"' in value and "oauth_token" not in value for value in oauth)
    assert all(f'oauth_consumer_key="{KEY}"' in value for value in oauth)
    assert len(set(oauth)) == 2, "a fresh nonce and signature on every call"


def test_the_consumer_secret_is_never_sent(hook, lms, school):
    """Through a whole provisioning sequence (the school fixture's buildings, terms, users, course
    and section; then enrollments, parent links, lists and deactivations), the secret is in no
    request the LMS received: not in a header, the URL or the body, plain or percent-encoded."""
    section = school["section"]
    ids(hook.apply("create", [enrollment("teach", section, admin=True), enrollment("kid1", section)]))
    ids(hook.apply("create", [GuardianLink(key="mum:kid1", guardian_key="mum", student_key="kid1")]))
    hook.catalog("building")
    hook.apply("deactivate", [enrollment("kid1", section)])
    hook.apply("deactivate", [person("kid2", school["building"])])
    requests_seen = lms.requests
    assert {"GET", "POST", "DELETE"} <= {r.method for r in requests_seen}
    assert any(r.body for r in requests_seen), "the bodies were recorded and are looked at"
    forms = {SECRET, quote(SECRET, safe=""), quote(quote(SECRET, safe=""), safe="")}
    for request in requests_seen:
        sent = " ".join([request.path, json.dumps(request.query), json.dumps(request.headers),
                         request.body.decode("utf-8", "replace")])
        assert not [form for form in forms if form in sent], f"{request.method} {request.path}"


def test_a_request_signed_with_the_wrong_secret_is_refused(lms, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms, secret=SECRET + "-old"))
    with pytest.raises(SchoologyCredentialsError, match="Invalid consumer key or signature"):
        SchoologyHook(CONN, **FAST).catalog("role")
    assert [r.status for r in lms.requests] == [401, 401], "signed afresh once (a 401 may be a reused nonce)"


def test_the_session_takes_the_transport_extras_and_verifies_tls_by_default(lms, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms))
    session = SchoologyHook(CONN, **FAST)._session
    assert (session.verify, session.cert, session.proxies, session.trust_env) == (True, None, {}, True)
    transport = {"verify": "/etc/ssl/district-ca.pem", "cert": "/etc/ssl/client.pem",
                 "proxies": {"https": "http://proxy.example:3128"}, "trust_env": False}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms, **transport))
    session = SchoologyHook(CONN, **FAST)._session
    assert (session.verify, session.cert, session.proxies, session.trust_env) == tuple(transport.values())
    assert not {*transport, "school_id"} & {name.lower() for name in session.headers}


def test_a_whole_call_error_names_no_one_it_was_about(hook):
    """Schoology's message goes into the exception with the batch's people masked."""
    response = requests.Response()
    response.status_code, response.url = 400, f"{hook.api_url}/users"
    response.raw = io.BytesIO(json.dumps({"error": "username kid9 (Zebedee, kid9@example.org) is taken"}).encode())
    response.request = requests.Request("POST", response.url).prepare()
    with pytest.raises(SchoologyRequestError) as raised:
        hook._expect(response, 207, identifiers=["kid9", "Zebedee"])
    message = str(raised.value)
    assert "is taken" in message and "kid9" not in message and "Zebedee" not in message


def test_an_unknown_extra_is_refused_before_any_call_naming_the_connection_and_the_allowed_ones(lms, monkeypatch):
    """A typo or a secret in the wrong place: refused, never sent (HttpHook would make it a header)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms, consumer_secret_copy=SECRET))
    with pytest.raises(ConnectionSettingsError) as raised:
        SchoologyHook(CONN, **FAST).catalog("role")
    message = str(raised.value)
    assert CONN in message and "consumer_secret_copy" in message and "school_id" in message
    assert SECRET not in message
    assert lms.requests == [], "nothing was sent"


def test_a_next_page_link_to_another_host_is_refused(hook, lms, school, monkeypatch):
    """A signed call carries the consumer key; a next link elsewhere must not be followed."""
    monkeypatch.setattr(lms_emulator, "MAX_PAGE", 1)  # the school's two grading periods take two pages
    assert len(hook.catalog("grading_period")) == 2
    lms.link_origin = "http://127.0.0.2:9"
    with pytest.raises(SchoologyRequestError, match="next-page link leaves"):
        hook.catalog("grading_period")
    assert all(request.path.startswith("/v1/") for request in lms.requests)


def test_per_item_failures_are_results_not_exceptions(hook, lms, school):
    lms.inject("reject_items", keys=["bad1"], message="locked by the district")
    results = hook.apply("create", [person("good1", school["building"]), person("bad1", school["building"]),
                                    person("good2", school["building"], building_id="999")])
    assert [r.ok for r in results] == [True, False, False]
    assert results[1].error == "locked by the district" and "building_id" in results[2].error
    sections = hook.apply("create", [Section(building_id="b", key="X-P1", course_key="ALG1", course_id=school["course"], title="P",
                                             section_code="P", grading_period_ids=["77"])])
    assert not sections[0].ok and "grading period" in sections[0].error
    duplicate = hook.apply("create", [Building(key="org-9", title="Elsewhere", building_code="NH")])
    assert duplicate[0].ok and duplicate[0].lms_id == school["building"], "the code is the building's identity"
    lms.inject("reject_items", keys=["Winter"], message="no more periods this year")
    refused = hook.apply("create", [GradingPeriod(key="t9", title="Winter", start=date(2027, 1, 1),
                                                  end=date(2027, 1, 2))])
    assert refused[0].error == "no more periods this year"
    with pytest.raises(ValueError, match="one kind"):
        hook.apply("create", [person("a", school["building"]), Course(key="C", title="C", building_id="1")])


def test_enrollments_are_imported_and_dropped_by_external_ids(hook, lms, school):
    section = school["section"]
    enrolled = ids(hook.apply("create", [enrollment("teach", section, admin=True), enrollment("kid1", section)]))
    assert {(e["uid"], e["admin"]) for e in lms.enrollments.values()} == {
        (lms.enrollments[enrolled[0]]["uid"], 1), (lms.enrollments[enrolled[1]]["uid"], 0)}
    missing = hook.apply("create", [enrollment("ghost", section)])
    assert not missing[0].ok and "not found" in missing[0].error
    dropped = hook.apply("deactivate", [enrollment("kid1", section)])
    assert dropped[0].ok and list(lms.enrollments) == [enrolled[0]]
    assert hook.apply("deactivate", [enrollment("kid1", section)])[0].ok, "dropping twice is done, not an error"


def test_parent_links_are_made_and_removed(hook, lms, school):
    link = GuardianLink(key="mum:kid1", guardian_key="mum", student_key="kid1")
    made, = hook.apply("create", [link])
    assert made.ok and made.lms_id in lms.associations
    assert hook.apply("deactivate", [link])[0].ok and lms.associations == {}
    assert hook.apply("deactivate", [link])[0].ok
    unknown = hook.apply("create", [GuardianLink(key="x:kid1", guardian_key="x", student_key="kid1")])
    assert not unknown[0].ok


def test_deactivating_users_courses_sections_and_buildings(hook, lms, school):
    kid1 = next(u["uid"] for u in lms.users.values() if u["school_uid"] == "kid1")
    results = hook.apply("deactivate", [person("kid1", school["building"]), person("never", school["building"])])
    assert [(r.ok, r.lms_id) for r in results] == [(True, kid1), (True, None)]
    assert kid1 in lms.inactive_users and kid1 not in lms.users
    section = Section(building_id="b", key="ALG1-P1", course_key="ALG1", course_id=school["course"], title="P1", section_code="P1",
                      grading_period_ids=school["terms"])
    assert ids(hook.apply("deactivate", [section])) == [school["section"]] and lms.sections == {}
    periods = [GradingPeriod(key="t2", title="S2 2027", start=date(2027, 1, 16), end=date(2027, 6, 10))]
    assert ids(hook.apply("deactivate", periods)) == [school["terms"][1]]
    course = Course(key="ALG1", title="Algebra", building_id=school["building"])
    assert ids(hook.apply("deactivate", [course])) == [school["course"]] and lms.courses == {}
    assert ids(hook.apply("deactivate", [course])) == [None]
    building = Building(key="org-1", title="North High", building_code="NH")
    assert ids(hook.apply("deactivate", [building])) == [school["building"]] and lms.buildings == {}


def test_log_lines_carry_counts_not_people(hook, lms, school):
    lms.inject("503", path_contains="/users")
    with structlog.testing.capture_logs() as logs:
        hook.apply("create", [person("kid9", school["building"], given_name="Zebedee"), person("x", "404")])
    events = [entry["event"] for entry in logs]
    assert events[-1] == "Schoology create user: 2 item(s), 1 failed"
    assert any("retry 1 of" in event for event in events)
    text = json.dumps(logs, default=str)
    assert "Zebedee" not in text and "kid9" not in text and "Lovelace" not in text and SECRET not in text


# -- Schoology as Schoology documents it (issue 17) -------------------------------------------


def test_a_section_whose_grading_period_ended_is_deactivated_for_real(hook, lms, school):
    """Sections of ended grading periods are listed only with include_past=1: a lookup without it
    took the section for gone, reported it done and left it in Schoology."""
    ended, = ids(hook.apply("create", [GradingPeriod(key="t0", title="S2 2025", start=date(2025, 1, 16),
                                                     end=date(2025, 6, 10))]))
    old = Section(building_id="b", key="ALG1-OLD", course_key="ALG1", course_id=school["course"], title="Old", section_code="OLD",
                  grading_period_ids=[ended])
    section_id, = ids(hook.apply("create", [old]))
    assert ids(hook.apply("deactivate", [old])) == [section_id]
    assert section_id not in lms.sections, "deleted in Schoology, not only reported done"
    lookups = [r for r in lms.requests if r.method == "GET" and r.path == "/v1/sections"]
    assert lookups and all(r.query.get("include_past") == "1" for r in lookups)


def test_two_ic_classes_with_the_same_class_code_in_one_course_and_term_stay_two_sections_after_two_nights(
        hook, lms, school):
    """update_existing matches sections on section_code + grading_periods (Schoology's bulk sections
    docs): IC's class code sent as section_code merged two classes into one section."""
    term = school["terms"][:1]
    classes = [Section(building_id="b", key=key, course_key="ALG1", course_id=school["course"], title=title, section_code="P3",
                       grading_period_ids=term) for key, title in (("class-a", "Algebra A"), ("class-b", "Algebra B"))]
    nights = [ids(hook.apply("create", classes)) for _ in range(2)]
    assert nights[0] == nights[1] and len(set(nights[0])) == 2
    stored = {lms.sections[section_id]["section_school_code"]: lms.sections[section_id] for section_id in nights[0]}
    assert {code: s["section_title"] for code, s in stored.items()} == {"class-a": "Algebra A",
                                                                         "class-b": "Algebra B"}


def test_one_spurious_401_is_signed_afresh_and_the_call_succeeds(hook, lms):
    lms.inject("401")  # as Schoology answers a reused nonce or an out-of-sequence timestamp
    assert hook.catalog("role")
    statuses = [r.status for r in lms.requests]
    nonces = [r.headers.get("Authorization", "").split("oauth_nonce=")[1].split(",")[0] for r in lms.requests]
    assert statuses == [401, 200] and nonces[0] != nonces[1]


def test_a_persistent_401_fails_loudly_with_the_regenerate_message_and_never_the_secret(hook, lms):
    lms.inject("401", times=5)
    with pytest.raises(SchoologyCredentialsError) as raised:
        hook.catalog("role")
    message = str(raised.value)
    assert "Generate new API credentials" in message and CONN in message
    assert SECRET not in message and quote(SECRET) not in message
    assert [r.status for r in lms.requests] == [401, 401], "signed afresh once, then the task fails"


def test_a_429_without_retry_after_backs_off_exponentially_within_the_cap(lms, monkeypatch):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", connection_env(lms))
    hook = SchoologyHook(CONN, backoff_base=0.1, backoff_max=0.25, requests_per_second=1000)
    lms.inject("429", retry_after=None, times=3)
    started = time.monotonic()
    assert hook.catalog("role")
    elapsed = time.monotonic() - started
    assert [r.status for r in lms.requests] == [429, 429, 429, 200]
    assert all("Retry-After" not in r.response_headers for r in lms.requests)
    gaps = [b.started - a.ended for a, b in zip(lms.requests, lms.requests[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.25, gaps
    assert elapsed < 0.1 + 0.2 + 0.25 + 1.0, "bounded by backoff_max, not doubling on"


def test_a_throttle_without_retry_after_holds_every_call_for_its_backoff(lms):
    """A throttle is the LMS saying it is overloaded: the backoff pauses the hook's other calls too."""
    from plugins.hooks.retrying import RetryPolicy, Transient

    held, answers = [], iter([Transient("429", throttled=True), Transient("429", throttled=True),
                              Transient("500"), "ok"])

    def attempt():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    policy = RetryPolicy(max_attempts=5, backoff_base=0.01, backoff_max=0.015, max_retry_after=1,
                         unavailable=SchoologyUnavailableError, log=__import__("logging").getLogger("t"),
                         hold=held.append)
    assert policy.call(attempt, "Schoology") == "ok"
    assert held == [0.01, 0.015], "throttles hold everything (capped); a plain 500 does not"


def test_a_503_with_retry_after_is_honoured(hook, lms):
    lms.inject("503", retry_after=0.3)
    started = time.monotonic()
    assert hook.catalog("role")
    assert time.monotonic() - started >= 0.3
    assert [r.status for r in lms.requests] == [503, 200]


def test_an_unreadable_retry_after_is_taken_as_none_and_backed_off():
    from plugins.hooks.retrying import retry_after_seconds

    assert [retry_after_seconds(value) for value in ("soon", "None", "nan", "-3", "2.5")] == [None, None, None,
                                                                                           0.0, 2.5]
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_the_default_pace_is_conservative_as_schoology_documents_no_rate_limit():
    from include.config import SchoologyLms

    lms = SchoologyLms(conn_id="x")
    assert (lms.requests_per_second, lms.max_in_flight) == (5.0, 2)
    hook = SchoologyHook(CONN)
    assert (hook.requests_per_second, hook.max_in_flight) == (5.0, 2)


def test_a_user_without_email_in_ic_keeps_the_email_set_in_schoology_after_an_update(hook, lms, school):
    uid, = ids(hook.apply("create", [person("kid7", school["building"], email="kid7@school.org",
                                            preferred_first_name="Kit")]))
    again = person("kid7", school["building"], email=None, preferred_first_name=None, given_name="Katherine")
    assert ids(hook.apply("update", [again])) == [uid]
    stored = lms.users[uid]
    assert (stored["name_first"], stored["primary_email"], stored["name_first_preferred"]) == (
        "Katherine", "kid7@school.org", "Kit")


@pytest.mark.parametrize("action", ["create", "update"])
def test_a_user_deactivated_one_night_and_active_again_in_ic_is_the_same_user_active_again(hook, lms, school,
                                                                                          action):
    kid = person("kid5", school["building"])
    uid, = ids(hook.apply("create", [kid]))
    assert ids(hook.apply("deactivate", [kid])) == [uid] and uid in lms.inactive_users
    assert ids(hook.apply(action, [kid, person("kid6", school["building"])]))[0] == uid
    assert uid in lms.users and uid not in lms.inactive_users
    assert [u["uid"] for u in lms.users.values() if u["school_uid"] == "kid5"] == [uid], "not a duplicate"
    reactivations = [r for r in lms.requests if r.method == "PUT" and r.path == "/v1/users/reactivate"]
    assert len(reactivations) == 1 and json.loads(reactivations[0].body) == {
        "user": [{"uid": uid, "option_reenroll": "1"}]}
    assert ids(hook.apply(action, [kid])) == [uid]
    assert len([r for r in lms.requests if r.path == "/v1/users/reactivate"]) == 1, "once, not every night"
