"""A real Airflow 3.3 (scheduler, dag-processor, triggerer, api-server) on this project, for
end-to-end tests that need what ``dag.test()`` cannot give: the scheduler loop (retries,
``max_active_runs``, backfills) and the triggerer (deadline callbacks).

Each component is its own ``airflow <component>`` process against one Airflow home. By default
the metadata database is SQLite and the executor the LocalExecutor (the executor ``airflow
standalone`` uses; Airflow 3.3 sets no SQLite restriction on it). Given a
:class:`~include.sandbox.distributed.CeleryEngine`, it is PostgreSQL and the CeleryExecutor with
Celery workers, each in a working directory, ``TMPDIR`` and log folder of its own, as on machines
of their own. Everything listens on 127.0.0.1: the api-server on a free port, and no component's
log server is started (the api-server reads the local executor's task logs from the shared
home). Component output goes to ``<home>/components/<name>.log``; :meth:`AirflowStack.tails` shows its end, and every failed
wait carries it.

    with AirflowStack(home, env={"AIRFLOW_CONN_...": ...}) as stack:
        stack.airflow("dags", "unpause", "my_dag")
        stack.airflow("dags", "trigger", "my_dag", "--run-id", "r1")
        stack.wait_for_run("my_dag", "r1")
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Self, TypeVar
from unittest import mock
from urllib.parse import quote

import psutil

from include.sandbox.distributed import CeleryEngine
from include.sandbox.environment import use_project_airflow
from include.sandbox.loopback import free_port

COMPONENTS = {
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
    "api-server": ["api-server", "--workers", "1"],
}
# The api-server logs every request at INFO, which would bury its errors in the log tail.
COMPONENT_ENV = {"api-server": {"AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}}
FINISHED = ("success", "failed")
T = TypeVar("T")


class StackError(RuntimeError):
    """The stack did not start, a component died, or a wait ran out; the message ends with
    the tail of every component's log."""


