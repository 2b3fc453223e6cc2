"""Extract one OneRoster collection from Infinite Campus into the staging root."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from include.config import ActiveYearRule, InfiniteCampus
from include.oneroster.models import SCHEMA_VERSION, Rejection, arrow_schema, model_arrow_schema
from include.privacy import redacted
from plugins.operators.run_params import resolve_active_year

if TYPE_CHECKING:  # pyarrow, staging and the IC hook are imported where the task runs, not by the DAG file
    import pyarrow as pa
    from airflow.sdk import ObjectStoragePath

    from include.staging import StagedCopy, StagedParquetWriter

LOGGED_REJECTIONS = 5


class OneRosterExtractOperator(BaseOperator):
    """Streams one collection page by page into Parquet and returns its manifest.

    Rows are normalised to one shape whatever the OneRoster version; records that do not
    fit go to a quarantine file beside it with the reason, counted in the manifest. On a
    delta night only the records changed since the last extract are fetched and merged
    into its snapshot (see :mod:`include.oneroster.snapshot`); either way the staged file
    is the whole collection.
    """

    template_fields: Sequence[str] = ("staging_root", "filter")
    ui_color = "#d9ecf2"

    def __init__(
        self,
        *,
        collection: str,
        district: str,
        infinite_campus: InfiniteCampus,
        active_year_rule: ActiveYearRule,
        staging_root: str,
        filter: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.collection = collection
        self.district = district
        self.infinite_campus = infinite_campus
        self.active_year_rule = active_year_rule
        self.staging_root = staging_root
        self.filter = filter

    def execute(self, context: Context) -> dict:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from include.oneroster.reads import READS_PER_EXTRACT, check_read
        from include.oneroster.snapshot import (
            ExtractMark,
            carried_quarantine,
            holds_already,
            merge_changes,
            plan_extract,
        )
        from include.staging import (
            Manifest,
            StagedParquetWriter,
            atomic_file,
            copy_atomically,
            read_frame,
            stage_copy,
            staging_path,
            state_path,
            utc_now,
        )
        from plugins.hooks.oneroster import PagingTally, district_ic

        active_year = resolve_active_year(context, self.active_year_rule)
        run_id = context["run_id"]
        ic = self.infinite_campus
        hook = district_ic(ic)
        target = staging_path(self.staging_root, self.district, run_id, self.collection)
        quarantine = staging_path(self.staging_root, self.district, run_id, f"{self.collection}.quarantine")
        snapshot = state_path(self.staging_root, self.district, active_year, f"extract/{self.collection}")
        mark_path = snapshot.parent / f"{self.collection}.mark.json"
        kept_quarantine = snapshot.parent / f"{self.collection}.quarantine.parquet"
        mark = (ExtractMark.model_validate_json(mark_path.read_text())
                if mark_path.exists() and snapshot.exists() else None)
        started = datetime.now(timezone.utc)
        plan = plan_extract(
            mark, now=started, oneroster_version=hook.version, force_full=bool(context["params"].get("full_run")),
            deltas_enabled=ic.delta_extracts and not self.filter,
            overlap=timedelta(minutes=ic.delta_overlap_minutes), full_every=timedelta(days=ic.full_extract_every_days),
        )
        self.log.info("District %s: %s extract of %s (%s)", self.district, plan.mode, self.collection, plan.reason)
        fetched = target if plan.mode == "full" else staging_path(
            self.staging_root, self.district, run_id, f"{self.collection}.changes")
        for read in range(1, READS_PER_EXTRACT + 1):
            tally = PagingTally()
            first_rejections: list[Rejection] = []
            high_water = mark.high_water if mark and plan.mode == "delta" else None
            with (
                StagedParquetWriter(fetched, arrow_schema(self.collection)) as rows_out,
                StagedParquetWriter(quarantine, model_arrow_schema(Rejection)) as rejected_out,
            ):
                for page in hook.iter_entities(
                    self.collection, page_size=ic.page_size, filter=self.filter or plan.filter, tally=tally
                ):
                    rows_out.write_table(page.table)
                    rejected_out.write_rows([rejection.model_dump() for rejection in page.rejections])
                    first_rejections.extend(page.rejections[: LOGGED_REJECTIONS - len(first_rejections)])
                    newest = pc.max(page.table.column("date_last_modified")).as_py()
                    high_water = max(filter(None, (high_water, newest)), default=None)
            check = check_read(_column(fetched, "sourced_id"), tally.served, tally.server_total)
            if check.settled or read == READS_PER_EXTRACT:
                break
            self.log.warning("District %s: %s changed while it was read (%s); reading it again (%d of %d reads)",
                             self.district, self.collection, check.describe(), read + 1, READS_PER_EXTRACT)
        if not check.settled:
            self.log.warning(
                "District %s: %s still changed while it was read after %d reads (%s); each record is staged "
                "once (its newest version) and the sync report shows what did not add up",
                self.district, self.collection, READS_PER_EXTRACT, check.describe())
        changed = rows_out.row_count - check.duplicates
        staged: StagedParquetWriter | StagedCopy = rows_out
        held = False
        if plan.mode == "full" and check.duplicates:
            staged = _stage_newest_once(fetched, self.collection)
        rejected_ids = _column(quarantine, "sourced_id").drop_null()
        if plan.mode == "delta":
            with snapshot.open("rb") as previous, fetched.open("rb") as fetched_file:
                base, changes = pq.ParquetFile(previous), pq.read_table(fetched_file)
                held = not len(rejected_ids) and holds_already(base, changes, mark.high_water)
                if not held:
                    with StagedParquetWriter(target, arrow_schema(self.collection)) as staged:
                        merge_changes(base, changes, staged.write_table, removed=rejected_ids.combine_chunks())
            if held:  # a quiet night: the snapshot is tonight's extract, copied, not decoded and written
                staged = stage_copy(snapshot, target)
            kept = carried_quarantine(_table(kept_quarantine) if kept_quarantine.exists() else None,
                                      _table(quarantine), changes.column("sourced_id"))
            with StagedParquetWriter(quarantine, model_arrow_schema(Rejection)) as rejected_out:
                rejected_out.write_table(kept)
            fetched.unlink()
        if self.collection == "academicSessions":
            self._check_school_year(active_year, set(read_frame(target, columns=["school_year"])["school_year"]))
        if not held:  # the extract becomes the next delta's base
            copy_atomically(target, snapshot)
        copy_atomically(quarantine, kept_quarantine)
        with atomic_file(mark_path) as marked:
            marked.write(ExtractMark(
                high_water=high_water or started, full_at=started if plan.mode == "full" else mark.full_at,
                schema_version=SCHEMA_VERSION, oneroster_version=hook.version,
            ).model_dump_json().encode())

        manifest = Manifest(
            dataset=self.collection,
            uri=str(target),
            row_count=staged.row_count,
            content_sha256=staged.sha256,
            quarantined_count=rejected_out.row_count,
            quarantine_uri=str(quarantine),
            extract_mode=plan.mode,
            fetched_count=changed,
            served_count=check.served,
            server_total=check.server_total,
            duplicate_count=check.duplicates,
            reads=read,
            request_count=hook.request_count,
            response_bytes=hook.bytes_received,
            schema_version=SCHEMA_VERSION,
            oneroster_version=hook.version,
            district=self.district,
            active_year=active_year,
            run_id=run_id,
            created_at=utc_now(),
        )
        self.log.info(
            "District %s: extracted %d %s (%s: %d fetched; OneRoster %s, school year %d) in %d requests "
            "(%d retries, concurrency %d, %d read(s)); %d quarantined; %d served twice; staged at %s",
            self.district,
            manifest.row_count,
            self.collection,
            plan.mode,
            changed,
            manifest.oneroster_version,
            active_year,
            hook.request_count,
            hook.retry_count,
            hook.max_concurrency,
            read,
            manifest.quarantined_count,
            manifest.duplicate_count,
            manifest.uri,
        )
        # the staged quarantine names the records; the log says why, never whose
        for rejection in first_rejections:
            self.log.warning("Quarantined a record of %s: %s (the records are staged at %s)", self.collection,
                             redacted(rejection.reason, [rejection.sourced_id]), quarantine)
        return manifest.model_dump(mode="json")

    def _check_school_year(self, active_year: int, school_years: set[int]) -> None:
        if active_year not in school_years:
            raise AirflowFailException(
                f"District {self.district}: this run is for school year {active_year}, but IC serves "
                f"{', '.join(map(str, sorted(school_years))) or 'no school year'}. IC exposes only its "
                "active school year through OneRoster; to sync another year, point the run at an IC (or IC "
                "configuration) serving that year, or set the active_year param to the year IC serves."
            )


def _table(path: ObjectStoragePath, columns: list[str] | None = None) -> pa.Table:
    """A staged Parquet file (or some of its columns) as it was written."""
    import pyarrow.parquet as pq

    with path.open("rb") as staged:
        return pq.read_table(staged, columns=columns)


def _column(path: ObjectStoragePath, name: str) -> pa.ChunkedArray:
    return _table(path, [name]).column(name)


def _stage_newest_once(path: ObjectStoragePath, collection: str) -> StagedParquetWriter:
    """Stage ``path`` again with each sourcedId once, its newest version (a read that moved under
    the reader served some twice), a row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from include.oneroster.reads import superseded
    from include.staging import StagedParquetWriter, copy_atomically

    keys = _table(path, ["sourced_id", "date_last_modified"])
    kept = ~superseded(keys.column("sourced_id"), keys.column("date_last_modified"))
    as_read = path.parent / f"{path.stem}.as-read.parquet"
    copy_atomically(path, as_read)
    try:
        with as_read.open("rb") as source, StagedParquetWriter(path, arrow_schema(collection)) as staged:
            rows = pq.ParquetFile(source)
            start = 0
            for index in range(rows.num_row_groups):
                group = rows.read_row_group(index)
                staged.write_table(group.filter(pa.array(kept[start:start + group.num_rows])))
                start += group.num_rows
    finally:
        as_read.unlink()
    return staged
