"""What the LMS should hold, computed from IC's staged extracts and the district's maps.

Pure pandas over the normalised extract tables (``include/oneroster/models.py``): no
network, no Airflow. Each ``desired_*`` function returns a :class:`Desired` — one row
per LMS object that should exist, in the neutral fields of ``include/lms/target.py`` —
plus the IC records it left out and why. :mod:`include.provisioning.diff` then compares
that with what was provisioned before, so only changes are sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.config import DO_NOT_SYNC, ENROLLMENT_ROLES, ExistingBuilding, ExistingGradingPeriod, Provisioning
from include.frames import (
    SLICE,
    as_categorical,
    as_series,
    as_str,
    categorical,
    flatten,
    isin,
    lookup,
    per_row,
    positions,
    sorted_by_key,
    struct_field,
    subset,
    text_array,
)
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
NO_TERM_IN_IC = "no term in IC"
USERNAME_WITH_SPACES = "username with spaces"
DO_NOT_SYNC_ROLE = "do-not-sync role"
TRIAL_SCHEDULE = "trial schedule"
INACTIVE_IN_IC = "inactive in IC"
UNKNOWN_ROLE = "role not in the role map"
COURSE_NOT_PROVISIONED = "course not provisioned"
SECTION_NOT_PROVISIONED = "section not provisioned"
USER_NOT_PROVISIONED = "user not provisioned"
BUILDING_NOT_CREATED = "building not created yet"
GRADING_PERIOD_NOT_CREATED = "grading period not created yet"
OTHER_SCHOOL_YEAR = "term of another school year"
NO_CURRENT_TERM = "no active term of the run's school year"
NO_CLASS_IN_A_SCHOOL = "district course with no class in a school"
ENROLLMENT_ROLE_SKIPPED = "enrollment role set to skip"
DUPLICATE_ENROLLMENT = "duplicate of another enrollment of the same user and class"
ENDED = "ended on"  # + the enrollment's endDate
BEGINS = "begins on"  # + the enrollment's beginDate (enrollment_dates.future: hold)

@dataclass(frozen=True)
class Desired:
    """The LMS objects of one kind that should exist, and the IC records left out (key, school, reason)."""

    kind: ObjectKind
    rows: pd.DataFrame
    skipped: pd.DataFrame
    # grading periods only: the term each IC term of the run's year is in (term, period_key | lms_id)
    terms: pd.DataFrame | None = None


def item_fields(kind: ObjectKind) -> list[str]:
    return list(ITEM_TYPES[kind].model_fields)


def _desired(kind: ObjectKind, rows: pd.DataFrame, skipped: list[pd.DataFrame],
             terms: pd.DataFrame | None = None) -> Desired:
    columns = ["school", *item_fields(kind)]
    rows = sorted_by_key(rows[columns], distinct=True).reset_index(drop=True)
    left_out = [frame for frame in skipped if not frame.empty]
    skipped_rows = (
        pd.concat(left_out, ignore_index=True)[["key", "school", "reason"]]
        if left_out
        else pd.DataFrame({"key": pd.Series(dtype=str), "school": pd.Series(dtype=str), "reason": pd.Series(dtype=str)})
    )
    return Desired(kind, rows, skipped_rows.drop_duplicates("key").reset_index(drop=True), terms)


def _skip(frame: pd.DataFrame, key: str, school: str, reason: str | pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"key": frame[key].astype(str), "school": frame[school], "reason": reason})


def _no_building(schools: pd.Series, to_create: Iterable[str]) -> pd.Series:
    """Why a school's records have no building: the map says ``create`` and the building is not in
    the LMS (refused, or not created yet), else the school is not mapped."""
    created = isin(schools.astype(object).fillna(""), pd.Series(sorted(to_create), dtype=object))
    return pd.Series(np.where(created.to_numpy(), BUILDING_NOT_CREATED, UNMAPPED_SCHOOL), index=schools.index,
                     dtype=object)


def schools_to_create(provisioning: Provisioning) -> list[str]:
    """The IC schools the district file maps to ``create``."""
    return sorted(school for school, target in provisioning.schools.items() if target == "create")


def _grouped_lists(parents: np.ndarray, items: pd.Series, count: int) -> pd.arrays.ArrowExtensionArray:
    """One list per row (``count`` rows) of the sorted distinct items whose parent it is, assembled
    by arrow from offsets and kept in arrow: a million users' lists are not a million Python lists."""
    frame = pd.DataFrame({"parent": parents, "item": items.to_numpy(dtype=object)}).dropna()
    frame = frame.drop_duplicates().sort_values(["parent", "item"], kind="stable")
    sizes = np.bincount(frame["parent"].to_numpy(dtype=np.int64), minlength=count)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]), pa.int64())
    values = pa.array(frame["item"].to_numpy(dtype=object), pa.large_string())
    return pd.arrays.ArrowExtensionArray(pa.LargeListArray.from_arrays(offsets, values))


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
    schools["building_code"] = schools["sourced_id"].astype(str).map(school_codes(orgs))
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


