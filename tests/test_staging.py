"""Staged Parquet: what is written reads back whole, and each column is encoded for what it holds; a
run stages only in a folder of its own; on an object store (a real S3 API server on 127.0.0.1) a
staged file is one upload that a reader sees whole or not at all, also when writing it fails."""

from __future__ import annotations

import gc
import os
from datetime import datetime, timedelta, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException

from include.journal import Journal
from include.staging import (
    StagedParquetWriter,
    atomic_file,
    copy_atomically,
    district_state_path,
    read_frame,
    stage_frame,
    staging_path,
    state_path,
)

ROOT = "file:///srv/staging"


def test_ids_are_stored_plain_and_repeated_values_as_a_dictionary(tmp_path):
    """A dictionary of ids outgrows its page in every row group and is thrown away (half the time of
    writing a state of millions of rows): ids and timestamps go plain, repeated values keep theirs."""
    rows = 3_000
    start = datetime(2026, 9, 1, tzinfo=timezone.utc)
    table = pa.table({
        "key": [f"600000:s{row:06d}" for row in range(rows)],
        "school": [f"10{row % 3}" for row in range(rows)],
        "changed": [start + timedelta(seconds=row) for row in range(rows)],
        "roles": [[{"role": "student", "org": f"10{row % 3}"}] for row in range(rows)],
    })
    target = ObjectStoragePath(f"file://{tmp_path}/frame.parquet")
    with StagedParquetWriter(target, table.schema) as writer:
        writer.write_table(table.slice(0, 1_000))
        writer.write_table(table.slice(1_000))

    stored = pq.ParquetFile(tmp_path / "frame.parquet")
    assert stored.read().equals(table) and writer.row_count == rows
    columns = {stored.metadata.row_group(0).column(index).path_in_schema: stored.metadata.row_group(0).column(index)
               for index in range(stored.metadata.num_columns)}
    dictionary = {path for path, column in columns.items() if "RLE_DICTIONARY" in column.encodings}
    assert dictionary == {"school", "roles.list.element.role", "roles.list.element.org"}
    assert not columns["key"].is_stats_set and columns["school"].is_stats_set


def test_a_writer_given_no_rows_stages_an_empty_table_of_its_schema(tmp_path):
    schema = pa.schema([("key", pa.string()), ("ok", pa.bool_())])
    target = ObjectStoragePath(f"file://{tmp_path}/empty.parquet")
    with StagedParquetWriter(target, schema) as writer:
        writer.write_table(schema.empty_table())
    assert pq.read_table(tmp_path / "empty.parquet").equals(schema.empty_table()) and writer.row_count == 0
    assert len(writer.sha256) == 64


@pytest.mark.parametrize(("run_id", "folder"), [
    ("manual__2026-11-02T06:00:00+00:00", "manual__2026-11-02T06_00_00_00_00"),
    ("scheduled__2026-11-02T06:00:00.123456+00:00", "scheduled__2026-11-02T06_00_00.123456_00_00"),
    ("statement", "statement"),
    ("e2e_state", "e2e_state"),
])
def test_a_run_stages_in_a_folder_of_its_own(run_id, folder):
    assert str(staging_path(ROOT, "demo", run_id, "users")) == f"{ROOT}/demo/{folder}/users.parquet"


def test_the_state_is_staged_beside_the_run_folders():
    assert str(state_path(ROOT, "demo", 2027, "provisioned/user")) == (
        f"{ROOT}/demo/state/2027/provisioned/user.parquet")
    # the processed exports: one list per district, whatever the school year
    assert str(district_state_path(ROOT, "demo", "grades/last_export")) == (
        f"{ROOT}/demo/state/grades/last_export.parquet")


@pytest.mark.parametrize(("run_id", "why"), [
    ("state", "its run folder would be 'state'"),
    ("State", "its run folder would be 'state'"),  # the same folder on a case-insensitive disk
    (".state.", "its run folder would be 'state'"),
    ("_state_", "its run folder would be 'state'"),
    ("state+", "its run folder would be 'state'"),
    ("state/", "it contains a path separator"),
    ("runs\\x", "it contains a path separator"),
    ("../state", "it contains a path separator"),
    ("..", "it contains '..'"),
    ("night..2", "it contains '..'"),
])
def test_a_run_id_that_would_stage_outside_a_folder_of_its_own_is_refused(run_id, why):
    for dataset in ("users", "grades/export_deadline", "provision/journal/user.create/000000"):
        with pytest.raises(AirflowFailException) as raised:
            staging_path(ROOT, "demo", run_id, dataset)
        assert str(raised.value).startswith(f"Run id {run_id!r} cannot be staged: {why}"), str(raised.value)


