"""IC's OneRoster 1.2 gradebook (and its 1.1 one) in the emulator, over real HTTP on 127.0.0.1.

What grade passback will meet at IC: the vendor header, PUT that creates once and then
updates, IC's reference and enrollment checks, closed grading windows, score groups, and
payloads that conform to 1EdTech's official gradebook OpenAPI definitions; in 1.1, its
narrower binding and role-prefixed student ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import requests
from jsonschema import Draft202012Validator

from include.sandbox.ic_emulator import ICEmulator
from include.sandbox.ic_gradebook import WINDOW_CLOSED, Gradebook
from tests.support import CLIENT_ID, CLIENT_SECRET
from tests.test_emulator_conformance import FORMATS

SPEC = json.loads(
    (Path(__file__).parent / "openapi" / "onerosterv1p2gradebookservice_openapi3_v1p0.json").read_text()
)
VENDOR_KEY, VENDOR_SECRET = "test-vendor", "test-vendor-secret"
STAMP = "2026-09-01T12:00:00.000Z"
Q1, Q3 = "202711", "202713"  # grading periods of the demo district's 2026-27 year
LETTERS = [("90", "A"), ("80", "B"), ("70", "C"), ("60", "D"), ("0", "F")]


def schema_of(path: str, method: str, status: str) -> dict:
    responses = SPEC["paths"][path][method]["responses"]
    return (responses.get(status) or responses["default"])["content"]["application/json"]["schema"]


def body_schema(path: str) -> dict:
    """What a PUT sends; the spec declares no 201 body, so the stored record echoed back is held to it."""
    return SPEC["paths"][path]["put"]["requestBody"]["content"]["application/json"]["schema"]


def errors_of(schema: dict, payload) -> list[str]:
    validator = Draft202012Validator({**schema, "components": SPEC["components"]}, format_checker=FORMATS)
    return [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(payload)]


def code_minor(response: requests.Response) -> str:
    return response.json()["imsx_CodeMinor"]["imsx_codeMinorField"][0]["imsx_codeMinorFieldValue"]


class Client:
    """A gradebook caller as a passback task would be: bearer token plus IC's vendor header."""

    def __init__(self, ic: ICEmulator, vendor: str | None = f"{VENDOR_KEY}:{VENDOR_SECRET}",
                 version: str = "1.2"):
        self.ic = ic
        self.base = ic.gradebook_url_for(version)
        token = requests.post(ic.token_url, data={"grant_type": "client_credentials"},
                              auth=(CLIENT_ID, CLIENT_SECRET), timeout=5).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        if vendor is not None:
            self.headers["x-vendor-authorization"] = vendor

    def call(self, method: str, path: str, body=None, **params) -> requests.Response:
        return requests.request(method, f"{self.base}{path}", json=body, params=params,
                                headers=self.headers, timeout=5)

    def put(self, path: str, body) -> requests.Response:
        return self.call("PUT", path, body)

    def get(self, path: str, **params) -> requests.Response:
        return self.call("GET", path, **params)


@pytest.fixture(scope="module")
def server(demo_district) -> Iterator[ICEmulator]:
    """One server for the module: stopping one takes half a second."""
    with ICEmulator(demo_district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo",
                    vendor_key=VENDOR_KEY, vendor_secret=VENDOR_SECRET) as emulator:
        yield emulator


@pytest.fixture
def campus(server, demo_district) -> ICEmulator:
    """The module's server with an empty gradebook, no faults and an empty request log."""
    server.gradebook = Gradebook(demo_district)
    server.clear_faults()
    server.reset_stats()
    return server


@pytest.fixture
def client(campus) -> Client:
    return Client(campus)


@pytest.fixture
def roster(demo_district) -> dict:
    """A year-long class, two of its active students, and people who must not get its grades."""
    classes = demo_district.records("classes")
    enrollments = list(demo_district.records("enrollments"))
    year_long = next(cls for cls in classes if len(cls["terms"]) == 2)
    in_class = [e for e in enrollments if e["class"]["sourcedId"] == year_long["sourcedId"]]
    students = [e["user"]["sourcedId"] for e in in_class if (e["role"], e["status"]) == ("student", "active")]
    dropped = next(e for e in enrollments if e["role"] == "student" and e["status"] == "tobedeleted")
    return {
        "class": year_long,
        "students": students[:2],
        "teacher": next(e["user"]["sourcedId"] for e in in_class if e["role"] == "teacher"),
        "outsider": next(e["user"]["sourcedId"] for e in enrollments if e["role"] == "student"
                         and e["user"]["sourcedId"] not in {x["user"]["sourcedId"] for x in in_class}),
        "dropped": dropped,
        "semester_1_class": next(cls for cls in classes
                                 if [term["sourcedId"] for term in cls["terms"]] == ["202701"]),
    }