def alike_key(school_year: int, title: str, start: object, end: object) -> str:
    """The key of the one grading period alike terms share (``terms.share_alike``)."""
    return f"terms-{school_year}-{start}-{end}-{title}"


def _term_targets(sessions: pd.DataFrame, provisioning: Provisioning) -> pd.Series:
    terms = provisioning.terms
    return sessions["sourced_id"].map(lambda session: terms.map.get(session, terms.unlisted))


def school_codes(orgs: pd.DataFrame) -> pd.Series:
    """IC school sourcedId -> the code that names it in the LMS (its building code): IC's
    ``identifier``, or its sourcedId where the identifier is missing or blank (the LMS refuses "")."""
    schools = orgs[orgs["type"] == "school"]
    identifier = schools["identifier"].astype(object).fillna("").astype(str).str.strip()
    codes = identifier.where(identifier != "", schools["sourced_id"].astype(str))
    return pd.Series(codes.to_numpy(dtype=object), index=schools["sourced_id"].astype(str).to_numpy())


def provisioned_class_terms(classes: pd.DataFrame, provisioning: Provisioning) -> pd.DataFrame:
    """(term, school) for every term of a class that will be provisioned: active, not a trial
    schedule, in a school the map provisions. Only these terms need grading periods."""
    mapped = [school for school, target in provisioning.schools.items() if target != "skip"]
    trial = classes["trial_schedule"].fillna(False).astype(bool) if "trial_schedule" in classes else False
    kept = classes[((classes["status"] == "active") & ~trial
                    & isin(classes["school_sourced_id"].astype(object), mapped)).to_numpy()]
    parents, terms = flatten(kept["term_sourced_ids"])
    schools = kept["school_sourced_id"].astype(object).to_numpy()[parents]
    return pd.DataFrame({"term": as_series(terms).astype(object).to_numpy(), "school": schools}).drop_duplicates()


def _titled(periods: pd.DataFrame, template: str) -> pd.Series:
    """Each created period's title from the template (``school``: the one school's code, else
    nothing and the spaces closed up), made unique among them: the days are added to titles still
    alike, then the key, so the LMS never refuses one as a duplicate."""
    titles = pd.Series([" ".join(template.format(title=row.ic_title, school=row.code or "", school_year=row.school_year,
                                                 start=row.start, end=row.end).split())
                        for row in periods.itertuples()], index=periods.index, dtype=object)
    alike = titles.duplicated(keep=False)
    titles[alike] = titles[alike] + " (" + periods.loc[alike, "start"].astype(str) + " – " + (
        periods.loc[alike, "end"].astype(str) + ")")
    alike = titles.duplicated(keep=False)
    titles[alike] = titles[alike] + " [" + periods.loc[alike, "key"].astype(str) + "]"
    return titles


def desired_grading_periods(sessions: pd.DataFrame, classes: pd.DataFrame, orgs: pd.DataFrame,
                            provisioning: Provisioning, school_year: int) -> Desired:
    """The run's school year's terms that provisioned classes use, as LMS grading periods: one per
    IC term (``term-<sourcedId>``), one per alike group with ``share_alike``, or one for the year
    with ``consolidate_year``. ``terms`` says which period each term is in (``period_key``, or the
    ``lms_id`` of an existing period the map names) for the steps after this one and the grades."""
    used = provisioned_class_terms(classes, provisioning)
    only_school = used.groupby("term")["school"].agg(lambda values: values.iloc[0] if values.nunique() == 1 else None)
    known = sessions[isin(sessions["sourced_id"].astype(object), list(only_school.index)).to_numpy()].copy()
    known["key"] = known["sourced_id"].map(term_key)
    known["school"] = known["sourced_id"].map(only_school)
    active = known["status"] == "active"
    this_year = active & (known["school_year"].astype(int) == int(school_year))
    skipped = [_skip(known[~active], "key", "school", INACTIVE_IN_IC),
               _skip(known[active & ~this_year], "key", "school", OTHER_SCHOOL_YEAR)]
    terms = known[this_year].copy()
    terms["ic_title"] = terms["title"]
    terms["start"] = terms["start_date"]
    terms["end"] = terms["end_date"]
    if provisioning.terms.consolidate_year:
        year_titles = sessions.loc[(sessions["type"] == "schoolYear")
                                   & (sessions["school_year"].astype(int) == int(school_year)), "title"]
        periods = pd.DataFrame({
            "key": [year_key(school_year)], "school": [None],
            "title": [year_titles.iloc[0] if len(year_titles) else f"School year {school_year}"],
            "start": [terms["start"].min()], "end": [terms["end"].max()],
        }) if len(terms) else pd.DataFrame(columns=["key", "school", "title", "start", "end"])
        in_period = pd.DataFrame({"term": terms["sourced_id"].to_numpy(dtype=object), "period_key": year_key(school_year),
                                  "lms_id": None})
        return _desired("grading_period", periods, skipped, terms=in_period)
    targets = _term_targets(terms, provisioning)
    create = targets.map(lambda target: target == "create").to_numpy(dtype=bool)
    existing = targets.map(lambda target: isinstance(target, ExistingGradingPeriod)).to_numpy(dtype=bool)
    skipped.append(_skip(terms[~create & ~existing], "key", "school", UNMAPPED_TERM))
    created = terms[create].copy()
    if provisioning.terms.share_alike:
        created["key"] = [alike_key(school_year, title, start, end) for title, start, end in
                          zip(created["ic_title"], created["start"], created["end"], strict=True)]
        created["school"] = created["key"].map(created.groupby("key")["school"].agg(
            lambda values: values.iloc[0] if values.nunique(dropna=False) == 1 else None))
    created["school_year"] = school_year
    created["code"] = created["school"].map(school_codes(orgs)).astype(object)
    created["code"] = created["code"].where(created["code"].notna(), None)
    periods = created.drop_duplicates("key").copy()
    periods["title"] = _titled(periods, provisioning.terms.title_template)
    in_period = pd.concat([
        pd.DataFrame({"term": created["sourced_id"].to_numpy(dtype=object),
                      "period_key": created["key"].to_numpy(dtype=object), "lms_id": None}),
        pd.DataFrame({"term": terms.loc[existing, "sourced_id"].to_numpy(dtype=object), "period_key": None,
                      "lms_id": [target.grading_period_id for target in targets[existing]]}),
    ], ignore_index=True)
    return _desired("grading_period", periods, skipped, terms=in_period)


