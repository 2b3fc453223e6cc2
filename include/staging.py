"""Staged datasets and the manifests that describe them.

Tasks hand data to each other only through the staging root (``file://`` locally,
``s3://``/``gs://`` in a multi-machine deployment) and hand over only a
:class:`Manifest` through XCom: where the data is, how many rows, its checksum; never
the data itself. A dataset's location is a function of (district, run, dataset), so a
retried task overwrites its own output, and a file is written so that a reader sees it
whole or not at all (:class:`AtomicUpload`).
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException
from fsspec.implementations.local import LocalFileSystem
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
    served_count: int | None = Field(default=None, ge=0)  # served by the read kept, staged or quarantined
    server_total: int | None = Field(default=None, ge=0)  # what the server said it had (None: it did not say)
    duplicate_count: int = Field(default=0, ge=0)  # served twice in the read kept; the newest was staged
    reads: int = Field(default=1, ge=1)  # reads made: one that changed while it was paged is read again
    request_count: int | None = Field(default=None, ge=0)
    response_bytes: int | None = Field(default=None, ge=0)
    schema_version: str
    oneroster_version: Literal["1.1", "1.2"]
    district: str
    active_year: int
    run_id: str
    created_at: datetime


class ProvisionManifest(BaseModel):
    """What a provisioning task returns: counts per action and where its tables are staged.

    ``result_uri`` is the table of the kind's objects with their LMS ids that later steps read
    (None for a kind no later step reads: its ids are in the state); ``row_count`` is how many
    objects of the kind exist, or in a dry run would."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    result_uri: str | None
    row_count: int = Field(ge=0)
    content_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    counts: dict[str, int]
    errors_uri: str
    skipped_uri: str
    report_uri: str
    dry_run: bool
    district: str
    active_year: int
    run_id: str
    created_at: datetime


STATE_FOLDER = "state"
KEPT_FOLDERS = {
    STATE_FOLDER: "what outlives a run (the provisioned and posted state, the extract snapshots, the processed "
    "exports)",
}
"""The folders the project keeps beside the run folders under ``<root>/<district>/``: no run may be
staged in one, and the staging retention never removes one."""


def folder_name(value: str) -> str:
    """A district or run id as one portable object-store key segment (run ids carry ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._") or "_"


def district_folder(root: str, district: str) -> ObjectStoragePath:
    """``<root>/<district>/``: the district's run folders and, beside them, the :data:`KEPT_FOLDERS`."""
    if not root:
        raise ValueError(
            "No staging root: set the Airflow Variable 'oneroster_staging_root' "
            "(e.g. file:///opt/airflow/staging or s3://bucket/prefix)."
        )
    return ObjectStoragePath(root) / folder_name(district)


def _run_id_problem(run_id: str) -> str | None:
    """Why ``run_id`` cannot name a run folder of its own, or None."""
    if "/" in run_id or "\\" in run_id:
        return "it contains a path separator"
    if ".." in run_id:
        return "it contains '..'"
    for folder, holds in KEPT_FOLDERS.items():
        if folder_name(run_id).casefold() == folder.casefold():  # case-insensitive file systems too
            return f"its run folder would be {folder!r}, the folder that keeps {holds}"
    return None


def run_folder(root: str, district: str, run_id: str) -> ObjectStoragePath:
    """``<root>/<district>/<run_id>/``, where a run stages its datasets. A run id that would put them
    elsewhere (in a folder the project keeps, or up and out through ``..``) fails the task for good:
    staging there would mix the run's files with the state, and its retention would take the state."""
    problem = _run_id_problem(run_id)
    if problem is not None:
        raise AirflowFailException(
            f"Run id {run_id!r} cannot be staged: {problem}. Trigger the run again under another run id "
            "(Airflow's own, e.g. manual__<date>, is always safe)."
        )
    return district_folder(root, district) / folder_name(run_id)


def staging_path(root: str, district: str, run_id: str, dataset: str) -> ObjectStoragePath:
    """Where run ``run_id`` stages ``dataset`` (see :func:`run_folder`)."""
    return run_folder(root, district, run_id) / f"{dataset}.parquet"


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


