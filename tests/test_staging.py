"""Staged Parquet: what is written reads back whole, and each column is encoded for what it holds; a
run stages only in a folder of its own."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException

from include.staging import StagedParquetWriter, district_state_path, staging_path, state_path

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