def with_term_rows(periods: pd.DataFrame, terms: pd.DataFrame | None, titles: Mapping[str, str]) -> pd.DataFrame:
    """The grading periods' result table plus a ``term-<sourcedId>`` row for every term in a period
    not keyed by that term (an alike group's, the year's, or an existing one the map names, titled
    as the LMS titles it: ``titles``), so the sections and the grade plan find any term's period
    one way. A term whose period the LMS does not hold (refused) gets no row."""
    if terms is None or terms.empty:
        return periods
    own = set(periods["key"].astype(str))
    terms = terms[~terms["term"].map(term_key).isin(own)]
    by_key = periods.drop_duplicates("key").set_index(periods["key"].drop_duplicates().astype(str))
    created = terms["period_key"].notna()
    lms_id = terms["lms_id"].where(~created, terms["period_key"].map(by_key["lms_id"]))
    title = terms["lms_id"].map(titles).where(~created, terms["period_key"].map(by_key["title"]))
    rows = pd.DataFrame({"key": terms["term"].map(term_key), "lms_id": lms_id, "title": title})
    rows = rows[rows["lms_id"].notna()]
    return pd.concat([periods, rows], ignore_index=True).sort_values("key", kind="stable").reset_index(drop=True)


def term_grading_periods(periods: pd.DataFrame) -> dict[str, str]:
    """IC academicSession sourcedId -> LMS grading period id, from the grading periods' result table
    (see :func:`with_term_rows`): every term of the run's year whose period the LMS holds."""
    prefix = term_key("")
    keys = periods["key"].astype(str)
    is_term = keys.str.startswith(prefix) & periods["lms_id"].notna()
    return dict(zip(keys[is_term].str.removeprefix(prefix), periods.loc[is_term, "lms_id"].astype(str), strict=True))


# -- users ------------------------------------------------------------------------------------


def user_key(users: pd.DataFrame) -> pd.Series:
    """The LMS's external id for a person: IC's 1.1 id, the same whichever version served it."""
    return users["legacy_sourced_id"].fillna(users["sourced_id"]).astype(str)


def _user_roles(users: pd.DataFrame, codes: np.ndarray) -> pd.DataFrame:
    """One row per (user, org) the user has a role in, primary first; ``user`` is the user's row,
    ``code`` its ``codes`` (the user's number, the same for rows of one sourcedId)."""
    parents, roles = flatten(users["roles"])
    frame = pd.DataFrame(
        {
            "user": parents,
            "code": codes[parents],
            "org": as_series(struct_field(roles, "org_sourced_id")).array,
            "primary": (as_series(struct_field(roles, "role_type")) == "primary").to_numpy(dtype=bool),
        }
    )
    return frame.iloc[np.lexsort((~frame["primary"].to_numpy(), frame["code"].to_numpy()))]


