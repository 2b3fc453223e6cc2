"""The mapping and plan rules, as pure functions over a synthetic district's extracts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from include import staging
from include.config import Provisioning
from include.lms.target import ItemResult
from include.provisioning import diff, plan
from include.provisioning.diff import empty_state, next_state, outcome_frame, plan_changes, result_table
from include.provisioning.report import format_report, needing_a_person, report_rows
from include.provisioning.steps import STEP_BY_KIND
from include.staging import read_frame, stage_frame
from include.sandbox.generator import DistrictSpec, SyntheticDistrict
from tests.provisioning_support import extract_frames

ROLES = {"student": "R-STU", "teacher": "R-TCH", "administrator": "R-ADM", "guardian": "R-PAR"}


def provisioning(**overrides) -> Provisioning:
    settings = {"schools": {"100": "create", "101": {"building_id": "B-1"}, "102": {"building_id": "B-1"}}, "roles": ROLES}
    settings.update(overrides)
    return Provisioning.model_validate(settings)


@pytest.fixture(scope="module")
def frames(demo_district):
    return extract_frames(demo_district)


def buildings_for(config: Provisioning, frames) -> dict[str, str]:
    desired = plan.desired_buildings(frames["orgs"], config)
    return plan.school_buildings(config, {key: f"L-{key}" for key in desired.rows["key"]})


def recorded(tmp_path, kind: str, state) -> pd.DataFrame:
    """The next state as the next night reads it: staged, then read back."""
    target = tmp_path / f"{kind}.parquet"
    stage_frame(target, state)
    return STEP_BY_KIND[kind].read_state(str(target))


def by_reason(desired: plan.Desired) -> dict[str, int]:
    return desired.skipped["reason"].value_counts().to_dict()


def test_schools_create_map_many_to_one_or_skip(frames):
    config = provisioning(schools={"100": "create", "101": {"building_id": "B-1"}, "102": {"building_id": "B-1"}})
    desired = plan.desired_buildings(frames["orgs"], config)
    assert list(desired.rows["key"]) == ["school-100"] and list(desired.rows["title"]) == ["Smith Elementary School 1"]
    assert buildings_for(config, frames) == {"100": "L-school-100", "101": "B-1", "102": "B-1"}

    partial = provisioning(schools={"100": {"building_id": "B-1"}})
    assert set(plan.desired_buildings(frames["orgs"], partial).skipped["key"]) == {"school-101", "school-102"}
    users = plan.desired_users(frames["users"], partial, buildings_for(partial, frames))
    assert set(users.rows["school"]) == {"100"}
    assert by_reason(users)[plan.UNMAPPED_SCHOOL] > 0
    courses = plan.desired_courses(frames["courses"], buildings_for(partial, frames))
    assert set(courses.rows["school"]) == {"100"}


def test_users_get_role_ids_per_school_and_skip_what_must_not_sync(frames):
    config = provisioning(roles=ROLES | {"guardian": "do_not_sync"}, roles_by_school={"102": {"teacher": "R-TCH-HS"}})
    users = plan.desired_users(frames["users"], config, buildings_for(config, frames))
    rows = users.rows.set_index("key")
    assert rows.loc["s1000000", "role_id"] == "R-STU"
    teachers = rows[rows.index.str.startswith("t")]
    assert set(teachers.loc[teachers["school"] == "102", "role_id"]) == {"R-TCH-HS"}
    assert set(teachers.loc[teachers["school"] != "102", "role_id"]) == {"R-TCH"}
    assert not rows.index.str.startswith("p").any()
    reasons = by_reason(users)
    guardians = frames["users"][frames["users"]["primary_role"] == "guardian"]
    assert reasons[plan.DO_NOT_SYNC_ROLE] == sum(guardians["status"] == "active") > 0
    assert reasons[plan.USERNAME_WITH_SPACES] == 1
    skipped = users.skipped.set_index("key")
    spaced = frames["users"].loc[frames["users"]["username"].str.contains(" ", na=False), "legacy_sourced_id"].item()
    assert skipped.loc[spaced, "reason"] == plan.USERNAME_WITH_SPACES
    assert reasons[plan.INACTIVE_IN_IC] == sum(frames["users"]["status"] != "active")


def test_users_keep_preferred_names_and_get_additional_buildings(frames):
    config = provisioning(schools={"100": {"building_id": "B-0"}, "101": {"building_id": "B-1"}, "102": {"building_id": "B-2"}})
    rows = plan.desired_users(frames["users"], config, buildings_for(config, frames)).rows.set_index("key")
    assert rows["preferred_first_name"].notna().any()
    assert rows.loc["s1000000", "building_id"] == "B-0" and rows.loc["s1000000", "additional_building_ids"] == ["B-1"]
    assert rows.loc["t3000000", "additional_building_ids"] == ["B-1"]
    assert rows.loc["s1000001", "additional_building_ids"] == []
    many_to_one = provisioning()
    merged = plan.desired_users(frames["users"], many_to_one, buildings_for(many_to_one, frames)).rows.set_index("key")
    assert merged.loc["s1000020", "additional_building_ids"] == [], "two schools in one building are one building"


def test_guardians_are_linked_to_their_provisioned_children(frames):
    config = provisioning()
    users = plan.desired_users(frames["users"], config, buildings_for(config, frames))
    links = plan.desired_guardian_links(frames["users"], users.rows)
    assert "p5000000:s1000000" in set(links.rows["key"]) and "p5000000:s1000001" in set(links.rows["key"])
    provisioned = set(users.rows["key"])
    assert set(links.rows["guardian_key"]) <= provisioned and set(links.rows["student_key"]) <= provisioned
    spaced = users.skipped.loc[users.skipped["reason"] == plan.USERNAME_WITH_SPACES, "key"].item()
    assert spaced not in set(links.rows["student_key"])


def test_trial_schedule_courses_and_sections_are_not_provisioned(frames):
    config = provisioning()
    buildings = buildings_for(config, frames)
    courses = plan.desired_courses(frames["courses"], buildings)
    trial_courses = set(frames["courses"].loc[frames["courses"]["trial_schedule"], "sourced_id"])
    assert trial_courses and not trial_courses & set(courses.rows["key"])
    assert by_reason(courses) == {plan.TRIAL_SCHEDULE: len(trial_courses)}
    periods = {session: f"GP-{session}" for session in frames["academicSessions"]["sourced_id"]}
    sections = plan.desired_sections(frames["classes"], buildings, {k: f"C-{k}" for k in courses.rows["key"]}, periods)
    assert by_reason(sections) == {plan.TRIAL_SCHEDULE: len(trial_courses)}
    year_long = sections.rows[sections.rows["grading_period_ids"].map(len) == 2]
    assert len(year_long) > 0, "classes in two terms keep both grading periods"
    crossed = frames["classes"].dropna(subset=["cross_list_group"])
    assert set(crossed["sourced_id"]) <= set(sections.rows["key"]), "cross-listed sections are provisioned"


def periods_of(grading: plan.Desired, titles: dict[str, str] | None = None, refused=()) -> pd.DataFrame:
    """The grading periods' result table as the step stages it (created ones held by the LMS, less
    the ``refused``), with its term rows."""
    held = grading.rows[~grading.rows["key"].isin(list(refused))]
    return plan.with_term_rows(held.assign(lms_id="GP-" + held["key"]), grading.terms, titles or {})


def test_a_class_whose_terms_are_all_unmapped_is_skipped(frames):
    config = provisioning(terms={"unlisted": "skip", "map": {"202701": {"grading_period_id": "GP-FALL"}}})
    grading = plan.desired_grading_periods(frames["academicSessions"], frames["classes"], frames["orgs"], config, 2027)
    assert grading.rows.empty and by_reason(grading) == {plan.UNMAPPED_TERM: 1}  # 202702
    periods = plan.term_grading_periods(periods_of(grading, {"GP-FALL": "Fall"}))
    assert periods == {"202701": "GP-FALL"}
    buildings = buildings_for(config, frames)
    courses = plan.desired_courses(frames["courses"], buildings)
    sections = plan.desired_sections(frames["classes"], buildings, {k: f"C-{k}" for k in courses.rows["key"]}, periods,
                                     missing_periods=plan.why_no_period(frames["academicSessions"], config, 2027))
    spring_only = frames["classes"][frames["classes"]["term_sourced_ids"].map(lambda terms: list(terms) == ["202702"])]
    assert len(spring_only) > 0
    assert set(spring_only["sourced_id"]) <= set(sections.skipped.loc[sections.skipped["reason"] == plan.UNMAPPED_TERM, "key"])
    assert {tuple(ids) for ids in sections.rows["grading_period_ids"]} == {("GP-FALL",)}


def test_terms_consolidate_into_one_year_long_period(frames):
    config = provisioning(terms={"consolidate_year": True})
    grading = plan.desired_grading_periods(frames["academicSessions"], frames["classes"], frames["orgs"], config, 2027)
    assert list(grading.rows["key"]) == ["year-2027"]
    row = grading.rows.iloc[0]
    assert (str(row["start"]), str(row["end"]), row["title"]) == ("2026-08-15", "2027-06-05", "2026-27")
    periods = plan.term_grading_periods(periods_of(grading))
    assert periods == {"202701": "GP-year-2027", "202702": "GP-year-2027"}


@pytest.fixture(scope="module")
def alike():
    """IC's usual shape: each of three schools has its own terms, titled alike."""
    return extract_frames(SyntheticDistrict(DistrictSpec(seed=7, students=60, schools=3, school_year=2027,
                                                         terms_per_school=True)))


