"""Staged Parquet: what is written reads back whole, and each column is encoded for what it holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

from include.staging import StagedParquetWriter


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
