"""What the LMS must hold after provisioning a synthetic district, and what must be left out
and why: the district file's rules applied to the raw OneRoster 1.2 records IC serves
(``SyntheticDistrict.records``), written out from README.md ("A district", "What a run
does" → the ``provision`` task group), independently of the code under test.

Nothing here imports ``include.provisioning``, ``include.grades`` or the extract's
normaliser (``include.oneroster``): it is the spec in executable form, plain Python over
plain dicts, so a wrong plan cannot make its own expectation.

Keys are those the run's staged lists (errors, skipped) and the sync report use, which are
also what the LMS keeps as external ids:

| kind           | key                                     | in Schoology                          |
|----------------|-----------------------------------------|---------------------------------------|
| building       | ``school-<IC school sourcedId>``        | building_code = the school's identifier |
| grading_period | ``term-<IC academicSession sourcedId>`` | title = terms.title_template filled   |
| user           | IC's 1.1 id (1.2: metadata.ic.legacysourceId) | school_uid                      |
| guardian_link  | ``<guardian key>:<student key>``        | parent_school_uid:student_school_uid  |
| course         | IC course sourcedId                     | course_code                           |
| section        | IC class sourcedId                      | section_school_code                   |
| enrollment     | ``<section key>:<user key>``            | section_school_code:school_uid        |
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date

from include.config import DO_NOT_SYNC, ExistingBuilding, ExistingGradingPeriod, Provisioning

# The provisioning tasks, one per kind, in the order README "What a run does" gives them.
TASKS = {
    "building": "buildings",
    "grading_period": "grading_periods",
    "user": "users",
    "guardian_link": "guardian_links",
    "course": "courses",
    "section": "sections",
    "enrollment": "enrollments",
}
KINDS = list(TASKS)

# The reasons a skipped row carries in the run's lists and the sync report (README "What a run
# does", provision step 1: "... are skipped with the reason"; step 5: "skipped with reason").
UNMAPPED_SCHOOL = "unmapped school"
UNMAPPED_TERM = "unmapped term"
NO_TERM_IN_IC = "no term in IC"
USERNAME_WITH_SPACES = "username with spaces"
DO_NOT_SYNC_ROLE = "do-not-sync role"
UNKNOWN_ROLE = "role not in the role map"
TRIAL_SCHEDULE = "trial schedule"
INACTIVE_IN_IC = "inactive in IC"
COURSE_NOT_PROVISIONED = "course not provisioned"
SECTION_NOT_PROVISIONED = "section not provisioned"
USER_NOT_PROVISIONED = "user not provisioned"
# README "A district", provisioning.schools: a school mapped to `create` whose building is not in
# the LMS (refused, or not created) waits for it: its records are not "unmapped".
BUILDING_NOT_CREATED = "building not created yet"
# README "A district", a course owned by the district org: placed in the building of each school
# its classes are taught in; with no class in any school it has nowhere to go.
NO_CLASS_IN_A_SCHOOL = "district course with no class in a school"
# README "A district", provisioning.enrollment_roles / enrollment_dates.
ENROLLMENT_ROLE_SKIPPED = "enrollment role set to skip"
DUPLICATE_ENROLLMENT = "duplicate of another enrollment of the same user and class"
# README "Terms and grading periods": a term the map says to provision whose period is not in the
# LMS (refused, or not created) keeps its classes waiting, loudly; terms of other school years and
# inactive terms get no period, and a class with no term of the run's year has none to go in.
GRADING_PERIOD_NOT_CREATED = "grading period not created yet"
OTHER_SCHOOL_YEAR = "term of another school year"
NO_CURRENT_TERM = "no active term of the run's school year"

# What hangs off an object that did not reach the LMS is skipped with this reason (README
# "What a run does", provision step 4: items the LMS refused are reported; what needs their
# LMS ids cannot be sent): the kind of the parent -> the reason its children carry.
MISSING_PARENT = {
    "building": BUILDING_NOT_CREATED,
    "grading_period": GRADING_PERIOD_NOT_CREATED,
    "course": COURSE_NOT_PROVISIONED,
    "section": SECTION_NOT_PROVISIONED,
    "user": USER_NOT_PROVISIONED,
}

# OneRoster 1.2's role vocabulary in README's four families ("the role id of their family
# (student, teacher/staff, administrator, guardian)"); 1.1's administrator is 1.2's siteAdministrator.
ROLE_FAMILY = {
    "student": "student",
    "teacher": "teacher",
    "aide": "teacher",
    "proctor": "teacher",
    "counselor": "teacher",
    "administrator": "administrator",
    "siteAdministrator": "administrator",
    "districtAdministrator": "administrator",
    "systemAdministrator": "administrator",
    "principal": "administrator",
    "guardian": "guardian",
    "parent": "guardian",
    "relative": "guardian",
}


@dataclass
class Expected:
    """Per kind: the keys the LMS must hold (``present``), the keys that must be left out with
    the reasons that apply to each (``skipped``: any one of them is a right answer), and for
    every key the (kind, key) of the objects it hangs off (``parents``)."""

    present: dict[str, set[str]] = field(default_factory=lambda: {kind: set() for kind in KINDS})
    skipped: dict[str, dict[str, set[str]]] = field(default_factory=lambda: {kind: {} for kind in KINDS})
    parents: dict[str, dict[str, list[tuple[str, str]]]] = field(
        default_factory=lambda: {kind: {} for kind in KINDS}
    )
    admin: dict[str, bool] = field(default_factory=dict)  # enrollment key -> a section admin (else member)
    period_titles: dict[str, str] = field(default_factory=dict)  # IC term sourcedId -> its LMS period's title
    mapped_terms: dict[str, str] = field(default_factory=dict)  # IC term -> the existing LMS period the map names
    enrollment_keys: dict[str, str] = field(default_factory=dict)  # IC enrollment sourcedId -> its key here

    def rows(self, kind: str) -> set[str]:
        """Every row of the kind the run must account for: present or skipped."""
        return self.present[kind] | set(self.skipped[kind])

    def add(self, kind: str, key: str, reasons: set[str], parents: list[tuple[str, str]] = ()) -> None:
        seen = key in self.present[kind] or key in self.skipped[kind]
        assert not seen, f"two IC records are one {kind} {key}: write the rule for that first"
        if reasons:
            self.skipped[kind][key] = reasons
        else:
            self.present[kind].add(key)
        self.parents[kind][key] = list(parents)

    def skip_is_right(self, kind: str, key: str, reason: str | None, held: dict) -> bool:
        """Whether the run is right to leave ``key`` out for ``reason``: a reason the rules give
        for it, or that an object it hangs off is not in the LMS (``held``: per kind, its keys),
        e.g. the sections of a course the LMS refused."""
        if reason in self.skipped[kind].get(key, ()):
            return True
        return any(
            MISSING_PARENT.get(parent_kind) == reason and parent not in held[parent_kind]
            for parent_kind, parent in self.parents[kind][key]
        )


# -- reading IC's raw 1.2 records ---------------------------------------------------------------


def _ref(value) -> str | None:
    return value.get("sourcedId") if isinstance(value, dict) else None


def _true(value) -> bool:
    """1.2 spells booleans "true"/"false" (README, "The IC emulator and the synthetic district")."""
    return str(value).lower() == "true"


def _active(record: dict) -> bool:
    # README provision step 1: "inactive records are skipped"; IC marks dropped ones `tobedeleted`.
    return record.get("status") == "active"


def _trial(record: dict) -> bool:
    # README provision step 1: "trial-schedule courses and sections" are skipped; IC flags them
    # with metadata.ic.trialSchedule (README, "The IC emulator and the synthetic district").
    return _true((record.get("metadata") or {}).get("ic.trialSchedule"))


def user_uid(user: dict) -> str:
    """The LMS's id for a person: IC's 1.1 id, which 1.2 keeps in metadata.ic.legacysourceId
    (README "What a run does", extract step 3), so a person is one LMS user over either version."""
    return (user.get("metadata") or {}).get("ic.legacysourceId") or user["sourcedId"]


def primary_school(user: dict) -> str | None:
    """The org of the user's primary role (1.2 ``roles[].roleType``), else its ``primaryOrg``."""
    roles = user.get("roles") or []
    primary = [role for role in roles if role.get("roleType") == "primary"] or roles
    return _ref(primary[0].get("org")) if primary else _ref(user.get("primaryOrg"))