def ref(ic: ICEmulator, kind: str, sourced_id: str) -> dict:
    collection = {"class": "classes", "org": "orgs", "academicSession": "academicSessions", "user": "users",
                  "category": "categories", "scoreScale": "scoreScales", "lineItem": "lineItems"}[kind]
    ours = collection in ("categories", "scoreScales", "lineItems")
    base = ic.gradebook_url if ours else ic.rostering_url("1.2")
    return {"href": f"{base}/{collection}/{sourced_id}", "sourcedId": sourced_id, "type": kind}


def category(sourced_id: str = "cat-term") -> dict:
    return {"category": {"sourcedId": sourced_id, "status": "active", "dateLastModified": STAMP,
                         "title": "Term grades", "weight": 1}}


def score_scale(ic: ICEmulator, cls: dict, sourced_id: str = "ss-letter") -> dict:
    values = [{"itemValueLHS": lhs, "itemValueRHS": rhs} for lhs, rhs in LETTERS]
    return {"scoreScale": {"sourcedId": sourced_id, "status": "active", "dateLastModified": STAMP,
                           "title": "Letter grades", "type": "score group",
                           "class": ref(ic, "class", cls["sourcedId"]), "scoreScaleValue": values}}


def line_item(ic: ICEmulator, cls: dict, sourced_id: str = "li-q1", period: str = Q1, **changes) -> dict:
    record = {"sourcedId": sourced_id, "status": "active", "dateLastModified": STAMP, "title": "Q1 Grade",
              "assignDate": "2026-08-15T00:00:00.000Z", "dueDate": "2026-10-17T00:00:00.000Z",
              "class": ref(ic, "class", cls["sourcedId"]),
              "school": ref(ic, "org", cls["school"]["sourcedId"]),
              "category": ref(ic, "category", "cat-term"),
              "gradingPeriod": ref(ic, "academicSession", period),
              "scoreScale": ref(ic, "scoreScale", "ss-letter"), "resultValueMin": 0, "resultValueMax": 100}
    record.update(changes)
    return {"lineItem": {key: value for key, value in record.items() if value is not None}}


def result(ic: ICEmulator, student: str, sourced_id: str | None = None, item: str = "li-q1",
           **changes) -> dict:
    record = {"sourcedId": sourced_id or f"r-{item}-{student}", "status": "active", "dateLastModified": STAMP,
              "lineItem": ref(ic, "lineItem", item), "student": ref(ic, "user", student),
              "scoreStatus": "fully graded", "scoreDate": "2026-10-17"}
    record.update(changes)
    return {"result": {key: value for key, value in record.items() if value is not None}}


def seed(client: Client, roster: dict) -> None:
    """Category, score group and one Q1 lineItem for the roster's class."""
    ic, cls = client.ic, roster["class"]
    assert client.put("/categories/cat-term", category()).status_code == 201
    assert client.put("/scoreScales/ss-letter", score_scale(ic, cls)).status_code == 201
    assert client.put("/lineItems/li-q1", line_item(ic, cls)).status_code == 201


def put_result(client: Client, student: str, **changes) -> requests.Response:
    body = result(client.ic, student, **changes)
    return client.put(f"/results/{body['result']['sourcedId']}", body)