def _role_ids(frame: pd.DataFrame, provisioning: Provisioning) -> pd.Series:
    """The LMS role id of each user's (role family, school), worked out once per distinct pair."""
    pairs = frame[["family", "school"]]
    codes = pairs.groupby(["family", "school"], dropna=False, sort=False).ngroup().to_numpy()
    first = pairs[~pairs.duplicated()]
    ids = [
        getattr(provisioning.roles.for_school(provisioning.roles_by_school.get(school)), family)
        if isinstance(family, str) else None
        for family, school in zip(first["family"], first["school"], strict=True)
    ]
    return pd.Series(pd.array(ids, dtype=object)[codes] if len(ids) else [], index=frame.index, dtype=object)


def desired_users(users: pd.DataFrame, provisioning: Provisioning, buildings: Mapping[str, str]) -> Desired:
    """Users with a mapped school and a synced role; guardians included (their links are separate)."""
    building_ids = pd.Series(list(buildings.values()), index=list(buildings), dtype=object)
    frame = pd.DataFrame(
        {
            "key": user_key(users),
            "sourced_id": users["sourced_id"],
            "status": users["status"],
            "enabled_user": users["enabled_user"],
            "given_name": users["given_name"],
            "family_name": users["family_name"],
            "preferred_first_name": users["preferred_first_name"],
            "email": users["email"],
            "username": users["username"].str.strip(),  # IC keeps what was typed: " jdoe" is jdoe
        }
    ).reset_index(drop=True)
    codes = pd.factorize(frame["sourced_id"])[0]
    roles = _user_roles(users, codes)
    first = ~roles.duplicated("code")
    by_code = pd.Series(roles.loc[first, "org"].array, index=roles.loc[first, "code"].to_numpy())
    frame["school"] = by_code.reindex(codes).array
    frame["family"] = lookup(users["primary_role"], pd.Series(list(ROLE_FAMILIES)),
                             pd.Series(list(ROLE_FAMILIES.values()), dtype=object)).to_numpy()
    frame["building_id"] = lookup(frame["school"], building_ids.index.to_series(), building_ids)
    frame["role_id"] = _role_ids(frame, provisioning)

    inactive = (frame["status"] != "active") | ~frame["enabled_user"].astype(bool)
    unmapped = ~inactive & frame["building_id"].isna()
    unknown_role = ~inactive & ~unmapped & frame["role_id"].isna()
    do_not_sync = ~inactive & ~unmapped & ~unknown_role & (frame["role_id"] == DO_NOT_SYNC)
    spaces = ~inactive & ~unmapped & ~unknown_role & ~do_not_sync & frame["username"].fillna("").str.contains(" ")
    keep = ~(inactive | unmapped | unknown_role | do_not_sync | spaces)

    kept = frame[keep].copy()
    additional = roles[~first]  # every org after the primary one
    building = lookup(additional["org"], building_ids.index.to_series(), building_ids)
    row_of_code = pd.Series(np.arange(len(kept)), index=codes[keep.to_numpy()])
    row_of_code = row_of_code[~row_of_code.index.duplicated()]
    row = row_of_code.reindex(additional["code"].to_numpy()).to_numpy()
    primary = kept["building_id"].array
    listed = ~np.isnan(row) & building.notna().to_numpy()
    row = row[listed].astype(np.int64)
    building = building[listed].to_numpy(dtype=object)
    other = building != np.asarray(primary.take(row), dtype=object)
    kept["additional_building_ids"] = _grouped_lists(row[other], pd.Series(building[other]), len(kept))
    return _desired(
        "user",
        kept,
        [
            _skip(frame[inactive], "key", "school", INACTIVE_IN_IC),
            _skip(frame[unmapped], "key", "school", _no_building(frame.loc[unmapped, "school"],
                                                                 schools_to_create(provisioning))),
            _skip(frame[unknown_role], "key", "school", UNKNOWN_ROLE),
            _skip(frame[do_not_sync], "key", "school", DO_NOT_SYNC_ROLE),
            _skip(frame[spaces], "key", "school", USERNAME_WITH_SPACES),
        ],
    )


def desired_guardian_links(users: pd.DataFrame, provisioned_users: pd.DataFrame) -> Desired:
    """Parent–child links between guardians and students that are both provisioned; a link
    whose guardian or student is not is listed as skipped, so every link is accounted for."""
    keys = user_key(users)
    guardians = users[lookup(users["primary_role"], pd.Series(list(ROLE_FAMILIES)),
                             pd.Series(list(ROLE_FAMILIES.values()), dtype=object)) == "guardian"]
    parents, students = flatten(guardians["agent_sourced_ids"])
    frame = pd.DataFrame(
        {
            "guardian_key": keys.loc[guardians.index].to_numpy()[parents],
            "student_key": lookup(as_series(students), users["sourced_id"], keys).to_numpy(),
        }
    ).dropna()
    provisioned = provisioned_users["key"]
    frame["key"] = frame["guardian_key"] + ":" + frame["student_key"]
    both = isin(frame["guardian_key"], provisioned) & isin(frame["student_key"], provisioned)
    unlinked = frame[~both].assign(school=None)
    frame = frame[both].copy()
    frame["school"] = lookup(frame["student_key"], provisioned, provisioned_users["school"])
    return _desired("guardian_link", frame, [_skip(unlinked, "key", "school", USER_NOT_PROVISIONED)])