def every_school_created() -> Provisioning:
    return provisioning(schools={"100": "create", "101": "create", "102": "create"})


def test_terms_of_schools_titled_alike_are_each_their_own_period(alike):
    config = every_school_created()
    grading = plan.desired_grading_periods(alike["academicSessions"], alike["classes"], alike["orgs"], config, 2027)
    sessions = alike["academicSessions"].set_index("sourced_id")
    semesters = sessions[sessions["type"] == "semester"]
    assert semesters["title"].nunique() == 2 and len(semesters) == 6  # the same two titles in three schools
    assert sorted(grading.rows["key"]) == sorted(f"term-{term}" for term in semesters.index)
    assert grading.rows["title"].is_unique
    codes = alike["orgs"].set_index("sourced_id")["identifier"]
    for row in grading.rows.itertuples():
        term = row.key.removeprefix("term-")
        school = f"10{int(term[4:6]) - 1}"  # the generator's per-school term ids: <year><school + 1><n>
        assert row.title == f"2027 {codes[school]} {sessions.loc[term, 'title']}" and row.school == school
    periods = plan.term_grading_periods(periods_of(grading))
    buildings = buildings_for(config, alike)
    courses = plan.desired_courses(alike["courses"], buildings)
    sections = plan.desired_sections(alike["classes"], buildings, {k: f"C-{k}" for k in courses.rows["key"]}, periods,
                                     missing_periods=plan.why_no_period(alike["academicSessions"], config, 2027))
    assert not (sections.skipped["reason"] == plan.UNMAPPED_TERM).any()
    classes = alike["classes"].set_index("sourced_id")
    for row in sections.rows.itertuples():  # every section on its own school's periods, as IC schedules it
        assert list(row.grading_period_ids) == sorted(f"GP-term-{t}" for t in classes.loc[row.key, "term_sourced_ids"])
        assert all(period[12:14] == f"{int(row.school) - 99:02d}" for period in row.grading_period_ids)


