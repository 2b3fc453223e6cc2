"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret-value"


def connection_uri_env(conn_id: str, emulator, version: str, **extras) -> dict[str, str]:
    """An Airflow connection to the IC emulator, as the environment variable Airflow reads."""
    value = {
        "conn_type": "http",
        "host": emulator.base_url,
        "login": CLIENT_ID,
        "password": CLIENT_SECRET,
        "extra": {"app_name": "demo", "oneroster_version": version, **extras},
    }
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}


LMS_KEY = "test-consumer"
LMS_SECRET = "test-consumer-secret"


def lms_connection_env(conn_id: str, emulator) -> dict[str, str]:
    """An Airflow connection to the Schoology emulator, as the environment variable Airflow reads."""
    value = {
        "conn_type": "http",
        "host": emulator.base_url,
        "login": LMS_KEY,
        "password": LMS_SECRET,
        "extra": {"school_id": emulator.school_id},
    }
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}


class Spoiled(Sequence):
    """A collection with some records served in a shape that cannot be staged (no givenName)."""

    def __init__(self, records: Sequence[dict], spoiled: set[int]):
        self._records, self._spoiled = records, spoiled

    def __len__(self) -> int:
        return len(self._records)

    def _record(self, index: int) -> dict:
        record = self._records[index]
        if index in self._spoiled:
            record = {**record, "givenName": None}
        return record

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._record(position) for position in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._record(index % len(self))