def test_gradebook_calls_need_the_vendor_header(campus, demo_district):
    assert campus.gradebook_url.endswith("/campus/api/oneroster/v1p2/demo/ims/oneroster/gradebook/v1p2")
    assert Client(campus).get("/lineItems").status_code == 200
    for vendor in (None, f"{VENDOR_KEY}:wrong", VENDOR_KEY):
        refused = Client(campus, vendor=vendor).get("/lineItems")
        assert refused.status_code == 401, vendor
        assert code_minor(refused) == "unauthorisedrequest"
        assert "x-vendor-authorization" in refused.json()["imsx_description"]
    no_bearer = requests.get(f"{campus.gradebook_url}/lineItems", timeout=5,
                             headers={"x-vendor-authorization": f"{VENDOR_KEY}:{VENDOR_SECRET}"})
    assert no_bearer.status_code == 401
    roster_call = requests.get(f"{campus.rostering_url('1.2')}/orgs", timeout=5,
                               headers=Client(campus, vendor=None).headers)
    assert roster_call.status_code == 200, "rostering does not need the vendor header"
    with ICEmulator(demo_district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as bare:
        assert Client(bare).get("/lineItems").status_code == 401, "no vendor key configured: refuses all"


def test_put_creates_then_updates_and_never_duplicates(campus, client, roster):
    seed(client, roster)
    assert client.put("/lineItems/li-q1", line_item(campus, roster["class"])).status_code == 200
    student = roster["students"][0]
    first = put_result(client, student, score=91)
    assert first.status_code == 201 and first.json()["result"]["textScore"] == "A"
    again = put_result(client, student, score=91)
    assert again.status_code == 200
    assert again.json()["result"]["dateLastModified"] == first.json()["result"]["dateLastModified"], \
        "an unchanged write keeps its dateLastModified"
    changed = put_result(client, student, score=84)
    assert changed.status_code == 200 and changed.json()["result"]["textScore"] == "B"
    gradebook = campus.gradebook
    writes = gradebook.writes["results"][f"r-li-q1-{student}"]
    assert (writes.created, writes.updated) == (1, 2)
    item_writes = gradebook.writes["lineItems"]["li-q1"]
    assert (item_writes.created, item_writes.updated) == (1, 1)
    assert list(gradebook.stored("results")) == [f"r-li-q1-{student}"]
    assert client.get(f"/results/r-li-q1-{student}").json()["result"]["score"] == 84
    assert gradebook.duplicates() == {}
    assert put_result(client, student, sourced_id="r-other-id", score=84).status_code == 201
    assert gradebook.duplicates() == {("li-q1", student): [f"r-li-q1-{student}", "r-other-id"]}


def test_a_put_applied_before_the_connection_dropped_is_updated_by_the_retry(campus, client, roster):
    seed(client, roster)
    student = roster["students"][0]
    campus.inject("reset_after_apply", path_contains="/results/")
    with pytest.raises(requests.exceptions.ConnectionError):
        put_result(client, student, score=77)
    stored = campus.gradebook.stored("results")
    assert stored[f"r-li-q1-{student}"]["textScore"] == "C", "applied before the drop"
    assert put_result(client, student, score=77).status_code == 200
    writes = campus.gradebook.writes["results"][f"r-li-q1-{student}"]
    assert (writes.created, writes.updated) == (1, 1)
    assert [r.status for r in campus.requests if "/results/" in r.path] == [0, 200]


def guid(kind: str, sourced_id: str) -> dict:
    return {"href": f"http://127.0.0.1/{kind}/{sourced_id}", "sourcedId": sourced_id, "type": kind}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"class": guid("class", "nope")}, "class nope does not exist"),
        ({"gradingPeriod": guid("academicSession", "1999")}, "gradingPeriod 1999"),
        ({"gradingPeriod": guid("org", Q1)}, "GUIDRef"),
        ({"category": guid("category", "none")}, "category none does not exist"),
        ({"scoreScale": guid("scoreScale", "none")}, "scoreScale none does not exist"),
        ({"school": guid("org", "1")}, "is not the school of class"),
        ({"dueDate": None}, "missing required field(s) dueDate"),
        ({"gradingPeriod": None}, "missing required field(s) gradingPeriod"),
        ({"points": 10}, "unknown field(s) points"),
        ({"resultValueMax": "100"}, "resultValueMax must be a number"),
        ({"dueDate": "next week"}, "dueDate must be an ISO 8601 date-time"),
        ({"sourcedId": "li-other"}, "differs from"),
    ],
)
def test_line_items_are_checked_against_the_district(campus, client, roster, change, words):
    client.put("/categories/cat-term", category())
    client.put("/scoreScales/ss-letter", score_scale(campus, roster["class"]))
    response = client.put("/lineItems/li-q1", line_item(campus, roster["class"], **change))
    assert response.status_code == 422, response.text
    assert code_minor(response) == "invaliddata"
    assert words in response.json()["imsx_description"]
    assert campus.gradebook.stored("lineItems") == {}


def test_grading_period_must_fall_in_the_class_terms_and_bad_requests_are_refused(campus, client, roster):
    seed(client, roster)
    semester = roster["semester_1_class"]
    outside = client.put("/lineItems/li-s1-q3", line_item(campus, semester, "li-s1-q3", period=Q3))
    assert outside.status_code == 422 and "outside the terms" in outside.json()["imsx_description"]
    inside = client.put("/lineItems/li-s1-q1", line_item(campus, semester, "li-s1-q1", period=Q1))
    assert inside.status_code == 201
    not_json = requests.put(f"{campus.gradebook_url}/lineItems/x", data=b"{not json", headers=client.headers,
                            timeout=5)
    assert not_json.status_code == 400 and code_minor(not_json) == "invaliddata"
    unwrapped = client.put("/lineItems/x", line_item(campus, semester)["lineItem"])
    assert unwrapped.status_code == 422 and '{"lineItem"' in unwrapped.json()["imsx_description"]
    for path in ("/lineItems/missing", "/results/missing", "/categories/missing", "/scoreScales/missing"):
        assert client.get(path).status_code == 404, path
        assert client.call("DELETE", path).status_code == 404, path
    assert client.get("/nothingHere").status_code == 404
    assert client.call("POST", "/lineItems/li-q1").status_code == 404