def test_alike_terms_share_a_period_only_when_the_district_file_says_so(alike):
    apart = plan.desired_grading_periods(alike["academicSessions"], alike["classes"], alike["orgs"],
                                         every_school_created(), 2027)
    shared_config = every_school_created().model_copy(
        update={"terms": every_school_created().terms.model_copy(update={"share_alike": True})})
    shared = plan.desired_grading_periods(alike["academicSessions"], alike["classes"], alike["orgs"], shared_config, 2027)
    assert len(apart.rows) == 6 and len(shared.rows) == 2
    assert sorted(shared.rows["title"]) == ["2027 Semester 1 2026-27", "2027 Semester 2 2026-27"]  # no one school
    periods = plan.term_grading_periods(periods_of(shared))
    assert len(periods) == 6 and len(set(periods.values())) == 2  # every school's term is in its alike period


def test_terms_mapped_to_existing_grading_periods_are_the_districts_terms(frames):
    """Item 2: the grade plan finds a row's term through the term rows, mapped ones included."""
    config = provisioning(terms={"map": {"202701": {"grading_period_id": "GP-F"}, "202702": {"grading_period_id": "GP-S"}}})
    grading = plan.desired_grading_periods(frames["academicSessions"], frames["classes"], frames["orgs"], config, 2027)
    assert grading.rows.empty and grading.skipped.empty
    table = periods_of(grading, {"GP-F": "Fall 26", "GP-S": "Spring 27"})
    assert table[["key", "lms_id", "title"]].values.tolist() == [["term-202701", "GP-F", "Fall 26"],
                                                                  ["term-202702", "GP-S", "Spring 27"]]


def test_only_the_run_years_terms_of_provisioned_classes_get_periods(alike):
    """Item 3: no period for the terms of a school the map skips, nor for another school year."""
    config = provisioning(schools={"100": "create", "101": "create"})  # 102 is not provisioned
    grading = plan.desired_grading_periods(alike["academicSessions"], alike["classes"], alike["orgs"], config, 2027)
    assert sorted(grading.rows["key"]) == ["term-20270101", "term-20270102", "term-20270201", "term-20270202"]
    assert grading.skipped.empty  # the skipped school's terms are not the district's to report
    next_year = plan.desired_grading_periods(alike["academicSessions"], alike["classes"], alike["orgs"], config, 2028)
    assert next_year.rows.empty and by_reason(next_year) == {plan.OTHER_SCHOOL_YEAR: 4}
    missing = plan.why_no_period(alike["academicSessions"], config, 2028)
    buildings = buildings_for(config, alike)
    courses = plan.desired_courses(alike["courses"], buildings)
    sections = plan.desired_sections(alike["classes"], buildings, {k: f"C-{k}" for k in courses.rows["key"]}, {},
                                     missing_periods=missing)
    assert set(sections.skipped["reason"]) - {plan.TRIAL_SCHEDULE, plan.UNMAPPED_SCHOOL} == {plan.NO_CURRENT_TERM}


def test_a_section_whose_created_period_is_missing_is_never_an_unmapped_term(alike):
    """Item 4: the map says create; the LMS refused the period: the classes wait, loudly."""
    config = every_school_created()
    grading = plan.desired_grading_periods(alike["academicSessions"], alike["classes"], alike["orgs"], config, 2027)
    refused = [key for key in grading.rows["key"] if key.startswith("term-20270201")]
    periods = plan.term_grading_periods(periods_of(grading, refused=refused))
    assert "20270201" not in periods
    buildings = buildings_for(config, alike)
    courses = plan.desired_courses(alike["courses"], buildings)
    sections = plan.desired_sections(alike["classes"], buildings, {k: f"C-{k}" for k in courses.rows["key"]}, periods,
                                     missing_periods=plan.why_no_period(alike["academicSessions"], config, 2027))
    classes = alike["classes"].set_index("sourced_id")
    waiting = [key for key in classes.index if list(classes.loc[key, "term_sourced_ids"]) == ["20270201"]]
    skipped = sections.skipped.set_index("key")["reason"]
    assert waiting and {skipped[key] for key in waiting} == {plan.GRADING_PERIOD_NOT_CREATED}
    assert plan.UNMAPPED_TERM not in set(skipped)
    report = pd.DataFrame({"kind": "section", "school": "101", "outcome": "skipped",
                           "reason": [plan.GRADING_PERIOD_NOT_CREATED], "count": [len(waiting)]})
    assert needing_a_person(report)["count"].tolist() == [len(waiting)]


