"""The servers of Airflow's distributed deployment, started for one test on 127.0.0.1: a throwaway
PostgreSQL cluster (``initdb``/``pg_ctl`` in a temporary directory, not the system service) as the
metadata database, and a Redis server as the Celery broker. :func:`celery_settings` is the Airflow
configuration that puts them to use, the same settings a deployment gives (README, Deployment).

    with PostgresCluster() as postgres, RedisServer() as redis:
        with AirflowStack(home, engine=CeleryEngine(postgres, redis, workers=2)) as stack: ...
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from include.sandbox.loopback import LocalServer, free_port


def _postgres_binary(name: str) -> str:
    """``initdb``/``pg_ctl``/``createdb``: on the PATH, or where Debian's ``postgresql`` package puts them."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (Debian: apt-get install postgresql)")
    return found


class PostgresCluster(LocalServer):
    """A PostgreSQL cluster of its own in a temporary directory, listening on 127.0.0.1 only, with a
    database ``airflow`` owned by user ``airflow`` (trust authentication: nothing but this machine can
    reach it). PostgreSQL refuses to run as root: as root, it runs as the ``postgres`` user the Debian
    package creates."""

    def __init__(self) -> None:
        self.port = free_port()
        self._directory: Path | None = None
        self._as: list[str] = []

    @property
    def url(self) -> str:
        """The metadata database as ``[database] sql_alchemy_conn``."""
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"

    def start(self) -> Self:
        self._directory = Path(tempfile.mkdtemp(prefix="oneroster-postgres-"))
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self._directory, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data, log = self._directory / "data", self._directory / "server.log"
        self._run(_postgres_binary("initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8")
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._directory} -c fsync=off "
                   "-c max_connections=200")
        self._run(_postgres_binary("pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60",
                  "start")
        self._run(_postgres_binary("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "airflow")
        return self

    def stop(self) -> None:
        if self._directory is None:
            return
        data = self._directory / "data"
        if (data / "postmaster.pid").exists():
            self._run(_postgres_binary("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self._directory, ignore_errors=True)
        self._directory = None

    def _run(self, *command: str, check: bool = True) -> None:
        done = subprocess.run([*self._as, *command], capture_output=True, text=True, timeout=120,
                              cwd=self._directory, check=False)
        if check and done.returncode != 0:
            log = self._directory / "server.log" if self._directory else None
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stdout}{done.stderr}{tail}")


class RedisServer(LocalServer):
    """``redis-server`` on 127.0.0.1 with nothing saved to disk."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen | None = None
        self._directory: Path | None = None

    @property
    def url(self) -> str:
        """The broker as ``[celery] broker_url``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self._directory = Path(tempfile.mkdtemp(prefix="oneroster-redis-"))
        self._process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self._directory), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=15)
            self._process = None
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


@dataclass(frozen=True)
class CeleryEngine:
    """The CeleryExecutor on ``postgres`` and ``redis`` with ``workers`` Celery workers of
    ``concurrency`` task slots each, as :class:`~include.sandbox.airflow_stack.AirflowStack` runs it."""

    postgres: PostgresCluster
    redis: RedisServer
    workers: int = 2
    concurrency: int = 4

    def settings(self) -> dict[str, str]:
        """The Airflow configuration, as environment variables (the README's Deployment settings)."""
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.postgres.url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.concurrency),
        }