def test_a_result_needs_a_line_item_and_a_student_actively_enrolled_in_its_class(campus, client, roster,
                                                                                 demo_district):
    seed(client, roster)
    missing = put_result(client, roster["students"][0], item="li-none")
    assert missing.status_code == 422
    assert "lineItem li-none does not exist" in missing.json()["imsx_description"]
    for who in ("outsider", "teacher"):
        refused = put_result(client, roster[who])
        assert refused.status_code == 422 and code_minor(refused) == "invaliddata", who
        assert "is not actively enrolled as a student" in refused.json()["imsx_description"]
    dropped = roster["dropped"]
    cls = demo_district.records("classes")[int(dropped["class"]["sourcedId"]) - 600_000]
    client.put("/scoreScales/ss-drop", score_scale(campus, cls, "ss-drop"))
    period = Q1 if "202701" in [term["sourcedId"] for term in cls["terms"]] else Q3
    item = line_item(campus, cls, "li-drop", period=period, scoreScale=ref(campus, "scoreScale", "ss-drop"))
    assert client.put("/lineItems/li-drop", item).status_code == 201
    assert put_result(client, dropped["user"]["sourcedId"], item="li-drop", score=90).status_code == 422, \
        "a tobedeleted enrollment takes no grades"
    elsewhere = {"class": ref(campus, "class", cls["sourcedId"])}
    wrong_class = put_result(client, roster["students"][0], **elsewhere)
    assert wrong_class.status_code == 422
    assert "is not the class of lineItem" in wrong_class.json()["imsx_description"]
    assert campus.gradebook.stored("results") == {}


def test_grades_are_refused_while_the_grading_window_is_closed(campus, client, roster):
    seed(client, roster)
    gradebook = campus.gradebook
    student = roster["students"][0]
    gradebook.today = date(2026, 10, 30)
    gradebook.set_window(Q1, date(2026, 10, 1), date(2026, 10, 24))
    gradebook.set_window(Q3, date(2026, 10, 1), date(2026, 12, 31))
    closed = put_result(client, student, score=88)
    assert closed.status_code == 403
    payload = closed.json()
    assert code_minor(closed) == "forbidden"
    assert payload["imsx_description"].startswith(WINDOW_CLOSED) and Q1 in payload["imsx_description"]
    assert gradebook.stored("results") == {} and not gradebook.window_open(Q1) and gradebook.window_open(Q3)
    gradebook.today = date(2026, 10, 24)
    assert put_result(client, student, score=88).status_code == 201, "the closing day is still open"
    gradebook.today = date(2026, 10, 25)
    assert client.call("DELETE", f"/results/r-li-q1-{student}").status_code == 403
    renamed = client.put("/lineItems/li-q1", line_item(campus, roster["class"], title="Q1"))
    assert renamed.status_code == 200, "windows bind grades, not the lineItem"
    with pytest.raises(KeyError):
        gradebook.set_window("no-such-term", date(2026, 1, 1), date(2026, 2, 1))


def test_a_window_not_yet_open_is_refused_saying_when_it_opens(campus, client, roster):
    seed(client, roster)
    gradebook = campus.gradebook
    gradebook.today = date(2026, 9, 30)
    gradebook.set_window(Q1, date(2026, 10, 1), date(2026, 10, 24))
    early = put_result(client, roster["students"][0], score=88)
    assert early.status_code == 403 and code_minor(early) == "forbidden"
    description = early.json()["imsx_description"]
    assert "not yet open" in description and "opens on 2026-10-01" in description and Q1 in description
    assert not description.startswith(WINDOW_CLOSED), "a window that has not opened is not closed"
    assert gradebook.stored("results") == {}


def test_the_window_400_profile_refuses_a_closed_window_as_400_invaliddata_line_items_too(demo_district,
                                                                                          roster):
    """A server seen in the field: a closed window refuses the lineItem as well, as 400 ``invaliddata``."""
    with ICEmulator(demo_district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo",
                    vendor_key=VENDOR_KEY, vendor_secret=VENDOR_SECRET, profile="window-400") as other:
        client = Client(other)
        seed(client, roster)
        student = roster["students"][0]
        other.gradebook.today = date(2026, 10, 30)
        other.gradebook.set_window(Q1, date(2026, 10, 1), date(2026, 10, 24))
        for response in (client.put("/lineItems/li-q1", line_item(other, roster["class"], title="Q1")),
                         put_result(client, student, score=88)):
            assert response.status_code == 400 and code_minor(response) == "invaliddata", response.text
            assert response.json()["imsx_description"].startswith(WINDOW_CLOSED)
            assert errors_of(schema_of("/lineItems/{sourcedId}", "put", "400"), response.json()) == []
        assert other.gradebook.stored("results") == {}
        assert other.gradebook.stored("lineItems")["li-q1"]["title"] == "Q1 Grade", "the refusal changed nothing"