class AtomicUpload:
    """Bytes written to ``target`` that a reader sees whole or not at all, also when the writer fails
    or dies half-way.

    On a local (or shared) file system they are written under a hidden temporary name beside the
    target and renamed, which POSIX makes atomic. On an object store a rename is a copy and a delete
    (a reader could see the copy half made, and a crash between the two leaves both), but an upload
    is atomic itself: the object appears only when its one PUT, or its multipart upload's
    completion, succeeds. So there the bytes go straight to the target's key and a failed upload is
    aborted, never completed with what was sent so far (fsspec completes a file it closes, even on
    garbage collection)."""

    def __init__(self, target: ObjectStoragePath | Path):
        self.target = target
        self._by_rename = not isinstance(target, ObjectStoragePath) or isinstance(target.fs, LocalFileSystem)
        self._temporary = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp" if self._by_rename else None

    def open(self):
        """The file to write to (binary)."""
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._temporary.open("wb") if self._temporary else self.target.fs.open(self.target.path, "wb")
        return self._file

    def commit(self) -> None:
        """The bytes written, at the target."""
        self._file.close()
        if self._temporary is not None:
            self._temporary.rename(self.target)

    def abandon(self) -> None:
        """Nothing at the target, nothing left beside it."""
        if self._temporary is not None:
            self._file.close()
            self._temporary.unlink(missing_ok=True)
        else:
            self._file.discard()  # aborts a multipart upload begun
            self._file.closed = True  # so that nothing completes the upload with what was sent


@contextmanager
def atomic_file(target: ObjectStoragePath) -> Iterator[BinaryIO]:
    """A binary file whose bytes (a mark, a CSV copy of a report, a downloaded file) a reader of
    ``target`` sees whole or not at all (:class:`AtomicUpload`): none if the block fails."""
    upload = AtomicUpload(target)
    file = upload.open()
    try:
        yield file
    except BaseException:
        upload.abandon()
        raise
    upload.commit()


class StagedParquetWriter:
    """Streams rows into one Parquet file under the staging root, atomically (:class:`AtomicUpload`).

    Memory is bounded by the rows of one write call (a page) plus one row group.
    """

    def __init__(self, target: ObjectStoragePath, schema: pa.Schema):
        self.target = target
        self.schema = schema
        self.row_count = 0
        self.sha256 = ""
        self._upload = AtomicUpload(target)

    def __enter__(self) -> StagedParquetWriter:
        self._hashing = _HashingFile(self._upload.open())
        self._writer: pq.ParquetWriter | None = None
        return self

    def write_rows(self, rows: list[dict]) -> None:
        if rows:
            self.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def write_table(self, table: pa.Table) -> None:
        if table.num_rows:
            table = table.cast(self.schema)
            if self._writer is None:
                self._writer = self._open(_distinct_columns(table.slice(0, ROW_GROUP_SIZE)))
            self._writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
            self.row_count += table.num_rows

    def _open(self, distinct: frozenset[str] = frozenset()) -> pq.ParquetWriter:
        """The Parquet writer, ``distinct`` columns (ids, keys, fingerprints, timestamps: a value per
        row) neither dictionary-encoded nor given min/max statistics: a dictionary of them outgrows its
        page in every row group and is thrown away, and both took half the time of writing a state
        of eight million enrollments."""
        encoded = [path for path in _leaf_paths(self.schema) if path not in distinct]
        return pq.ParquetWriter(self._hashing, self.schema, compression="zstd",
                                use_dictionary=encoded, write_statistics=encoded)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._writer is None and exc_type is None:
                self._writer = self._open()
            if self._writer is not None:
                self._writer.close()
        except BaseException:
            self._upload.abandon()
            raise
        if exc_type is not None:
            self._upload.abandon()
            return
        self._upload.commit()
        self.sha256 = self._hashing.hexdigest()


@dataclass(frozen=True)
class StagedCopy:
    target: ObjectStoragePath
    row_count: int
    sha256: str


