"""Staged datasets and the manifests that describe them.

Tasks hand data to each other only through the staging root (``file://`` locally,
``s3://``/``gs://`` in a multi-machine deployment) and hand over only a
:class:`Manifest` through XCom: where the data is, how many rows, its checksum; never
the data itself. A dataset's location is a function of (district, run, dataset), and
files are written under a temporary name and renamed, so a retried task overwrites
its own output and a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import datetime, timezone
from types import TracebackType
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath
from pydantic import BaseModel, ConfigDict, Field

ROW_GROUP_SIZE = 50_000


class Manifest(BaseModel):
    """What a task returns through XCom: a description of staged data, never the data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    uri: str
    row_count: int = Field(ge=0)
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    quarantined_count: int = Field(default=0, ge=0)
    quarantine_uri: str | None = None
    extract_mode: Literal["full", "delta"] | None = None
    fetched_count: int | None = Field(default=None, ge=0)
    request_count: int | None = Field(default=None, ge=0)
    response_bytes: int | None = Field(default=None, ge=0)
    schema_version: str
    oneroster_version: Literal["1.1", "1.2"]
    district: str
    active_year: int
    run_id: str
    created_at: datetime


class ProvisionManifest(BaseModel):
    """What a provisioning task returns: counts per action and where its tables are staged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    result_uri: str
    row_count: int = Field(ge=0)
    content_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    counts: dict[str, int]
    errors_uri: str
    skipped_uri: str
    report_uri: str
    dry_run: bool
    district: str
    active_year: int
    run_id: str
    created_at: datetime


def _safe_segment(value: str) -> str:
    """Run ids carry ':' and '+'; keep object-store keys portable."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._") or "_"


def staging_path(root: str, district: str, run_id: str, dataset: str) -> ObjectStoragePath:
    if not root:
        raise ValueError(
            "No staging root: set the Airflow Variable 'oneroster_staging_root' "
            "(e.g. file:///opt/airflow/staging or s3://bucket/prefix)."
        )
    return ObjectStoragePath(root) / _safe_segment(district) / _safe_segment(run_id) / f"{dataset}.parquet"


class _HashingFile:
    """A write-only file wrapper that hashes what passes through, so the checksum
    costs no second read of a large file."""

    def __init__(self, raw):
        self._raw = raw
        self._digest = hashlib.sha256()
        self._position = 0
        self.closed = False

    def write(self, data) -> int:
        view = memoryview(data)
        self._digest.update(view)
        self._raw.write(view)
        self._position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        self._raw.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class StagedParquetWriter:
    """Streams rows into one Parquet file under the staging root, atomically.

    Memory is bounded by the rows of one write call (a page) plus one row group.
    """

    def __init__(self, target: ObjectStoragePath, schema: pa.Schema):
        self.target = target
        self.schema = schema
        self.row_count = 0
        self.sha256 = ""
        self._temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"

    def __enter__(self) -> StagedParquetWriter:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._raw = self._temporary.open("wb")
        self._hashing = _HashingFile(self._raw)
        self._writer = pq.ParquetWriter(self._hashing, self.schema, compression="zstd")
        return self

    def write_rows(self, rows: list[dict]) -> None:
        if rows:
            self.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def write_table(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.cast(self.schema), row_group_size=ROW_GROUP_SIZE)
            self.row_count += table.num_rows

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._writer.close()
        finally:
            self._raw.close()
        if exc_type is not None:
            self._temporary.unlink(missing_ok=True)
            return
        self.sha256 = self._hashing.hexdigest()
        self._temporary.rename(self.target)


def state_path(root: str, district: str, active_year: int, dataset: str) -> ObjectStoragePath:
    """What must outlive a run (what was provisioned, what was posted), one set per school
    year so a backfill of a past year and the nightly run never share state."""
    return staging_path(root, district, "state", f"{active_year}/{dataset}")


def stage_frame(target: ObjectStoragePath, frame: pd.DataFrame) -> StagedParquetWriter:
    """Write a DataFrame atomically; the writer tells the row count and checksum."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    with StagedParquetWriter(target, table.schema) as writer:
        writer.write_table(table)
    return writer


def _arrow_lists(arrow_type: pa.DataType) -> pd.ArrowDtype | None:
    is_list = pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
    return pd.ArrowDtype(arrow_type) if is_list else None


def read_frame(
    uri: str | ObjectStoragePath,
    columns: list[str] | None = None,
    *,
    arrow_lists: bool = False,
    categories: list[str] | None = None,
) -> pd.DataFrame:
    """A staged table as a DataFrame (text columns are arrow-backed). For tables of millions
    of rows: ``arrow_lists`` keeps list columns in arrow (a million users' roles are otherwise
    a million NumPy arrays of dicts) and ``categories`` reads those columns as categoricals
    (eight million enrollments name a few hundred thousand classes)."""
    with ObjectStoragePath(uri).open("rb") as handle:
        table = pq.read_table(handle, columns=columns, read_dictionary=categories)
    return table.to_pandas(types_mapper=_arrow_lists if arrow_lists else None)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