def test_enrollments_make_teachers_admins_and_skip_what_is_not_provisioned(frames):
    config = provisioning()
    buildings = buildings_for(config, frames)
    users = plan.desired_users(frames["users"], config, buildings)
    courses = plan.desired_courses(frames["courses"], buildings)
    periods = {session: f"GP-{session}" for session in frames["academicSessions"]["sourced_id"]}
    sections = plan.desired_sections(frames["classes"], buildings, {k: f"C-{k}" for k in courses.rows["key"]}, periods)
    provisioned_sections = sections.rows.assign(lms_id="S-" + sections.rows["key"])
    enrollments = plan.desired_enrollments(frames["enrollments"], frames["users"], users.rows, provisioned_sections)
    rows = enrollments.rows
    assert set(rows.loc[rows["user_key"].str.startswith("t"), "admin"]) == {True}
    assert set(rows.loc[rows["user_key"].str.startswith("s"), "admin"]) == {False}
    assert set(rows["section_id"]) <= set(provisioned_sections["lms_id"])
    reasons = by_reason(enrollments)
    assert set(reasons) == {plan.INACTIVE_IN_IC, plan.SECTION_NOT_PROVISIONED, plan.USER_NOT_PROVISIONED}
    assert len(rows) + len(enrollments.skipped) == len(frames["enrollments"]), "every enrollment accounted for"


def test_oneroster_1_1_and_1_2_give_the_same_plan(demo_district):
    config = provisioning()
    plans = {}
    for version in ("1.1", "1.2"):
        frames = extract_frames(demo_district, version)
        buildings = buildings_for(config, frames)
        users = plan.desired_users(frames["users"], config, buildings)
        plans[version] = (users.rows.drop(columns=["preferred_first_name"]), plan.desired_guardian_links(frames["users"], users.rows).rows)
    pd.testing.assert_frame_equal(plans["1.1"][0], plans["1.2"][0])
    pd.testing.assert_frame_equal(plans["1.1"][1], plans["1.2"][1])


def test_the_plan_sends_only_changes_and_never_deletes_users_or_foreign_objects(frames, tmp_path):
    config = provisioning()
    users = plan.desired_users(frames["users"], config, buildings_for(config, frames))
    first = plan_changes(users, empty_state("user"))
    assert first.counts()["create"] == len(users.rows)
    state = recorded(tmp_path, "user", next_state(empty_state("user"), first, {"create": outcome_frame(
        ItemResult(key=k, ok=True, lms_id=f"U-{k}") for k in first.create["key"])}))
    again = plan_changes(users, state)
    assert again.counts() | {"skipped": 0} == {"create": 0, "update": 0, "deactivate": 0, "unchanged": len(users.rows),
                                               "removed_in_ic": 0, "skipped": 0}

    changed = users.rows.copy()
    changed.loc[changed["key"] == "s1000001", "family_name"] = "Renamed"
    gone = changed[changed["key"] != "s1000002"]
    later = plan_changes(plan.Desired("user", gone, users.skipped), state)
    assert list(later.update["key"]) == ["s1000001"] and list(later.update["lms_id"]) == ["U-s1000001"]
    assert list(later.removed["key"]) == ["s1000002"] and later.deactivate.empty, "a user removed in IC is kept"


def test_removed_enrollments_are_dropped_but_lms_only_admins_are_not_touched(frames, tmp_path):
    rows = pd.DataFrame(
        {
            "key": ["600000:t1", "600000:s1", "600000:s2"],
            "school": ["100"] * 3,
            "course_key": ["50000"] * 3,
            "section_key": ["600000"] * 3,
            "section_id": ["S-1"] * 3,
            "user_key": ["t1", "s1", "s2"],
            "admin": [True, False, False],
        }
    )
    empty = pd.DataFrame(columns=["key", "school", "reason"])
    first = plan_changes(plan.Desired("enrollment", rows, empty), empty_state("enrollment"))
    state = recorded(tmp_path, "enrollment", next_state(empty_state("enrollment"), first, {"create": outcome_frame(
        ItemResult(key=k, ok=True, lms_id=k) for k in rows["key"])}))
    later = plan_changes(plan.Desired("enrollment", rows[rows["key"] != "600000:s2"], empty), state)
    assert list(later.deactivate["key"]) == ["600000:s2"]
    assert "600000:lms-only-admin" not in set(later.deactivate["key"]), "only what we created can be dropped"
    after = recorded(tmp_path, "enrollment",
                     next_state(state, later, {"deactivate": outcome_frame([ItemResult(key="600000:s2", ok=True)])}))
    assert list(after["key"]) == ["600000:s1", "600000:t1"]


def test_failed_items_are_retried_next_run_and_the_rest_not_resent(frames, tmp_path):
    config = provisioning()
    courses = plan.desired_courses(frames["courses"], buildings_for(config, frames))
    first = plan_changes(courses, empty_state("course"))
    failed_key = first.create["key"].iloc[0]
    results = [ItemResult(key=k, ok=k != failed_key, lms_id=None if k == failed_key else f"C-{k}",
                          error="course_code already used" if k == failed_key else None) for k in first.create["key"]]
    state = recorded(tmp_path, "course", next_state(empty_state("course"), first, {"create": outcome_frame(results)}))
    again = plan_changes(courses, state)
    assert list(again.create["key"]) == [failed_key]
    failed = pd.DataFrame({"key": [failed_key], "action": ["create"], "error": ["course_code already used"],
                           "school": ["100"]})
    report = report_rows(first, failed, dry_run=False)
    assert report.loc[report["outcome"] == "failed", "reason"].tolist() == ["course_code already used"]
    assert report["count"].sum() == len(courses.rows) + len(courses.skipped)
    assert "failed (course_code already used)" in format_report(report)


