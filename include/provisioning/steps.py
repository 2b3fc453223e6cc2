"""The provisioning steps in dependency order, each a pure function of staged tables.

A step reads IC's extracts and the result tables of the steps before it in this run
(which carry LMS ids, or ``pending:`` ids in a dry run) and returns what its kind of LMS
object should look like. The operator around it diffs, applies and records; this module
keeps the order and the wiring in one readable place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING

from include.config import Provisioning
from include.lms.target import KINDS_HELD_BY, ObjectKind

if TYPE_CHECKING:  # the DAG file reads the steps' order; pandas and the plans are imported where a step runs
    import pandas as pd
    from airflow.sdk import ObjectStoragePath

    from include.provisioning import plan


@dataclass(frozen=True)
class RunScope:
    """What a step's plan depends on besides IC's data and the district file."""

    on: date  # the run's day: an enrollment's dates are read against it
    school_year: int  # the run's school year: only its terms get grading periods


@dataclass(frozen=True)
class Step:
    kind: ObjectKind
    task_id: str
    extracts: tuple[str, ...]  # OneRoster collections it reads
    needs: tuple[ObjectKind, ...]  # result tables of earlier steps it reads
    build: Callable[[Mapping[str, pd.DataFrame], Mapping[str, pd.DataFrame], Provisioning, RunScope], plan.Desired]
    columns: Mapping[str, list[str]] = field(default_factory=dict)  # per extract or result: the columns read
    categories: Mapping[str, list[str]] = field(default_factory=dict)  # ... and those read as categoricals
    # ("state": of the kind's state)
    arrow: tuple[str, ...] = ()  # extracts read as arrow arrays (``read_frame``'s ``arrow``), not converted

    def desired(self, extracts: Mapping[str, pd.DataFrame], results: Mapping[str, pd.DataFrame],
                provisioning: Provisioning, run: RunScope) -> plan.Desired:
        """What the step's kind should look like in the run's scope."""
        return self.build(extracts, results, provisioning, run)

    def read_extract(self, collection: str, uri: str | ObjectStoragePath) -> pd.DataFrame:
        from include.staging import read_frame

        return read_frame(uri, columns=self.columns.get(collection), arrow_lists=True,
                          categories=self.categories.get(collection), arrow=collection in self.arrow)

    def read_result(self, kind: ObjectKind, uri: str | ObjectStoragePath) -> pd.DataFrame:
        from include.staging import read_frame

        return read_frame(uri, columns=self.columns.get(kind))

    def read_state(self, uri: str | ObjectStoragePath) -> pd.DataFrame:
        from include.provisioning.diff import current_fingerprints
        from include.staging import read_frame

        return current_fingerprints(read_frame(uri, categories=self.categories.get("state")), self.kind)


def _lms_ids(result: pd.DataFrame) -> dict[str, str]:
    return dict(zip(result["key"], result["lms_id"], strict=True))


def _buildings(extracts, results, provisioning, run):
    from include.provisioning import plan

    return plan.desired_buildings(extracts["orgs"], provisioning)


def _grading_periods(extracts, results, provisioning, run):
    from include.provisioning import plan

    return plan.desired_grading_periods(extracts["academicSessions"], extracts["classes"], extracts["orgs"],
                                        provisioning, run.school_year)


def _school_buildings(results, provisioning) -> dict[str, str]:
    from include.provisioning import plan

    return plan.school_buildings(provisioning, _lms_ids(results["building"]))


def _users(extracts, results, provisioning, run):
    from include.provisioning import plan

    return plan.desired_users(extracts["users"], provisioning, _school_buildings(results, provisioning))


def _guardian_links(extracts, results, provisioning, run):
    from include.provisioning import plan

    return plan.desired_guardian_links(extracts["users"], results["user"])


def _courses(extracts, results, provisioning, run):
    from include.provisioning import plan

    return plan.desired_courses(extracts["courses"], _school_buildings(results, provisioning),
                                classes=extracts["classes"], orgs=extracts["orgs"],
                                to_create=plan.schools_to_create(provisioning))


def _sections(extracts, results, provisioning, run):
    from include.provisioning import plan

    courses = _lms_ids(results["course"]) if "course" in results else None  # None: the LMS holds no courses
    return plan.desired_sections(
        extracts["classes"], _school_buildings(results, provisioning), courses,
        plan.term_grading_periods(results["grading_period"]),
        to_create=plan.schools_to_create(provisioning),
        missing_periods=plan.why_no_period(extracts["academicSessions"], provisioning, run.school_year),
    )


def _enrollments(extracts, results, provisioning, run):
    from include.provisioning import plan

    return plan.desired_enrollments(extracts["enrollments"], extracts["users"], results["user"], results["section"],
                                    provisioning=provisioning, on=run.on)


TERM_PERIODS = "term_periods"  # state: every term's grading period (key, lms_id, title), read by the grades
SESSIONS = ["sourced_id", "status", "title", "type", "start_date", "end_date", "school_year"]
CLASSES = ["sourced_id", "status", "title", "class_code", "course_sourced_id", "school_sourced_id",
           "term_sourced_ids", "trial_schedule"]
USERS = ["sourced_id", "legacy_sourced_id", "status", "enabled_user", "username", "given_name", "family_name",
         "preferred_first_name", "email", "primary_role", "roles"]
ENROLLMENTS = ["sourced_id", "status", "user_sourced_id", "class_sourced_id", "school_sourced_id", "role",
               "begin_date", "end_date"]
LMS_IDS = ["key", "lms_id"]

STEPS: tuple[Step, ...] = (
    Step("building", "buildings", ("orgs",), (), _buildings),
    Step("grading_period", "grading_periods", ("academicSessions", "classes", "orgs"), (), _grading_periods,
         {"academicSessions": SESSIONS,
          "classes": ["status", "school_sourced_id", "term_sourced_ids", "trial_schedule"],
          "orgs": ["sourced_id", "type", "identifier"]}),
    Step("user", "users", ("users",), ("building",), _users, {"users": USERS, "building": LMS_IDS},
         {"state": ["school", "role_id", "building_id"]}),
    Step("guardian_link", "guardian_links", ("users",), ("user",), _guardian_links,
         {"users": ["sourced_id", "legacy_sourced_id", "primary_role", "agent_sourced_ids"],
          "user": ["key", "school"]},
         {"state": ["school"]}),
    Step("course", "courses", ("courses", "classes", "orgs"), ("building",), _courses,
         {"classes": ["status", "course_sourced_id", "school_sourced_id", "trial_schedule"],
          "orgs": ["sourced_id", "type"], "building": LMS_IDS}),
    Step("section", "sections", ("academicSessions", "classes"), ("building", "grading_period", "course"),
         _sections, {"academicSessions": SESSIONS, "classes": CLASSES, "building": LMS_IDS,
                     "grading_period": LMS_IDS, "course": LMS_IDS}),
    Step("enrollment", "enrollments", ("enrollments", "users"), ("user", "section"), _enrollments,
         {"enrollments": ENROLLMENTS, "users": ["sourced_id", "legacy_sourced_id"], "user": ["key"],
          "section": ["key", "lms_id", "course_key"]},
         {"enrollments": ENROLLMENTS[1:],
          "state": ["school", "course_key", "section_key", "section_id", "user_key"]},
         arrow=("enrollments",)),
)
STEP_BY_KIND: dict[ObjectKind, Step] = {step.kind: step for step in STEPS}
READ_BY_LATER_STEPS: frozenset[ObjectKind] = frozenset(kind for step in STEPS for kind in step.needs)


def steps_for(target: str) -> tuple[Step, ...]:
    """The steps of an LMS target, in order: those of the kinds it holds, each reading only the
    results of held kinds (Canvas holds no courses: its sections need none)."""
    held = KINDS_HELD_BY[target]
    return tuple(replace(step, needs=tuple(kind for kind in step.needs if kind in held))
                 for step in STEPS if step.kind in held)
