"""The OneRoster hook against the IC emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import replace

import pytest

from include.sandbox.ic_emulator import PROFILES, ROSTER_CORE_READONLY, ICEmulator
from plugins.hooks.api_hook import ConnectionSettingsError
from plugins.hooks.oneroster import (
    OneRosterCredentialsError,
    OneRosterHook,
    OneRosterRequestError,
    OneRosterUnavailableError,
    PagingTally,
)
from tests.support import CLIENT_ID, CLIENT_SECRET, connection_uri_env

FAST = {"backoff_base": 0.01, "backoff_max": 0.05}


def served_ids(district, collection, version):
    return [record["sourcedId"] for record in district.records(collection, version)]


def extracted_ids(hook, collection, **paging):
    return [record["sourcedId"] for page in hook.iter_pages(collection, **paging) for record in page]


def api_requests(ic):
    return [request for request in ic.requests if "oauth2" not in request.path]


@pytest.mark.parametrize("collection", ["users", "enrollments", "classes"])
def test_pages_to_the_last_page_whether_or_not_the_total_divides(ic_conn, demo_district, collection):
    hook = OneRosterHook(ic_conn, **FAST)
    expected = served_ids(demo_district, collection, hook.version)
    total = len(expected)
    divisor = next(size for size in range(7, total) if total % size == 0)
    non_divisor = next(size for size in range(7, total) if total % size)
    for page_size in (divisor, non_divisor, total, total + 1, 1):
        ids = extracted_ids(hook, collection, page_size=page_size)
        assert ids == expected, f"page_size={page_size}"


def test_follows_link_next_when_no_total_is_sent(ic_conn, ic, demo_district):
    ic.profile = replace(ic.profile, total_count=False)
    hook = OneRosterHook(ic_conn, **FAST)
    expected = served_ids(demo_district, "users", hook.version)
    assert extracted_ids(hook, "users", page_size=9) == expected
    assert all("X-Total-Count" not in (request.response_headers or {}) for request in api_requests(ic))


def test_a_server_that_caps_limit_silently_and_sends_no_total_is_read_to_the_end(ic_conn, ic, demo_district):
    """Ed-Fi's OneRoster API caps a page at 500 and sends neither X-Total-Count nor Link: a short
    page is not the last one."""
    ic.profile = replace(PROFILES["capped-no-total"], max_limit=7)
    hook = OneRosterHook(ic_conn, **FAST)
    tally = PagingTally()
    ids = [record["sourcedId"] for page in hook.iter_pages("users", page_size=50, tally=tally) for record in page]
    assert ids == served_ids(demo_district, "users", hook.version)
    assert tally.server_total is None and tally.served == len(ids)
    offsets = [int(request.query["offset"]) for request in api_requests(ic)]
    assert offsets == [*range(0, len(ids), 7), len(ids)], "each next offset is what was served, to an empty page"


def test_a_server_serving_fewer_than_asked_with_a_total_is_read_to_the_end(ic_conn, ic, demo_district):
    ic.profile = replace(PROFILES["ic"], max_limit=7)
    hook = OneRosterHook(ic_conn, max_concurrency=3, **FAST)
    assert extracted_ids(hook, "enrollments", page_size=50) == served_ids(demo_district, "enrollments", hook.version)


def test_a_next_link_that_would_skip_records_is_not_followed(ic_conn, ic, monkeypatch, demo_district):
    """A server that caps pages but builds its links from the limit asked would skip the rest."""
    ic.profile = replace(PROFILES["ic"], total_count=False, max_limit=7)
    monkeypatch.setattr(ic, "_links", lambda url, query, offset, limit, total: (
        f'<{url}?limit=50&offset={offset + 50}>; rel="next"' if offset + 50 < total else ""))
    hook = OneRosterHook(ic_conn, **FAST)
    assert extracted_ids(hook, "users", page_size=50) == served_ids(demo_district, "users", hook.version)


def test_a_next_link_to_another_host_is_refused_before_the_token_goes_there(ic_conn, ic, monkeypatch):
    ic.profile = replace(PROFILES["ic"], total_count=False)
    monkeypatch.setattr(ic, "_links", lambda url, query, offset, limit, total: (
        f'<http://127.0.0.2:9/elsewhere?offset={offset + limit}>; rel="next"'))
    hook = OneRosterHook(ic_conn, **FAST)
    with pytest.raises(OneRosterRequestError, match="next-page link leaves"):
        extracted_ids(hook, "users", page_size=5)
    assert len(api_requests(ic)) == 1


def test_a_server_that_ignores_offset_fails_instead_of_looping(ic_conn, ic, monkeypatch):
    ic.profile = PROFILES["capped-no-total"]
    rostering = ic.rostering
    monkeypatch.setattr(ic, "rostering", lambda version, collection, sourced_id, query, url: rostering(
        version, collection, sourced_id, {key: value for key, value in query.items() if key != "offset"}, url))
    hook = OneRosterHook(ic_conn, **FAST)
    with pytest.raises(OneRosterRequestError, match="does not honour offset"):
        extracted_ids(hook, "users", page_size=5)
    assert len(api_requests(ic)) == 3


def test_a_token_is_renewed_before_it_expires_not_after_a_refusal(demo_district):
    with ICEmulator(demo_district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo",
                    token_ttl=2) as ic, pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in connection_uri_env("ic_short_tokens", ic, "1.2").items():
            monkeypatch.setenv(key, value)
        ic.latency = 0.25
        hook = OneRosterHook("ic_short_tokens", **FAST)
        started = time.monotonic()
        ids = extracted_ids(hook, "users", page_size=6)
        assert time.monotonic() - started > 2.2, "the extract outlived the first token"
        assert ids == served_ids(demo_district, "users", "1.2")
        assert ic.token_requests >= 2
        assert 401 not in [request.status for request in api_requests(ic)], "a token was used after it expired"


def test_a_429_pauses_every_request_in_flight_not_only_the_one_that_got_it(ic_conn, ic, demo_district):
    ic.latency = 0.05
    hook = OneRosterHook(ic_conn, max_concurrency=3, **FAST)
    ic.inject("429", after=3, retry_after=1)
    assert extracted_ids(hook, "enrollments", page_size=5) == served_ids(demo_district, "enrollments", hook.version)
    refused = next(request for request in api_requests(ic) if request.status == 429)
    during = [request for request in api_requests(ic)
              if refused.ended + 0.1 < request.started < refused.ended + 0.9]
    assert during == [], "another thread went on asking during the Retry-After"
    assert any(request.started >= refused.ended + 0.9 for request in api_requests(ic))


def test_the_scope_extra_is_sent_to_a_token_endpoint_that_requires_it(ic, monkeypatch, demo_district):
    ic.profile = PROFILES["scope-required"]
    for key, value in connection_uri_env("ic_scoped", ic, "1.2", scope=ROSTER_CORE_READONLY).items():
        monkeypatch.setenv(key, value)
    hook = OneRosterHook("ic_scoped", **FAST)
    assert extracted_ids(hook, "orgs") == served_ids(demo_district, "orgs", "1.2")


def test_a_token_request_refused_as_400_names_the_field_to_check_not_expired_credentials(ic_conn, ic):
    ic.profile = PROFILES["scope-required"]
    hook = OneRosterHook(ic_conn, **FAST)
    with pytest.raises(ConnectionSettingsError) as raised:
        extracted_ids(hook, "orgs")
    message = str(raised.value)
    assert "invalid_scope" in message and "'scope'" in message and ic_conn in message
    assert "expired" not in message.replace("not expired", "")
    assert ic.token_requests == 1, "a set-up problem is not retried"


def test_an_unknown_extra_is_refused_before_anything_is_sent(ic, monkeypatch):
    """A typo or a secret in the wrong place: refused, never sent (HttpHook would make it a header)."""
    for key, value in connection_uri_env("ic_typo", ic, "1.2", vendor_secrett="vendor-secret-value").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConnectionSettingsError) as raised:
        extracted_ids(OneRosterHook("ic_typo", **FAST), "orgs")
    message = str(raised.value)
    assert "ic_typo" in message and "vendor_secrett" in message and "scope" in message
    assert "vendor-secret-value" not in message
    assert ic.token_requests == 0 and ic.requests == []


def test_a_token_expiring_mid_collection_is_renewed_once(ic_conn, ic, demo_district):
    hook = OneRosterHook(ic_conn, **FAST)
    ic.inject("expire_token", after=2)
    expected = served_ids(demo_district, "enrollments", hook.version)
    assert extracted_ids(hook, "enrollments", page_size=10) == expected
    assert ic.token_requests == 2
    assert [request.status for request in api_requests(ic)].count(401) == 1


def test_honours_retry_after_on_429(ic_conn, ic, demo_district):
    hook = OneRosterHook(ic_conn, **FAST)
    ic.inject("429", after=1, retry_after=1)
    started = time.monotonic()
    ids = extracted_ids(hook, "users", page_size=20)
    assert ids == served_ids(demo_district, "users", hook.version)
    assert time.monotonic() - started >= 1.0, "the client did not wait the Retry-After it was given"
    statuses = [request.status for request in api_requests(ic)]
    assert statuses.count(429) == 1
    assert hook.retry_count == 1


@pytest.mark.parametrize("fault", ["500", "503", "reset", "reset_mid_body"])
def test_recovers_from_a_server_error_or_dropped_connection(ic_conn, ic, demo_district, fault):
    hook = OneRosterHook(ic_conn, **FAST)
    ic.inject(fault, after=1)
    assert extracted_ids(hook, "users", page_size=15) == served_ids(demo_district, "users", hook.version)
    assert hook.retry_count == 1


def test_gives_up_after_the_retry_cap_with_a_clear_error(ic_conn, ic):
    hook = OneRosterHook(ic_conn, max_attempts=3, **FAST)
    ic.inject("503", times=10)
    with pytest.raises(OneRosterUnavailableError, match="still failing after 3 attempts"):
        extracted_ids(hook, "orgs")
    assert len(api_requests(ic)) == 3


def test_refused_credentials_fail_at_once_with_what_to_do(ic_conn, ic):
    ic.revoke_credentials()
    hook = OneRosterHook(ic_conn, **FAST)
    with pytest.raises(OneRosterCredentialsError) as raised:
        extracted_ids(hook, "users")
    message = str(raised.value)
    assert "refused the OneRoster client key/secret" in message
    assert "ic_test" in message and "OneRoster" in message and "Grading Services" in message
    assert CLIENT_SECRET not in message
    assert ic.token_requests == 1, "refused credentials must not be retried"
    assert api_requests(ic) == []


def test_credentials_revoked_mid_run_stop_the_extract(ic_conn, ic):
    """One page is fetched ahead, so it may or may not have been served before the revocation;
    either way the first refusal ends the extract: one token renewal, nothing asked after it."""
    hook = OneRosterHook(ic_conn, max_concurrency=1, **FAST)
    pages = hook.iter_pages("enrollments", page_size=10)
    next(pages)
    ic.revoke_credentials()
    with pytest.raises(OneRosterCredentialsError):
        list(pages)
    assert ic.token_requests == 2
    statuses = [request.status for request in api_requests(ic)]
    assert statuses.count(401) == 1
    assert statuses[-1] == 401, f"requests went on after the refusal: {statuses}"
    assert len(statuses) <= 3


def test_never_exceeds_the_configured_concurrency(ic_conn, ic, demo_district):
    ic.latency = 0.05
    hook = OneRosterHook(ic_conn, max_concurrency=3, **FAST)
    results: dict[str, list[str]] = {}

    def extract(collection):
        results[collection] = extracted_ids(hook, collection, page_size=5)

    threads = [threading.Thread(target=extract, args=(name,)) for name in ("users", "enrollments")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["users"] == served_ids(demo_district, "users", hook.version)
    assert results["enrollments"] == served_ids(demo_district, "enrollments", hook.version)
    assert 2 <= ic.max_in_flight <= 3


def test_serial_when_concurrency_is_one(ic_conn, ic):
    ic.latency = 0.02
    hook = OneRosterHook(ic_conn, max_concurrency=1, **FAST)
    extracted_ids(hook, "enrollments", page_size=10)
    assert ic.max_in_flight == 1


def test_filter_is_passed_to_ic(ic_conn, ic, demo_district):
    hook = OneRosterHook(ic_conn, **FAST)
    statuses = Counter(record["status"] for record in demo_district.records("users", hook.version))
    assert statuses["tobedeleted"] > 0
    ids = extracted_ids(hook, "users", filter="status='tobedeleted'", page_size=3)
    assert len(ids) == statuses["tobedeleted"]
    assert all(request.query.get("filter") == "status='tobedeleted'" for request in api_requests(ic))


def test_secrets_never_travel_as_headers_or_basic_auth_on_api_calls(ic, monkeypatch):
    env = connection_uri_env("ic_test", ic, "1.2", vendor_key="vk", vendor_secret="vendor-secret-value")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    hook = OneRosterHook("ic_test", **FAST)
    extracted_ids(hook, "orgs")
    session = hook._session()
    assert session.auth is None
    assert not {"app_name", "oneroster_version", "vendor_key", "vendor_secret", "token_url"} & set(session.headers)
    for request in api_requests(ic):
        assert request.headers.get("Authorization", "").startswith("Bearer ")
        assert "vendor-secret-value" not in str(request.headers)


def test_1_1_and_1_2_are_normalised_alike(ic, monkeypatch):
    normalised = {}
    for version in ("1.1", "1.2"):
        for key, value in connection_uri_env(f"ic_{version.replace('.', '')}", ic, version).items():
            monkeypatch.setenv(key, value)
        hook = OneRosterHook(f"ic_{version.replace('.', '')}", **FAST)
        normalised[version] = {
            collection: [row for page in hook.iter_entities(collection, page_size=50) for row in page.table.to_pylist()]
            for collection in ("users", "enrollments", "classes", "orgs")
        }
    v11, v12 = normalised["1.1"], normalised["1.2"]

    def comparable(user):
        ignored = {"sourced_id", "preferred_first_name", "roles", "agent_sourced_ids"}
        return {key: value for key, value in user.items() if key not in ignored}

    by_legacy = {user["legacy_sourced_id"]: user for user in v12["users"]}
    assert len(v11["users"]) == len(v12["users"]) > 0
    for user in v11["users"]:
        assert user["legacy_sourced_id"] == user["sourced_id"]
        twin = by_legacy[user["sourced_id"]]
        assert comparable(user) == comparable(twin)
        assert [role["org_sourced_id"] for role in user["roles"]] == [
            role["org_sourced_id"] for role in twin["roles"]
        ]
    legacy_of = {user["sourced_id"]: user["legacy_sourced_id"] for user in v12["users"]}
    assert [row["user_sourced_id"] for row in v11["enrollments"]] == [
        legacy_of[row["user_sourced_id"]] for row in v12["enrollments"]
    ]
    assert v11["classes"] == v12["classes"]
    assert v11["orgs"] == v12["orgs"]
    assert any(user["preferred_first_name"] for user in v12["users"])


def test_a_host_without_a_scheme_is_reached_over_https_never_in_clear(monkeypatch):
    """The form hides the schema field: a bare host name must not send the client secret over http."""
    from plugins.hooks.schoology import SchoologyHook

    for conn_id, conn_type, extra in (("ic_bare", "infinite_campus_oneroster", {"app_name": "demo"}),
                                      ("lms_bare", "schoology", {"school_id": "1"})):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
            {"conn_type": conn_type, "host": "campus.example.org", "login": "k", "password": "s", "extra": extra}))
    assert OneRosterHook("ic_bare").base_url == "https://campus.example.org"
    assert SchoologyHook("lms_bare").base_url == "https://campus.example.org"
