"""The project's connection types: `infinite_campus_oneroster` and `schoology`, registered with
Airflow through the project's ``apache_airflow_provider`` entry point (plugins/hooks/provider_info.py),
with their forms and a Test button that works against the real emulators on 127.0.0.1.

Airflow's ProvidersManager reads the entry point once a process, so what it lists is asked of a
fresh interpreter with an Airflow home of its own; the REST API's ``POST /api/v2/connections/test``
(what the form's Test button calls) runs in the real api-server app, in-process in another fresh
interpreter (no server started).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import jsonschema
import pytest

from include.sandbox.lms_emulator import SchoologyEmulator
from plugins.hooks.api_hook import SHARED_EXTRAS, TRANSPORT_EXTRAS
from plugins.hooks.oneroster import OneRosterHook
from plugins.hooks.canvas import CanvasHook
from plugins.hooks.provider_info import CANVAS_CONN_TYPE, IC_CONN_TYPE, LMS_CONN_TYPE, PACKAGE_NAME, get_provider_info
from plugins.hooks.schoology import SchoologyHook
from tests.support import CLIENT_ID, CLIENT_SECRET, LMS_KEY, LMS_SECRET, ROOT, connection_uri_env

AIRFLOW = Path(jsonschema.__file__).parent.parent / "airflow"  # the installed Airflow package
VENDOR_KEY, VENDOR_SECRET = "vendor-key-value", "vendor-secret-value"
HOOK_CLASSES = {IC_CONN_TYPE: "plugins.hooks.oneroster.OneRosterHook",
                LMS_CONN_TYPE: "plugins.hooks.schoology.SchoologyHook",
                CANVAS_CONN_TYPE: "plugins.hooks.canvas.CanvasHook"}


def fresh_airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False", PYTHONPATH=str(ROOT),
               AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"), AIRFLOW__CORE__PLUGINS_FOLDER=str(ROOT / "plugins"),
               **extra)
    return env


def run_json(script: str, env: dict[str, str], *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- the registration ---------------------------------------------------------------------------

LIST_TYPES = r"""
import json, sys, warnings
from airflow.providers_manager import ProvidersManager
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

wanted = json.loads(sys.argv[1])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    manager = ProvidersManager()
    hooks = {t: manager.hooks[t] for t in wanted}
    widgets = manager.connection_form_widgets
    behaviours = manager.field_behaviours