def test_unknown_lms_references_name_the_field_and_value():
    config = provisioning(roles=ROLES | {"teacher": "R-NOPE"}, terms={"map": {"202701": {"grading_period_id": "GP-X"}}})
    assert plan.unknown_references(config, "building", {"B-2": "Other"}) == [
        "provisioning.schools.101.building_id: the LMS has no building 'B-1'",
        "provisioning.schools.102.building_id: the LMS has no building 'B-1'",
    ]
    assert plan.unknown_references(config, "grading_period", {}) == [
        "provisioning.terms.map.202701.grading_period_id: the LMS has no grading period 'GP-X'"
    ]
    catalog = {role: role for role in ROLES.values()}
    assert plan.unknown_references(config, "user", catalog) == ["provisioning.roles.teacher: the LMS has no role 'R-NOPE'"]


def test_a_full_run_resends_everything_but_still_drops_only_by_state(frames, tmp_path):
    config = provisioning()
    users = plan.desired_users(frames["users"], config, buildings_for(config, frames))
    first = plan_changes(users, empty_state("user"))
    state = recorded(tmp_path, "user", next_state(empty_state("user"), first, {"create": outcome_frame(
        ItemResult(key=k, ok=True, lms_id=k) for k in first.create["key"])}))
    full = plan_changes(users, state, full=True)
    assert full.counts()["update"] == len(users.rows) and full.counts()["unchanged"] == 0
    assert set(full.update["lms_id"]) == set(users.rows["key"])


def test_the_next_state_and_result_table_are_staged_as_the_whole_frames_would_be(tmp_path, monkeypatch):
    """State and changes merged in key order a row group at a time, each side's categoricals (of
    different categories) decoded as they are written, equal what one sorted frame gives."""
    monkeypatch.setattr(staging, "ROW_GROUP_SIZE", 3)  # merges cross row groups

    def enrollments(users: list[str], section_id: str) -> pd.DataFrame:
        rows = pd.DataFrame({"key": [f"600000:{user}" for user in users], "school": "100", "course_key": "50000",
                             "section_key": "600000", "section_id": section_id, "user_key": users,
                             "admin": [user.startswith("t") for user in users]})
        return rows.astype({column: "category" for column in ("school", "course_key", "section_key",
                                                                "section_id", "user_key")})

    empty = pd.DataFrame(columns=["key", "school", "reason"])
    before = enrollments(["s1", "s3", "s5", "s7", "t1", "t2"], "S-1")
    first = plan_changes(plan.Desired("enrollment", before, empty), empty_state("enrollment"))
    state = recorded(tmp_path, "enrollment", next_state(empty_state("enrollment"), first, {"create": outcome_frame(
        ItemResult(key=key, ok=True, lms_id=f"E-{key}") for key in before["key"])}))

    desired = enrollments(["s1", "s2", "s3", "s4", "s6", "s7", "s8", "t1", "t2"], "S-2")
    changes = plan_changes(plan.Desired("enrollment", desired, empty), state)
    assert changes.counts() | {"skipped": 0} == {"create": 4, "update": 5, "deactivate": 1, "unchanged": 0,
                                                 "removed_in_ic": 0, "skipped": 0}
    outcomes = {
        "create": outcome_frame(ItemResult(key=key, ok=key != "600000:s4", lms_id=f"N-{key}", error=None)
                                for key in changes.create["key"]),
        "update": outcome_frame(ItemResult(key=key, ok=key != "600000:t1", lms_id=f"U-{key}")
                                for key in changes.update["key"]),
        "deactivate": outcome_frame([ItemResult(key="600000:s5", ok=True)]),
    }
    staged = recorded(tmp_path, "enrollment", next_state(state, changes, outcomes))
    written = pd.concat([changes.create.assign(lms_id="N-" + changes.create["key"]),
                         changes.update.assign(lms_id="U-" + changes.update["key"])], ignore_index=True)
    written = written[~written["key"].isin(["600000:s4", "600000:t1"])]
    whole = pd.concat([state[state["key"] == "600000:t1"], written], ignore_index=True)[list(state.columns)]
    expected = recorded(tmp_path, "enrollment",
                        whole.sort_values("key").astype({"school": str, "lms_id": str}).reset_index(drop=True))
    pd.testing.assert_frame_equal(staged, expected)
    assert list(staged["key"]) == sorted(desired["key"][desired["key"] != "600000:s4"])

    target = tmp_path / "result.parquet"
    stage_frame(target, result_table(changes, outcomes, state[["key", "lms_id"]], dry_run=False))
    result = read_frame(str(target))
    assert list(result["key"]) == list(staged["key"]) and list(result["lms_id"]) == list(staged["lms_id"])
    assert str(result["user_key"].dtype) == "str" and str(result["lms_id"].dtype) == "string"


