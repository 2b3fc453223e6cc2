"""The project's own Airflow provider: the connection types of its API hooks, with their forms.

``pyproject.toml`` names :func:`get_provider_info` as the project's ``apache_airflow_provider`` entry
point; once the project is installed (``make`` does it, the Dockerfile too) Airflow's
ProvidersManager reads it in every component, so the connection form offers

- ``infinite_campus_oneroster`` (:class:`plugins.hooks.oneroster.OneRosterHook`),
- ``schoology`` (:class:`plugins.hooks.schoology.SchoologyHook`) and
- ``canvas`` (:class:`plugins.hooks.canvas.CanvasHook`)

with their own fields, help texts and a working Test button (each hook's ``test_connection``;
Airflow enables the button with ``AIRFLOW__CORE__TEST_CONNECTION=Enabled``).

The forms are declared here, as Airflow 3.2+ wants them (``conn-fields`` and ``ui-field-behaviour``;
the hooks' ``get_connection_form_widgets`` / ``get_ui_field_behaviour`` are deprecated since 3.2),
so listing the forms imports no hook. Each ``conn-fields`` entry is an extra the hook reads, stored
in the connection's extras under that very name. The transport extras (``verify``, ``cert``,
``proxies``, ``trust_env``) stay in the form's Extra field: a form field left empty may be stored
as null, and a null ``verify`` would turn TLS verification off.

The module is imported from the project directory on PYTHONPATH, like the hooks: it must stay
free of imports beyond the standard library, as the ProvidersManager loads it in every Airflow
component (an import error here stops Airflow listing any provider).
"""

from __future__ import annotations

from typing import Any

PACKAGE_NAME = "oneroster-airflow"  # pyproject.toml's [project] name: Airflow checks they match
IC_CONN_TYPE = "infinite_campus_oneroster"
LMS_CONN_TYPE = "schoology"
CANVAS_CONN_TYPE = "canvas"

# The form's Extra field holds what has no field of its own: the transport settings.
EXTRA_LABEL = "Extra (JSON): verify, cert, proxies, trust_env only"


def _text(label: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": {"type": ["string", "null"], **schema}}


def _secret(label: str, description: str) -> dict[str, Any]:
    return _text(label, description, format="password")


def _seconds(label: str, description: str) -> dict[str, Any]:
    return {"label": label, "description": description, "schema": {"type": ["number", "null"], "minimum": 1}}


INFINITE_CAMPUS = {
    "connection-type": IC_CONN_TYPE,
    "hook-class-name": "plugins.hooks.oneroster.OneRosterHook",
    "hook-name": "Infinite Campus OneRoster",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {
            "host": "Campus server URL",
            "login": "OneRoster client key",
            "password": "OneRoster client secret",
            "extra": EXTRA_LABEL,
        },
        "placeholders": {
            "host": "https://acme.infinitecampus.org",
            "login": "the client key from Campus (OneRoster connection)",
            "password": "the client secret from Campus",
            "extra": '{"verify": true}',
        },
    },
    "conn-fields": {
        "app_name": _text(
            "App name",
            "IC's OneRoster application name (appName), required: it names the API's URLs and the token "
            "endpoint.",
        ),
        "oneroster_version": _text(
            "OneRoster version",
            '"1.2" (default) or "1.1". Change it only between school years when grades are passed back.',
            enum=["1.2", "1.1"], default="1.2",
        ),
        "token_url": _text(
            "Token URL",
            "Optional; default {host}/campus/oauth2/token?appName={app_name}.",
            format="url",
        ),
        "scope": _text(
            "OAuth scope",
            "Optional; the OAuth scopes to ask the token endpoint for, space-separated, for a OneRoster "
            "server that requires them (e.g. https://purl.imsglobal.org/spec/or/v1p2/scope/roster-core.readonly). "
            "IC needs none.",
        ),
        "read_timeout": _seconds(
            "Read timeout (seconds)",
            "Optional; seconds to wait for an answer before retrying (default 300).",
        ),
        "vendor_key": _secret(
            "Vendor key",
            "For grade passback: the vendor key of IC's gradebook header x-vendor-authorization.",
        ),
        "vendor_secret": _secret(
            "Vendor secret",
            "For grade passback: the vendor secret of IC's gradebook header x-vendor-authorization.",
        ),
    },
}

SCHOOLOGY = {
    "connection-type": LMS_CONN_TYPE,
    "hook-class-name": "plugins.hooks.schoology.SchoologyHook",
    "hook-name": "Schoology",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port"],
        "relabeling": {
            "host": "API base URL",
            "login": "Consumer key",
            "password": "Consumer secret",
            "extra": EXTRA_LABEL,
        },
        "placeholders": {
            "host": "https://api.schoology.com",
            "login": "a system administrator's API consumer key (Integration > API)",
            "password": "the consumer secret: only the OAuth signing key, never sent",
            "extra": '{"verify": true}',
        },
    },
    "conn-fields": {
        "school_id": _text(
            "School ID",
            "Required; the Schoology school whose buildings are provisioned.",
            pattern="^[0-9]+$",
        ),
        "read_timeout": _seconds(
            "Read timeout (seconds)",
            "Optional; seconds to wait for an answer before retrying (default 120).",
        ),
    },
}

CANVAS = {
    "connection-type": CANVAS_CONN_TYPE,
    "hook-class-name": "plugins.hooks.canvas.CanvasHook",
    "hook-name": "Canvas",
    "ui-field-behaviour": {
        "hidden-fields": ["schema", "port", "login"],
        "relabeling": {
            "host": "Canvas URL",
            "password": "Access token",
            "extra": EXTRA_LABEL,
        },
        "placeholders": {
            "host": "https://district.instructure.com",
            "password": "an access token of a root-account admin allowed to import SIS data",
            "extra": '{"verify": true}',
        },
    },
    "conn-fields": {
        "account_id": _text(
            "Root account ID",
            "Required; the Canvas root account SIS imports go to (its id, e.g. 1, or self).",
            pattern="^(self|[0-9]+)$",
        ),
        "poll_seconds": _seconds(
            "Longest poll interval (seconds)",
            "Optional; the longest wait between two reads of a SIS import's status (default 10): the first "
            "read comes a quarter second after the upload, later ones when the import's progress says it "
            "should be done.",
        ),
        "import_timeout_seconds": _seconds(
            "Import timeout (seconds)",
            "Optional; how long a task waits for a SIS import to finish before failing with its id "
            "(default 3600). A retry waits for the same import, it does not upload again.",
        ),
        "read_timeout": _seconds(
            "Read timeout (seconds)",
            "Optional; seconds to wait for an answer before retrying (default 300).",
        ),
    },
}


def get_provider_info() -> dict[str, Any]:
    """What Airflow's ProvidersManager reads from the project's ``apache_airflow_provider`` entry point
    (checked against Airflow's ``provider_info.schema.json``)."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "OneRoster Airflow (Infinite Campus, Schoology)",
        "description": (
            "The connection types of the Infinite Campus OneRoster and Schoology hooks. Their Extra field "
            'takes the transport settings only: "verify" (false, or a CA bundle path; TLS is verified by '
            'default), "cert" (a client certificate), "proxies" and "trust_env"; any extra the hook does '
            "not read fails the task, naming it."
        ),
        "connection-types": [INFINITE_CAMPUS, SCHOOLOGY, CANVAS],
    }