def primary_role(user: dict) -> str | None:
    roles = user.get("roles") or []
    primary = [role for role in roles if role.get("roleType") == "primary"] or roles
    return primary[0].get("role") if primary else None


def school_key(school_id: str) -> str:
    return f"school-{school_id}"


def term_key(session_id: str) -> str:
    return f"term-{session_id}"


# -- the rules -------------------------------------------------------------------------------


def expected_provisioning(district, provisioning: Provisioning, on: date | None = None,
                          school_year: int | None = None, courses_held: bool = True) -> Expected:
    """Apply the district file's rules to the raw records IC serves (OneRoster 1.2) on the run's
    date ``on`` (none: enrollments' dates are not looked at) for the run's ``school_year`` (none:
    the generator's year). ``courses_held`` False: an LMS with no object for an IC course (README
    "Canvas": each IC class is a Canvas course), so no course rows and a class needs none."""
    if provisioning.terms.consolidate_year:
        raise NotImplementedError("consolidate_year: no scenario uses it yet; write its rule before one does")
    if provisioning.terms.share_alike:
        raise NotImplementedError("share_alike: no end-to-end scenario uses it yet; write its rule before one does")
    orgs = list(district.records("orgs", "1.2"))
    sessions = {s["sourcedId"]: s for s in district.records("academicSessions", "1.2")}
    users = list(district.records("users", "1.2"))
    courses = list(district.records("courses", "1.2"))
    classes = list(district.records("classes", "1.2"))
    enrollments = list(district.records("enrollments", "1.2"))
    expected = Expected()

    # buildings -- README "A district", provisioning.schools: IC school -> create | skip |
    # {building_id}; "unlisted schools are skipped".
    has_building: set[str] = set()  # IC schools whose users, courses and classes have a building

    def no_building(school: str | None) -> str:
        # README "A district": a school mapped to create waits for its building; any other is unmapped
        return BUILDING_NOT_CREATED if provisioning.schools.get(school) == "create" else UNMAPPED_SCHOOL

    def building_of(school: str | None) -> list[tuple[str, str]]:
        created = provisioning.schools.get(school) == "create"
        return [("building", school_key(school))] if created else []
    for org in orgs:
        if org.get("type") != "school":
            continue  # README provision step 1: schools become buildings (not the district org)
        school = org["sourcedId"]
        target = provisioning.schools.get(school, "skip")
        if isinstance(target, ExistingBuilding):
            has_building.add(school)  # README: "an existing building": nothing to create
            continue
        reasons = set()
        if not _active(org):
            reasons.add(INACTIVE_IN_IC)
        if target == "skip":
            reasons.add(UNMAPPED_SCHOOL)  # README: "unmapped schools are skipped with their users, ..."
        expected.add("building", school_key(school), reasons)
        if not reasons:
            has_building.add(school)

    # grading periods -- README "Terms and grading periods": a period per IC term of the run's school
    # year that a provisioned class uses (active, not a trial schedule, in a school the map does not
    # skip); provisioning.terms: map[term] or `unlisted`: create | skip | {grading_period_id}; a
    # created period is titled by terms.title_template with the code of the one school using it.
    year = district.spec.school_year if school_year is None else school_year
    provisioned_schools = {school for school, target in provisioning.schools.items() if target != "skip"}
    code_of = {org["sourcedId"]: (org.get("identifier") or "").strip() or org["sourcedId"]
               for org in orgs if org.get("type") == "school"}
    schools_of_term: dict[str, set[str]] = {}
    for klass in classes:
        school = _ref(klass.get("school"))
        if _active(klass) and not _trial(klass) and school in provisioned_schools:
            for term in klass.get("terms") or []:
                schools_of_term.setdefault(_ref(term), set()).add(school)
    term_map = provisioning.terms
    term_target = {session: term_map.map.get(session, term_map.unlisted) for session in sessions}
    current = {session for session in schools_of_term if session in sessions and _active(sessions[session])
               and int(sessions[session]["schoolYear"]) == year}
    has_period = {session for session in current if term_target[session] != "skip"}
    for session in sorted(set(schools_of_term) & set(sessions)):
        target = term_target[session]
        if isinstance(target, ExistingGradingPeriod) and session in current:
            expected.mapped_terms[session] = target.grading_period_id
            continue  # mapped to a grading period the LMS already has: nothing to create
        reasons = set()
        if not _active(sessions[session]):
            reasons.add(INACTIVE_IN_IC)
        elif session not in current:
            reasons.add(OTHER_SCHOOL_YEAR)
        elif target == "skip":
            reasons.add(UNMAPPED_TERM)  # README: `unlisted: create  # or skip`
        expected.add("grading_period", term_key(session), reasons)
        if not reasons:
            record = sessions[session]
            users_of_term = schools_of_term[session]  # one school: its code; several: none, spaces closed up
            school = code_of.get(next(iter(users_of_term)), "") if len(users_of_term) == 1 else ""
            expected.period_titles[session] = " ".join(term_map.title_template.format(
                title=record["title"], school=school, school_year=year, start=record["startDate"],
                end=record["endDate"]).split())
    assert len(set(expected.period_titles.values())) == len(expected.period_titles), (
        "two periods titled alike: write the README's tie-break rule here first")

    # users -- README provision step 1: "users get the role id of their family ... at their primary
    # school"; "usernames with spaces, do-not-sync roles ... and inactive records are skipped".
    uid_of = {user["sourcedId"]: user_uid(user) for user in users}
    family_of = {user["sourcedId"]: ROLE_FAMILY.get(primary_role(user)) for user in users}
    for user in users:
        school = primary_school(user)
        family = family_of[user["sourcedId"]]
        reasons = set()
        if not _active(user) or str(user.get("enabledUser", "true")).lower() == "false":
            reasons.add(INACTIVE_IN_IC)
        if school not in has_building:
            reasons.add(no_building(school))  # README: unmapped schools are skipped "with their users"
        if family is None:
            reasons.add(UNKNOWN_ROLE)  # README "A district": roles has one entry per family
        else:
            # README "A district": roles (LMS role ids, or do_not_sync), roles_by_school overrides them
            roles = provisioning.roles.for_school(provisioning.roles_by_school.get(school))
            if getattr(roles, family) == DO_NOT_SYNC:
                reasons.add(DO_NOT_SYNC_ROLE)
        if " " in (user.get("username") or "").strip():  # README provision step 1: "usernames with
            reasons.add(USERNAME_WITH_SPACES)  # spaces" inside; what was typed around one is trimmed
        expected.add("user", uid_of[user["sourcedId"]], reasons, building_of(school))

    # guardian links -- README provision step 1 (buildings ... users, guardian links) and "The IC
    # emulator and the synthetic district": guardians linked to their children both ways, through
    # `agents`; a link needs both of its users in the LMS.
    links = set()
    for user in users:
        for agent in (_ref(agent) for agent in user.get("agents") or []):
            if agent not in uid_of:
                continue
            if family_of[user["sourcedId"]] == "guardian" and family_of[agent] == "student":
                links.add((uid_of[user["sourcedId"]], uid_of[agent]))
            if family_of[user["sourcedId"]] == "student" and family_of[agent] == "guardian":
                links.add((uid_of[agent], uid_of[user["sourcedId"]]))
    for guardian, student in sorted(links):
        both = guardian in expected.present["user"] and student in expected.present["user"]
        expected.add(
            "guardian_link",
            f"{guardian}:{student}",
            set() if both else {USER_NOT_PROVISIONED},
            [("user", guardian), ("user", student)],
        )

    # courses -- README provision step 1: unmapped schools are skipped with their courses;
    # trial-schedule courses and inactive records are skipped.
    # A course whose org is the district (or any org that is not a school, OneRoster 1.2) is placed
    # in the building of each school its active, non-trial classes are taught in (README "A
    # district"), as ``<course>@<school>``.
    org_type = {org["sourcedId"]: org.get("type") for org in orgs}
    taught_in: dict[str, set[str]] = {}
    for klass in classes:
        if _active(klass) and not _trial(klass):
            taught_in.setdefault(_ref(klass.get("course")), set()).add(_ref(klass.get("school")))
    district_owned: set[str] = set()
    for course in courses if courses_held else ():
        owner = _ref(course.get("org"))
        reasons = set()
        if not _active(course):
            reasons.add(INACTIVE_IN_IC)
        if _trial(course):
            reasons.add(TRIAL_SCHEDULE)
        if owner in org_type and org_type[owner] != "school" and not reasons:
            district_owned.add(course["sourcedId"])
            schools = taught_in.get(course["sourcedId"], set())
            housed = sorted(schools & has_building)
            for school in housed:
                expected.add("course", f"{course['sourcedId']}@{school}", set(), building_of(school))
            if not housed:
                expected.add("course", course["sourcedId"],
                             {no_building(school) for school in schools} or {NO_CLASS_IN_A_SCHOOL})
            continue
        if owner not in has_building and org_type.get(owner, "school") == "school":
            reasons.add(no_building(owner))
        expected.add("course", course["sourcedId"], reasons, building_of(owner))

    # sections -- one per IC class of a provisioned course, in the grading periods of its terms;
    # README provision step 1: "cross-listed classes stay separate sections"; trial-schedule
    # sections skipped; README "A district", terms.unlisted: "skip: classes whose terms are all
    # skipped are skipped"; a class IC schedules in no term has no grading period to go in.
    for klass in classes:
        course = _ref(klass.get("course"))
        school = _ref(klass.get("school"))
        if course in district_owned:
            course = f"{course}@{school}"  # its school's copy of the district's course
        terms = [_ref(term) for term in klass.get("terms") or []]
        reasons = set()
        if not _active(klass):
            reasons.add(INACTIVE_IN_IC)
        if _trial(klass):
            reasons.add(TRIAL_SCHEDULE)
        if school not in has_building:
            reasons.add(no_building(school))
        if courses_held and course not in expected.present["course"]:
            reasons.add(COURSE_NOT_PROVISIONED)
        if not terms:
            reasons.add(NO_TERM_IN_IC)
        elif not any(term in has_period for term in terms):
            # README "Terms and grading periods": all of them skipped by the map is the map's choice;
            # otherwise there is no term of the run's year to put the section in
            reasons.add(UNMAPPED_TERM if all(term_target.get(term) == "skip" for term in terms) else NO_CURRENT_TERM)
        periods = [("grading_period", term_key(term)) for term in terms if term in has_period
                   and not isinstance(term_target[term], ExistingGradingPeriod)]
        held_course = [("course", course)] if courses_held else []
        expected.add("section", klass["sourcedId"], reasons, [*held_course, *building_of(school), *periods])

    # enrollments -- README provision step 1: "teachers become section admins, students members",
    # of the sections and users provisioned; dropped (tobedeleted) enrollments are inactive.
    # README "A district", provisioning.enrollment_roles: the role puts the person in the section as
    # an admin or a member, or not at all; enrollment_dates: on the run's day an enrollment whose
    # endDate (inclusive) is past is not in the LMS, one whose beginDate is ahead is held if `future:
    # hold`. One user in one class twice is one enrollment: an admin one first, then the lowest sourcedId.
    roles = provisioning.enrollment_roles
    hold = provisioning.enrollment_dates.future == "hold"
    by_pair: dict[str, list[tuple[dict, set[str]]]] = {}
    for enrollment in enrollments:
        section = _ref(enrollment.get("class"))
        user = uid_of.get(_ref(enrollment.get("user")), "?")
        reasons = set()
        if not _active(enrollment):
            reasons.add(INACTIVE_IN_IC)
        if section not in expected.present["section"]:
            reasons.add(SECTION_NOT_PROVISIONED)
        if user not in expected.present["user"]:
            reasons.add(USER_NOT_PROVISIONED)
        if roles.get(enrollment.get("role")) not in ("admin", "member"):
            reasons.add(ENROLLMENT_ROLE_SKIPPED)
        begins, ends = (enrollment.get(name) or None for name in ("beginDate", "endDate"))
        if on is not None and ends and date.fromisoformat(ends[:10]) < on:
            reasons.add(f"ended on {ends[:10]}")
        if on is not None and hold and begins and date.fromisoformat(begins[:10]) > on:
            reasons.add(f"begins on {begins[:10]}")
        by_pair.setdefault(f"{section}:{user}", []).append((enrollment, reasons))
    for pair, records in by_pair.items():
        section, user = pair.split(":", 1)
        first = min((record for record in records if not record[1]), default=None,
                    key=lambda record: (roles.get(record[0].get("role")) != "admin", record[0]["sourcedId"]))
        if first is None:  # none is enrolled: the lowest sourcedId stands for the pair
            first = min(records, key=lambda record: record[0]["sourcedId"])
        for enrollment, reasons in records:
            key = pair if enrollment is first[0] else f"{pair}~{enrollment['sourcedId']}"
            if enrollment is not first[0] and not reasons:
                reasons = {DUPLICATE_ENROLLMENT}
            expected.add("enrollment", key, reasons, [("section", section), ("user", user)])
            expected.enrollment_keys[enrollment["sourcedId"]] = key
            expected.admin[key] = roles.get(enrollment.get("role")) == "admin"
    return expected