def test_on_an_object_store_a_staged_file_is_one_upload_not_a_copy_and_a_delete(object_store):
    """A rename on S3 is a copy and a delete: a reader could meet the copy half made, and a crash
    between the two would leave a temporary object behind."""
    frame = pd.DataFrame({"key": ["a", "b", "c"], "grade": ["A", "B+", "C"]})
    target = staging_path(object_store.staging_root(), "demo", "manual__night", "users")
    staged = stage_frame(target, frame)
    copied = target.parent / "users_copy.parquet"
    copy_atomically(target, copied)

    assert object_store.keys() == ["staging/demo/manual__night/users.parquet",
                                   "staging/demo/manual__night/users_copy.parquet"]
    assert "DELETE" not in object_store.requests and "POST" not in object_store.requests, object_store.requests
    assert staged.row_count == 3 and read_frame(str(target)).equals(read_frame(str(copied)))
    assert read_frame(str(target))["grade"].tolist() == ["A", "B+", "C"]


def test_a_write_that_fails_half_way_leaves_nothing_on_the_object_store(object_store):
    """More than a block (fsspec's 50 MiB) written: a multipart upload has begun; the task fails before
    the file is whole, and neither the failure nor the file object's collection completes it."""
    schema = pa.schema([("blob", pa.binary())])
    target = staging_path(object_store.staging_root(), "demo", "manual__night", "big")
    with pytest.raises(RuntimeError, match="the task died"):
        with StagedParquetWriter(target, schema) as writer:
            for _ in range(7):
                writer.write_table(pa.table({"blob": [os.urandom(1 << 20) for _ in range(10)]}, schema=schema))
            assert object_store.uploads_in_progress() == [target.path.split("/", 1)[1]]
            raise RuntimeError("the task died")
    del writer
    gc.collect()
    assert object_store.keys() == [] and object_store.uploads_in_progress() == []


def test_an_object_store_refusing_for_a_moment_is_retried_and_then_fails_the_write_clearly(object_store):
    """503 SlowDown for a few requests: the S3 client's retries carry the write. Refusing for good:
    the write raises (the task fails and Airflow retries it) and no object is left to be read."""
    frame = pd.DataFrame({"key": ["a", "b"]})
    root = object_store.staging_root()
    object_store.unavailable(requests=2)
    stage_frame(staging_path(root, "demo", "manual__night", "users"), frame)
    assert object_store.refused == 2 and object_store.keys() == ["staging/demo/manual__night/users.parquet"]

    object_store.unavailable(seconds=600)
    with pytest.raises(OSError):
        stage_frame(staging_path(root, "demo", "manual__night", "classes"), frame)
    object_store.unavailable()
    assert object_store.keys() == ["staging/demo/manual__night/users.parquet"]


def test_two_overlapping_tries_never_overwrite_each_others_journal_parts(object_store):
    """A try on a worker the scheduler gave up on still runs beside the retry: both journal what IC or
    the LMS took, and every answer stays in the journal."""
    directory = staging_path(object_store.staging_root(), "demo", "manual__night", "journal").parent / "journal"
    empty = pd.DataFrame({"key": pd.Series(dtype="str")})
    first, second = Journal(directory, empty), Journal(directory, empty)
    first.append(pd.DataFrame({"key": ["taken by the first try"]}))
    second.append(pd.DataFrame({"key": ["taken by the second try"]}))
    assert sorted(Journal(directory, empty).read()["key"]) == ["taken by the first try", "taken by the second try"]


@pytest.mark.parametrize("store", ["file system", "object store"])
def test_a_file_whose_writing_fails_is_neither_there_nor_left_beside_it(store, object_store, tmp_path):
    """A mark, a CSV copy of a report, a downloaded export: the next night reads what is there."""
    root = tmp_path.as_uri() if store == "file system" else object_store.staging_root()
    target = staging_path(root, "demo", "manual__night", "sync_report").parent / "sync_report.csv"
    with pytest.raises(RuntimeError, match="the task died"):
        with atomic_file(target) as handle:
            handle.write(b"kind,outcome,count\n")
            raise RuntimeError("the task died")
    gc.collect()
    assert not target.exists()
    assert not target.parent.exists() or list(target.parent.iterdir()) == []
    with atomic_file(target) as handle:
        handle.write(b"kind,outcome,count\n")
    assert target.read_bytes() == b"kind,outcome,count\n"
