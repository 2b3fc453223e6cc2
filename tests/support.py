"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "test-client"
CLIENT_SECRET = "test-secret-value"


def connection_uri_env(conn_id: str, emulator, version: str, **extras) -> dict[str, str]:
    """An Airflow connection to the IC emulator, as the environment variable Airflow reads."""
    value = {
        "conn_type": "infinite_campus_oneroster",
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
        "conn_type": "schoology",
        "host": emulator.base_url,
        "login": LMS_KEY,
        "password": LMS_SECRET,
        "extra": {"school_id": emulator.school_id},
    }
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(value)}


def no_given_name(record: dict) -> None:
    record["givenName"] = None


class ServedRecords(Sequence):
    """A collection served as a sequence whose records a subclass makes one at a time (``_record``)."""

    def _record(self, index: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._record(position) for position in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return self._record(index % len(self))


class Spoiled(ServedRecords):
    """A collection with some records served in a shape that cannot be staged: ``spoiled`` names
    the records' indexes (no givenName) or maps each to how it is spoiled (a function that changes
    the record it is given; each access spoils a fresh copy)."""

    def __init__(self, records: Sequence[dict], spoiled: set[int] | Mapping[int, Callable[[dict], None]]):
        self._records = records
        self._spoils = spoiled if isinstance(spoiled, Mapping) else dict.fromkeys(spoiled, no_given_name)

    def __len__(self) -> int:
        return len(self._records)

    def _record(self, index: int) -> dict:
        record = self._records[index]
        spoil = self._spoils.get(index)
        if spoil is not None:
            record = dict(record)
            spoil(record)
        return record