def enrollment_keys(district) -> dict[str, str]:
    """IC enrollment sourcedId -> ``<section key>:<user key>`` (the run lists skipped enrollments
    by IC's sourcedId; the LMS knows them by the pair)."""
    uid_of = {user["sourcedId"]: user_uid(user) for user in district.records("users", "1.2")}
    return {
        e["sourcedId"]: f"{_ref(e.get('class'))}:{uid_of.get(_ref(e.get('user')), '?')}"
        for e in district.records("enrollments", "1.2")
    }


# -- the far side ----------------------------------------------------------------------------------


def held_by_lms(lms, district, expected: Expected) -> dict[str, Counter]:
    """Per kind, the keys of what the Schoology emulator holds, counted (above 1: stored twice;
    a course code in two buildings counts twice); a grading period is known by the title the
    ``expected`` one of its term has."""
    code_of_school = {
        (org.get("identifier") or "").strip() or org["sourcedId"]: school_key(org["sourcedId"])
        for org in district.records("orgs", "1.2")
        if org.get("type") == "school"
    }
    term_of_title = {title: term_key(term) for term, title in expected.period_titles.items()}
    users = lms.users
    uid = {user["uid"]: user["school_uid"] for user in users.values()}
    sections = lms.sections
    section_code = {lms_id: section["section_school_code"] for lms_id, section in sections.items()}
    return {
        "building": Counter(
            code_of_school.get(building["building_code"], building["building_code"])
            for building in lms.buildings.values()
        ),
        "grading_period": Counter(
            term_of_title.get(period["title"], period["title"]) for period in lms.grading_periods.values()
        ),
        "user": Counter(user["school_uid"] for user in users.values()),
        "guardian_link": Counter(
            f"{uid[link['parent_uid']]}:{uid[link['student_uid']]}" for link in lms.associations.values()
        ),
        "course": Counter(course["course_code"] for course in lms.courses.values()),
        "section": Counter(section["section_school_code"] for section in sections.values()),
        "enrollment": Counter(
            f"{section_code[e['section_id']]}:{uid[e['uid']]}" for e in lms.enrollments.values()
        ),
    }