def copy_atomically(source: ObjectStoragePath, target: ObjectStoragePath, digest=None) -> None:
    """``source``'s bytes at ``target``, which a reader sees whole or not at all; ``digest`` (a
    hashlib object), if given, is fed the bytes on the way."""
    with source.open("rb") as reading, atomic_file(target) as writing:
        while chunk := reading.read(8 << 20):
            if digest is not None:
                digest.update(chunk)
            writing.write(chunk)


def stage_copy(source: ObjectStoragePath, target: ObjectStoragePath) -> StagedCopy:
    """A staged Parquet file staged again at ``target``, byte for byte and atomically, with its
    row count and checksum: what writing its rows again would give, without decoding them."""
    digest = hashlib.sha256()
    copy_atomically(source, target, digest)
    with target.open("rb") as staged:
        rows = pq.ParquetFile(staged).metadata.num_rows
    return StagedCopy(target, rows, digest.hexdigest())


def _distinct_columns(table: pa.Table) -> frozenset[str]:
    """The plain columns (numbers, times, text) whose values in ``table`` (a row group: the first)
    are mostly different."""
    return frozenset(
        field.name for field, column in zip(table.schema, table.columns, strict=True)
        if _plain(field.type) and pc.count_distinct(column).as_py() * 2 > table.num_rows
    )


def _plain(arrow_type: pa.DataType) -> bool:
    return (pa.types.is_primitive(arrow_type) or pa.types.is_string(arrow_type)
            or pa.types.is_large_string(arrow_type) or pa.types.is_binary(arrow_type)
            or pa.types.is_large_binary(arrow_type))