def test_a_refusal_injected_for_one_record_is_answered_as_a_status_info_payload(campus, client, roster):
    campus.gradebook.refuse("scoreScales", "ss-letter", "scoreScale ss-letter: the district's score groups are "
                                                        "locked for the term")
    assert client.put("/categories/cat-term", category()).status_code == 201
    refused = client.put("/scoreScales/ss-letter", score_scale(campus, roster["class"]))
    assert refused.status_code == 422 and code_minor(refused) == "invaliddata"
    assert refused.json()["imsx_description"].endswith("locked for the term")
    assert client.put("/scoreScales/ss-other", score_scale(campus, roster["class"], "ss-other")).status_code == 201
    assert list(campus.gradebook.stored("scoreScales")) == ["ss-other"]


def test_score_groups_map_percents_and_check_scores(campus, client, roster):
    seed(client, roster)
    one, two = roster["students"]
    expectations = [
        ({"score": 85}, {"score": 85, "textScore": "B"}),
        ({"score": 59.9}, {"score": 59.9, "textScore": "F"}),
        ({"textScore": "A"}, {"textScore": "A"}),
        ({"score": 55, "textScore": "A"}, {"score": 55, "textScore": "A"}),
        ({"score": 107}, {"score": 107, "textScore": "A"}),
        ({"scoreStatus": "exempt"}, {"scoreStatus": "exempt"}),
    ]
    for sent, kept in expectations:
        response = put_result(client, one, **sent)
        assert response.status_code in (200, 201), (sent, response.text)
        stored = campus.gradebook.stored("results")[f"r-li-q1-{one}"]
        assert {key: stored.get(key) for key in kept} == kept, sent
        assert set(stored) & {"score", "textScore"} == set(kept) & {"score", "textScore"}, sent
    unknown = put_result(client, two, textScore="Z")
    assert unknown.status_code == 422 and "not in score group ss-letter" in unknown.json()["imsx_description"]
    bad_scale = score_scale(campus, roster["class"], "ss-bad")
    bad_scale["scoreScale"]["scoreScaleValue"] = [{"itemValueLHS": "high", "itemValueRHS": "A"}]
    assert client.put("/scoreScales/ss-bad", bad_scale).status_code == 422
    no_scale = line_item(campus, roster["class"], "li-raw", scoreScale=None)
    assert client.put("/lineItems/li-raw", no_scale).status_code == 201
    raw = put_result(client, two, item="li-raw", score=12.5, textScore=None)
    assert raw.status_code == 201 and "textScore" not in raw.json()["result"], "no score group: kept as sent"
    assert put_result(client, two, item="li-raw", scoreStatus="graded").status_code == 422


def test_lists_and_class_scoped_reads(campus, client, roster):
    seed(client, roster)
    one, two = roster["students"]
    cls = roster["class"]["sourcedId"]
    put_result(client, one, score=95)
    put_result(client, two, score=72)
    listed = client.get("/results", limit=1, offset=1)
    assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "2"
    assert [r["student"]["sourcedId"] for r in listed.json()["results"]] == [two]
    assert 'rel="prev"' in listed.headers["Link"]
    filtered = client.get("/results", filter=f"student='{one}'").json()["results"]
    assert [r["sourcedId"] for r in filtered] == [f"r-li-q1-{one}"]
    ordered = client.get("/results", sort="score", orderBy="desc", fields="score").json()["results"]
    assert ordered == [{"sourcedId": f"r-li-q1-{one}", "score": 95},
                       {"sourcedId": f"r-li-q1-{two}", "score": 72}]
    assert client.get("/results", sort="nope").status_code == 400
    assert client.get("/results", filter="score=95").status_code == 400
    assert len(client.get(f"/classes/{cls}/lineItems").json()["lineItems"]) == 1
    assert len(client.get(f"/classes/{cls}/lineItems/li-q1/results").json()["results"]) == 2
    assert len(client.get(f"/classes/{cls}/results").json()["results"]) == 2
    theirs = client.get(f"/classes/{cls}/students/{two}/results").json()["results"]
    assert [mine["score"] for mine in theirs] == [72]
    categories = client.get(f"/classes/{cls}/categories").json()["categories"]
    assert [used["sourcedId"] for used in categories] == ["cat-term"]
    assert len(client.get(f"/classes/{cls}/scoreScales").json()["scoreScales"]) == 1
    other = roster["semester_1_class"]["sourcedId"]
    assert client.get(f"/classes/{other}/lineItems").json()["lineItems"] == []
    assert client.get("/classes/nope/lineItems").status_code == 404
    assert client.get(f"/classes/{other}/lineItems/li-q1/results").status_code == 404