def assert_lms_holds_what_the_rules_say(lms, district, provisioning: Provisioning, on: date) -> tuple[Expected, dict]:
    """The Schoology emulator ``lms`` holds exactly what the district file's rules put there, once
    each; every section is on the grading periods of its own class's terms, as the rules title (or
    map) them. Returns what the rules expect and what the LMS holds (per kind, its keys counted)."""
    expected = expected_provisioning(district, provisioning, on=on)
    held = held_by_lms(lms, district, expected)
    for period in set(expected.mapped_terms.values()):  # the school's own, not the run's to create
        del held["grading_period"][lms.grading_periods[period]["title"]]
    for kind in KINDS:
        assert set(held[kind]) == expected.present[kind], kind
        assert all(count == 1 for count in held[kind].values()), f"{kind} stored twice"
    periods = lms.grading_periods
    titles = {**expected.period_titles, **{term: periods[period]["title"]
                                           for term, period in expected.mapped_terms.items()}}
    classes = {klass["sourcedId"]: klass for klass in district.records("classes", "1.2")}
    for section in lms.sections.values():
        own_terms = [term["sourcedId"] for term in classes[section["section_school_code"]]["terms"]]
        assert sorted(periods[period]["title"] for period in section["grading_periods"]) == sorted(
            titles[term] for term in own_terms if term in titles), section["section_school_code"]
    return expected, held