@functools.lru_cache(maxsize=64)
def _leaf_paths(schema: pa.Schema) -> tuple[str, ...]:
    """The schema's columns as Parquet names them (``roles.list.element.role``), as the writer's
    per-column options take them; worked out once per schema (a night stages thousands of
    journal parts of one schema)."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    stored = pq.read_metadata(pa.BufferReader(sink.getvalue())).schema
    return tuple(stored.column(index).path for index in range(len(stored)))


def district_state_path(root: str, district: str, dataset: str) -> ObjectStoragePath:
    """What must outlive a run, under ``<root>/<district>/state/``."""
    return district_folder(root, district) / STATE_FOLDER / f"{dataset}.parquet"


def state_path(root: str, district: str, active_year: int, dataset: str) -> ObjectStoragePath:
    """What must outlive a run (what was provisioned, what was posted), one set per school
    year so a backfill of a past year and the nightly run never share state."""
    return district_state_path(root, district, f"{active_year}/{dataset}")


@dataclass(frozen=True)
class FrameParts:
    """A frame staged without ever being whole: the rows ``order`` (positions into ``parts`` taken
    one after the other) of ``columns``. Eight million enrollments merged from the state and the
    night's changes would otherwise be copied whole two or three times, and their categoricals
    decoded to text all at once.

    Each part's rows should come in ascending positions (as a merge of parts in key order
    takes them): a row group then takes one short run of rows from each part."""

    parts: tuple[pd.DataFrame, ...]
    order: np.ndarray
    columns: tuple[str, ...]

    def whole(self) -> pd.DataFrame:
        """The frame made whole: only for tables a few rows long (a district's grading periods)."""
        rows = pd.concat([part[list(self.columns)] for part in self.parts], ignore_index=True)
        return rows.iloc[self.order].reset_index(drop=True)


def stage_frame(target: ObjectStoragePath, frame: pd.DataFrame | FrameParts) -> StagedParquetWriter:
    """Write a DataFrame atomically; the writer tells the row count and checksum. A
    :class:`FrameParts` is assembled a row group at a time, its categorical columns staged as
    plain text (Parquet would otherwise store a categorical's whole dictionary, a million user
    keys, again in every row group) while the one before is written (Parquet encodes and
    compresses without holding Python's lock: on two cores both go at once)."""
    if not isinstance(frame, FrameParts):
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with StagedParquetWriter(target, table.schema) as writer:
            writer.write_table(table)
        return writer
    schema, row_groups = _assembled(frame)
    with StagedParquetWriter(target, schema) as writer, ThreadPoolExecutor(1) as behind:
        written = None
        for table in row_groups:
            if written is not None:
                written.result()
            written = behind.submit(writer.write_table, table)
        if written is not None:
            written.result()
    return writer


def _assembled(frame: FrameParts) -> tuple[pa.Schema, Iterator[pa.Table]]:
    """The schema a whole frame of the parts' rows would be staged with (categoricals as text), and
    its row groups."""
    starts = np.cumsum([0, *(len(part) for part in frame.parts)])
    used = [index for index in range(len(frame.parts))
            if ((frame.order >= starts[index]) & (frame.order < starts[index + 1])).any()]
    shown = used or range(len(frame.parts))  # as ``pd.concat`` of the parts with rows
    sources = {index: _sources(frame.parts[index], frame.columns) for index in shown}
    types = pa.unify_schemas([pa.schema([(name, _arrow_type(source[name])) for name in frame.columns])
                              for source in sources.values()], promote_options="permissive")
    template = _decoded_dtypes(pd.concat([frame.parts[index][list(frame.columns)].iloc[:0] for index in shown]))
    schema = pa.schema(list(types), metadata=pa.Schema.from_pandas(template, preserve_index=False).metadata)
    return schema, _row_groups(frame.order, starts, sources, schema)


def _sources(part: pd.DataFrame, columns: tuple[str, ...]) -> dict[str, pa.ChunkedArray | tuple]:
    """A part's columns in arrow, converted once as a whole frame's are; a categorical as its codes
    and categories, decoded a row group at a time."""
    categorical = [name for name in columns if isinstance(part[name].dtype, pd.CategoricalDtype)]
    others = [name for name in columns if name not in categorical]
    table = pa.Table.from_pandas(part[others], preserve_index=False)
    sources: dict[str, pa.ChunkedArray | tuple] = {name: table.column(name) for name in others}
    for name in categorical:
        categories = pa.array(pd.Series(part[name].cat.categories), from_pandas=True)
        if isinstance(categories, pa.ChunkedArray):
            categories = categories.combine_chunks()
        sources[name] = (part[name].cat.codes.to_numpy(), categories)
    return sources


def _arrow_type(source: pa.ChunkedArray | tuple) -> pa.DataType:
    return pa.large_string() if isinstance(source, tuple) else source.type


def _decoded_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the dtypes its columns are read back as (for the schema's pandas metadata):
    categoricals as the text they are staged as, arrow lists as lists (pandas cannot read the
    name of an arrow list type back)."""
    decoded = {name: "str" if isinstance(dtype, pd.CategoricalDtype) else object
               for name, dtype in frame.dtypes.items()
               if isinstance(dtype, pd.CategoricalDtype)
               or (isinstance(dtype, pd.ArrowDtype) and pa.types.is_nested(dtype.pyarrow_dtype))}
    return frame.astype(decoded) if decoded else frame


def _row_groups(
    order: np.ndarray, starts: np.ndarray, sources: dict[int, dict], schema: pa.Schema
) -> Iterator[pa.Table]:
    """The rows ``order`` a row group at a time: each part's share taken, then put in order."""
    for begin in range(0, len(order), ROW_GROUP_SIZE):
        rows = order[begin:begin + ROW_GROUP_SIZE]
        part = np.searchsorted(starts, rows, side="right") - 1
        present = np.unique(part)
        pieces = [_piece(sources[index], rows[part == index] - starts[index], schema) for index in present]
        table = pa.concat_tables(pieces)
        if len(present) > 1:  # back from part after part to the rows' order
            table = table.take(np.argsort(np.argsort(part, kind="stable")))
        yield table


def _piece(source: dict, at: np.ndarray, schema: pa.Schema) -> pa.Table:
    """A part's rows ``at`` in ``schema``, taken from the run of rows they span (arrow takes from a
    chunked column by first joining its chunks: here only the run's)."""
    first, stop = int(at.min()), int(at.max()) + 1
    local = pa.array(at - first)
    columns = []
    for field in schema:
        column = source[field.name]
        if isinstance(column, tuple):
            codes, categories = column
            picked = codes[at]
            columns.append(categories.take(pa.array(picked, mask=picked < 0)).cast(field.type))
        else:
            columns.append(column.slice(first, stop - first).take(local).cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _arrow_lists(arrow_type: pa.DataType) -> pd.ArrowDtype | None:
    is_list = pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
    return pd.ArrowDtype(arrow_type) if is_list else None


def read_frame(
    uri: str | ObjectStoragePath,
    columns: list[str] | None = None,
    *,
    arrow_lists: bool = False,
    categories: list[str] | None = None,
    arrow: bool = False,
) -> pd.DataFrame:
    """A staged table as a DataFrame (text columns are arrow-backed). For tables of millions
    of rows: ``arrow_lists`` keeps list columns in arrow (a million users' roles are otherwise
    a million NumPy arrays of dicts) and ``categories`` reads those columns as categoricals
    (eight million enrollments name a few hundred thousand classes). ``arrow`` hands every
    column over as Parquet decoding left it (``pd.ArrowDtype``; the ``categories`` columns
    dictionary-encoded per row group): no conversion, which for a categorical of a million
    distinct ids costs several times the column."""
    mapper = pd.ArrowDtype if arrow else (_arrow_lists if arrow_lists else None)
    with ObjectStoragePath(uri).open("rb") as handle:
        parquet = pq.ParquetFile(handle, read_dictionary=categories)
        names = parquet.schema_arrow.names if columns is None else columns
        small = parquet.metadata.num_row_groups <= 1 and not categories  # its buffers do not matter
        if not names or _index_columns(parquet.schema_arrow) or small:  # (or a frame staged with its index)
            return parquet.read(columns=columns).to_pandas(types_mapper=mapper)
        index = parquet.read(columns=[]).to_pandas().index
        read = {name: _read_column(parquet, name, mapper) for name in _largest_first(parquet, names)}
        return pd.DataFrame({name: read[name] for name in names}, index=index, copy=False)


def _index_columns(schema: pa.Schema) -> list[str]:
    return [column for column in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(column, str)]


def _largest_first(parquet: pq.ParquetFile, names: list[str]) -> list[str]:
    """``names`` by their size in the file, largest first: decoding a column takes a few times
    its size for a moment, best spent while little of the frame is held yet."""
    sizes = dict.fromkeys(names, 0)
    metadata = parquet.metadata
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            top = chunk.path_in_schema.split(".", 1)[0]
            if top in sizes:
                sizes[top] += chunk.total_uncompressed_size
    return sorted(names, key=lambda name: -sizes[name])


def _read_column(parquet: pq.ParquetFile, name: str, mapper) -> pd.api.extensions.ExtensionArray:
    """One column, converted and its decoding buffers handed back before the next is read: a
    whole table read at once holds every column's buffers at the same time (for a state of
    eight million enrollments, twice the frame)."""
    table = parquet.read(columns=[name])
    if table.num_rows and mapper is not pd.ArrowDtype and pa.types.is_dictionary(table.schema.field(name).type):
        values = _dictionary_categorical(table.column(name))
    else:
        values = table.to_pandas(types_mapper=mapper)[name].array
    del table
    pa.default_memory_pool().release_unused()
    return values


def _dictionary_categorical(column: pa.ChunkedArray) -> pd.Categorical:
    """A column read dictionary-encoded (a dictionary per row group) as a categorical, its
    categories in order of appearance as arrow's own conversion has them, but without pandas
    checking that they are distinct (arrow made them so): the check keeps a Python object per
    category for as long as the column lives (a hundred MB for a million users)."""
    dictionaries = pa.chunked_array([chunk.dictionary for chunk in column.chunks], column.type.value_type)
    categories = pc.unique(dictionaries)
    entries = pc.index_in(dictionaries, value_set=categories).to_numpy(zero_copy_only=False)
    codes = np.empty(len(column), dtype=np.int32)
    row = entry = 0
    for chunk in column.chunks:
        local = np.append(entries[entry:entry + len(chunk.dictionary)], -1)  # last: a missing value
        codes[row:row + len(chunk)] = local[pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False)]
        row, entry = row + len(chunk), entry + len(chunk.dictionary)
    index = pd.Index(pa.chunked_array([categories]).to_pandas())
    dtype = pd.CategoricalDtype._from_fastpath(index, ordered=column.type.ordered)
    return pd.Categorical.from_codes(codes, dtype=dtype, validate=False)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