def test_deletes_keep_references_whole(campus, client, roster):
    seed(client, roster)
    student = roster["students"][0]
    put_result(client, student, score=80)
    in_use = client.call("DELETE", "/lineItems/li-q1")
    assert in_use.status_code == 422 and code_minor(in_use) == "deletefailure"
    assert client.call("DELETE", "/categories/cat-term").status_code == 422
    gone = client.call("DELETE", f"/results/r-li-q1-{student}")
    assert gone.status_code == 204 and gone.content == b""
    assert client.call("DELETE", "/lineItems/li-q1").status_code == 204
    assert client.get("/lineItems/li-q1").status_code == 404
    assert campus.gradebook.writes["lineItems"]["li-q1"].deleted == 1


def test_faults_apply_to_gradebook_calls(campus, client, roster):
    seed(client, roster)
    campus.inject("503", path_contains="/gradebook/")
    assert client.get("/lineItems").status_code == 503
    campus.inject("429", retry_after=3)
    limited = put_result(client, roster["students"][0], score=90)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert campus.gradebook.stored("results") == {}, "a refused call stores nothing"


def test_gradebook_responses_conform_to_the_official_definitions(campus, client, roster):
    seed(client, roster)
    ic, cls = campus, roster["class"]
    student = roster["students"][0]
    assert "201" in SPEC["paths"]["/results/{sourcedId}"]["put"]["responses"]
    created = put_result(client, student, score=93, comment="Nice work", late="false")
    assert created.status_code == 201
    assert errors_of(body_schema("/results/{sourcedId}"), created.json()) == []
    sent_bodies = {"/results/{sourcedId}": result(ic, student), "/lineItems/{sourcedId}": line_item(ic, cls),
                   "/categories/{sourcedId}": category(), "/scoreScales/{sourcedId}": score_scale(ic, cls)}
    for path, sent in sent_bodies.items():
        assert errors_of(body_schema(path), sent) == [], path
    singles = {"/lineItems/{sourcedId}": "li-q1", "/results/{sourcedId}": f"r-li-q1-{student}",
               "/categories/{sourcedId}": "cat-term", "/scoreScales/{sourcedId}": "ss-letter"}
    for path, sourced_id in singles.items():
        response = client.get(path.format(sourcedId=sourced_id))
        assert response.status_code == 200, path
        assert errors_of(schema_of(path, "get", "200"), response.json()) == [], path
    ids = {"classSourcedId": cls["sourcedId"], "lineItemSourcedId": "li-q1", "studentSourcedId": student}
    lists = ["/lineItems", "/results", "/categories", "/scoreScales", "/classes/{classSourcedId}/lineItems",
             "/classes/{classSourcedId}/results",
             "/classes/{classSourcedId}/lineItems/{lineItemSourcedId}/results",
             "/classes/{classSourcedId}/students/{studentSourcedId}/results",
             "/classes/{classSourcedId}/categories", "/classes/{classSourcedId}/scoreScales"]
    for path in lists:
        response = client.get(path.format(**ids))
        payload = response.json()
        assert response.status_code == 200 and errors_of(schema_of(path, "get", "200"), payload) == [], path
        assert sum(len(value) for value in payload.values()) >= 1, path

    campus.gradebook.today = date(2026, 11, 1)
    campus.gradebook.set_window(Q1, date(2026, 10, 1), date(2026, 10, 24))
    campus.inject("500", path_contains="/categories/")
    errors = [
        ("/results/{sourcedId}", "put", "403", put_result(client, student, score=50)),
        ("/results/{sourcedId}", "put", "422", put_result(client, roster["outsider"])),
        ("/results/{sourcedId}", "put", "401", Client(campus, vendor="x:y").put("/results/r", {})),
        ("/lineItems/{sourcedId}", "get", "404", client.get("/lineItems/nope")),
        ("/lineItems/{sourcedId}", "delete", "422", client.call("DELETE", "/lineItems/li-q1")),
        ("/lineItems", "get", "400", client.get("/lineItems", filter="title=unquoted")),
        ("/categories/{sourcedId}", "get", "500", client.get("/categories/cat-term")),
    ]
    for path, method, status, response in errors:
        assert str(response.status_code) == status, (path, method, response.text)
        assert status in SPEC["paths"][path][method]["responses"], f"{status}: undeclared {method} {path}"
        payload = response.json()
        assert errors_of(schema_of(path, method, status), payload) == [], (path, status)
        assert (payload["imsx_codeMajor"], payload["imsx_severity"]) == ("failure", "error")
        assert payload["imsx_description"]