meta = {m.connection_type: m.model_dump() for m in HookMetaService.hook_meta_data() if m.connection_type in wanted}
print(json.dumps({
    "providers": {name: info.version for name, info in manager.providers.items()},
    "hooks": {t: None if h is None else {"class": h.hook_class_name, "name": h.hook_name,
                                         "conn_id_attr": h.connection_id_attribute_name,
                                         "testable": h.connection_testable} for t, h in hooks.items()},
    "widgets": {key: {"field": w.field_name, "hook": w.hook_class_name, "sensitive": w.is_sensitive,
                      "label": w.field["schema"].get("title"), "description": w.field.get("description")}
                for key, w in widgets.items() if key.split("__")[1] in wanted},
    "behaviours": {t: behaviours.get(t) for t in wanted},
    "meta": meta,
    "deprecations": [str(w.message) for w in caught if "plugins.hooks" in str(w.message)],
}, default=str))
"""


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("airflow-home")
    return run_json(LIST_TYPES, fresh_airflow_env(home), json.dumps([IC_CONN_TYPE, LMS_CONN_TYPE, CANVAS_CONN_TYPE]))


def test_the_project_is_installed_with_its_provider_entry_point():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    declared = pyproject["project"]["entry-points"]["apache_airflow_provider"]
    assert declared == {"provider_info": "plugins.hooks.provider_info:get_provider_info"}
    assert pyproject["project"]["name"] == PACKAGE_NAME
    installed = {ep.value for ep in metadata.entry_points(group="apache_airflow_provider") if ep.dist
                 and ep.dist.metadata["Name"] == PACKAGE_NAME}
    assert installed == {declared["provider_info"]}, (
        "the project is not installed in this virtualenv: run `make` (pip install --no-deps .)"
    )
    # nothing but the entry point: the code is imported from the project directory
    files = metadata.distribution(PACKAGE_NAME).files or ()
    assert not [f for f in files if f.suffix == ".py"]
    assert not list(ROOT.glob("*.egg-info")), "a build's leftover egg-info lists the project a second time"


def test_the_provider_info_passes_airflows_schemas_and_names_only_extras_the_hooks_read():
    info = get_provider_info()
    jsonschema.validate(info, json.loads((AIRFLOW / "provider_info.schema.json").read_text()))
    yaml_schema = json.loads((AIRFLOW / "provider.yaml.schema.json").read_text())
    jsonschema.validate(info["connection-types"], yaml_schema["properties"]["connection-types"])
    for entry, hook in zip(info["connection-types"], (OneRosterHook, SchoologyHook, CanvasHook),
                           strict=True):
        assert entry["hook-class-name"] == f"{hook.__module__}.{hook.__name__}"
        assert entry["connection-type"] == hook.conn_type
        fields = set(entry["conn-fields"])
        assert fields <= hook.OWN_EXTRAS | SHARED_EXTRAS, "a form field the hook would refuse"
        assert not fields & TRANSPORT_EXTRAS, "a transport extra as a field: an empty verify would turn TLS off"
        assert fields >= hook.OWN_EXTRAS, "an extra the hook reads has no field"
        assert all(field.get("description") for field in entry["conn-fields"].values())


def test_providers_manager_lists_every_type_with_our_hooks_and_testable(registered):
    assert PACKAGE_NAME in registered["providers"]
    hooks = registered["hooks"]
    assert hooks[IC_CONN_TYPE] == {"class": HOOK_CLASSES[IC_CONN_TYPE], "name": "Infinite Campus OneRoster",
                                   "conn_id_attr": "oneroster_conn_id", "testable": True}
    assert hooks[LMS_CONN_TYPE] == {"class": HOOK_CLASSES[LMS_CONN_TYPE], "name": "Schoology",
                                    "conn_id_attr": "schoology_conn_id", "testable": True}
    assert hooks[CANVAS_CONN_TYPE] == {"class": HOOK_CLASSES[CANVAS_CONN_TYPE], "name": "Canvas",
                                       "conn_id_attr": "canvas_conn_id", "testable": True}
    assert registered["deprecations"] == [], "the forms are declared in the provider info, not by the hooks"


def test_the_forms_fields_labels_and_secret_fields(registered):
    widgets = registered["widgets"]
    ic = {w["field"]: w for key, w in widgets.items() if key.startswith(f"extra__{IC_CONN_TYPE}__")}
    lms = {w["field"]: w for key, w in widgets.items() if key.startswith(f"extra__{LMS_CONN_TYPE}__")}
    assert set(ic) == {"app_name", "oneroster_version", "token_url", "scope", "read_timeout", "vendor_key",
                       "vendor_secret"}
    assert set(lms) == {"school_id", "read_timeout"}
    assert ic["app_name"]["label"] == "App name" and ic["oneroster_version"]["label"] == "OneRoster version"
    assert lms["school_id"]["label"] == "School ID"
    assert {name for name, w in ic.items() if w["sensitive"]} == {"vendor_key", "vendor_secret"}
    assert not any(w["sensitive"] for w in lms.values())
    assert "token?appName=" in ic["token_url"]["description"]
    assert {w["hook"] for w in ic.values()} == {HOOK_CLASSES[IC_CONN_TYPE]}


def test_the_forms_hidden_and_relabelled_standard_fields(registered):
    ic, lms = registered["behaviours"][IC_CONN_TYPE], registered["behaviours"][LMS_CONN_TYPE]
    for behaviour in (ic, lms):
        assert set(behaviour["hidden_fields"]) == {"schema", "port"}
        assert "verify" in behaviour["relabeling"]["extra"]
    assert ic["relabeling"]["login"] == "OneRoster client key"
    assert ic["relabeling"]["password"] == "OneRoster client secret"
    assert ic["placeholders"]["host"] == "https://acme.infinitecampus.org"
    assert lms["relabeling"]["login"] == "Consumer key" and lms["relabeling"]["password"] == "Consumer secret"
    assert lms["placeholders"]["host"] == "https://api.schoology.com"
    # what the UI's connection form is built from (GET /ui/connections/hook_meta)
    meta = registered["meta"][LMS_CONN_TYPE]
    assert meta["hook_name"] == "Schoology" and set(meta["extra_fields"]) == {"school_id", "read_timeout"}
    standard = meta["standard_fields"]
    assert standard["port"]["hidden"] and standard["url_schema"]["hidden"]
    assert standard["login"]["title"] == "Consumer key" and not standard["host"]["hidden"]
    ic_meta = registered["meta"][IC_CONN_TYPE]
    assert ic_meta["extra_fields"]["oneroster_version"]["schema"]["enum"] == ["1.2", "1.1"]
    canvas = registered["meta"][CANVAS_CONN_TYPE]
    assert canvas["hook_name"] == "Canvas"
    assert set(canvas["extra_fields"]) == {"account_id", "poll_seconds", "import_timeout_seconds", "read_timeout"}
    assert canvas["standard_fields"]["login"]["hidden"] and canvas["standard_fields"]["port"]["hidden"]
    assert canvas["standard_fields"]["password"]["title"] == "Access token"


# -- test_connection against the emulators --------------------------------------------------------

def no_secret_in(message: str, *secrets: str) -> None:
    leaked = [secret for secret in secrets if secret in message]
    assert leaked == [], f"the message repeats a secret: {message}"


def ic_env(monkeypatch, ic, version: str, *, password: str = CLIENT_SECRET, conn_type: str = IC_CONN_TYPE,
           **extras) -> str:
    (key, value), = connection_uri_env("ic_form", ic, version, vendor_key=VENDOR_KEY, vendor_secret=VENDOR_SECRET,
                                       **extras).items()
    connection = json.loads(value)
    connection.update(password=password, conn_type=conn_type)
    monkeypatch.setenv(key, json.dumps(connection))
    return "ic_form"


def lms_env(monkeypatch, lms, *, password: str = LMS_SECRET, conn_type: str = LMS_CONN_TYPE, **extras) -> str:
    extra = {"school_id": lms.school_id, **extras}
    monkeypatch.setenv("AIRFLOW_CONN_LMS_FORM", json.dumps({"conn_type": conn_type, "host": lms.base_url,
                                                            "login": LMS_KEY, "password": password,
                                                            "extra": extra}))
    return "lms_form"


@pytest.mark.parametrize("version", ["1.2", "1.1"])
def test_ic_test_connection_gets_a_token_and_one_page_of_orgs(ic, monkeypatch, version):
    ok, message = OneRosterHook(ic_env(monkeypatch, ic, version)).test_connection()
    assert ok, message
    assert "1 org(s)" in message and f"OneRoster {version}" in message
    no_secret_in(message, CLIENT_ID, CLIENT_SECRET, VENDOR_KEY, VENDOR_SECRET)
    paths = [request.path for request in ic.requests]
    assert any("oauth2/token" in path for path in paths) and any(path.endswith("/orgs") for path in paths)


def test_ic_test_connection_with_a_wrong_secret_fails_without_repeating_it(ic, monkeypatch):
    wrong = "wrong-secret-typed-in-the-form"
    started = time.monotonic()
    ok, message = OneRosterHook(ic_env(monkeypatch, ic, "1.2", password=wrong)).test_connection()
    assert not ok and "refused" in message, message
    assert time.monotonic() - started < 10, "a refused key is not retried for minutes"
    no_secret_in(message, wrong, CLIENT_ID, CLIENT_SECRET, VENDOR_KEY, VENDOR_SECRET)


def test_ic_test_connection_names_a_missing_or_unknown_setting(ic, monkeypatch):
    ok, message = OneRosterHook(ic_env(monkeypatch, ic, "1.2", app_name="")).test_connection()
    assert not ok and "app_name" in message
    ok, message = OneRosterHook(ic_env(monkeypatch, ic, "1.2", vendor_secert="x")).test_connection()
    assert not ok and "vendor_secert" in message
    no_secret_in(message, CLIENT_SECRET, VENDOR_KEY, VENDOR_SECRET)


def test_ic_test_connection_to_a_server_that_is_down_fails_quickly(ic, monkeypatch):
    conn_id = ic_env(monkeypatch, ic, "1.2")
    ic.__exit__(None, None, None)  # nothing listens on its port any more
    started = time.monotonic()
    ok, message = OneRosterHook(conn_id).test_connection()
    assert not ok and "token endpoint unreachable" in message, message
    assert time.monotonic() - started < 10


def test_lms_test_connection_reads_the_api_user(monkeypatch):
    with SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms:
        ok, message = SchoologyHook(lms_env(monkeypatch, lms)).test_connection()
        assert ok, message
        assert "GET /v1/users/me answered 200" in message and f"school_id {lms.school_id}" in message
        no_secret_in(message, LMS_KEY, LMS_SECRET)
        assert [(r.method, r.path) for r in lms.requests] == [("GET", "/v1/users/me")]


def test_lms_test_connection_with_a_wrong_secret_fails_without_repeating_it(monkeypatch):
    wrong = "wrong-consumer-secret"
    with SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms:
        ok, message = SchoologyHook(lms_env(monkeypatch, lms, password=wrong)).test_connection()
    assert not ok and "refused the consumer key/secret" in message, message
    no_secret_in(message, wrong, LMS_KEY, LMS_SECRET)


def test_lms_test_connection_without_school_id_names_it(monkeypatch):
    with SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms:
        ok, message = SchoologyHook(lms_env(monkeypatch, lms, school_id="")).test_connection()
        assert not ok and "school_id" in message
        assert len(lms.requests) == 0, "nothing is sent for a connection set up wrongly"


def test_lms_test_connection_takes_schoologys_303_to_the_user_without_following_it(monkeypatch):
    """Schoology answers users/me with a 303 to the user's object; following it would resend the
    signature made for users/me, which Schoology refuses."""
    import requests

    class Session:
        def request(self, method, url, **kwargs):
            assert method == "GET" and url.endswith("/v1/users/me") and kwargs["allow_redirects"] is False
            response = requests.Response()
            response.status_code, response.url = 303, url
            response.headers["Location"] = "https://api.schoology.com/v1/users/12345"
            return response

    monkeypatch.setenv("AIRFLOW_CONN_LMS_FORM", json.dumps({
        "conn_type": LMS_CONN_TYPE, "host": "https://api.schoology.com", "login": LMS_KEY, "password": LMS_SECRET,
        "extra": {"school_id": "344232"}}))
    hook = SchoologyHook("lms_form")
    hook._session = Session()
    ok, message = hook.test_connection()
    assert ok and "answered 303 (API user 12345)" in message, message
    no_secret_in(message, LMS_KEY, LMS_SECRET)


def test_connections_stored_as_http_still_work(ic, monkeypatch):
    """The hooks read host, login, password and extras whatever type a connection was stored with."""
    ok, message = OneRosterHook(ic_env(monkeypatch, ic, "1.2", conn_type="http")).test_connection()
    assert ok, message
    with SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms:
        ok, message = SchoologyHook(lms_env(monkeypatch, lms, conn_type="http")).test_connection()
        assert ok, message


def test_the_lms_emulator_refuses_an_unsigned_users_me():
    import requests

    with SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms:
        response = requests.get(f"{lms.base_url}/v1/users/me", timeout=10)
    assert response.status_code == 401


# -- the REST API the Test button calls ----------------------------------------------------------

REST_TEST = r"""
import json, sys
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import create_app

