"""Delta nights: what IC served at the last good extract, and when a night may ask for changes only.

After a full extract the collection is kept as a snapshot beside an :class:`ExtractMark`
(the newest change IC served, with which schema and OneRoster version). A later night asks
IC only for records changed since then (``dateLastModified>``, less a safety overlap for
clocks and in-flight edits) and merges them into the snapshot, so downstream tasks still
see the whole collection. A record deleted outright in IC never shows in a delta, so a
full extract is forced every ``full_extract_every_days``, by the ``full_run`` param, and
whenever the schema or the OneRoster version changed.

The quarantine is kept beside the snapshot too: a record IC served that could not be staged
stays quarantined (and counted) on the delta nights after, until IC serves it fixed or a
full extract no longer finds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from include.oneroster.models import SCHEMA_VERSION
from include.oneroster.reads import superseded

TIMESTAMP = "%Y-%m-%dT%H:%M:%S.000Z"


class ExtractMark(BaseModel):
    """The last good extract of a collection: ``high_water`` is the newest dateLastModified IC
    served (IC's clock, so worker clock skew cannot open a gap), ``full_at`` when the last full
    extract ran (the worker's clock, for the weekly rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    high_water: datetime
    full_at: datetime
    schema_version: str
    oneroster_version: str


@dataclass(frozen=True)
class ExtractPlan:
    """Full or delta, and why; a delta's ``filter`` asks IC for what changed since ``since``."""

    mode: str
    reason: str
    since: datetime | None = None

    @property
    def filter(self) -> str | None:
        if self.since is None:
            return None
        return f"dateLastModified>'{self.since.astimezone(timezone.utc).strftime(TIMESTAMP)}'"


def plan_extract(
    mark: ExtractMark | None,
    *,
    now: datetime,
    oneroster_version: str,
    force_full: bool,
    deltas_enabled: bool,
    overlap: timedelta,
    full_every: timedelta,
) -> ExtractPlan:
    """Decide tonight's extract of one collection."""
    if not deltas_enabled:
        return ExtractPlan("full", "delta extracts are off for this district")
    if force_full:
        return ExtractPlan("full", "the full_run param is set")
    if mark is None:
        return ExtractPlan("full", "no earlier extract of this school year to build on")
    if mark.schema_version != SCHEMA_VERSION or mark.oneroster_version != oneroster_version:
        return ExtractPlan("full", "the schema or OneRoster version changed since the last extract")
    if now - mark.full_at >= full_every:
        return ExtractPlan("full", f"the last full extract is older than {full_every.days} day(s)")
    return ExtractPlan("delta", "changes since the last extract", since=mark.high_water - overlap)


def holds_already(snapshot: pq.ParquetFile, changes: pa.Table, high_water: datetime) -> bool:
    """Whether the snapshot already holds every change as it is (IC's safety overlap serves the
    newest records again every night): none is newer than ``high_water`` and each is in the
    snapshot with the same dateLastModified. The snapshot then stands as tonight's extract."""
    if not changes.num_rows:
        return True
    if pc.max(changes.column("date_last_modified")).as_py() > high_water:
        return False
    latest = _latest_per_id(changes)
    held = snapshot.read(columns=["sourced_id", "date_last_modified"])
    found = pc.index_in(held.column("sourced_id"), value_set=latest.column("sourced_id"))
    present = pc.is_valid(found)
    if (pc.sum(present).as_py() or 0) != latest.num_rows:
        return False
    dates = latest.column("date_last_modified").take(found.filter(present))
    return bool(pc.all(pc.equal(held.column("date_last_modified").filter(present), dates)).as_py())


def merge_changes(snapshot: pq.ParquetFile, changes: pa.Table, write, removed: pa.Array | None = None) -> int:
    """Write the snapshot with every changed record replaced in place by its new version and
    the new records after it, so a night without changes writes the snapshot unchanged; records
    whose sourcedId is in ``removed`` (IC served them tonight in a shape that was quarantined)
    are left out, as a full extract would leave them.

    Streams the snapshot one row group at a time through ``write``, the next one read while
    this one is written (decoding and encoding a million-student district's 8 M enrollments
    take a core each for seconds): memory holds the snapshot's id column (looked up against
    the changes in one pass), two row groups and the changes, never the whole collection.
    Returns the rows written.
    """
    latest = _latest_per_id(changes)
    ids = snapshot.read(columns=["sourced_id"]).column("sourced_id")
    found = pc.index_in(ids, value_set=latest.column("sourced_id")).combine_chunks()
    del ids
    placed = np.zeros(latest.num_rows, dtype=bool)
    written = start = 0
    for group in _read_ahead(snapshot):
        in_group = found.slice(start, group.num_rows)
        start += group.num_rows
        if removed is not None and len(removed):
            kept = pc.invert(pc.is_in(group.column("sourced_id"), value_set=removed))
            group, in_group = group.filter(kept), in_group.filter(kept)
        if in_group.null_count < len(in_group):
            hits = in_group.drop_null().to_numpy()
            placed[hits] = True
            replaced = pc.is_valid(in_group).to_numpy(zero_copy_only=False)
            picks = np.arange(group.num_rows)
            picks[replaced] = group.num_rows + np.arange(len(hits))
            group = pa.concat_tables([group, latest.take(hits)]).take(picks)
        write(group)
        written += group.num_rows
    added = latest.filter(pa.array(~placed))
    write(added)
    return written + added.num_rows


def _read_ahead(snapshot: pq.ParquetFile) -> Iterator[pa.Table]:
    """The row groups in order, each read (in a thread: arrow lets go of the GIL) while the
    one before is being used."""
    count = snapshot.num_row_groups
    with ThreadPoolExecutor(1, thread_name_prefix="snapshot-read") as reader:
        ahead = reader.submit(snapshot.read_row_group, 0) if count else None
        for index in range(count):
            group = ahead.result()
            if index + 1 < count:
                ahead = reader.submit(snapshot.read_row_group, index + 1)
            yield group


def _latest_per_id(changes: pa.Table) -> pa.Table:
    """A record served twice during one delta (it changed while paging) counts once: its newest copy."""
    if not changes.num_rows:
        return changes
    dropped = superseded(changes.column("sourced_id"), changes.column("date_last_modified"))
    return changes.filter(pa.array(~dropped)) if dropped.any() else changes


def carried_quarantine(previous: pa.Table | None, tonight: pa.Table, fetched_ids: pa.ChunkedArray) -> pa.Table:
    """A delta night's quarantine: the one kept from the nights before, less the records IC
    served tonight (staged fixed, or quarantined again with tonight's reason), plus tonight's."""
    if previous is None or not previous.num_rows:
        return tonight
    served = pa.chunked_array([fetched_ids, tonight.column("sourced_id")], pa.string()).combine_chunks()
    again = pc.fill_null(pc.is_in(previous.column("sourced_id"), value_set=served), False)
    return pa.concat_tables([previous.filter(pc.invert(again)), tonight.cast(previous.schema)])
