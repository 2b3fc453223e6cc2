"""The night's last task: remove the district's staged run folders past its ``retention_days``.

Wired as a teardown: it runs once every other task of the night is done, whether they succeeded,
failed or were skipped, and its own outcome does not decide the run's. Which folders go is decided
by :mod:`include.retention`; here are the listing, the runs' states as Airflow has them and the
deletion, through ObjectStoragePath (``file://``, ``s3://``, ``gs://``). Run again (a retry, a
cleared run), it lists afresh and removes what is still due. Its log and manifest carry counts,
bytes and the cutoff: never a folder's contents.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator, Context, ObjectStoragePath


class StagingRetentionOperator(BaseOperator):
    """Removes the district's finished runs' folders last written more than ``retention_days`` ago,
    but never the state, the current run's, an unfinished run's or the last successful run's."""

    template_fields: Sequence[str] = ("staging_root",)
    ui_color = "#e6e6e6"

    def __init__(self, *, district: str, retention_days: int, staging_root: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.district = district
        self.retention_days = retention_days
        self.staging_root = staging_root

    def execute(self, context: Context) -> dict:
        from include.retention import RetentionManifest, folders_in, plan_retention
        from include.staging import run_folder, utc_now

        run_id = context["run_id"]
        # the run's own folder first: a run id naming the state folder fails here, before any listing
        district = run_folder(self.staging_root, self.district, run_id).parent
        folders = folders_in(district.fs.find(district.path, detail=True), district.path)
        plan = plan_retention(
            folders,
            run_states=self._run_states(context, {folder.name for folder in folders}),
            current_run_id=run_id,
            now=utc_now(),
            retention_days=self.retention_days,
        )
        for folder in plan.remove:
            self._remove(district / folder.name)
        manifest = RetentionManifest(
            district=self.district, retention_days=self.retention_days, cutoff=plan.cutoff,
            removed=len(plan.remove), removed_bytes=sum(folder.size for folder in plan.remove),
            kept=plan.kept, run_id=run_id, created_at=utc_now(),
        )
        why = ", ".join(f"{reason} {count}" for reason, count in plan.kept.items() if count)
        self.log.info(
            "District %s: removed %d run folder(s), %d bytes, last written before %s "
            "(retention_days %d); kept %d%s", self.district, manifest.removed, manifest.removed_bytes,
            plan.cutoff.isoformat(), self.retention_days, sum(plan.kept.values()), f": {why}" if why else "",
        )
        return manifest.model_dump(mode="json")

    @staticmethod
    def _run_states(context: Context, folders: set[str]) -> dict[str, str]:
        """The state of each of the DAG's runs (those Airflow holds task instances of) whose folder is
        among ``folders``, by run id."""
        from include.staging import folder_name

        ti = context["ti"]
        run_ids = ti.get_task_states(dag_id=ti.dag_id)
        return {run_id: ti.get_dagrun_state(dag_id=ti.dag_id, run_id=run_id)
                for run_id in run_ids if folder_name(run_id) in folders}

    @staticmethod
    def _remove(folder: ObjectStoragePath) -> None:
        try:
            folder.rmdir(recursive=True)
        except (FileNotFoundError, NotADirectoryError):  # removed meanwhile, by a backfill run's retention
            pass