def test_an_update_taken_without_an_id_keeps_the_one_the_state_has(tmp_path):
    """The steps after this one look objects up by id in the result table: an update the LMS
    answers without an id must not drop the object from it (nor from the state)."""
    empty = pd.DataFrame(columns=["key", "school", "reason"])
    before = pd.DataFrame({"key": ["600000:s1", "600000:s2"], "school": "100", "course_key": "50000",
                           "section_key": "600000", "section_id": "S-1", "user_key": ["s1", "s2"],
                           "admin": False})
    first = plan_changes(plan.Desired("enrollment", before, empty), empty_state("enrollment"))
    state = recorded(tmp_path, "enrollment", next_state(empty_state("enrollment"), first, {"create": outcome_frame(
        ItemResult(key=key, ok=True, lms_id=f"E-{key}") for key in before["key"])}))
    changes = plan_changes(plan.Desired("enrollment", before.assign(admin=[True, False]), empty), state)
    assert list(changes.update["key"]) == ["600000:s1"]
    outcomes = {"update": outcome_frame([ItemResult(key="600000:s1", ok=True, lms_id=None)])}
    staged = recorded(tmp_path, "enrollment", next_state(state, changes, outcomes))
    target = tmp_path / "result.parquet"
    stage_frame(target, result_table(changes, outcomes, state[["key", "lms_id"]], dry_run=False))
    result = read_frame(str(target))
    expected = ["E-600000:s1", "E-600000:s2"]
    assert list(staged["lms_id"]) == expected and list(result["lms_id"]) == expected


