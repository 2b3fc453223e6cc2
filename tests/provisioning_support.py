"""Normalised extract tables of a synthetic district, as the provisioning steps read them."""

from __future__ import annotations

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from include.oneroster.models import COLLECTIONS, arrow_schema, normalise_page
from include.staging import read_frame


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
