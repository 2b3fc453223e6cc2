"""What Airflow's plugin manager loads from plugins/: the listener plugin and nothing else.

The plugin manager imports every .py file of the plugins folder that plugins/.airflowignore does
not ignore, as a top-level module named by the file's stem, in every Airflow component. The
hooks, operators, sensors and notifications there are not plugins (the DAGs import them as
``plugins.<...>``); loaded by the plugin manager they would be imported a second time, as ``lms``,
``export``, ``grades``..., bringing pandas, pyarrow and paramiko into the scheduler and api-server.

Each load runs in a fresh interpreter set up as the project sets up Airflow
(``use_project_airflow``), since Airflow reads its configuration and loads plugins once a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

PLUGINS = ROOT / "plugins"
LISTENER_MODULE = "dry_run_note"  # the plugin manager names a module by its file's stem

# What the project's non-plugin files would bring into an Airflow component (their stems, and the
# heavy packages they import).
NEVER_LOADED = ("lms", "export", "grades", "schoology", "oneroster", "api_hook", "retrying", "extract",
                "provision", "alerts", "__init__", "plugins", "pandas", "pyarrow", "paramiko")

LOAD = """
import json, sys
from pathlib import Path

from include.sandbox.environment import use_project_airflow

use_project_airflow(Path(sys.argv[1]))
import os
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = sys.argv[2]

from airflow import plugins_manager
from airflow.configuration import conf

before = set(sys.modules)
plugins_manager.ensure_plugins_loaded()
loaded = set(sys.modules) - before
import_errors = plugins_manager.get_import_errors()
# The project's provider entry point (plugins/hooks/provider_info.py, the connection types' forms)
# is imported by Airflow's ProvidersManager, with its (empty) parent packages: not by the plugin manager.
provider = {"plugins", "plugins.hooks", "plugins.hooks.provider_info"}
present = sorted(name for name in json.loads(sys.argv[3]) if name in sys.modules and name not in provider)
project_modules = sorted(name for name in sys.modules if name.split(".")[0] == "plugins")

from airflow.listeners.listener import get_listener_manager

manager = get_listener_manager()
listener = sys.modules.get("dry_run_note")
note = None
if listener is not None:
    class Dag:
        tags = ["oneroster"]
        params = {"dry_run": False}

    class Run:
        dag = Dag()
        conf = {"dry_run": True}
        note = "typed in the trigger form"

    run = Run()
    manager.hook.on_dag_run_running(dag_run=run, msg="")
    note = run.note
print(json.dumps({
    "syntax": conf.get("core", "dag_ignore_file_syntax"),
    "plugins": [
        {"name": info["name"], "source": str(info["source"]), "listeners": info["listeners"]}
        for info in plugins_manager.get_plugin_info(attrs_to_dump=["source", "listeners"])
    ],
    "import_errors": import_errors,
    "loaded": sorted({name.split(".")[0] for name in loaded}),
    "present": present,
    "project_modules": project_modules,
    "listener_registered": listener is not None and manager.pm.is_registered(listener),
    "note": note,
    "dry_run_note": getattr(listener, "DRY_RUN_NOTE", None),
}))
"""


def load_plugins(home: Path, plugins_folder: Path) -> dict:
    """Airflow's plugin loading from ``plugins_folder``, in a fresh interpreter with the project's
    Airflow settings (and no ignore-file syntax but Airflow's default)."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("AIRFLOW__CORE__DAG_IGNORE_FILE_SYNTAX", "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(home), str(plugins_folder), json.dumps(NEVER_LOADED)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> dict:
    """A plugin load from an empty folder: what Airflow's own loading imports."""
    empty = tmp_path_factory.mktemp("no-plugins")
    return load_plugins(tmp_path_factory.mktemp("airflow-home"), empty)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    return load_plugins(tmp_path_factory.mktemp("airflow-home"), PLUGINS)


def test_a_bare_plugin_load_imports_none_of_what_is_watched(bare):
    assert bare["plugins"] == [] and bare["import_errors"] == {}
    assert bare["present"] == [], "Airflow itself imports these: watching them proves nothing"
    # the project's provider info alone, read through its entry point (pyproject.toml)
    assert bare["project_modules"] == ["plugins", "plugins.hooks", "plugins.hooks.provider_info"]


def test_the_plugin_manager_loads_only_the_listener_plugin(project, bare):
    assert project["syntax"] == "glob", "plugins/.airflowignore is written in glob syntax, Airflow's default"
    assert project["import_errors"] == {}
    assert project["plugins"] == [
        {"name": "oneroster_listeners", "source": "$PLUGINS_FOLDER/listeners/dry_run_note.py",
         "listeners": [LISTENER_MODULE]},
    ]
    assert project["present"] == [], "imported by the plugin manager although no plugin"
    assert project["project_modules"] == bare["project_modules"], "project modules beyond the provider info"
    assert len(list(PLUGINS.rglob("*.py"))) > 10, "the folder's other modules are there, only ignored"
    assert set(project["loaded"]) - set(bare["loaded"]) == {LISTENER_MODULE}


def test_the_listener_still_registers_and_notes_a_dry_run(project):
    assert project["listener_registered"], "the listener manager does not have the dry-run listener"
    assert project["note"] == f"{project['dry_run_note']}\n\ntyped in the trigger form"
