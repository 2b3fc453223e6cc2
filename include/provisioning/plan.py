"""What the LMS should hold, computed from IC's staged extracts and the district's maps.

Pure pandas over the normalised extract tables (``include/oneroster/models.py``): no
network, no Airflow. Each ``desired_*`` function returns a :class:`Desired` — one row
per LMS object that should exist, in the neutral fields of ``include/lms/target.py`` —
plus the IC records it left out and why. :mod:`include.provisioning.diff` then compares
that with what was provisioned before, so only changes are sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from include.config import DO_NOT_SYNC, ExistingBuilding, ExistingGradingPeriod, Provisioning
from include.lms.target import ITEM_TYPES, ObjectKind

PENDING = "pending:"  # LMS id of an object this run would create (a dry run never learns the real one)

ROLE_FAMILIES = {
    "student": "student",
    "teacher": "teacher",
    "aide": "teacher",
    "proctor": "teacher",
    "counselor": "teacher",
    "siteAdministrator": "administrator",
    "districtAdministrator": "administrator",
    "systemAdministrator": "administrator",
    "principal": "administrator",
    "administrator": "administrator",
    "guardian": "guardian",
    "parent": "guardian",
    "relative": "guardian",
}

UNMAPPED_SCHOOL = "unmapped school"
UNMAPPED_TERM = "unmapped term"
USERNAME_WITH_SPACES = "username with spaces"
DO_NOT_SYNC_ROLE = "do-not-sync role"
TRIAL_SCHEDULE = "trial schedule"
INACTIVE_IN_IC = "inactive in IC"
UNKNOWN_ROLE = "role not in the role map"
COURSE_NOT_PROVISIONED = "course not provisioned"
SECTION_NOT_PROVISIONED = "section not provisioned"
USER_NOT_PROVISIONED = "user not provisioned"
BUILDING_NOT_CREATED = "building not created yet"


@dataclass(frozen=True)
class Desired:
    """The LMS objects of one kind that should exist, and the IC records left out (key, school, reason)."""

    kind: ObjectKind
    rows: pd.DataFrame
    skipped: pd.DataFrame


def item_fields(kind: ObjectKind) -> list[str]:
    return list(ITEM_TYPES[kind].model_fields)


def _desired(kind: ObjectKind, rows: pd.DataFrame, skipped: list[pd.DataFrame]) -> Desired:
    columns = ["school", *item_fields(kind)]
    rows = rows[columns].drop_duplicates("key").sort_values("key", kind="stable").reset_index(drop=True)
    left_out = [frame for frame in skipped if not frame.empty]
    skipped_rows = (
        pd.concat(left_out, ignore_index=True)[["key", "school", "reason"]]
        if left_out
        else pd.DataFrame({"key": pd.Series(dtype=str), "school": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    )
    return Desired(kind, rows, skipped_rows.drop_duplicates("key").reset_index(drop=True))


def _skip(frame: pd.DataFrame, key: str, school: str, reason: str) -> pd.DataFrame:
    return pd.DataFrame({"key": frame[key].astype(str), "school": frame[school], "reason": reason})


# -- schools and terms ----------------------------------------------------------------------------


def school_key(school_id: str) -> str:
    return f"school-{school_id}"


def desired_buildings(orgs: pd.DataFrame, provisioning: Provisioning) -> Desired:
    """Schools mapped to ``create`` become buildings; those mapped to an existing building need none."""
    schools = orgs[orgs["type"] == "school"].copy()
    schools["key"] = schools["sourced_id"].map(school_key)
    schools["school"] = schools["sourced_id"]
    mapping = schools["sourced_id"].map(lambda school: provisioning.schools.get(school, "skip"))
    inactive = schools["status"] != "active"
    create = (mapping == "create") & ~inactive
    unmapped = mapping.map(lambda target: target == "skip") & ~inactive
    schools["title"] = schools["name"]
    schools["building_code"] = schools["identifier"].fillna(schools["sourced_id"])
    return _desired(
        "building",
        schools[create],
        [_skip(schools[unmapped], "key", "school", UNMAPPED_SCHOOL), _skip(schools[inactive], "key", "school", INACTIVE_IN_IC)],
    )


def school_buildings(provisioning: Provisioning, created: Mapping[str, str]) -> dict[str, str]:
    """IC school sourcedId -> LMS building id, for the schools that are provisioned.

    ``created`` maps building keys to the LMS ids of buildings this integration created
    (from the state, or ``PENDING`` ids in a dry run); a school mapped to ``create``
    whose building does not exist yet is left out.
    """
    buildings: dict[str, str] = {}
    for school, target in provisioning.schools.items():
        if isinstance(target, ExistingBuilding):
            buildings[school] = target.building_id
        elif target == "create" and created.get(school_key(school)):
            buildings[school] = created[school_key(school)]
    return buildings


def term_key(session_id: str) -> str:
    return f"term-{session_id}"


def year_key(school_year: int) -> str:
    return f"year-{school_year}"


def _term_targets(sessions: pd.DataFrame, provisioning: Provisioning) -> pd.Series:
    terms = provisioning.terms
    return sessions["sourced_id"].map(lambda session: terms.map.get(session, terms.unlisted))


def desired_grading_periods(sessions: pd.DataFrame, classes: pd.DataFrame, provisioning: Provisioning) -> Desired:
    """The terms classes are scheduled in, as LMS grading periods (or one per year when consolidated)."""
    used = set(classes.loc[classes["status"] == "active", "term_sourced_ids"].explode().dropna())
    terms = sessions[sessions["sourced_id"].isin(used) & (sessions["status"] == "active")].copy()
    terms["school"] = None
    if provisioning.terms.consolidate_year:
        years = sessions[sessions["status"] == "active"].groupby("school_year", as_index=False).agg(
            start=("start_date", "min"), end=("end_date", "max")
        )
        titles = sessions[sessions["type"] == "schoolYear"].set_index("school_year")["title"]
        years["key"] = years["school_year"].map(year_key)
        years["title"] = years["school_year"].map(lambda year: titles.get(year, f"School year {year}"))
        years["school"] = None
        return _desired("grading_period", years[years["school_year"].isin(terms["school_year"])], [])
    targets = _term_targets(terms, provisioning)
    terms["key"] = terms["sourced_id"].map(term_key)
    terms["start"] = terms["start_date"]
    terms["end"] = terms["end_date"]
    skipped = terms[targets.map(lambda target: target == "skip")]
    return _desired(
        "grading_period",
        terms[targets.map(lambda target: target == "create")],
        [_skip(skipped, "key", "school", UNMAPPED_TERM)],
    )


def term_grading_periods(
    sessions: pd.DataFrame, provisioning: Provisioning, created: Mapping[str, str]
) -> dict[str, str]:
    """IC academicSession sourcedId -> LMS grading period id, for mapped or created terms."""
    periods: dict[str, str] = {}
    for session, year, target in zip(
        sessions["sourced_id"], sessions["school_year"], _term_targets(sessions, provisioning), strict=True
    ):
        if provisioning.terms.consolidate_year:
            lms_id = created.get(year_key(year))
        elif isinstance(target, ExistingGradingPeriod):
            lms_id = target.grading_period_id
        else:
            lms_id = created.get(term_key(session)) if target == "create" else None
        if lms_id:
            periods[session] = lms_id
    return periods


# -- users ------------------------------------------------------------------------------------


def user_key(users: pd.DataFrame) -> pd.Series:
    """The LMS's external id for a person: IC's 1.1 id, the same whichever version served it."""
    return users["legacy_sourced_id"].fillna(users["sourced_id"]).astype(str)


def _user_roles(users: pd.DataFrame) -> pd.DataFrame:
    """One row per (user, org) the user has a role in, primary first."""
    roles = users[["sourced_id", "roles"]].explode("roles").dropna(subset=["roles"])
    return pd.DataFrame(
        {
            "sourced_id": roles["sourced_id"].to_numpy(),
            "org": [role["org_sourced_id"] for role in roles["roles"]],
            "primary": [role["role_type"] == "primary" for role in roles["roles"]],
        }
    ).sort_values(["sourced_id", "primary"], ascending=[True, False], kind="stable")


def desired_users(users: pd.DataFrame, provisioning: Provisioning, buildings: Mapping[str, str]) -> Desired:
    """Users with a mapped school and a synced role; guardians included (their links are separate)."""
    frame = users.copy()
    frame["key"] = user_key(frame)
    roles = _user_roles(frame)
    primary_org = roles.drop_duplicates("sourced_id").set_index("sourced_id")["org"]
    frame["school"] = frame["sourced_id"].map(primary_org)
    frame["family"] = frame["primary_role"].map(ROLE_FAMILIES)
    frame["building_id"] = frame["school"].map(buildings)

    def role_id(family: str | None, school: str | None) -> str | None:
        if family is None:
            return None
        return getattr(provisioning.roles.for_school(provisioning.roles_by_school.get(school)), family)

    pairs = frame[["family", "school"]].drop_duplicates()
    role_ids = {
        (family, school): role_id(family if isinstance(family, str) else None, school)
        for family, school in zip(pairs["family"], pairs["school"], strict=True)
    }
    frame["role_id"] = [role_ids[(family, school)] for family, school in zip(frame["family"], frame["school"], strict=True)]

    inactive = (frame["status"] != "active") | ~frame["enabled_user"].astype(bool)
    unmapped = ~inactive & frame["building_id"].isna()
    unknown_role = ~inactive & ~unmapped & frame["role_id"].isna()
    do_not_sync = ~inactive & ~unmapped & ~unknown_role & (frame["role_id"] == DO_NOT_SYNC)
    spaces = ~inactive & ~unmapped & ~unknown_role & ~do_not_sync & frame["username"].fillna("").str.contains(" ")
    keep = ~(inactive | unmapped | unknown_role | do_not_sync | spaces)

    kept = frame[keep].copy()
    additional = roles[roles.duplicated("sourced_id")].copy()  # every org after the primary one
    additional["building"] = additional["org"].map(buildings)
    additional = additional.dropna(subset=["building"])
    extra = additional.groupby("sourced_id")["building"].agg(lambda values: sorted(set(values)))
    kept["additional_building_ids"] = [
        [building for building in extra.get(sourced_id, []) if building != primary]
        for sourced_id, primary in zip(kept["sourced_id"], kept["building_id"], strict=True)
    ]
    kept = kept.astype({"preferred_first_name": object, "email": object, "username": object})
    kept = kept.where(kept.notna(), None)
    return _desired(
        "user",
        kept,
        [
            _skip(frame[inactive], "key", "school", INACTIVE_IN_IC),
            _skip(frame[unmapped], "key", "school", UNMAPPED_SCHOOL),
            _skip(frame[unknown_role], "key", "school", UNKNOWN_ROLE),
            _skip(frame[do_not_sync], "key", "school", DO_NOT_SYNC_ROLE),
            _skip(frame[spaces], "key", "school", USERNAME_WITH_SPACES),
        ],
    )


def desired_guardian_links(users: pd.DataFrame, provisioned_users: pd.DataFrame) -> Desired:
    """Parent–child links between guardians and students that are both provisioned."""
    keys = pd.Series(user_key(users).to_numpy(), index=users["sourced_id"])
    provisioned = set(provisioned_users["key"])
    guardians = users[users["primary_role"].map(ROLE_FAMILIES) == "guardian"][["sourced_id", "agent_sourced_ids"]]
    links = guardians.explode("agent_sourced_ids").dropna(subset=["agent_sourced_ids"])
    frame = pd.DataFrame(
        {
            "guardian_key": links["sourced_id"].map(keys).to_numpy(),
            "student_key": links["agent_sourced_ids"].map(keys).to_numpy(),
        }
    ).dropna()
    frame = frame[frame["guardian_key"].isin(provisioned) & frame["student_key"].isin(provisioned)].copy()
    frame["key"] = frame["guardian_key"] + ":" + frame["student_key"]
    schools = provisioned_users.set_index("key")["school"]
    frame["school"] = frame["student_key"].map(schools)
    return _desired("guardian_link", frame, [])


# -- courses, sections, enrollments ----------------------------------------------------------------


def desired_courses(courses: pd.DataFrame, buildings: Mapping[str, str]) -> Desired:
    frame = courses.copy()
    frame["key"] = frame["sourced_id"].astype(str)
    frame["school"] = frame["org_sourced_id"]
    frame["building_id"] = frame["school"].map(buildings)
    inactive = frame["status"] != "active"
    trial = ~inactive & frame["trial_schedule"].astype(bool)
    unmapped = ~inactive & ~trial & frame["building_id"].isna()
    keep = ~(inactive | trial | unmapped)
    return _desired(
        "course",
        frame[keep],
        [
            _skip(frame[inactive], "key", "school", INACTIVE_IN_IC),
            _skip(frame[trial], "key", "school", TRIAL_SCHEDULE),
            _skip(frame[unmapped], "key", "school", UNMAPPED_SCHOOL),
        ],
    )


def desired_sections(
    classes: pd.DataFrame,
    buildings: Mapping[str, str],
    course_ids: Mapping[str, str],
    grading_periods: Mapping[str, str],
) -> Desired:
    """Classes of provisioned courses with at least one mapped term; cross-listed classes stay
    separate sections (their group is kept in the plan for the report)."""
    frame = classes.copy()
    frame["key"] = frame["sourced_id"].astype(str)
    frame["school"] = frame["school_sourced_id"]
    frame["course_key"] = frame["course_sourced_id"].astype(str)
    frame["course_id"] = frame["course_key"].map(course_ids)
    frame["grading_period_ids"] = [
        sorted({grading_periods[term] for term in terms if term in grading_periods})
        for terms in frame["term_sourced_ids"]
    ]
    inactive = frame["status"] != "active"
    trial = ~inactive & frame["trial_schedule"].astype(bool)
    unmapped = ~inactive & ~trial & ~frame["school"].isin(list(buildings))
    no_course = ~inactive & ~trial & ~unmapped & frame["course_id"].isna()
    no_term = ~inactive & ~trial & ~unmapped & ~no_course & (frame["grading_period_ids"].map(len) == 0)
    keep = ~(inactive | trial | unmapped | no_course | no_term)
    frame["section_code"] = frame["class_code"].fillna(frame["key"])
    return _desired(
        "section",
        frame[keep],
        [
            _skip(frame[inactive], "key", "school", INACTIVE_IN_IC),
            _skip(frame[trial], "key", "school", TRIAL_SCHEDULE),
            _skip(frame[unmapped], "key", "school", UNMAPPED_SCHOOL),
            _skip(frame[no_course], "key", "school", COURSE_NOT_PROVISIONED),
            _skip(frame[no_term], "key", "school", UNMAPPED_TERM),
        ],
    )


def desired_enrollments(
    enrollments: pd.DataFrame, users: pd.DataFrame, provisioned_users: pd.DataFrame, sections: pd.DataFrame
) -> Desired:
    """Teachers (and administrators) as section admins, students as members, of provisioned sections.

    ``sections`` holds the provisioned sections with their LMS ids (key, course_key, lms_id).
    """
    keys = pd.Series(user_key(users).to_numpy(), index=users["sourced_id"])
    frame = enrollments.copy()
    frame["school"] = frame["school_sourced_id"]
    frame["user_key"] = frame["user_sourced_id"].map(keys)
    frame["section_key"] = frame["class_sourced_id"].astype(str)
    section_index = sections.set_index("key")
    frame["section_id"] = frame["section_key"].map(section_index["lms_id"])
    frame["course_key"] = frame["section_key"].map(section_index["course_key"])
    frame["key"] = frame["section_key"] + ":" + frame["user_key"].fillna("?")
    frame["admin"] = frame["role"].isin(["teacher", "administrator"])
    inactive = frame["status"] != "active"
    no_section = ~inactive & frame["section_id"].isna()
    no_user = ~inactive & ~no_section & ~frame["user_key"].isin(set(provisioned_users["key"]))
    keep = ~(inactive | no_section | no_user)
    return _desired(
        "enrollment",
        frame[keep],
        [
            _skip(frame[inactive], "sourced_id", "school", INACTIVE_IN_IC),
            _skip(frame[no_section], "sourced_id", "school", SECTION_NOT_PROVISIONED),
            _skip(frame[no_user], "sourced_id", "school", USER_NOT_PROVISIONED),
        ],
    )


def unknown_references(provisioning: Provisioning, kind: ObjectKind, catalog: Mapping[str, str]) -> list[str]:
    """The district file's references to LMS objects that the LMS does not have, as
    ``field.path: problem`` so the error names the field and the value."""
    problems = []
    if kind == "building":
        for school, target in provisioning.schools.items():
            if isinstance(target, ExistingBuilding) and target.building_id not in catalog:
                problems.append(f"provisioning.schools.{school}.building_id: the LMS has no building {target.building_id!r}")
    elif kind == "grading_period":
        for session, target in provisioning.terms.map.items():
            if isinstance(target, ExistingGradingPeriod) and target.grading_period_id not in catalog:
                problems.append(
                    f"provisioning.terms.map.{session}.grading_period_id: "
                    f"the LMS has no grading period {target.grading_period_id!r}"
                )
    elif kind == "user":
        maps = [("provisioning.roles", provisioning.roles.model_dump())] + [
            (f"provisioning.roles_by_school.{school}", overrides.model_dump(exclude_none=True))
            for school, overrides in provisioning.roles_by_school.items()
        ]
        for where, roles in maps:
            for family, role_id in roles.items():
                if role_id != DO_NOT_SYNC and role_id not in catalog:
                    problems.append(f"{where}.{family}: the LMS has no role {role_id!r}")
    return problems