def held_by_canvas(canvas) -> dict[str, Counter]:
    """Per kind, the SIS ids of what the Canvas emulator holds active (README "Canvas": a building is
    a sub-account, a grading period a term, a section a course with its one section, a guardian link
    an observer link, an enrollment ``<course>:<user>`` as a teacher or a student)."""
    courses, sections = canvas.courses, canvas.sections
    return {
        "building": Counter(key for key, account in canvas.accounts.items() if account["status"] == "active"),
        "grading_period": Counter(key for key, term in canvas.terms.items() if term["status"] == "active"),
        "user": Counter(key for key, user in canvas.users.items() if user["status"] == "active"),
        "guardian_link": Counter(f"{link['observer_id']}:{link['student_id']}"
                                 for link in canvas.user_observers.values() if link["workflow_state"] == "active"),
        "course": Counter(),
        "section": Counter(key for key, course in courses.items() if course["status"] == "active"
                           and sections.get(key, {}).get("course_id") == key),
        "enrollment": Counter(f"{e['section_id']}:{e['user_id']}" for e in canvas.enrollments.values()
                              if e["status"] == "active" and e["role"] in ("teacher", "student")),
    }


def assert_canvas_holds_what_the_rules_say(canvas, district, provisioning: Provisioning, on: date,
                                           made_in_canvas: frozenset[str] = frozenset()) -> Expected:
    """The Canvas emulator holds exactly what the district file's rules put there (README "Canvas"),
    besides the users ``made_in_canvas`` by hand: every class a course in its school's sub-account and
    in its one term (none when it has several), every enrollment in its class's section with the role
    its place gives. Returns what the rules expect."""
    if provisioning.terms.map:
        raise NotImplementedError("existing terms: write their rule here first")
    expected = expected_provisioning(district, provisioning, on=on, courses_held=False)
    held = held_by_canvas(canvas)
    for user in made_in_canvas:
        del held["user"][user]
    for target in provisioning.schools.values():  # the district's own sub-accounts, not the run's to create
        if isinstance(target, ExistingBuilding):
            held["building"].pop(target.building_id, None)
    for kind in KINDS:
        assert set(held[kind]) == expected.present[kind], kind
    school_of = {klass["sourcedId"]: _ref(klass.get("school")) for klass in district.records("classes", "1.2")}
    courses = canvas.courses
    for key in expected.present["section"]:
        periods = [parent for kind, parent in expected.parents["section"][key] if kind == "grading_period"]
        existing = provisioning.schools[school_of[key]]  # README "Canvas": a sub-account's SIS id
        account = existing.building_id if isinstance(existing, ExistingBuilding) else school_key(school_of[key])
        assert courses[key]["account_id"] == account, key
        assert courses[key]["term_id"] == (periods[0] if len(periods) == 1 else ""), key
    roles = {f"{e['section_id']}:{e['user_id']}": e["role"] for e in canvas.enrollments.values()
             if e["status"] == "active" and e["role"] in ("teacher", "student")}
    assert {key: role == "teacher" for key, role in roles.items()} == {
        key: expected.admin[key] for key in expected.present["enrollment"]}
    return expected