class AirflowStack:
    """Starts the four components (and an engine's Celery workers) on ``__enter__``, returning once
    the four report healthy; stops them and every task process they started on ``__exit__``, also
    after a failure."""

    def __init__(self, home: Path, *, env: dict[str, str] | None = None,
                 startup_timeout: float = 120, engine: CeleryEngine | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.startup_timeout = startup_timeout
        self.logs = home / "components"
        self.engine = engine
        self.env = self._environment({**(engine.settings() if engine else {}), **(env or {})})
        self.components = dict(COMPONENTS)
        for number in range(1, 1 + (engine.workers if engine else 0)):
            self.components[f"worker-{number}"] = ["celery", "worker", "--skip-serve-logs",
                                                   "--celery-hostname", f"worker-{number}@%h"]
        self._processes: dict[str, subprocess.Popen] = {}

    @property
    def database(self) -> Path:
        """The SQLite metadata database (without an engine), for reads the REST API does not offer."""
        return self.home / "airflow.db"

    @property
    def workers(self) -> list[str]:
        """The Celery workers' component names."""
        return [name for name in self.components if name.startswith("worker-")]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _environment(self, extra: dict[str, str]) -> dict[str, str]:
        """This process's environment pointed at ``home`` and the project, without changing it."""
        with mock.patch.dict(os.environ):
            use_project_airflow(self.home)
            env = dict(os.environ)
        env.update(
            {
                # Four components and the CLI write to one SQLite file: wait for its lock for up
                # to 30 s instead of the driver's 5 s ("database is locked").
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.database}?timeout=30",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "8",  # task processes at once; CI machines have 2 CPUs
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                **extra,
            }
        )
        return env

    # -- lifecycle ------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.airflow("db", "migrate", timeout=180)
        if self.engine is None:
            with closing(sqlite3.connect(self.database)) as db:
                # Write-ahead logging: readers (the api-server, the tests) no longer block writers.
                db.execute("PRAGMA journal_mode=WAL")
        for name, command in self.components.items():
            self._start(name, command)
        self.wait_for(self._healthy, timeout=self.startup_timeout, what="all four components healthy")

    def _start(self, name: str, command: list[str]) -> None:
        env, cwd = {**self.env, **COMPONENT_ENV.get(name, {})}, self.home
        if name in self.workers:  # a machine of its own: nothing on local disk is shared
            cwd = self.home / name
            (cwd / "tmp").mkdir(parents=True, exist_ok=True)
            env.update(TMPDIR=str(cwd / "tmp"), AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(cwd / "logs"))
        with open(self.logs / f"{name}.log", "ab") as log:
            self._processes[name] = subprocess.Popen(
                [sys.executable, "-m", "airflow", *command],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, name: str) -> None:
        """Kill component ``name`` and every process it started (its tasks too) at once, as a machine
        that loses power; waits no longer tolerate its absence as a failure."""
        process = self._processes.pop(name)
        descendants = _descendants(process)
        _signal_group(process, signal.SIGKILL)
        _kill(descendants)
        process.wait()

    def component_running(self, pid: int) -> str | None:
        """The component that started process ``pid`` (a task's, say) or is it, or None. Found
        through the process's ancestors: a task's supervisor gives it a process group of its own."""
        components = {process.pid: name for name, process in self._processes.items()}
        try:
            process = psutil.Process(pid)
            lineage = [process, *process.parents()]
        except psutil.NoSuchProcess:
            return None
        return next((components[ancestor.pid] for ancestor in lineage if ancestor.pid in components), None)

    def stop(self) -> None:
        """SIGTERM every component's process group, SIGKILL what is left of them and of the tasks
        they started after 15 s."""
        descendants = [child for process in self._processes.values() for child in _descendants(process)]
        for process in self._processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self._processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process, signal.SIGKILL)
            process.wait()
        _kill(descendants)
        self._processes.clear()

    def _healthy(self) -> bool:
        try:
            health = self.api("/api/v2/monitor/health")
        except (OSError, StackError):
            return False
        return all(health.get(part, {}).get("status") == "healthy"
                   for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

    # -- talking to it ----------------------------------------------------------------

    def airflow(self, *args: str, timeout: float = 90, attempts: int = 5) -> str:
        """Run ``airflow <args>`` against this stack; its stdout, or StackError with its output.

        SQLite has one writer: a command that meets the busy scheduler's lock ("database is
        locked", rolled back) is run again, a few times.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                done = subprocess.run([sys.executable, "-m", "airflow", *args], check=False, env=self.env,
                                      cwd=self.home, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired as error:
                raise StackError(f"airflow {' '.join(args)} did not finish within {timeout:g}s") from error
            if done.returncode == 0:
                return done.stdout
            if "database is locked" not in done.stderr or attempt == attempts:
                command = " ".join(args)
                raise StackError(f"airflow {command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
            time.sleep(2 * attempt)

    def api(self, path: str) -> Any:
        """GET ``path`` of the public REST API (the simple auth manager lets everyone in as admin)."""
        try:
            with urllib.request.urlopen(self.api_url + path, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise StackError(f"GET {path} answered {error.code}: {error.read()[:500]!r}") from None

    def trigger(self, dag_id: str, run_id: str, logical_date: datetime, *, conf: dict | None = None,
                note: str | None = None) -> dict:
        """Trigger a run through the REST API, as the UI's trigger form does (the CLI has no note)."""
        body = {"dag_run_id": run_id, "logical_date": logical_date.isoformat(), "conf": conf or {}, "note": note}
        request = urllib.request.Request(f"{self.api_url}/api/v2/dags/{quote(dag_id)}/dagRuns",
                                         data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            raise StackError(f"triggering {dag_id} answered {error.code}: {error.read()[:500]!r}") from None

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.api(f"/api/v2/dags/{quote(dag_id)}/dagRuns?limit=100&order_by=run_after")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        """task_id -> the task instance as the REST API shows it."""
        found = self.api(f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def returned(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """What the task returned (its ``return_value`` XCom)."""
        path = (f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}/taskInstances/{quote(task_id)}"
                "/xcomEntries/return_value")
        return self.api(path)["value"]

    # -- waiting -----------------------------------------------------------------------

    def wait_for(self, condition: Callable[[], T], *, timeout: float, what: str, every: float = 1.0) -> T:
        """Poll ``condition`` until it returns something truthy; StackError after ``timeout``
        seconds or as soon as a component has died."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            dead = {name: process.returncode for name, process in self._processes.items()
                    if process.poll() is not None}
            if dead:
                raise StackError(f"waiting for {what}: component(s) exited {dead}\n{self.tails()}")
            last = condition()
            if last:
                return last
            if time.monotonic() >= deadline:
                raise StackError(f"waited {timeout:g}s for {what}; last seen: {last!r}\n{self.tails()}")
            time.sleep(every)

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 90) -> None:
        """Until the dag-processor has serialised every one of ``dag_ids``."""
        def parsed() -> bool:
            known = {dag["dag_id"] for dag in self.api("/api/v2/dags?limit=100")["dags"]}
            return set(dag_ids) <= known
        self.wait_for(parsed, timeout=timeout, what=f"DAGs {dag_ids} parsed")

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float = 120) -> dict:
        """The run once it has finished (success or failed)."""
        def finished() -> dict | None:
            run = self.api(f"/api/v2/dags/{quote(dag_id)}/dagRuns/{quote(run_id)}")
            return run if run["state"] in FINISHED else None
        return self.wait_for(finished, timeout=timeout, what=f"run {run_id} of {dag_id} to finish")

    # -- when something went wrong -------------------------------------------------------

    def tails(self, lines: int = 40) -> str:
        """The last ``lines`` lines of each component's log."""
        parts = []
        for name in self.components:
            path = self.logs / f"{name}.log"
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else ["(no log)"]
            parts.append(f"----- {name} ({path}) -----\n" + "\n".join(text))
        return "\n".join(parts)

    @contextmanager
    def logs_on_failure(self) -> Iterator[None]:
        """Adds the component log tails to any error raised inside (an assertion included)."""
        try:
            yield
        except StackError:
            raise
        except BaseException as error:
            error.add_note(self.tails())
            raise


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def _descendants(process: subprocess.Popen) -> list[psutil.Process]:
    """Every process ``process`` started, and they started: a task's supervisor puts the task in a
    process group of its own, out of reach of a signal to the component's group."""
    try:
        return psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
