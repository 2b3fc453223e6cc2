"""Grade passback, LMS -> IC: fetch and parse the export (or read the grades from the LMS's API), plan
the postings, post, reconcile.

Each operator is thin glue around ``include/grades`` (pure pandas) and the OneRoster hook.
Postings carry deterministic sourcedIds (lineItem per section x term x task, result per
student), so a retried PUT updates what the first one created; posted answers are
journaled per batch (one part each, see :mod:`include.journal`) so a task retried
after a crash re-sends at most the batch in flight; lineItems and results go out as many at
once as IC allows;
what was posted (and with what value) is kept per school year, so a later run posts only
grades that changed. Only manifests (locations, counts, checksums) go through XCom.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, Context, ObjectStoragePath, Variable
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.config import ActiveYearRule, GradePassback, InfiniteCampus, Lms, Notifications
from include.grades.opt_in import OptInVariableError, opt_in_variable, opted_in_sections
from include.oneroster.models import PERSON_FIELDS
from include.privacy import redacted
from plugins.operators.run_params import resolve_active_year, skip_unless_running

if TYPE_CHECKING:  # pandas, pyarrow, SFTP and the IC hook are imported where a task runs, not by the DAG file
    import pandas as pd

    from plugins.hooks.oneroster import GradebookAnswer, OneRosterHook

CATEGORY_ID = "oneroster-airflow-grading-tasks"
POSTED_OVER = "posted_over"  # the year's postings went over this OneRoster version
JOURNAL_BATCH = 200
LOGGED_FAILURES = 5
LISTED_ROWS = 20  # rows listed in an email; the rest are in the report
LOGGED_ROWS = 10  # export rows named in a log line


def _stamp() -> str:
    from include.staging import utc_now

    return utc_now().strftime("%Y-%m-%dT%H:%M:%S.000Z")


class _GradesOperator(BaseOperator):
    template_fields: Sequence[str] = ("staging_root",)
    ui_color = "#f7ece4"

    def __init__(
        self,
        *,
        district: str,
        passback: GradePassback,
        active_year_rule: ActiveYearRule,
        staging_root: str,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.district = district
        self.passback = passback
        self.active_year_rule = active_year_rule
        self.staging_root = staging_root

    def _path(self, context: Context, name: str):
        from include.staging import staging_path

        return staging_path(self.staging_root, self.district, context["run_id"], f"grades/{name}")

    def _state(self, context: Context, name: str):
        from include.staging import state_path

        return state_path(self.staging_root, self.district, resolve_active_year(context, self.active_year_rule),
                          f"grades/{name}")

    def _provisioned(self, context: Context, kind: str, columns: list[str],
                     categories: list[str] | None = None) -> pd.DataFrame:
        """What provisioning holds in the LMS of ``kind`` this school year (empty before it ran);
        ``categories``: columns read as categoricals (a few values over many rows)."""
        import pandas as pd

        from include.staging import read_frame, state_path

        path = state_path(self.staging_root, self.district, resolve_active_year(context, self.active_year_rule),
                          f"provisioned/{kind}")
        if not path.exists():
            return pd.DataFrame(columns=columns)
        return read_frame(path, columns, categories=categories)

    def _manifest(self, context: Context, dataset: str, **fields) -> dict:
        from include.staging import utc_now

        return {
            "dataset": dataset,
            "district": self.district,
            "active_year": resolve_active_year(context, self.active_year_rule),
            "run_id": context["run_id"],
            "created_at": utc_now().isoformat(),
            **fields,
        }


class FetchExportOperator(_GradesOperator):
    """Downloads the export the sensor found into staging and parses it; malformed rows are
    quarantined with the reason, a file without the required columns fails with what is missing."""

    def __init__(self, *, sensor_task_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sensor_task_id = sensor_task_id

    def execute(self, context: Context) -> dict:
        from airflow.providers.sftp.hooks.sftp import SFTPHook

        from include.grades.export import ExportFormatError, read_export
        from include.staging import atomic_file, stage_frame

        skip_unless_running(context, "grades")
        found = context["ti"].xcom_pull(task_ids=self.sensor_task_id)
        hook = SFTPHook(ssh_conn_id=self.passback.sftp_conn_id)
        with hook.get_managed_conn() as sftp, sftp.open(found["path"], "rb") as remote:
            data = remote.read()
        if len(data) != found["size"]:
            raise ValueError(f"{found['path']}: read {len(data)} bytes, the server reported {found['size']}")
        raw = self._path(context, "export.raw")
        with atomic_file(raw) as downloaded:
            downloaded.write(data)
        try:
            parsed = read_export(data, self.passback.columns)
        except ExportFormatError as error:
            raise AirflowFailException(f"Grade export {found['path']}: {error}") from None
        rows = stage_frame(self._path(context, "export.rows"), parsed.rows)
        quarantined = stage_frame(self._path(context, "export.quarantine"), parsed.quarantined)
        self.log.info(
            "District %s: export %s (%d bytes): %d rows, %d quarantined (reasons staged at %s)",
            self.district, found["name"], len(data), rows.row_count, quarantined.row_count, quarantined.target,
        )
        return self._manifest(
            context, "grade_export", source=found, uri=str(rows.target), row_count=rows.row_count,
            content_sha256=hashlib.sha256(data).hexdigest(), quarantined_count=quarantined.row_count,
            quarantine_uri=str(quarantined.target),
        )


class FetchLmsGradesOperator(_GradesOperator):
    """Reads the final grades of every section provisioned into the LMS from its API (Canvas) into
    the rows an export file would give (a row per student and grading period), staged as the export's
    are; what cannot be a row is kept aside with the reason. Students the LMS lists without an IC id
    are counted and logged, never passed back; students provisioned into a section whom the LMS does
    not list (their enrollment ended there by hand) are kept aside with the reason
    (:mod:`include.grades.roster`), not left out unsaid."""

    WRITE_ROWS = 50_000  # rows buffered before a row group is written

    def __init__(self, *, lms: Lms, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lms = lms

    def execute(self, context: Context) -> dict:
        from include.grades.assignments import ASSIGNMENT_COLUMNS, ASSIGNMENT_SCHEMA
        from include.grades.export import QUARANTINE_COLUMNS, QUARANTINE_SCHEMA, ROW_COLUMNS, ROW_SCHEMA
        from include.grades.roster import STATE_COLUMNS, ProvisionedStudents, not_listed
        from include.staging import StagedParquetWriter, utc_now
        from plugins.hooks.lms import lms_grade_source

        skip_unless_running(context, "grades")
        sections = sorted(set(self._provisioned(context, "section", ["key"])["key"].astype(str)))
        roster = ProvisionedStudents(self._provisioned(context, "enrollment", STATE_COLUMNS, ["section_key"]))
        with_assignments = self.passback.assignments is not None
        read_at = utc_now()
        source = lms_grade_source(self.lms)
        number, made_in_lms, unlisted = 0, 0, 0
        buffers: dict[str, list[dict]] = {"rows": [], "kept": [], "assignments": []}
        with StagedParquetWriter(self._path(context, "export.rows"), ROW_SCHEMA) as rows, \
                StagedParquetWriter(self._path(context, "export.quarantine"), QUARANTINE_SCHEMA) as kept_aside, \
                StagedParquetWriter(self._path(context, "assignments.rows"), ASSIGNMENT_SCHEMA) as assignments:
            writers = {"rows": rows, "kept": kept_aside, "assignments": assignments}
            for section, grades in zip(sections, source.final_grades(sections, assignments=with_assignments),
                                       strict=True):
                left_out = not_listed(section, grades, roster.of(section))
                unlisted += len(left_out)
                for name, lines, columns in (("rows", grades.rows, ROW_COLUMNS),
                                             ("kept", [*grades.kept_aside, *left_out], QUARANTINE_COLUMNS),
                                             ("assignments", grades.assignment_rows, ASSIGNMENT_COLUMNS)):
                    for line in lines:  # one numbering: the reconciliation accounts for every row once
                        number += 1
                        buffers[name].append(dict(zip(columns, (number, *line), strict=True)))
                made_in_lms += grades.made_in_lms
                for name, buffer in buffers.items():
                    if len(buffer) >= self.WRITE_ROWS:
                        writers[name].write_rows(buffer)
                        buffers[name] = []
            for name, buffer in buffers.items():
                writers[name].write_rows(buffer)
        self.log.info(
            "District %s: %s grades of %d section(s): %d rows, %d kept aside (reasons staged at %s)%s; "
            "%d student(s) made in %s without an IC id not passed back; %d student(s) IC has in a class not "
            "listed by %s (enrollment ended there by hand?), kept aside",
            self.district, self.lms.target, len(sections), rows.row_count, kept_aside.row_count, kept_aside.target,
            f", {assignments.row_count} assignment rows" if with_assignments else "", made_in_lms, self.lms.target,
            unlisted, self.lms.target,
        )
        name = f"{self.lms.target} grades read {read_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        return self._manifest(
            context, "lms_grades", source={"name": name, "lms": self.lms.target, "read_at": read_at.isoformat()},
            uri=str(rows.target), row_count=rows.row_count, content_sha256=rows.sha256,
            quarantined_count=kept_aside.row_count, quarantine_uri=str(kept_aside.target),
            assignments_uri=str(assignments.target) if with_assignments else None,
            assignment_count=assignments.row_count, sections=len(sections), made_in_lms=made_in_lms,
            not_listed=unlisted,
        )


class PlanGradesOperator(_GradesOperator):
    """Keeps what may be posted (mapped, opted in, window open, changed since last posted)."""

    def __init__(self, *, export_task_id: str, config_dir: str, extract_group: str = "extract", **kwargs) -> None:
        super().__init__(**kwargs)
        self.export_task_id = export_task_id
        self.config_dir = config_dir
        self.extract_group = extract_group

    def _opted_in(self) -> frozenset[str] | None:
        """The sections whose teachers opted in (see :mod:`include.grades.opt_in`); None when opt-in is off."""
        if not self.passback.teacher_opt_in:
            return None
        variable = opt_in_variable(self.district)
        try:
            return opted_in_sections(variable, Variable.get(variable, default=None))
        except OptInVariableError as error:
            raise AirflowFailException(str(error)) from None

    def _extracted(self, context: Context, collection: str) -> dict:
        """The manifest of the run's extract of ``collection``."""
        return context["ti"].xcom_pull(task_ids=f"{self.extract_group}.{collection}")

    @staticmethod
    def _columns(manifest: dict, columns: list[str]) -> pd.DataFrame:
        """Only the columns planning reads: a million users' names and roles would be most of the
        task's memory."""
        from include.staging import read_frame

        return read_frame(manifest["uri"], columns)

    def execute(self, context: Context) -> dict:
        import pandas as pd

        from include.grades.plan import (
            CLASS_COLUMNS,
            GRADING_PERIOD_COLUMNS,
            POSTED_COLUMNS,
            SECTION_COLUMNS,
            SESSION_COLUMNS,
            USER_COLUMNS,
            GradeContext,
            plan_postings,
        )
        from include.provisioning.steps import TERM_PERIODS
        from include.staging import read_frame, stage_frame

        skip_unless_running(context, "grades")
        export = context["ti"].xcom_pull(task_ids=self.export_task_id)
        mapping = None
        if self.passback.mapping_csv:
            mapping = pd.read_csv(Path(self.config_dir) / self.passback.mapping_csv, dtype=str)
        posted_path = self._state(context, "posted")
        users = self._extracted(context, "users")
        version = users["oneroster_version"]
        self._refuse_a_version_change(context, version)
        if version == "1.1" and self.passback.letter_grades:
            self.log.warning("District %s: letter_grades is on, but OneRoster 1.1 results carry a percent only; "
                             "IC files each percent under the task's score group itself", self.district)
        grade_context = GradeContext(
            sections=self._provisioned(context, "section", SECTION_COLUMNS),
            grading_periods=self._provisioned(context, TERM_PERIODS, GRADING_PERIOD_COLUMNS),
            users=self._columns(users, USER_COLUMNS),
            classes=self._columns(self._extracted(context, "classes"), CLASS_COLUMNS),
            sessions=self._columns(self._extracted(context, "academicSessions"), SESSION_COLUMNS),
            mapping=mapping,
            opt_in=self._opted_in(),
            run_date=(context.get("logical_date") or context["dag_run"].run_after).date(),
            config=self.passback,
            posted=(
                read_frame(posted_path, POSTED_COLUMNS)
                if posted_path.exists() and not context["params"].get("full_run")
                else pd.DataFrame(columns=POSTED_COLUMNS)
            ),
            oneroster_version=version,
        )
        postings = plan_postings(read_frame(export["uri"]), grade_context)
        items_uri = None
        if export.get("assignments_uri"):  # assignment scores read from the LMS's API as well
            from include.grades.assignments import plan_assignment_postings

            scores, items = plan_assignment_postings(read_frame(export["assignments_uri"]), grade_context,
                                                     export["source"]["lms"])
            postings = pd.concat([postings.astype(object), scores], ignore_index=True)
            items_uri = str(stage_frame(self._path(context, "assignment_items"), items).target)
        staged = stage_frame(self._path(context, "postings"), postings)
        counts = postings["action"].value_counts().to_dict()
        self.log.info("District %s: %d postings planned: %s", self.district, len(postings),
                      ", ".join(f"{action} {count}" for action, count in sorted(counts.items())))
        return self._manifest(context, "grade_postings", uri=str(staged.target), row_count=staged.row_count,
                              content_sha256=staged.sha256, counts=counts, items_uri=items_uri)

    def _refuse_a_version_change(self, context: Context, version: str) -> None:
        """A result's sourcedId names its student by IC's id, which 1.1 spells with a role prefix
        and 1.2 without: posting a school year's grades over the other version would give IC a
        second result for each grade posted before, so a person decides first."""
        from include.staging import read_frame

        marker = self._state(context, POSTED_OVER)
        if not marker.exists():
            return
        before = str(read_frame(marker).iloc[0]["oneroster_version"])
        if before != version:
            raise AirflowFailException(
                f"District {self.district}: this school year's grades were posted to IC over OneRoster {before}, "
                f"and the connection now reads OneRoster {version}. IC names students differently in each, so "
                f"posting now could leave IC with two results for every grade posted before. Set the "
                f"connection back to {before} until the year ends, or remove the {before} results in IC and "
                f"then delete {marker} to start the year's postings over."
            )


