"""Normalised extract tables of a synthetic district, as the provisioning steps read them, and the
nights provisioning tests run on."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from include.oneroster.models import COLLECTIONS, arrow_schema, normalise_page
from include.sandbox.ic_emulator import ICEmulator
from include.staging import read_frame
from tests.support import CLIENT_ID, CLIENT_SECRET, connection_uri_env, lms_connection_env

FIRST_NIGHT = datetime(2026, 11, 2, 6, tzinfo=timezone.utc)


def night(n: int) -> datetime:
    """The ``n``-th night after the first a provisioning test runs."""
    return FIRST_NIGHT + timedelta(days=n)


def extract_frames(district, version: str = "1.2") -> dict[str, pd.DataFrame]:
    """What the extract tasks stage, read back through Parquet like the provisioning tasks do."""
    frames = {}
    for collection in COLLECTIONS:
        rows, rejected = normalise_page(collection, version, district.records(collection, version))
        assert not rejected
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema(collection)), buffer)
        buffer.seek(0)
        frames[collection] = pq.read_table(buffer).to_pandas()
    return frames


def report_of(outcome) -> pd.DataFrame:
    """The sync report a provisioning run staged."""
    return read_frame(outcome.returned["provision.sync_report"]["uri"])


def counted(report: pd.DataFrame, kind: str, outcome: str, reason: str | None = None) -> int:
    rows = report[(report["kind"] == kind) & (report["outcome"] == outcome)]
    if reason is not None:
        rows = rows[rows["reason"] == reason]
    return int(rows["count"].sum())


@contextmanager
def provisioning_runs(district, lms, smtp, monkeypatch, staging_uri: str) -> Iterator:
    """IC serving ``district``, the LMS and the SMTP sink behind the demo's connections; yields a
    runner of one provisioning run of a district's DAG (the same night again re-runs that run)."""
    from include.sandbox.runner import run_dag

    with ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name="demo") as ic:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEMO", json.dumps(smtp.connection("oneroster-tests@localhost")))
        for key, value in {**connection_uri_env("ic_demo", ic, "1.2"), **lms_connection_env("lms_demo", lms)}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AIRFLOW_VAR_ONEROSTER_STAGING_ROOT", staging_uri)

        def run(when: datetime, dag_id: str = "oneroster_demo", **conf):
            return run_dag(dag_id, logical_date=when, run_after=when, run_conf={"halves": "provisioning", **conf})

        yield run
