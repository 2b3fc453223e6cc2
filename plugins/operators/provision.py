"""Provision one kind of LMS object from IC's staged extracts: plan, diff, apply, record.

The operator is the glue around pure functions (``include/provisioning``) and the LMS
adapter (an :class:`~include.lms.target.LmsTarget`). Retries are safe: each applied
batch is journaled under the run's staging folder as its answers come, so a task
retried after a crash re-sends at most the two batches in flight (which the LMS upserts
by external id) and never what it already recorded; the state is replaced atomically only
at the end.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from html import escape
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from include.config import ActiveYearRule, Lms, Notifications, Provisioning
from include.lms.target import ITEM_TYPES, without_identifiers
from include.provisioning.steps import READ_BY_LATER_STEPS, STEPS, TERM_PERIODS, RunScope, steps_for
from plugins.operators.run_params import resolve_active_year, run_date, skip_unless_running

if TYPE_CHECKING:  # pandas, staging and the LMS hook are imported where a task runs, not by the DAG file
    import pandas as pd

    from include.provisioning.diff import Changes

LOGGED_ERRORS = 5
CHECKED_REFERENCES = {"building": "building", "grading_period": "grading_period", "user": "role"}


def unknown_ic_schools(provisioning: Provisioning, orgs: pd.DataFrame) -> list[str]:
    """School map keys naming no school IC serves (a typo would otherwise go unnoticed while
    the school meant is skipped as unmapped), as ``field.path: problem``."""
    served = set(orgs.loc[orgs["type"] == "school", "sourced_id"].astype(str))
    problems = [
        f"{where}.{school}: IC serves no school {school!r}"
        for where, schools in (("provisioning.schools", provisioning.schools),
                               ("provisioning.roles_by_school", provisioning.roles_by_school))
        for school in schools
        if school not in served
    ]
    return problems


def python_values(values: pd.Series) -> list:
    """A column's values as the item models take them: missing ones as None, lists as lists."""
    import pandas as pd

    if isinstance(values.dtype, pd.ArrowDtype):
        return values.tolist()
    return values.to_numpy(dtype=object, na_value=None).tolist()


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Python's full collections leave alone what is alive when the LMS calls start (Airflow's,
    pandas' and the plan's objects: some 200,000). Otherwise one runs every few seconds of a
    night's load and stops every call thread for 0.2 s: a tenth of the LMS's rate was lost."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class ProvisionOperator(BaseOperator):
    """Creates, updates or deactivates one kind of LMS object so the LMS matches IC.

    Returns a manifest with the counts per action and where the result, the errors and
    the report rows are staged; never student data.
    """

    template_fields: Sequence[str] = ("staging_root",)
    ui_color = "#e8f1dc"

    def __init__(
        self,
        *,
        kind: str,
        district: str,
        config_file: str,
        provisioning: Provisioning,
        lms: Lms,
        active_year_rule: ActiveYearRule,
        staging_root: str,
        extract_group: str = "extract",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.district = district
        self.config_file = config_file
        self.provisioning = provisioning
        self.lms = lms
        self.active_year_rule = active_year_rule
        self.staging_root = staging_root
        self.extract_group = extract_group

    def _path(self, run_id: str, name: str):
        from include.staging import staging_path

        return staging_path(self.staging_root, self.district, run_id, f"provision/{name}")

    def execute(self, context: Context) -> dict:
        from include.provisioning.diff import empty_state, fingerprint_hashes, next_state, plan_changes
        from include.staging import stage_frame, state_path
        from plugins.hooks.lms import lms_target

        skip_unless_running(context, "provisioning")
        steps = {step.kind: step for step in steps_for(self.lms.target)}
        step = steps[self.kind]
        ti = context["ti"]
        run_id = context["run_id"]
        active_year = resolve_active_year(context, self.active_year_rule)
        dry_run = bool(context["params"].get("dry_run"))
        extracts = {
            collection: step.read_extract(
                collection, ti.xcom_pull(task_ids=f"{self.extract_group}.{collection}")["uri"]
            )
            for collection in step.extracts
        }
        group = ti.task_id.rsplit(".", 1)[0]
        results = {
            kind: step.read_result(
                kind, ti.xcom_pull(task_ids=f"{group}.{steps[kind].task_id}")["result_uri"]
            )
            for kind in step.needs
        }
        target = lms_target(self.lms)
        catalogs = self._check_references(target, orgs=extracts.get("orgs"))
        desired = step.desired(extracts, results, self.provisioning, RunScope(run_date(context), active_year))
        terms = desired.terms  # grading periods: the period each term of the year is in
        del extracts, results  # a million-student district's extracts are not needed past the plan
        hashes = fingerprint_hashes(desired.rows, self.kind)  # made before the state is read
        state_file = state_path(self.staging_root, self.district, active_year, f"provisioned/{self.kind}")
        state = step.read_state(state_file) if state_file.exists() else empty_state(self.kind)
        changes = plan_changes(
            desired, state, full=bool(context["params"].get("full_run")), hashes=hashes
        )
        del desired, hashes  # the changes are what is sent and recorded
        outcomes = {} if dry_run else self._apply(target, changes, run_id)
        if not dry_run:
            stage_frame(state_file, next_state(state, changes, outcomes))
        state = state[["key", "lms_id"]]  # all the result table needs of it: the rest is let go
        return self._record(changes, outcomes, state, run_id, active_year, dry_run,
                            terms=terms, titles=catalogs.get("grading_period", {}))

    def _check_references(self, target, orgs: pd.DataFrame | None = None) -> dict[str, dict[str, str]]:
        """Fail, naming the district file and the fields, when the maps point at what does not exist.

        The first step (buildings) checks every map before anything is written, so a bad map
        never leaves the LMS half provisioned: the LMS ids of all kinds (buildings, grading
        periods, role ids) and, from the orgs extract, the IC schools the school maps name.
        Later steps re-check their own kind against the LMS as it is then. Returns the catalogs
        read (LMS id -> title, per catalog kind).
        """
        from include.provisioning import plan

        first = self.kind == STEPS[0].kind
        kinds = list(CHECKED_REFERENCES) if first else [self.kind]
        problems = []
        if first and orgs is not None:
            problems += unknown_ic_schools(self.provisioning, orgs)
        catalogs: dict[str, dict[str, str]] = {}
        for kind in kinds:
            catalog_kind = CHECKED_REFERENCES.get(kind)
            if catalog_kind is not None:
                catalogs[catalog_kind] = target.catalog(catalog_kind)
                problems += plan.unknown_references(self.provisioning, kind, catalogs[catalog_kind])
        if problems:
            raise AirflowFailException(f"{self.config_file}: " + "; ".join(problems))
        return catalogs

    def _apply(self, target, changes: Changes, run_id: str) -> dict[str, pd.DataFrame]:
        """Send creates, updates and deactivations in batches, each batch's answers staged as one
        more part of the run's journal as they come (the next batch already under way): a retried
        task sends only what the LMS has not taken yet, and the cost stays linear in the items
        (no part is rewritten). The heap alive beforehand is frozen meanwhile (:func:`frozen_heap`)."""
        with frozen_heap():
            return self._send_and_journal(target, changes, run_id)

    def _send_and_journal(self, target, changes: Changes, run_id: str) -> dict[str, pd.DataFrame]:
        import pandas as pd

        from include.frames import isin
        from include.journal import Journal, Receipts, versioned
        from include.provisioning.diff import OUTCOME_COLUMNS, outcome_frame

        item_type = ITEM_TYPES[self.kind]
        fields = list(item_type.model_fields)
        outcomes: dict[str, pd.DataFrame] = {}
        for action, frame in (("create", changes.create), ("update", changes.update), ("deactivate", changes.deactivate)):
            journal = Journal(self._path(run_id, f"journal/{self.kind}.{action}/part").parent,
                              empty=outcome_frame([]).assign(fingerprint=pd.Series(dtype="uint64")))
            done = journal.read()
            taken = done[done["ok"].to_numpy(dtype=bool)]
            planned, sent = versioned(frame["key"], frame["fingerprint"]), versioned(taken["key"], taken["fingerprint"])
            answers = [taken.loc[isin(sent, planned).to_numpy(), OUTCOME_COLUMNS].astype({"key": frame["key"].dtype})]
            pending = frame[~isin(planned, sent).to_numpy()]
            del done, taken, planned, sent
            in_flight: deque[tuple[pd.DataFrame, list]] = deque()

            def items(pending=pending, in_flight=in_flight) -> Iterator[list]:
                for start in range(0, len(pending), target.batch_size):
                    batch = pending.iloc[start : start + target.batch_size]
                    columns = [python_values(batch[field]) for field in fields]
                    sent = [item_type.model_validate(dict(zip(fields, values, strict=True)))
                            for values in zip(*columns, strict=True)]
                    in_flight.append((batch[["key", "fingerprint"]], sent))
                    yield sent

            receipts = Receipts(self._path(run_id, f"journal/{self.kind}.{action}.receipts/part").parent)
            for results in target.apply_batches(action, items(), receipts):
                batch, sent = in_flight.popleft()
                answered = outcome_frame(without_identifiers(results, sent))
                if answered["key"].tolist() != batch["key"].tolist():
                    raise AirflowException(f"The LMS adapter answered {self.kind} {action}s out of order")
                answered["fingerprint"] = batch["fingerprint"].to_numpy()
                journal.append(answered)
                # the keys kept are the plan's own (a slice, no copy): a first night answers millions
                answers.append(answered[OUTCOME_COLUMNS].assign(key=batch["key"].array))
            outcomes[action] = pd.concat(answers, ignore_index=True)
        return outcomes

    def _record(
        self,
        changes: Changes,
        outcomes: dict[str, pd.DataFrame],
        state: pd.DataFrame,
        run_id: str,
        active_year: int,
        dry_run: bool,
        *,
        terms: pd.DataFrame | None = None,
        titles: dict[str, str] | None = None,
    ) -> dict:
        import pandas as pd

        from include.frames import isin
        from include.provisioning.diff import existing_count, result_table
        from include.provisioning.report import report_rows
        from include.staging import ProvisionManifest, stage_frame, state_path, utc_now

        refused = [
            answers.loc[~answers["ok"].to_numpy(dtype=bool), ["key", "error"]].assign(action=action)
            for action, answers in outcomes.items()
        ]
        failed = pd.concat(refused, ignore_index=True).astype(object)[["key", "action", "error"]] if refused else (
            pd.DataFrame(columns=["key", "action", "error"], dtype=object))
        schools = pd.concat([
            frame.loc[isin(frame["key"], failed["key"]).to_numpy(), ["key", "school"]]
            for frame in (changes.create, changes.update, changes.deactivate)
        ])
        failed = failed.merge(schools.drop_duplicates("key"), on="key", how="left")
        result = result_table(changes, outcomes, state, dry_run, terms, titles)
        if terms is not None:  # grading periods: every term's period, for the grades too
            if not dry_run:
                stage_frame(state_path(self.staging_root, self.district, active_year, f"provisioned/{TERM_PERIODS}"),
                            result[["key", "lms_id", "title"]])
        result_file = (stage_frame(self._path(run_id, f"{self.kind}.result"), result)
                       if self.kind in READ_BY_LATER_STEPS else None)  # 8 M enrollments: 3 s a night
        errors_file = stage_frame(self._path(run_id, f"{self.kind}.errors"), failed)
        skipped_file = stage_frame(self._path(run_id, f"{self.kind}.skipped"), changes.skipped)
        report = report_rows(changes, failed, dry_run)
        report_file = stage_frame(self._path(run_id, f"{self.kind}.report"), report)
        counts = changes.counts()
        counts["failed"] = len(failed)
        manifest = ProvisionManifest(
            dataset=self.kind,
            result_uri=str(result_file.target) if result_file else None,
            row_count=existing_count(changes, outcomes, dry_run),
            content_sha256=result_file.sha256 if result_file else None,
            counts=counts,
            errors_uri=str(errors_file.target),
            skipped_uri=str(skipped_file.target),
            report_uri=str(report_file.target),
            dry_run=dry_run,
            district=self.district,
            active_year=active_year,
            run_id=run_id,
            created_at=utc_now(),
        )
        self.log.info(
            "District %s, %s%s: %s; report staged at %s",
            self.district,
            self.kind,
            " (dry run: nothing written to the LMS)" if dry_run else "",
            ", ".join(f"{name} {count}" for name, count in counts.items()),
            manifest.report_uri,
        )
        for row in failed.head(LOGGED_ERRORS).itertuples():  # the staged errors name the records, the log never
            self.log.warning("LMS refused a %s %s (school %s; row %d of %s): %s", self.kind, row.action, row.school,
                             row.Index + 1, errors_file.target, row.error)
        return manifest.model_dump(mode="json")


class SyncReportOperator(BaseOperator):
    """Gathers the provisioning steps' report rows and what the extracts did not stage whole into
    one sync report, logged and staged; when any of it needs a person (LMS refusals, quarantined
    records, a read that did not add up) the district's notification email says so, in counts."""

    template_fields: Sequence[str] = ("staging_root",)
    ui_color = "#f3ecd9"

    def __init__(
        self, *, district: str, step_task_ids: Sequence[str], extract_task_ids: Sequence[str],
        notifications: Notifications, active_year_rule: ActiveYearRule, staging_root: str, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.district = district
        self.active_year_rule = active_year_rule
        self.step_task_ids = list(step_task_ids)
        self.extract_task_ids = list(extract_task_ids)
        self.notifications = notifications
        self.staging_root = staging_root

    def execute(self, context: Context) -> dict:
        import pandas as pd

        from include.provisioning.report import extract_rows, format_report, needing_a_person
        from include.staging import Manifest, ProvisionManifest, atomic_file, read_frame, stage_frame, staging_path

        ti = context["ti"]
        manifests = [ProvisionManifest.model_validate(ti.xcom_pull(task_ids=task_id)) for task_id in self.step_task_ids]
        extracts = [Manifest.model_validate(ti.xcom_pull(task_ids=task_id)) for task_id in self.extract_task_ids]
        report = pd.concat([*(read_frame(manifest.report_uri) for manifest in manifests), extract_rows(extracts)],
                           ignore_index=True)
        target = staging_path(self.staging_root, self.district, context["run_id"], "provision/sync_report")
        staged = stage_frame(target, report)
        csv_target = target.parent / "sync_report.csv"
        with atomic_file(csv_target) as handle:
            report.to_csv(handle, index=False)
        dry_run = any(manifest.dry_run for manifest in manifests)
        self.log.info(
            "Sync report for district %s%s (staged at %s and %s):\n%s",
            self.district,
            " - DRY RUN, nothing was written to the LMS" if dry_run else "",
            target,
            csv_target,
            format_report(report),
        )
        attention = needing_a_person(report)
        if len(attention):
            self.log.warning("District %s: %d record(s) need a person: %s", self.district,
                             attention["count"].sum(), "; ".join(
                                 f"{row.kind} {row.outcome} {row.count}" for row in attention.itertuples()))
            if self.notifications.emails:
                self._email_attention(context, attention, str(csv_target), dry_run)
        totals = report.groupby("outcome")["count"].sum().astype(int).to_dict() if not report.empty else {}
        return {
            "dataset": "sync_report",
            "uri": str(target),
            "csv_uri": str(csv_target),
            "row_count": staged.row_count,
            "content_sha256": staged.sha256,
            "totals": totals,
            "dry_run": dry_run,
            "district": self.district,
            "active_year": resolve_active_year(context, self.active_year_rule),
            "run_id": context["run_id"],
        }

    def _email_attention(self, context: Context, attention: pd.DataFrame, report: str, dry_run: bool) -> None:
        """Counts per kind and outcome, never a record: the messages and ids are in the staged report."""
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        items = "".join(f"<li>{escape(row.kind)}: {row.count} {escape(row.outcome)}</li>"
                        for row in attention.itertuples())
        SmtpNotifier(
            to=self.notifications.emails,
            subject=f"[oneroster {context['dag'].dag_id}] provisioning: {attention['count'].sum()} record(s) "
                    f"need attention in run {context['run_id']}",
            html_content=(
                f"<p>District <b>{escape(self.district)}</b>{' (dry run)' if dry_run else ''}: the night's "
                f"provisioning did not reach the LMS whole.</p><ul>{items}</ul>"
                "<p>failed: the LMS refused them (its messages are in the report; they are sent again next run); "
                "skipped: building not created yet: the district file maps their school to create and its "
                "building is not in the LMS (see the buildings' failures; they follow it once it is); "
                "quarantined: IC served them in a shape that cannot be provisioned (fix them in IC); "
                "served twice / count unlike the server's total: IC's collection changed while it was read, "
                "read again and still not settled (the next run reads it again).</p>"
                f"<p>Full report: {escape(report)}</p><p>Logs: {escape(context['ti'].log_url or '')}</p>"
            ),
            smtp_conn_id=self.notifications.smtp_conn_id,
        ).notify(context)