class PostGradesOperator(_GradesOperator):
    """PUTs the lineItems and results to IC's gradebook at the district's IC concurrency. What IC
    refuses holds back what needs it: a refused category or score scale its lineItems, a refused
    lineItem its results, whose rows take IC's message for it. The log has counts, lineItem ids and
    IC's messages (less the student they name); the rows are in the staged outcomes."""

    def __init__(self, *, plan_task_id: str, infinite_campus: InfiniteCampus, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan_task_id = plan_task_id
        self.infinite_campus = infinite_campus

    def execute(self, context: Context) -> dict:
        import pandas as pd

        from include.frames import isin
        from include.grades.reconciliation import refusals, withheld
        from include.journal import Journal, versioned
        from include.staging import read_frame, stage_frame
        from plugins.hooks.oneroster import district_ic

        skip_unless_running(context, "grades")
        postings = read_frame(context["ti"].xcom_pull(task_ids=self.plan_task_id)["uri"])
        to_post = postings[postings["action"] == "post"]
        if context["params"].get("dry_run"):
            raise AirflowSkipException(
                f"Dry run: {len(to_post)} result(s) on {to_post['line_item_id'].nunique()} lineItem(s), for "
                f"{to_post['row'].nunique()} export row(s), would be posted to IC; nothing was sent, and the "
                "export is not marked processed (the plan is staged with the run)")
        hook = district_ic(self.infinite_campus)
        journal = Journal(self._path(context, "journal.results/part").parent,
                          empty=pd.DataFrame(columns=["result_id", "fingerprint", "status", "message"], dtype=object))
        done = journal.read()
        pending = to_post[~isin(versioned(to_post["result_id"], to_post["fingerprint"]),
                                versioned(done["result_id"], done["fingerprint"])).to_numpy()]
        answered = [done]
        if not pending.empty:  # before the first PUT: see PlanGradesOperator._refuse_a_version_change
            stage_frame(self._state(context, POSTED_OVER), pd.DataFrame({"oneroster_version": [hook.version]}))
        with ThreadPoolExecutor(max_workers=hook.max_concurrency, thread_name_prefix="gradebook") as pool:
            if not pending.empty:  # results of a lineItem IC does not hold are not sent
                refused = self._prepare_line_items(hook, pool, pending, context)
                held = withheld(pending, refused)
                if not held.empty:
                    journal.append(held)
                    answered.append(held)
                    pending = pending[~isin(pending["result_id"], held["result_id"]).to_numpy()]
            for start in range(0, len(pending), JOURNAL_BATCH):
                batch = pending.iloc[start : start + JOURNAL_BATCH]
                answers = list(pool.map(lambda row: self._put_result(hook, row), batch.to_dict("records")))
                part = pd.DataFrame({
                    "result_id": [answer.sourced_id for answer in answers],
                    "fingerprint": batch["fingerprint"].to_list(),
                    "status": [answer.status for answer in answers],
                    "message": [answer.message for answer in answers],
                })
                journal.append(part)
                answered.append(part)
        done = pd.concat(answered, ignore_index=True) if len(answered) > 1 else done
        outcomes = done[isin(done["result_id"], to_post["result_id"]).to_numpy()].drop_duplicates("result_id", keep="last")
        outcomes = self._without_people(context, outcomes, to_post)
        self._remember_posted(context, outcomes)
        staged = stage_frame(self._path(context, "outcomes"), outcomes)
        counts = outcomes["status"].value_counts().to_dict()
        self.log.info("District %s: posted to IC in %d requests (%d retries): %s", self.district, hook.request_count,
                      hook.retry_count, ", ".join(f"{status} {count}" for status, count in sorted(counts.items())) or "nothing")
        self._log_refusals(refusals(to_post, outcomes))
        return self._manifest(context, "grade_outcomes", uri=str(staged.target), row_count=staged.row_count,
                              content_sha256=staged.sha256, counts=counts)

    @staticmethod
    def _without_people(context: Context, outcomes: pd.DataFrame, to_post: pd.DataFrame) -> pd.DataFrame:
        """The outcomes with each refusal's IC message cleared of the student it is about (ids,
        username, email, names from the users extract, one read of the refused students' rows for
        the whole run): what the staged outcomes, the reconciliation and so every log line and email
        carry. The journal keeps IC's words as they came (staged with the run, under its retention);
        the staged reconciliation keeps the row and the student's id, so a person can still act on it."""
        import pyarrow.parquet as pq

        from include.grades.reconciliation import LOGGED_STUDENT
        from plugins.hooks.oneroster import TAKEN_STATUSES

        messages = outcomes["message"]
        refusal = (messages.notna() & (messages.astype(str) != "")
                   & ~outcomes["status"].isin(TAKEN_STATUSES)).to_numpy()
        if not refusal.any():
            return outcomes
        student_of = to_post.drop_duplicates("result_id").set_index("result_id")["student"].astype(str)
        students = outcomes.loc[refusal, "result_id"].map(student_of)
        uri = context["ti"].xcom_pull(task_ids="extract.users")["uri"]
        with ObjectStoragePath(uri).open("rb") as handle:
            users = pq.read_table(handle, columns=list(PERSON_FIELDS),
                                  filters=[("sourced_id", "in", sorted(set(students.dropna())))]).to_pylist()
        people = {user["sourced_id"]: [value for value in user.values() if value] for user in users}
        cleared = [redacted(message, people.get(student, [student]), reference=LOGGED_STUDENT, limit=None,
                            unknown_people=False)
                   for message, student in zip(messages[refusal], students, strict=True)]
        outcomes = outcomes.copy()
        outcomes.loc[refusal, "message"] = cleared
        return outcomes

    def _log_refusals(self, lines: pd.DataFrame) -> None:
        """A line per lineItem and IC message, the largest first: a closed window as information, any
        other refusal as a warning; the export rows are named, the students are not."""
        from plugins.hooks.oneroster import WINDOW_CLOSED

        for line in lines.head(LOGGED_FAILURES).itertuples():
            rows = ", ".join(map(str, line.rows[:LOGGED_ROWS]))
            more = f" and {len(line.rows) - LOGGED_ROWS} more" if len(line.rows) > LOGGED_ROWS else ""
            log = self.log.info if line.status == WINDOW_CLOSED else self.log.warning
            log("lineItem %s: %d result(s) not posted, export rows %s%s: %s", line.line_item_id, line.results,
                rows, more, line.message)
        rest = lines.iloc[LOGGED_FAILURES:]
        if len(rest):
            log = self.log.info if (rest["status"] == WINDOW_CLOSED).all() else self.log.warning
            log("... and %d more (lineItem, message) pairs: see the grade reconciliation report", len(rest))

    def _prepare_line_items(self, hook: OneRosterHook, pool: ThreadPoolExecutor, pending: pd.DataFrame,
                            context: Context) -> pd.DataFrame:
        """What the pending results need at IC, grading tasks' (:meth:`_prepare_task_items`) and
        assignments' (:meth:`_prepare_assignment_items`); returns the lineItems IC does not hold
        (line_item_id, status, message)."""
        import pandas as pd

        from include.grades.assignments import ASSIGNMENT_TASK

        of_assignments = (pending["task_kind"] == ASSIGNMENT_TASK).to_numpy()
        refused = []
        if of_assignments.any():
            refused.append(self._prepare_assignment_items(hook, pool, pending[of_assignments], context))
        if not of_assignments.all():
            refused.append(self._prepare_task_items(hook, pool, pending[~of_assignments], context))
        return pd.concat(refused, ignore_index=True)

    def _prepare_assignment_items(self, hook: OneRosterHook, pool: ThreadPoolExecutor, pending: pd.DataFrame,
                                  context: Context) -> pd.DataFrame:
        """The categories (one per class and assignment group) and lineItems (one per class and
        assignment, from the plan's items) the assignment results need, PUT once per run
        (idempotent), each lineItem once its category is taken; returns the lineItems IC does not hold."""
        import pandas as pd

        from include.staging import read_frame

        roster, gradebook = hook.rostering_url, hook.gradebook_url
        stamp = _stamp()
        items = read_frame(context["ti"].xcom_pull(task_ids=self.plan_task_id)["items_uri"])
        items = items[items["line_item_id"].isin(set(pending["line_item_id"].astype(str)))]

        def put_category(row) -> GradebookAnswer:
            return hook.put_gradebook("categories", row.category_id, {
                "sourcedId": row.category_id, "status": "active", "dateLastModified": stamp,
                "title": row.category_title})

        categories = items.drop_duplicates("category_id")
        refused_categories = {answer.sourced_id: answer for answer in pool.map(put_category, categories.itertuples())
                              if not answer.taken}

        def put_line_item(row) -> GradebookAnswer:
            return hook.put_gradebook("lineItems", row.line_item_id, {
                "sourcedId": row.line_item_id, "status": "active", "dateLastModified": stamp, "title": row.title,
                "assignDate": row.assign_date, "dueDate": row.due_date,
                "class": _ref(roster, "classes", "class", row.section),
                "school": _ref(roster, "orgs", "org", row.school),
                "category": _ref(gradebook, "categories", "category", row.category_id),
                "gradingPeriod": _ref(roster, "academicSessions", "academicSession", row.term),
                "resultValueMin": 0, "resultValueMax": float(row.max_points) if pd.notna(row.max_points) else 0,
            })

        blocked = items["category_id"].isin(list(refused_categories)).to_numpy()
        refused = [(row.line_item_id, *_passed_on("category", refused_categories[row.category_id]))
                   for row in items[blocked].itertuples()]
        sendable = items[~blocked]
        refused += [(row.line_item_id, *_passed_on("lineItem", answer))
                    for row, answer in zip(sendable.itertuples(), pool.map(put_line_item, sendable.itertuples()),
                                           strict=True) if not answer.taken]
        return pd.DataFrame(refused, columns=["line_item_id", "status", "message"])

    def _prepare_task_items(self, hook: OneRosterHook, pool: ThreadPoolExecutor, pending: pd.DataFrame,
                            context: Context) -> pd.DataFrame:
        """The category, score scales and lineItems the results need, PUT once per run (idempotent),
        as many at once as IC allows, each only once what it needs is taken; returns the lineItems IC
        does not hold (line_item_id, status, message): refused, or not sent because IC refused their
        category or score scale. OneRoster 1.1 has no score scales (IC files a percent under the
        task's score group itself) and no school on a lineItem."""
        import pandas as pd

        from include.staging import read_frame

        roster, gradebook = hook.rostering_url, hook.gradebook_url  # 1.2 keeps gradebook objects apart
        modern = hook.version == "1.2"

        stamp = _stamp()
        line_items = pending.drop_duplicates("line_item_id")
        category = hook.put_gradebook("categories", CATEGORY_ID, {
            "sourcedId": CATEGORY_ID, "status": "active", "dateLastModified": stamp, "title": "Grading tasks",
        })
        if not category.taken:
            refused = [(item, *_passed_on("category", category)) for item in line_items["line_item_id"]]
            return pd.DataFrame(refused, columns=["line_item_id", "status", "message"])
        scale_of = (line_items["section"].astype(str) + "-" + line_items["score_group"].astype(str)).where(
            line_items["score_group"].notna() & modern)  # IC's score scale of the lineItem, if it has one

        def put_scale(row) -> GradebookAnswer:
            bands = self.passback.score_groups[row.score_group]
            return hook.put_gradebook("scoreScales", row.scale, {
                "sourcedId": row.scale, "status": "active", "dateLastModified": stamp,
                "title": row.score_group, "type": "score group",
                "class": _ref(roster, "classes", "class", row.section),
                "scoreScaleValue": [{"itemValueLHS": f"{band.min_percent:g}", "itemValueRHS": band.score} for band in bands],
            })

        scales = line_items.assign(scale=scale_of).dropna(subset=["scale"]).drop_duplicates("scale")
        refused_scales = {answer.sourced_id: answer for answer in pool.map(put_scale, scales.itertuples())
                          if not answer.taken}
        sessions = read_frame(context["ti"].xcom_pull(task_ids="extract.academicSessions")["uri"]).set_index("sourced_id")

        def put_line_item(row) -> GradebookAnswer:
            term = sessions.loc[row.term]
            record = {
                "sourcedId": row.line_item_id, "status": "active", "dateLastModified": stamp,
                "title": f"{row.task_id} - {term['title']}",
                "assignDate": f"{term['start_date']}T00:00:00.000Z", "dueDate": f"{term['end_date']}T00:00:00.000Z",
                "class": _ref(roster, "classes", "class", row.section),
                "category": _ref(gradebook, "categories", "category", CATEGORY_ID),
                "gradingPeriod": _ref(roster, "academicSessions", "academicSession", row.term),
                "resultValueMin": 0, "resultValueMax": 100,
            }
            if modern:
                record["school"] = _ref(roster, "orgs", "org", row.school)
            if isinstance(row.scale, str):
                record["scoreScale"] = _ref(gradebook, "scoreScales", "scoreScale", row.scale)
            return hook.put_gradebook("lineItems", row.line_item_id, record)

        blocked = scale_of.isin(list(refused_scales)).to_numpy()
        sendable = line_items[~blocked].assign(scale=scale_of[~blocked])
        refused = [(row.line_item_id, *_passed_on("scoreScale", refused_scales[scale]))
                   for row, scale in zip(line_items[blocked].itertuples(), scale_of[blocked], strict=True)]
        answers = pool.map(put_line_item, sendable.itertuples())
        refused += [(row.line_item_id, *_passed_on("lineItem", answer))
                    for row, answer in zip(sendable.itertuples(), answers, strict=True) if not answer.taken]
        return pd.DataFrame(refused, columns=["line_item_id", "status", "message"])

    @staticmethod
    def _put_result(hook: OneRosterHook, row: dict) -> GradebookAnswer:
        """The plan sends no letter grade under OneRoster 1.1, whose results have no textScore."""
        import pandas as pd

        from include.staging import utc_now

        from include.grades.assignments import ASSIGNMENT_TASK

        base = hook.rostering_url
        record = {
            "sourcedId": row["result_id"], "status": "active", "dateLastModified": _stamp(),
            "lineItem": {"href": f"{hook.gradebook_url}/lineItems/{row['line_item_id']}",
                         "sourcedId": row["line_item_id"], "type": "lineItem"},
            "student": {"href": f"{base}/users/{row['student']}", "sourcedId": row["student"], "type": "user"},
            "scoreStatus": "fully graded", "scoreDate": utc_now().date().isoformat(),
        }
        if row["task_kind"] == ASSIGNMENT_TASK:  # points on the assignment's scale, or a status alone
            record["scoreStatus"] = row["status"]
            if pd.notna(row["points"]):
                record["score"] = float(row["points"])
            flags = row.get("flags")  # none in a plan staged before flags were sent
            if isinstance(flags, str) and flags:
                record.update(flag.split("=", 1) for flag in flags.split(";"))
            return hook.put_gradebook("results", row["result_id"], record)
        if pd.notna(row["percent"]):
            record["score"] = float(row["percent"])
        if isinstance(row["score"], str) and row["score"]:
            record["textScore"] = row["score"]
        return hook.put_gradebook("results", row["result_id"], record)

    def _remember_posted(self, context: Context, outcomes: pd.DataFrame) -> None:
        """What IC took, with its value, so the next run sends only grades that changed."""
        import pandas as pd

        from include.staging import read_frame, stage_frame

        path = self._state(context, "posted")
        posted = read_frame(path) if path.exists() else pd.DataFrame(columns=["result_id", "fingerprint"])
        taken = outcomes[outcomes["status"].isin(["created", "updated"])][["result_id", "fingerprint"]]
        merged = pd.concat([posted[~posted["result_id"].isin(set(taken["result_id"]))], taken], ignore_index=True)
        stage_frame(path, merged.sort_values("result_id", kind="stable").reset_index(drop=True))


class ReconcileGradesOperator(_GradesOperator):
    """Every input row ends posted / unchanged / skipped (why) / failed (IC's message); the
    counts add up to the input. Rows a person must act on (refused by IC, or kept aside until the
    export or IC is fixed) and an export without rows are emailed; the export is marked processed."""

    def __init__(self, *, export_task_id: str, plan_task_id: str, post_task_id: str, notifications: Notifications,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.export_task_id = export_task_id
        self.plan_task_id = plan_task_id
        self.post_task_id = post_task_id
        self.notifications = notifications

    def execute(self, context: Context) -> dict:
        from include.grades.processed import mark_processed
        from include.grades.reconciliation import MALFORMED, NOT_READ, format_reconciliation, reconcile
        from include.staging import atomic_file, read_frame, stage_frame

        skip_unless_running(context, "grades")
        ti = context["ti"]
        export = ti.xcom_pull(task_ids=self.export_task_id)
        from_file = export["dataset"] == "grade_export"  # else read from the LMS's API
        rows = read_frame(export["uri"])
        if export.get("assignments_uri"):  # an assignment score is a row of the reconciliation as well
            import pandas as pd

            columns = ["row", "section", "student"]
            rows = pd.concat([rows[columns].astype(object), read_frame(export["assignments_uri"], columns)],
                             ignore_index=True)
        result = reconcile(
            rows,
            read_frame(export["quarantine_uri"]),
            read_frame(ti.xcom_pull(task_ids=self.plan_task_id)["uri"]),
            read_frame(ti.xcom_pull(task_ids=self.post_task_id)["uri"]),
            kept_aside_as=MALFORMED if from_file else NOT_READ,
        )
        report = stage_frame(self._path(context, "reconciliation"), result.rows)
        csv_target = report.target.parent / "reconciliation.csv"
        with atomic_file(csv_target) as handle:
            result.rows.to_csv(handle, index=False)
        self.log.info("District %s, grade passback of %s:\n%s\nReport staged at %s", self.district,
                      export["source"]["name"], format_reconciliation(result), csv_target)
        failed = result.rows[result.rows["outcome"] == "failed"]
        to_fix = result.rows[needs_a_person(result.rows)]
        if (len(failed) or len(to_fix) or result.rows.empty) and self.notifications.emails:
            self._email_attention(context, export["source"]["name"], failed, to_fix, result.counts,
                                  str(csv_target), from_file)
        source = export["source"]
        if from_file:  # the sensor waits past it; an LMS's API is read anew every run
            mark_processed(self.staging_root, self.district, source, context["run_id"])
        return self._manifest(context, "grade_reconciliation", uri=str(report.target), csv_uri=str(csv_target),
                              row_count=report.row_count, content_sha256=report.sha256, counts=result.counts,
                              export=source["name"])

    def _email_attention(self, context: Context, export: str, failed: pd.DataFrame, to_fix: pd.DataFrame,
                         counts: dict, report: str, from_file: bool) -> None:
        """One email for what a person must look at: rows IC refused, rows kept aside that only a
        fix in the LMS export or in IC brings through, an export without a single grade row."""
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        from include.grades.reconciliation import without_students


        def listed(rows: pd.DataFrame) -> str:
            shown = rows.head(LISTED_ROWS)
            reasons = without_students(shown["reason"].fillna(""), shown["student"].fillna(""))
            items = "".join(f"<li>row {row.row}, section {escape(row.section) if _filled(row.section) else '(blank)'}: "
                            f"{escape(reason)}</li>" for row, reason in zip(shown.itertuples(), reasons, strict=True))
            left = len(rows) - LISTED_ROWS
            more = f"<li>... and {left} more (see the report)</li>" if left > 0 else ""
            return f"<ul>{items}{more}</ul>"

        about, body = [], []
        if len(failed):
            about.append(f"{len(failed)} grade row(s) not accepted by IC")
            body.append(f"<p>Rows IC refused (they are tried again next run once fixed):</p>{listed(failed)}")
        if len(to_fix):
            about.append(f"{len(to_fix)} grade row(s) to fix in the {'export' if from_file else 'LMS'} or IC")
            again = "the next export brings them again" if from_file else "the next run reads them again"
            body.append(f"<p>Rows kept aside (fix them in the LMS or IC; {again}):</p>{listed(to_fix)}")
        if not sum(counts.values()) and from_file:
            about.append("no grade rows in the export")
            body.append("<p>The export has a header line but no grade rows: check the LMS's auto-export job "
                        "(its filters and the sections it covers).</p>")
        elif not sum(counts.values()):
            about.append("no grade rows read from the LMS")
            body.append("<p>The LMS listed no student in any section provisioned into it: check that "
                        "provisioning ran this school year and that the LMS's courses have their students.</p>")
        SmtpNotifier(
            to=self.notifications.emails,
            subject=f"[oneroster {context['dag'].dag_id}] {' and '.join(about)} in run {context['run_id']}",
            html_content=(
                f"<p>District <b>{escape(self.district)}</b>, {'export' if from_file else 'grades'} <b>{escape(export)}</b>: "
                + ", ".join(f"{escape(outcome)} {count}" for outcome, count in sorted(counts.items()))
                + ".</p>" + "".join(body) + f"<p>Full report: {escape(report)}</p>"
            ),
            smtp_conn_id=self.notifications.smtp_conn_id,
        ).notify(context)


def _ref(base: str, collection: str, kind: str, sourced_id: str) -> dict:
    """A OneRoster GUIDRef to ``sourced_id`` of ``collection`` under ``base``."""
    return {"href": f"{base}/{collection}/{sourced_id}", "sourcedId": sourced_id, "type": kind}


def _passed_on(kind: str, answer: GradebookAnswer) -> tuple[str, str]:
    """The status and message a refused ``kind`` passes on to the records that need it: a grading
    window's as it is (a skip), any other naming what IC refused (a failure)."""
    from plugins.hooks.oneroster import WINDOW_CLOSED

    if answer.status == WINDOW_CLOSED:
        return answer.status, answer.message
    return answer.status, f"IC refused {kind} {answer.sourced_id}: {answer.message}"


def needs_a_person(rows: pd.DataFrame) -> pd.Series:
    """Skipped rows that stay skipped until someone fixes the export or IC: unreadable rows
    (an exact duplicate of another row is not one), what the LMS's API gave that is no grade row, unknown students, terms that map to nothing,
    scores outside the score group, letter-only grades under OneRoster 1.1. A closed window, an
    unmapped section or an opted-out teacher are the district's settings, not errors."""
    from include.grades.export import DUPLICATE
    from include.grades.plan import BAD_SCORE, LETTER_ONLY, UNKNOWN_STUDENT, UNMAPPED_TERM
    from include.grades.reconciliation import MALFORMED, NOT_READ

    reason = rows["reason"].fillna("").astype(str)
    malformed = (reason.str.startswith(MALFORMED) & ~reason.str.startswith(MALFORMED + DUPLICATE)
                 | reason.str.startswith(NOT_READ))
    held = reason.isin([UNKNOWN_STUDENT, UNMAPPED_TERM, BAD_SCORE, LETTER_ONLY])
    return (rows["outcome"] == "skipped") & (malformed | held)


def _filled(value) -> bool:
    """A report cell with text in it (a blank section reads back as None or NaN)."""
    return isinstance(value, str) and bool(value.strip())