# -- courses, sections, enrollments ----------------------------------------------------------------


def placed_course_key(course_id: str, school_id: str) -> str:
    """The LMS course (Schoology: course_code) of a course owned by the district org, in one school's building."""
    return f"{course_id}@{school_id}"


def desired_courses(
    courses: pd.DataFrame,
    buildings: Mapping[str, str],
    *,
    classes: pd.DataFrame | None = None,
    orgs: pd.DataFrame | None = None,
    to_create: Iterable[str] = (),
) -> Desired:
    """Courses in the building of their school. A course whose org is not a school (OneRoster 1.2
    lets the district own it) is placed where its classes are taught: one LMS course per school
    of its active classes that has a building, keyed ``<course>@<school>``, so each school's
    sections hang off a course in their own building and the key stays the same night after night.

    ``classes`` and ``orgs`` (IC's extracts) are needed to place district-owned courses;
    ``to_create``: the schools the district file maps to ``create`` (see :func:`_no_building`)."""
    frame = courses.copy()
    frame["key"] = frame["sourced_id"].astype(str)
    frame["school"] = frame["org_sourced_id"]
    frame["building_id"] = frame["school"].map(buildings)
    inactive = frame["status"] != "active"
    trial = ~inactive & frame["trial_schedule"].astype(bool)
    owners = orgs.loc[orgs["type"] != "school", "sourced_id"] if orgs is not None else pd.Series([], dtype=object)
    district = ~inactive & ~trial & isin(frame["school"].astype(object).fillna(""), owners.astype(object))
    unmapped = ~inactive & ~trial & ~district & frame["building_id"].isna()
    keep = ~(inactive | trial | unmapped | district)
    placed, unplaced = _placed_courses(frame[district], classes, buildings)
    return _desired(
        "course",
        pd.concat([frame[keep], placed], ignore_index=True) if len(placed) else frame[keep],
        [
            _skip(frame[inactive], "key", "school", INACTIVE_IN_IC),
            _skip(frame[trial], "key", "school", TRIAL_SCHEDULE),
            _skip(frame[unmapped], "key", "school", _no_building(frame.loc[unmapped, "school"], to_create)),
            _skip(unplaced, "key", "school", _no_building(unplaced["used_in"], to_create)
                  .where(unplaced["used_in"].notna(), NO_CLASS_IN_A_SCHOOL)),
        ],
    )


