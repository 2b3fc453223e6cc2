"""The emulator's OneRoster 1.2 responses against 1EdTech's official OpenAPI definitions.

``tests/openapi/`` holds copies of the published files (see its README), so a clone runs
this without ``../shared``. Every record of every rostering collection is validated, and
so are the error payloads, the single-record responses and the declared status codes.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from jsonschema import Draft202012Validator, FormatChecker

from include.oneroster.models import COLLECTIONS
from include.sandbox.ic_emulator import SINGULAR
from tests.support import CLIENT_ID, CLIENT_SECRET

SPEC = json.loads(
    (Path(__file__).parent / "openapi" / "onerosterv1p2rostersservice_openapi3_v1p0.json").read_text()
)
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value) -> bool:
    return not isinstance(value, str) or datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


@FORMATS.checks("date", raises=ValueError)
def _date(value) -> bool:
    return not isinstance(value, str) or bool(date.fromisoformat(value))


@FORMATS.checks("uri")
def _uri(value) -> bool:
    parts = urlsplit(value) if isinstance(value, str) else None
    return parts is None or bool(parts.scheme and parts.netloc)


def response_schema(path: str, status: str) -> dict:
    """The schema the spec declares for a GET on ``path`` answering ``status``."""
    responses = SPEC["paths"][path]["get"]["responses"]
    declared = responses.get(status) or responses["default"]
    return declared["content"]["application/json"]["schema"]


def validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator({**schema, "components": SPEC["components"]}, format_checker=FORMATS)


def errors_of(schema: dict, payload) -> list[str]:
    return [f"{list(error.absolute_path)}: {error.message}" for error in validator(schema).iter_errors(payload)]


@pytest.fixture
def bearer(ic) -> str:
    response = requests.post(
        ic.token_url, data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET), timeout=5
    )
    return response.json()["access_token"]


def fetch(ic, bearer, path, **params) -> requests.Response:
    return requests.get(
        f"{ic.rostering_url('1.2')}{path}", params=params, headers={"Authorization": f"Bearer {bearer}"}, timeout=10
    )


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_every_record_of_every_collection_conforms(ic, bearer, demo_district, collection):
    schema = response_schema(f"/{collection}", "200")
    total = demo_district.expected_counts("1.2")[collection]
    seen = 0
    for offset in range(0, total, 100):
        response = fetch(ic, bearer, f"/{collection}", limit=100, offset=offset)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert int(response.headers["X-Total-Count"]) == total
        payload = response.json()
        assert errors_of(schema, payload) == []
        seen += len(payload[collection])
    assert seen == total > 0


@pytest.mark.parametrize("collection", COLLECTIONS)
def test_single_records_conform(ic, bearer, demo_district, collection):
    record = demo_district.records(collection, "1.2")[-1]
    parameter = SPEC["paths"][f"/{collection}/{{sourcedId}}"]["get"]
    response = fetch(ic, bearer, f"/{collection}/{record['sourcedId']}")
    assert response.status_code == 200
    assert errors_of(parameter["responses"]["200"]["content"]["application/json"]["schema"], response.json()) == []
    assert response.json()[SINGULAR[collection]]["sourcedId"] == record["sourcedId"]


def test_error_payloads_conform_with_declared_status_codes(ic, bearer):
    cases = {
        "400": fetch(ic, bearer, "/users", filter="givenName=unquoted"),
        "401": fetch(ic, "not-a-token", "/users"),
        "404": fetch(ic, bearer, "/users/does-not-exist"),
    }
    ic.inject("429")
    cases["429"] = fetch(ic, bearer, "/users")
    ic.inject("500")
    cases["500"] = fetch(ic, bearer, "/users")
    for status, response in cases.items():
        assert str(response.status_code) == status
        path = "/users/{sourcedId}" if status == "404" else "/users"
        assert status in SPEC["paths"][path]["get"]["responses"], f"{status} is not declared for {path}"
        payload = response.json()
        assert errors_of(response_schema(path, status), payload) == [], status
        assert (payload["imsx_codeMajor"], payload["imsx_severity"]) == ("failure", "error")
        assert payload["imsx_description"]


def test_the_validation_would_catch_a_non_conforming_record(ic, bearer):
    """Guards the guard: the same check rejects what the official definitions forbid."""
    schema = response_schema("/users", "200")
    user = fetch(ic, bearer, "/users", limit=1).json()["users"][0]
    broken = [
        {k: v for k, v in user.items() if k != "roles"},
        {**user, "enabledUser": True},
        {**user, "status": "inactive"},
        {**user, "dateLastModified": "yesterday"},
        {**user, "roles": [{**user["roles"][0], "roleType": "main"}]},
    ]
    for record in broken:
        assert errors_of(schema, {"users": [record]}), record
    assert errors_of(schema, {"users": [user], "unexpected": []})