def test_fingerprints_are_pandas_hashes_of_the_fields_as_text_whatever_the_columns_hold(monkeypatch):
    """Each field but the key is hashed as ``str(value)`` (missing as ``None``, a list as its sorted
    items joined by ``|``) and the fields combined as ``hash_pandas_object`` combines a frame's,
    whether a column holds arrow text or Python objects, arrow or Python lists, distinct values
    (hashed a slice at a time) or repeated ones; a state staged by an earlier version (text
    fingerprints with the key hashed in) gets them made again from its own fields."""
    monkeypatch.setattr(diff, "SLICE", 4)
    count = 12
    python = pd.DataFrame({
        "key": [f"s{row:07d}" for row in range(count)],
        "given_name": ["Ada", "Alan"] * (count // 2),
        "family_name": [f"Family {row}" for row in range(count)],
        "preferred_first_name": [None, "Al", None, None] * (count // 4),
        "email": [None if row % 5 == 0 else f"s{row}@example.org" for row in range(count)],
        "username": [f"user{row}" for row in range(count)],
        "role_id": ["R-STU"] * count,
        "building_id": ["B-0", "B-1", "B-2"] * (count // 3),
        "additional_building_ids": [["B-2", "B-1"] if row % 3 == 0 else [] for row in range(count)],
    }, dtype=object)
    arrow = python.astype({column: "str" for column in python.columns if column != "additional_building_ids"})
    arrow["additional_building_ids"] = pd.arrays.ArrowExtensionArray(
        pa.array(python["additional_building_ids"].tolist(), pa.large_list(pa.large_string())))
    texts = python.apply(lambda column: column.map(
        lambda value: "|".join(sorted(value)) if isinstance(value, list) else str(value)))
    expected = pd.util.hash_pandas_object(texts.drop(columns="key"), index=False, categorize=False).to_numpy()
    assert (diff.fingerprint_hashes(python, "user") == expected).all()
    assert (diff.fingerprint_hashes(arrow, "user") == expected).all()

    earlier = pd.util.hash_pandas_object(texts, index=False, categorize=False).astype(str)
    staged = arrow.assign(school="100", lms_id="U-1", fingerprint=earlier.to_numpy())
    current = diff.current_fingerprints(staged, "user")
    assert current["fingerprint"].dtype == np.uint64 and (current["fingerprint"].to_numpy() == expected).all()
    assert diff.current_fingerprints(current, "user") is current


def test_the_heap_alive_before_the_lms_calls_is_left_out_of_full_collections():
    """A full collection during the load stops every call thread (0.2 s each, a tenth of the
    LMS's rate at 1,000,000 students): what is alive when the calls start is frozen, then let go."""
    import gc

    from plugins.operators.provision import frozen_heap

    alive = [{"object": n} for n in range(1_000)]
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() >= len(alive)
        gc.collect()
        assert gc.get_freeze_count() >= len(alive)
    assert gc.get_freeze_count() == 0


# -- shapes real districts' data has (issue 17): the plan against the rules' independent model ------


def _shaped(*shapes):
    """A fresh copy of the demo district (the session's is shared) with these shapes applied; returns
    the district and what each shape returned."""
    from include.sandbox.generator import DistrictSpec, SyntheticDistrict

    district = SyntheticDistrict(DistrictSpec(seed=42, students=60, schools=3, school_year=2027))
    return district, [shape(district) for shape in shapes]


ALL_CREATED = {"100": "create", "101": "create", "102": "create"}


def planned(district, config: Provisioning, on=None, refused: frozenset[str] = frozenset()) -> dict[str, plan.Desired]:
    """The plan of each kind in the steps' order, over the district's staged extracts, each given the
    earlier kinds' objects with made-up LMS ids (``refused``: keys the LMS refused, so they have none);
    every term has a grading period (terms are not what these tests are about)."""
    frames = extract_frames(district)
    to_create = plan.schools_to_create(config)

    def held(desired: plan.Desired) -> pd.DataFrame:
        rows = desired.rows[~desired.rows["key"].astype(str).isin(refused)]
        return rows.assign(lms_id="L-" + rows["key"].astype(str))

    desired = {"building": plan.desired_buildings(frames["orgs"], config)}
    buildings = plan.school_buildings(config, dict(zip(*held(desired["building"])[["key", "lms_id"]].T.values,
                                                       strict=True)))
    desired["user"] = plan.desired_users(frames["users"], config, buildings)
    desired["guardian_link"] = plan.desired_guardian_links(frames["users"], held(desired["user"]))
    desired["course"] = plan.desired_courses(frames["courses"], buildings, classes=frames["classes"],
                                             orgs=frames["orgs"], to_create=to_create)
    courses = held(desired["course"])
    periods = {session: f"GP-{session}" for session in frames["academicSessions"]["sourced_id"]}
    desired["section"] = plan.desired_sections(frames["classes"], buildings, dict(zip(courses["key"], courses["lms_id"],
                                               strict=True)), periods, to_create=to_create)
    desired["enrollment"] = plan.desired_enrollments(frames["enrollments"], frames["users"], held(desired["user"]),
                                                     held(desired["section"]), provisioning=config, on=on)
    return desired


def assert_as_the_rules_say(district, config: Provisioning, desired: dict[str, plan.Desired], on=None) -> None:
    """Each kind's plan holds what the independent model of the district file's rules puts in the
    LMS, and leaves out each other IC record once, with a reason the rules give for it."""
    from tests.expected_provisioning import KINDS, expected_provisioning

    rules = expected_provisioning(district, config, on)
    for kind in (kind for kind in KINDS if kind != "grading_period"):  # every term has a period here
        assert set(desired[kind].rows["key"].astype(str)) == rules.present[kind], kind
        skipped = desired[kind].skipped
        keys = skipped["key"].map(rules.enrollment_keys) if kind == "enrollment" else skipped["key"]
        reasons = dict(zip(keys, skipped["reason"], strict=True))
        assert len(reasons) == len(skipped) and set(reasons) == set(rules.skipped[kind]), kind
        wrong = {key: reason for key, reason in reasons.items() if reason not in rules.skipped[kind][key]}
        assert not wrong, f"{kind} skipped with a reason the rules do not give: {wrong}"
    rows = desired["enrollment"].rows
    assert {key: rules.admin[key] for key in rows["key"].astype(str)} == dict(zip(rows["key"].astype(str),
                                                                                    rows["admin"], strict=True))


def test_a_course_owned_by_the_district_is_placed_in_the_building_of_each_school_its_classes_are_in():
    from tests.real_data_shapes import district_owned_course

    district, (shape,) = _shaped(district_owned_course)
    config = provisioning(schools=ALL_CREATED)
    desired = planned(district, config)
    courses = desired["course"].rows.set_index("key")
    placed = {f"{shape.course}@{school}": school for school in shape.schools}
    assert shape.course not in courses.index and set(placed) <= set(courses.index)
    for key, school in placed.items():
        assert courses.loc[key, "building_id"] == f"L-school-{school}" and courses.loc[key, "school"] == school
    sections = desired["section"].rows
    classes = {c["sourcedId"]: c["school"]["sourcedId"] for c in district.records("classes")
               if c["course"]["sourcedId"] == shape.course and c["status"] == "active"
               and not (c.get("metadata") or {}).get("ic.trialSchedule")}
    mine = sections[sections["key"].isin(classes)]
    assert len(mine) == len(classes), "no class of the district's course is lost"
    assert all(row.course_key == f"{shape.course}@{classes[row.key]}" for row in mine.itertuples())
    assert not (desired["course"].skipped["reason"] == plan.UNMAPPED_SCHOOL).any()
    assert_as_the_rules_say(district, config, desired)


def test_a_district_course_no_class_uses_is_skipped_saying_so():
    from tests.real_data_shapes import district_course_without_classes

    district, (course,) = _shaped(district_course_without_classes)
    config = provisioning(schools=ALL_CREATED)
    desired = planned(district, config)
    skipped = desired["course"].skipped.set_index("key")
    assert skipped.loc[course, "reason"] == plan.NO_CLASS_IN_A_SCHOOL
    assert_as_the_rules_say(district, config, desired)


def test_a_school_with_an_empty_identifier_gets_its_sourced_id_as_building_code():
    from tests.real_data_shapes import school_without_identifier

    district, _ = _shaped(school_without_identifier)
    desired = plan.desired_buildings(extract_frames(district)["orgs"], provisioning(schools=ALL_CREATED))
    codes = dict(zip(desired.rows["key"], desired.rows["building_code"], strict=True))
    assert codes["school-101"] == "101" and codes["school-100"] == "1000"


def test_records_of_a_school_mapped_to_create_whose_building_is_not_in_the_lms_wait_for_it_not_unmapped():
    """The LMS refused school 101's building: its users, courses and sections are skipped as waiting for
    it (the map says create), never as an unmapped school."""
    district, _ = _shaped()
    config = provisioning(schools=ALL_CREATED)
    desired = planned(district, config, refused=frozenset({"school-101"}))
    for kind in ("user", "course", "section"):
        reasons = desired[kind].skipped
        assert (reasons["school"] == "101").any() and set(reasons.loc[reasons["school"] == "101", "reason"]) <= {
            plan.BUILDING_NOT_CREATED, plan.TRIAL_SCHEDULE, plan.INACTIVE_IN_IC, plan.USERNAME_WITH_SPACES}, kind
        assert not (reasons["reason"] == plan.UNMAPPED_SCHOOL).any(), kind
    skipped = desired["user"].skipped
    assert (skipped["reason"] == plan.BUILDING_NOT_CREATED).sum() > 0


def test_a_report_of_records_waiting_for_a_building_needs_a_person():
    from include.provisioning.report import needing_a_person

    report = pd.DataFrame({"kind": ["user", "user"], "school": ["101", "100"], "outcome": ["skipped", "skipped"],
                           "reason": [plan.BUILDING_NOT_CREATED, plan.USERNAME_WITH_SPACES], "count": [7, 1]})
    attention = needing_a_person(report)
    assert attention.to_dict("records") == [
        {"kind": "user", "outcome": f"skipped: {plan.BUILDING_NOT_CREATED}", "count": 7}]


def test_aides_and_proctors_are_section_admins_and_roles_set_to_skip_are_reported():
    from tests.real_data_shapes import staff_enrollments

    district, (added,) = _shaped(staff_enrollments)
    config = provisioning(schools=ALL_CREATED)
    desired = planned(district, config)
    rows = desired["enrollment"].rows.set_index("key")
    for klass, teacher in added.values():
        assert bool(rows.loc[f"{klass}:t{teacher}", "admin"]) is True
    assert_as_the_rules_say(district, config, desired)

    members = provisioning(schools=ALL_CREATED, enrollment_roles={"aide": "member", "proctor": "skip"})
    desired = planned(district, members)
    rows = desired["enrollment"].rows.set_index("key")
    (aide, _), (proctor, _) = added.items()
    assert bool(rows.loc[f"{added[aide][0]}:t{added[aide][1]}", "admin"]) is False
    skipped = desired["enrollment"].skipped.set_index("key")
    assert skipped.loc[proctor, "reason"] == plan.ENROLLMENT_ROLE_SKIPPED
    assert_as_the_rules_say(district, members, desired)


def test_enrollment_roles_in_the_district_file_are_validated_and_default_per_role():
    from pydantic import ValidationError

    from include.config import ENROLLMENT_ROLES

    assert provisioning().enrollment_roles == ENROLLMENT_ROLES
    assert provisioning(enrollment_roles={"aide": "skip"}).enrollment_roles == ENROLLMENT_ROLES | {"aide": "skip"}
    with pytest.raises(ValidationError, match="'tutor' is not a OneRoster enrollment role"):
        provisioning(enrollment_roles={"tutor": "admin"})
    with pytest.raises(ValidationError):
        provisioning(enrollment_roles={"aide": "owner"})
    with pytest.raises(ValidationError):
        provisioning(enrollment_dates={"future": "maybe"})


def test_an_enrollment_that_ended_is_left_out_and_one_that_begins_later_is_held_if_the_district_says():
    from datetime import date

    from tests.real_data_shapes import dated_enrollments

    district, _ = _shaped()
    records = [r for r in district.records("enrollments") if r["status"] == "active" and r["role"] == "student"]
    ended, ends_today, future = records[0]["sourcedId"], records[1]["sourcedId"], records[2]["sourcedId"]
    dated_enrollments(district, {ended: (None, "2026-10-01"), ends_today: (None, "2026-11-02"),
                                 future: ("2026-11-03", None)})
    on = date(2026, 11, 2)
    enrol = provisioning(schools=ALL_CREATED)
    desired = planned(district, enrol, on)
    skipped = desired["enrollment"].skipped.set_index("key")
    assert skipped.loc[ended, "reason"] == "ended on 2026-10-01"
    assert ends_today not in skipped.index and future not in skipped.index, "endDate is inclusive; enrol early"
    assert_as_the_rules_say(district, enrol, desired, on)

    hold = provisioning(schools=ALL_CREATED, enrollment_dates={"future": "hold"})
    desired = planned(district, hold, on)
    skipped = desired["enrollment"].skipped.set_index("key")
    assert skipped.loc[future, "reason"] == "begins on 2026-11-03"
    assert (skipped["reason"] == "begins on 2027-01-05").sum() > 0, "second-semester classes wait for January"
    assert_as_the_rules_say(district, hold, desired, on)


def test_a_duplicate_enrollment_of_the_same_user_and_class_is_skipped_as_a_duplicate():
    from tests.real_data_shapes import duplicate_enrollment

    district, ((original, duplicate),) = _shaped(duplicate_enrollment)
    config = provisioning(schools=ALL_CREATED)
    desired = planned(district, config)
    enrollments = desired["enrollment"]
    skipped = enrollments.skipped.set_index("key")
    assert skipped.loc[duplicate, "reason"] == plan.DUPLICATE_ENROLLMENT and original not in skipped.index
    assert len(enrollments.rows) + len(enrollments.skipped) == len(district.records("enrollments")), \
        "every enrollment accounted for"
    assert_as_the_rules_say(district, config, desired)


def test_a_username_with_spaces_around_it_is_trimmed_not_skipped():
    from tests.real_data_shapes import padded_username

    district, ((student, username),) = _shaped(padded_username)
    config = provisioning(schools=ALL_CREATED)
    desired = planned(district, config)
    users = desired["user"].rows.set_index("key")
    key = next(u["metadata"]["ic.legacysourceId"] for u in district.records("users") if u["sourcedId"] == student)
    assert users.loc[key, "username"] == username
    assert_as_the_rules_say(district, config, desired)