client = TestClient(create_app("core"))
answers = []
for body in json.loads(sys.argv[1]):
    response = client.post("/api/v2/connections/test", json=body)
    answers.append({"status_code": response.status_code, "body": response.json()})
print(json.dumps(answers))
"""


def test_the_rest_api_test_button_answers_for_both_types(ic, airflow_db, tmp_path):
    with SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET) as lms:
        ic_extra = json.dumps({"app_name": "demo", "oneroster_version": "1.2", "vendor_key": VENDOR_KEY,
                               "vendor_secret": VENDOR_SECRET})
        bodies = [
            {"connection_id": "ic_ui", "conn_type": IC_CONN_TYPE, "host": ic.base_url, "login": CLIENT_ID,
             "password": CLIENT_SECRET, "extra": ic_extra},
            {"connection_id": "ic_ui", "conn_type": IC_CONN_TYPE, "host": ic.base_url, "login": CLIENT_ID,
             "password": "not-the-secret", "extra": ic_extra},
            {"connection_id": "lms_ui", "conn_type": LMS_CONN_TYPE, "host": lms.base_url, "login": LMS_KEY,
             "password": LMS_SECRET, "extra": json.dumps({"school_id": lms.school_id})},
            {"connection_id": "lms_ui", "conn_type": LMS_CONN_TYPE, "host": lms.base_url, "login": LMS_KEY,
             "password": "not-the-consumer-secret", "extra": json.dumps({"school_id": lms.school_id})},
        ]
        env = fresh_airflow_env(airflow_db, AIRFLOW__CORE__TEST_CONNECTION="Enabled",
                                AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True")
        answers = run_json(REST_TEST, env, json.dumps(bodies))
    assert [a["status_code"] for a in answers] == [200] * 4, answers
    assert [a["body"]["status"] for a in answers] == [True, False, True, False], answers
    for answer in answers:
        no_secret_in(answer["body"]["message"], CLIENT_SECRET, "not-the-secret", VENDOR_KEY, VENDOR_SECRET,
                     LMS_KEY, LMS_SECRET, "not-the-consumer-secret")
