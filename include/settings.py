"""Load ``airflow_settings.yaml`` (the Astro CLI format) into a plain Airflow.

The Astro CLI reads this file itself; a plain Airflow does not, so this module turns
it into the files Airflow's own ``connections import`` / ``pools import`` / ``variables
import`` commands take and runs them against the Airflow at ``$AIRFLOW_HOME``:

    python -m include.settings airflow_settings.yaml
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConnectionEntry(_Entry):
    conn_id: str
    conn_type: str
    conn_host: str | None = None
    conn_schema: str | None = None
    conn_login: str | None = None
    conn_password: str | None = None
    conn_port: int | None = None
    conn_extra: dict[str, Any] | str | None = None

    def as_airflow(self) -> dict[str, Any]:
        extra = self.conn_extra
        return {
            "conn_type": self.conn_type,
            "host": self.conn_host,
            "schema": self.conn_schema,
            "login": self.conn_login,
            "password": self.conn_password,
            "port": self.conn_port,
            "extra": json.dumps(extra) if isinstance(extra, dict) else extra,
        }


class PoolEntry(_Entry):
    pool_name: str
    pool_slot: int = Field(ge=0)
    pool_description: str = ""


class VariableEntry(_Entry):
    variable_name: str
    variable_value: str


class AirflowSection(_Entry):
    connections: list[ConnectionEntry] = Field(default_factory=list)
    pools: list[PoolEntry] = Field(default_factory=list)
    variables: list[VariableEntry] = Field(default_factory=list)


class AirflowSettings(_Entry):
    airflow: AirflowSection


def read_settings(path: Path) -> AirflowSettings:
    return AirflowSettings.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def import_settings(settings: AirflowSettings) -> None:
    """Upsert every connection, pool and variable through Airflow's own CLI."""
    section = settings.airflow
    with tempfile.TemporaryDirectory(prefix="airflow-settings-") as scratch:
        directory = Path(scratch)
        commands = []
        if section.connections:
            path = directory / "connections.json"
            path.write_text(json.dumps({entry.conn_id: entry.as_airflow() for entry in section.connections}))
            commands.append(["connections", "import", "--overwrite", str(path)])
        if section.pools:
            path = directory / "pools.json"
            path.write_text(
                json.dumps(
                    {
                        entry.pool_name: {"slots": entry.pool_slot, "description": entry.pool_description}
                        for entry in section.pools
                    }
                )
            )
            commands.append(["pools", "import", str(path)])
        if section.variables:
            path = directory / "variables.json"
            path.write_text(json.dumps({entry.variable_name: entry.variable_value for entry in section.variables}))
            commands.append(["variables", "import", "--action-on-existing-key", "overwrite", str(path)])
        for command in commands:
            subprocess.run([sys.executable, "-m", "airflow", *command], check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m include.settings airflow_settings.yaml", file=sys.stderr)
        return 2
    settings = read_settings(Path(argv[0]))
    import_settings(settings)
    section = settings.airflow
    print(
        f"Loaded {len(section.connections)} connections, {len(section.pools)} pools and "
        f"{len(section.variables)} variables from {argv[0]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