def _placed_courses(
    owned: pd.DataFrame, classes: pd.DataFrame | None, buildings: Mapping[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """District-owned courses as one row per school of their active, non-trial classes that has a
    building; and those placed nowhere, with ``used_in`` a school their classes are in (none: no class)."""
    if classes is None or owned.empty:
        return owned.iloc[0:0].assign(used_in=None), owned.assign(used_in=None)
    active = classes[(classes["status"] == "active") & ~classes["trial_schedule"].astype(bool)]
    uses = pd.DataFrame({"course": active["course_sourced_id"].astype(str).to_numpy(),
                         "used_in": active["school_sourced_id"].astype(object).to_numpy()})
    uses = uses[isin(uses["course"], owned["key"])].drop_duplicates().sort_values(["course", "used_in"])
    uses["building_id"] = uses["used_in"].map(buildings)
    housed = uses[uses["building_id"].notna()]
    placed = owned.drop(columns=["building_id"]).merge(housed, left_on="key", right_on="course")
    placed["key"] = [placed_course_key(course, school) for course, school in zip(placed["course"], placed["used_in"],
                                                                                  strict=True)]
    placed["school"] = placed["used_in"]
    first_use = uses.drop_duplicates("course").set_index("course")["used_in"]
    unplaced = owned[~isin(owned["key"], housed["course"])].copy()
    unplaced["used_in"] = unplaced["key"].map(first_use)
    return placed, unplaced


def why_no_period(sessions: pd.DataFrame, provisioning: Provisioning, school_year: int) -> dict[str, str]:
    """Why a class's term would have no grading period: the map skips it (``unmapped term``); it
    is inactive or of another school year (``NO_CURRENT_TERM``); or the map provisions it and the
    period is not in the LMS (``GRADING_PERIOD_NOT_CREATED``: refused or not created, a skip that
    needs a person). A term IC does not serve is not current either."""
    targets = _term_targets(sessions, provisioning)
    current = ((sessions["status"] == "active") & (sessions["school_year"].astype(int) == int(school_year))).to_numpy()
    skipped = targets.map(lambda target: target == "skip").to_numpy(dtype=bool)
    reasons = np.where(skipped, UNMAPPED_TERM, np.where(current, GRADING_PERIOD_NOT_CREATED, NO_CURRENT_TERM))
    return dict(zip(sessions["sourced_id"].astype(str), reasons.tolist(), strict=True))


def _no_period(parents: np.ndarray, terms: pa.Array, rows: pd.Series, missing: Mapping[str, str]) -> list[str]:
    """The reason each of ``rows`` (classes with no term in a period) is skipped, from its terms'."""
    why = pd.DataFrame({"row": parents, "reason": as_series(terms).astype(object).map(missing).fillna(NO_CURRENT_TERM)})
    why = why[rows.to_numpy()[parents]]
    per_row = why.groupby("row")["reason"].agg(set)
    chosen = per_row.map(lambda reasons: GRADING_PERIOD_NOT_CREATED if GRADING_PERIOD_NOT_CREATED in reasons
                         else UNMAPPED_TERM if reasons == {UNMAPPED_TERM} else NO_CURRENT_TERM)
    return chosen.reindex(np.flatnonzero(rows.to_numpy())).tolist()


def desired_sections(
    classes: pd.DataFrame,
    buildings: Mapping[str, str],
    course_ids: Mapping[str, str] | None,
    grading_periods: Mapping[str, str],
    *,
    to_create: Iterable[str] = (),
    missing_periods: Mapping[str, str] | None = None,
) -> Desired:
    """Classes of provisioned courses with at least one term in a grading period; cross-listed
    classes stay separate sections (their group is kept in the plan for the report). A class
    with none is skipped for the reason its terms give (``missing_periods``, see
    :func:`why_no_period`): a term the map provisions outweighs one it skips. ``course_ids`` is
    None for an LMS that holds no courses: a class needs no course there (``course_id`` empty)."""
    frame = classes.copy()
    frame["key"] = frame["sourced_id"].astype(str)
    frame["school"] = frame["school_sourced_id"]
    frame["course_key"] = frame["course_sourced_id"].astype(str)
    frame["building_id"] = lookup(frame["school"].astype(object).fillna("").astype(str),
                                  pd.Series(list(buildings), dtype=object),
                                  pd.Series(list(buildings.values()), dtype=object))
    if course_ids is None:
        frame["course_id"] = ""
    else:
        course_keys = pd.Series(list(course_ids), dtype=object)
        course_lms_ids = pd.Series(list(course_ids.values()), dtype=object)
        frame["course_id"] = lookup(frame["course_key"], course_keys, course_lms_ids)
        if frame["course_id"].isna().any():  # a district-owned course: its LMS course in this class's school
            placed = frame["course_key"] + "@" + frame["school"].astype(object).fillna("").astype(str)
            placed_id = lookup(placed, course_keys, course_lms_ids)
            in_school = frame["course_id"].isna() & placed_id.notna()
            frame["course_key"] = frame["course_key"].where(~in_school, placed)
            frame["course_id"] = frame["course_id"].where(~in_school, placed_id)
    parents, terms = flatten(frame["term_sourced_ids"])
    periods = lookup(as_series(terms), pd.Series(list(grading_periods), dtype=object),
                     pd.Series(list(grading_periods.values()), dtype=object))
    frame["grading_period_ids"] = _grouped_lists(parents, periods, len(frame))
    inactive = frame["status"] != "active"
    trial = ~inactive & frame["trial_schedule"].astype(bool)
    unmapped = ~inactive & ~trial & ~frame["school"].isin(list(buildings))
    no_course = ~inactive & ~trial & ~unmapped & frame["course_id"].isna()
    no_periods = np.bincount(parents[periods.notna().to_numpy()], minlength=len(frame)) == 0
    termless = np.bincount(parents, minlength=len(frame)) == 0
    no_term_in_ic = ~inactive & ~trial & ~unmapped & ~no_course & termless
    no_term = ~inactive & ~trial & ~unmapped & ~no_course & no_periods & ~termless
    keep = ~(inactive | trial | unmapped | no_course | no_term | no_term_in_ic)
    frame["section_code"] = frame["class_code"].fillna(frame["key"])
    return _desired(
        "section",
        frame[keep],
        [
            _skip(frame[inactive], "key", "school", INACTIVE_IN_IC),
            _skip(frame[trial], "key", "school", TRIAL_SCHEDULE),
            _skip(frame[unmapped], "key", "school", _no_building(frame.loc[unmapped, "school"], to_create)),
            _skip(frame[no_course], "key", "school", COURSE_NOT_PROVISIONED),
            _skip(frame[no_term], "key", "school", _no_period(parents, terms, no_term, missing_periods or {})),
            _skip(frame[no_term_in_ic], "key", "school", NO_TERM_IN_IC),
        ],
    )


def desired_enrollments(
    enrollments: pd.DataFrame,
    users: pd.DataFrame,
    provisioned_users: pd.DataFrame,
    sections: pd.DataFrame,
    *,
    provisioning: Provisioning | None = None,
    on: date | None = None,
) -> Desired:
    """Enrollments of provisioned users in provisioned sections, as section admins or members by
    the district file's ``enrollment_roles`` (default: teachers, aides, proctors and administrators
    admins, students members, the rest skipped); on the run's date ``on`` (none: dates not read)
    one that ended is left out, one that begins later is held if ``enrollment_dates.future`` says
    so. One user in one class twice (two IC records) is one enrollment: an admin one before a
    member one, then the lowest sourcedId; the others are skipped as duplicates.

    ``sections`` holds the provisioned sections with their LMS ids (key, course_key, lms_id).
    Millions of rows: sections and users are matched as integer codes, and the kept rows are
    built once, in key order, from the codes: categoricals (one copy of each id) around the
    joined key, made by arrow.
    """
    section_codes, section_keys = pd.factorize(sections["key"])
    section_at = positions(as_str(enrollments["class_sourced_id"]), sections["key"])
    user_codes, user_keys = pd.factorize(user_key(users))
    user_code = per_row(user_codes, positions(enrollments["user_sourced_id"], users["sourced_id"]), -1)
    provisioned = isin(pd.Series(user_keys), provisioned_users["key"]).to_numpy()

    roles = provisioning.enrollment_roles if provisioning is not None else ENROLLMENT_ROLES
    # each row's role as its place in the map: a number per row, never a string per row (eight
    # million of those were half a gigabyte)
    role_at = positions(enrollments["role"], pd.Series(list(roles), dtype=object))
    admin = per_row(np.array([place == "admin" for place in roles.values()], dtype=bool), role_at, False)
    member = per_row(np.array([place == "member" for place in roles.values()], dtype=bool), role_at, False)
    del role_at
    future = provisioning.enrollment_dates.future if provisioning is not None else "enrol"
    inactive = ~isin(enrollments["status"], ["active"]).to_numpy()
    no_section = ~inactive & (section_at < 0)
    no_user = ~inactive & ~no_section & ~per_row(provisioned, user_code, False)
    listed = ~(inactive | no_section | no_user)
    role_skipped = listed & ~(admin | member)
    listed &= ~role_skipped
    ended = listed & _before(enrollments["end_date"], on) if on is not None else np.zeros(len(listed), bool)
    listed &= ~ended
    held = (listed & _after(enrollments["begin_date"], on) if on is not None and future == "hold"
            else np.zeros(len(listed), bool))
    listed &= ~held
    keep = np.flatnonzero(listed)
    duplicate = _duplicates(keep, section_codes[section_at[keep]], user_code[keep], len(user_keys), admin,
                            enrollments["sourced_id"])
    keep = keep[~np.isin(keep, duplicate, assume_unique=True)] if len(duplicate) else keep
    section_texts, user_texts = (text_array(keys, pa.large_string()) for keys in (section_keys, user_keys))
    order = _in_key_order(section_codes[section_at[keep]], section_texts, user_code[keep], user_texts)
    keep = keep[order]
    del user_codes, order
    kept_at, user_code = section_at[keep], user_code[keep]
    del section_at
    section_code = section_codes[kept_at]
    course_codes, course_keys = pd.factorize(sections["course_key"])
    lms_codes, lms_ids = pd.factorize(sections["lms_id"])
    school = as_categorical(enrollments["school_sourced_id"])
    kept = pd.DataFrame(
        {
            "school": subset(school, keep),
            "key": as_series(_joined_key(section_texts, section_code, user_texts, user_code)).array,
            "course_key": categorical(course_codes[kept_at], course_keys),
            "section_key": categorical(section_code, section_keys),
            "section_id": categorical(lms_codes[kept_at], lms_ids),
            "user_key": categorical(user_code, user_keys),
            "admin": admin[keep],
        },
        copy=False,
    )
    left_out = pd.DataFrame({"sourced_id": enrollments["sourced_id"], "school": school}, copy=False)
    return _desired(
        "enrollment",
        kept,
        [
            _skip(left_out[inactive], "sourced_id", "school", INACTIVE_IN_IC),
            _skip(left_out[no_section], "sourced_id", "school", SECTION_NOT_PROVISIONED),
            _skip(left_out[no_user], "sourced_id", "school", USER_NOT_PROVISIONED),
            _skip(left_out[role_skipped], "sourced_id", "school", ENROLLMENT_ROLE_SKIPPED),
            _skip(left_out[ended], "sourced_id", "school", _dated(ENDED, enrollments["end_date"], ended)),
            _skip(left_out[held], "sourced_id", "school", _dated(BEGINS, enrollments["begin_date"], held)),
            _skip(left_out.iloc[duplicate], "sourced_id", "school", DUPLICATE_ENROLLMENT),
        ],
    )


def _day_per_row(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A date column as (codes, the distinct days as ``datetime64[D]``, NaT for none): work per day."""
    coded = as_categorical(values)
    days = pd.to_datetime(pd.Series(coded.cat.categories.astype(object)), errors="coerce").to_numpy("datetime64[D]")
    return coded.cat.codes.to_numpy(), days


def _before(values: pd.Series, on: date) -> np.ndarray:
    """Rows whose day is before ``on`` (no day: never)."""
    codes, days = _day_per_row(values)
    return per_row(~np.isnat(days) & (days < np.datetime64(on, "D")), codes, False)


def _after(values: pd.Series, on: date) -> np.ndarray:
    """Rows whose day is after ``on`` (no day: never)."""
    codes, days = _day_per_row(values)
    return per_row(~np.isnat(days) & (days > np.datetime64(on, "D")), codes, False)


def _dated(prefix: str, values: pd.Series, rows: np.ndarray) -> np.ndarray:
    """``<prefix> <YYYY-MM-DD>`` for the ``rows`` (a mask) of a date column."""
    codes, days = _day_per_row(values)
    texts = np.array([f"{prefix} {day}" for day in days.astype(str)], dtype=object)
    return per_row(texts, codes[rows], prefix)


def _duplicates(rows: np.ndarray, section: np.ndarray, user: np.ndarray, users: int, admin: np.ndarray,
                sourced_ids: pd.Series) -> np.ndarray:
    """Of the ``rows`` (with their section and user codes), those another row of the same user
    and section is kept before: an admin one first, then the lowest sourcedId. Pairs are integers
    and sorted once; only the (rare) repeated pairs are looked at row by row."""
    pair = section.astype(np.int64) * max(users, 1) + user.astype(np.int64)
    ordered = np.sort(pair)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not len(repeated):
        return np.empty(0, dtype=np.int64)
    twice = np.isin(pair, repeated)
    candidates = pd.DataFrame({"row": rows[twice], "pair": pair[twice], "member": ~admin[rows[twice]],
                               "sourced_id": sourced_ids.iloc[rows[twice]].astype(str).to_numpy()})
    candidates = candidates.sort_values(["pair", "member", "sourced_id"], kind="stable")
    return np.sort(candidates.loc[candidates.duplicated("pair"), "row"].to_numpy(dtype=np.int64))


def _in_key_order(section: np.ndarray, sections: pa.Array, user: np.ndarray, users: pa.Array) -> np.ndarray:
    """The rows (codes into ``sections`` and ``users``) in the stable order of their
    ``<section>:<user>`` keys, each pair once, from the ranks of the distinct sections (with the
    ``:``) and users rather than by sorting millions of joined strings; the ranks decide unless
    a section id holds a ``:`` (then the joined keys are sorted, and :func:`_desired` drops
    repeated keys)."""
    if pc.any(pc.match_substring(sections, ":")).as_py():
        return pc.sort_indices(_joined_key(sections, section, users, user)).to_numpy(zero_copy_only=False)
    empty, separator = pa.scalar("", pa.large_string()), pa.scalar(":", pa.large_string())
    section_rank = _ranks(pc.binary_join_element_wise(sections, empty, separator))
    rank = section_rank[section] * len(users) + _ranks(users)[user]
    order = np.argsort(rank, kind="stable")
    ranked = rank[order]
    return order[np.r_[True, ranked[1:] != ranked[:-1]]] if len(order) else order


def _ranks(texts: pa.Array) -> np.ndarray:
    ranks = np.empty(len(texts), dtype=np.int64)
    ranks[pc.sort_indices(texts).to_numpy(zero_copy_only=False)] = np.arange(len(texts))
    return ranks


def _joined_key(sections: pa.Array, section: np.ndarray, users: pa.Array, user: np.ndarray) -> pa.Array:
    """``<section key>:<user key>`` of each row, joined by arrow a slice of rows at a time into one
    array laid out beforehand: only the joined text is ever whole (not each side's, nor slices
    and their copy), and in one piece (arrow takes rows from a chunked column by first joining
    its chunks, a copy of the whole column per take)."""
    offsets = np.zeros(len(section) + 1, dtype=np.int64)
    np.cumsum(_lengths(sections)[section] + 1 + _lengths(users)[user], out=offsets[1:])
    data = np.empty(offsets[-1], dtype=np.uint8)
    separator = pa.scalar(":", pa.large_string())
    for start in range(0, len(section), SLICE):
        stop = min(start + SLICE, len(section))
        joined = pc.binary_join_element_wise(sections.take(section[start:stop]), users.take(user[start:stop]),
                                             separator)
        size = offsets[stop] - offsets[start]
        data[offsets[start]:offsets[stop]] = np.frombuffer(joined.buffers()[2], dtype=np.uint8, count=size)
    return pa.LargeStringArray.from_buffers(len(section), pa.py_buffer(offsets), pa.py_buffer(data))


def _lengths(texts: pa.Array) -> np.ndarray:
    return np.asarray(pc.binary_length(texts).to_numpy(zero_copy_only=False), dtype=np.int64)


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
