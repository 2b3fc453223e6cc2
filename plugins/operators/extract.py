"""Extract one OneRoster collection from Infinite Campus into the staging root."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.config import ActiveYearRule, InfiniteCampus
from include.oneroster.models import SCHEMA_VERSION, Rejection, arrow_schema, model_arrow_schema
from include.staging import Manifest, StagedParquetWriter, staging_path, utc_now
from plugins.hooks.oneroster import OneRosterHook

LOGGED_REJECTIONS = 5


def resolve_active_year(context: Context, rule: ActiveYearRule) -> int:
    """The run's school year: the ``active_year`` param if given, else the one the
    run's logical date falls in by the district's year-start rule."""
    override = context["params"].get("active_year")
    if override:
        return int(override)
    moment = context.get("logical_date") or context["dag_run"].run_after
    return rule.school_year_of(moment)


def skip_unless_running(context: Context, half: str) -> None:
    """The ``halves`` param runs provisioning, grade passback or both; the other half is skipped."""
    chosen = context["params"].get("halves") or "both"
    if chosen not in ("both", half):
        raise AirflowSkipException(f"this run does {chosen} only")


class OneRosterExtractOperator(BaseOperator):
    """Streams one collection page by page into Parquet and returns its manifest.

    Rows are normalised to one shape whatever the OneRoster version; records that do not
    fit go to a quarantine file beside it with the reason, counted in the manifest.
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
        active_year = resolve_active_year(context, self.active_year_rule)
        run_id = context["run_id"]
        hook = OneRosterHook(
            self.infinite_campus.conn_id,
            max_concurrency=self.infinite_campus.concurrency_at(datetime.now(timezone.utc)),
        )
        target = staging_path(self.staging_root, self.district, run_id, self.collection)
        quarantine = staging_path(self.staging_root, self.district, run_id, f"{self.collection}.quarantine")
        first_rejections: list[Rejection] = []
        school_years: set[int] = set()
        with (
            StagedParquetWriter(target, arrow_schema(self.collection)) as rows_out,
            StagedParquetWriter(quarantine, model_arrow_schema(Rejection)) as rejected_out,
        ):
            for page in hook.iter_entities(
                self.collection, page_size=self.infinite_campus.page_size, filter=self.filter
            ):
                rows_out.write_table(page.table)
                rejected_out.write_rows([rejection.model_dump() for rejection in page.rejections])
                first_rejections.extend(page.rejections[: LOGGED_REJECTIONS - len(first_rejections)])
                if "school_year" in page.table.column_names:
                    school_years.update(page.table.column("school_year").to_pylist())
        if self.collection == "academicSessions" and active_year not in school_years:
            raise AirflowFailException(
                f"District {self.district}: this run is for school year {active_year}, but IC serves "
                f"{', '.join(map(str, sorted(school_years))) or 'no school year'}. IC exposes only its active "
                "school year through OneRoster; to sync another year, point the run at an IC (or IC "
                "configuration) serving that year, or set the active_year param to the year IC serves."
            )

        manifest = Manifest(
            dataset=self.collection,
            uri=str(target),
            row_count=rows_out.row_count,
            content_sha256=rows_out.sha256,
            quarantined_count=rejected_out.row_count,
            quarantine_uri=str(quarantine),
            schema_version=SCHEMA_VERSION,
            oneroster_version=hook.version,
            district=self.district,
            active_year=active_year,
            run_id=run_id,
            created_at=utc_now(),
        )
        self.log.info(
            "District %s: extracted %d %s (OneRoster %s, school year %d) in %d requests (%d retries, "
            "concurrency %d); %d quarantined; staged at %s",
            self.district,
            manifest.row_count,
            self.collection,
            manifest.oneroster_version,
            active_year,
            hook.request_count,
            hook.retry_count,
            hook.max_concurrency,
            manifest.quarantined_count,
            manifest.uri,
        )
        for rejection in first_rejections:
            self.log.warning("Quarantined %s %s: %s", self.collection, rejection.sourced_id, rejection.reason)
        return manifest.model_dump(mode="json")