def test_the_validation_would_catch_non_conforming_gradebook_payloads(campus, client, roster):
    """Guards the guard: the same check rejects what the official definitions forbid."""
    seed(client, roster)
    student = roster["students"][0]
    stored = put_result(client, student, score=81).json()["result"]
    item = client.get("/lineItems/li-q1").json()["lineItem"]
    result_schema = schema_of("/results/{sourcedId}", "get", "200")
    for broken in (
        {key: value for key, value in stored.items() if key != "scoreStatus"},
        {**stored, "score": "81"},
        {**stored, "scoreStatus": "graded"},
        {**stored, "scoreDate": "2026-10-17T00:00:00Z"},
        {**stored, "student": {**stored["student"], "type": "student"}},
        {**stored, "points": 81},
    ):
        assert errors_of(result_schema, {"result": broken}), broken
    line_item_schema = schema_of("/lineItems/{sourcedId}", "get", "200")
    assert errors_of(line_item_schema, {"lineItem": {k: v for k, v in item.items() if k != "category"}})
    assert errors_of(line_item_schema, {"lineItem": {**item, "dueDate": "tomorrow"}})
    status_schema = schema_of("/results/{sourcedId}", "put", "403")
    window = {"imsx_codeMajor": "failure", "imsx_severity": "error", "imsx_description": WINDOW_CLOSED,
              "imsx_CodeMinor": {"imsx_codeMinorField": [{"imsx_codeMinorFieldName": "TargetEndSystem",
                                                          "imsx_codeMinorFieldValue": "window_closed"}]}}
    assert errors_of(status_schema, window), "a made-up code minor would not conform"


# -- OneRoster 1.1 ------------------------------------------------------------------------


@pytest.fixture
def client_1p1(campus) -> Client:
    return Client(campus, version="1.1")


@pytest.fixture
def students_1p1(demo_district, roster) -> list[str]:
    """Two active students of the roster's class, by their 1.1 ids (IC's role prefix)."""
    cls = roster["class"]["sourcedId"]
    return [e["user"]["sourcedId"] for e in demo_district.records("enrollments", "1.1")
            if e["class"]["sourcedId"] == cls and (e["role"], e["status"]) == ("student", "active")][:2]


def category_1p1(sourced_id: str = "cat-term") -> dict:
    return {"category": {"sourcedId": sourced_id, "status": "active", "dateLastModified": STAMP,
                         "title": "Term grades"}}


def line_item_1p1(ic: ICEmulator, cls: dict, **changes) -> dict:
    """The 1.2 lineItem without what 1.1 lacks: school and scoreScale."""
    return line_item(ic, cls, **{"school": None, "scoreScale": None, **changes})


def put_result_1p1(client: Client, student: str, **changes) -> requests.Response:
    """A 1.1 result, whose score is required."""
    body = result(client.ic, student, **{"score": 91, **changes})
    return client.put(f"/results/{body['result']['sourcedId']}", body)


def seed_1p1(client: Client, roster: dict) -> None:
    assert client.put("/categories/cat-term", category_1p1()).status_code == 201
    assert client.put("/lineItems/li-q1", line_item_1p1(client.ic, roster["class"])).status_code == 201


def test_1p1_gradebook_is_served_under_the_1p1_base_and_creates_then_updates(campus, client_1p1, roster,
                                                                              students_1p1):
    assert campus.gradebook_url_for("1.1").endswith("/campus/api/oneroster/v1p1/demo/ims/oneroster/v1p1")
    assert campus.gradebook_url_for("1.2") == campus.gradebook_url
    seed_1p1(client_1p1, roster)
    student = students_1p1[0]
    assert student.startswith("s") and student[1:].isdigit()
    first = put_result_1p1(client_1p1, student, score=107)
    assert first.status_code == 201, first.text
    again = put_result_1p1(client_1p1, student, score=107)
    assert again.status_code == 200
    assert again.json()["result"]["dateLastModified"] == first.json()["result"]["dateLastModified"]
    stored = campus.gradebook.stored("results")
    assert list(stored) == [f"r-li-q1-{student}"]
    assert stored[f"r-li-q1-{student}"]["score"] == 107, "above resultValueMax: kept as sent"
    assert "textScore" not in stored[f"r-li-q1-{student}"], "no score groups in 1.1"
    writes = campus.gradebook.writes["results"][f"r-li-q1-{student}"]
    assert (writes.created, writes.updated) == (1, 1)
    assert campus.gradebook.duplicates() == {}
    assert client_1p1.get(f"/results/r-li-q1-{student}").json()["result"]["student"]["sourcedId"] == student
    assert [r.status for r in campus.requests if "/v1p1/demo/ims/oneroster/v1p1/results/" in r.path] \
        == [201, 200, 200]


def test_1p1_bodies_follow_the_1p1_binding(campus, client_1p1, roster, students_1p1):
    seed_1p1(client_1p1, roster)
    student = students_1p1[0]
    refusals = [
        (client_1p1.put("/lineItems/li-x", line_item_1p1(campus, roster["class"], sourcedId="li-x",
                                                          school=ref(campus, "org", "1"))),
         "unknown field(s) school"),
        (client_1p1.put("/lineItems/li-x", line_item_1p1(campus, roster["class"], sourcedId="li-x",
                                                          scoreScale=ref(campus, "scoreScale", "ss"))),
         "unknown field(s) scoreScale"),
        (client_1p1.put("/categories/cat-w", {"category": {**category()["category"], "sourcedId": "cat-w"}}),
         "unknown field(s) weight"),
        (put_result_1p1(client_1p1, student, textScore="A"), "unknown field(s) textScore"),
        (put_result_1p1(client_1p1, student, score=None), "missing required field(s) score"),
        (put_result_1p1(client_1p1, student, score="91"), "score must be a number"),
    ]
    for response, words in refusals:
        assert response.status_code == 422 and code_minor(response) == "invaliddata", response.text
        assert words in response.json()["imsx_description"], words
    assert set(campus.gradebook.stored("lineItems")) == {"li-q1"}
    assert campus.gradebook.stored("results") == {}


def test_1p1_results_check_enrollment_by_1p1_student_ids(campus, client, client_1p1, roster, students_1p1):
    seed_1p1(client_1p1, roster)
    unprefixed = roster["students"][0]
    assert students_1p1[0] == f"s{unprefixed}", "the same student, as each version names it"
    refused = put_result_1p1(client_1p1, unprefixed)
    assert refused.status_code == 422 and code_minor(refused) == "invaliddata"
    assert "is not actively enrolled as a student" in refused.json()["imsx_description"]
    assert put_result(client, students_1p1[0], score=91).status_code == 422, "1.2 knows no prefixed ids"
    campus.gradebook.today = date(2026, 10, 30)
    campus.gradebook.set_window(Q1, date(2026, 10, 1), date(2026, 10, 24))
    closed = put_result_1p1(client_1p1, students_1p1[0])
    assert closed.status_code == 403 and closed.json()["imsx_description"].startswith(WINDOW_CLOSED)
    assert campus.gradebook.stored("results") == {}


def test_1p1_gradebook_needs_the_vendor_header_and_has_no_score_scales(campus, client, client_1p1, roster):
    refused = Client(campus, vendor=None, version="1.1").get("/lineItems")
    assert refused.status_code == 401 and "x-vendor-authorization" in refused.json()["imsx_description"]
    rostering = requests.get(f"{campus.rostering_url('1.1')}/classes/{roster['class']['sourcedId']}",
                             headers=Client(campus, vendor=None).headers, timeout=5)
    assert rostering.status_code == 200, "1.1 rostering is not the gradebook"
    assert client.put("/scoreScales/ss-letter", score_scale(campus, roster["class"])).status_code == 201
    cls = roster["class"]["sourcedId"]
    for method, path in (("GET", "/scoreScales/x"), ("GET", "/scoreScales/ss-letter"), ("GET", "/scoreScales"),
                         ("DELETE", "/scoreScales/ss-letter"), ("GET", f"/classes/{cls}/scoreScales"),
                         ("GET", f"/classes/{cls}/categories")):
        assert client_1p1.call(method, path).status_code == 404, (method, path)
    put = client_1p1.put("/scoreScales/ss-other", score_scale(campus, roster["class"], "ss-other"))
    assert put.status_code == 404 and "has no scoreScales" in put.json()["imsx_description"]
    assert list(campus.gradebook.stored("scoreScales")) == ["ss-letter"]


def test_1p1_class_scoped_reads(campus, client_1p1, roster, students_1p1):
    seed_1p1(client_1p1, roster)
    one, two = students_1p1
    cls = roster["class"]["sourcedId"]
    put_result_1p1(client_1p1, one, score=95)
    put_result_1p1(client_1p1, two, score=72)
    listed = client_1p1.get(f"/classes/{cls}/results", sort="score")
    assert listed.status_code == 200 and listed.headers["X-Total-Count"] == "2"
    assert [r["student"]["sourcedId"] for r in listed.json()["results"]] == [two, one]
    assert len(client_1p1.get(f"/classes/{cls}/lineItems/li-q1/results").json()["results"]) == 2
    assert [r["sourcedId"] for r in client_1p1.get(f"/classes/{cls}/lineItems").json()["lineItems"]] \
        == ["li-q1"]
    theirs = client_1p1.get(f"/classes/{cls}/students/{two}/results").json()["results"]
    assert [mine["score"] for mine in theirs] == [72]
    assert client_1p1.get(f"/classes/{cls}/students/{two[1:]}/results").status_code == 404, \
        "1.1 names students by their prefixed id"
    assert client_1p1.get("/results", fields="textScore").status_code == 400, "not a 1.1 field"
