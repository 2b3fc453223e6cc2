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
| grading_period | ``term-<IC academicSession sourcedId>`` | title = the session's title           |
| user           | IC's 1.1 id (1.2: metadata.ic.legacysourceId) | school_uid                      |
| guardian_link  | ``<guardian key>:<student key>``        | parent_school_uid:student_school_uid  |
| course         | IC course sourcedId                     | course_code                           |
| section        | IC class sourcedId                      | section_school_code                   |
| enrollment     | ``<section key>:<user key>``            | section_school_code:school_uid        |
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

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

# What hangs off an object that did not reach the LMS is skipped with this reason (README
# "What a run does", provision step 4: items the LMS refused are reported; what needs their
# LMS ids cannot be sent): the kind of the parent -> the reason its children carry.
MISSING_PARENT = {
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


def expected_provisioning(district, provisioning: Provisioning) -> Expected:
    """Apply the district file's rules to the raw records IC serves (OneRoster 1.2)."""
    if provisioning.terms.consolidate_year:
        raise NotImplementedError("consolidate_year: no scenario uses it yet; write its rule before one does")
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

    # grading periods -- README provision step 1: "the terms classes use become grading periods";
    # README "A district", provisioning.terms: map[term] or `unlisted`: create | skip | {grading_period_id}.
    used_terms = {_ref(term) for c in classes if _active(c) for term in c.get("terms") or []}
    term_map = provisioning.terms
    term_target = {session: term_map.map.get(session, term_map.unlisted) for session in sessions}
    has_period = {  # IC terms a section can be put in: a grading period created, or an existing one
        session
        for session, target in term_target.items()
        if isinstance(target, ExistingGradingPeriod) or (target == "create" and _active(sessions[session]))
    }
    for session in sorted(used_terms & set(sessions)):
        target = term_target[session]
        if isinstance(target, ExistingGradingPeriod):
            continue  # mapped to a grading period the LMS already has: nothing to create
        reasons = set()
        if not _active(sessions[session]):
            reasons.add(INACTIVE_IN_IC)
        if target == "skip":
            reasons.add(UNMAPPED_TERM)  # README: `unlisted: create  # or skip`
        expected.add("grading_period", term_key(session), reasons)

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
            reasons.add(UNMAPPED_SCHOOL)  # README: unmapped schools are skipped "with their users"
        if family is None:
            reasons.add(UNKNOWN_ROLE)  # README "A district": roles has one entry per family
        else:
            # README "A district": roles (LMS role ids, or do_not_sync), roles_by_school overrides them
            roles = provisioning.roles.for_school(provisioning.roles_by_school.get(school))
            if getattr(roles, family) == DO_NOT_SYNC:
                reasons.add(DO_NOT_SYNC_ROLE)
        if " " in (user.get("username") or ""):
            reasons.add(USERNAME_WITH_SPACES)  # README provision step 1: "usernames with spaces"
        expected.add("user", uid_of[user["sourcedId"]], reasons)

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
    for course in courses:
        reasons = set()
        if not _active(course):
            reasons.add(INACTIVE_IN_IC)
        if _trial(course):
            reasons.add(TRIAL_SCHEDULE)
        if _ref(course.get("org")) not in has_building:
            reasons.add(UNMAPPED_SCHOOL)
        expected.add("course", course["sourcedId"], reasons)

    # sections -- one per IC class of a provisioned course, in the grading periods of its terms;
    # README provision step 1: "cross-listed classes stay separate sections"; trial-schedule
    # sections skipped; README "A district", terms.unlisted: "skip: classes whose terms are all
    # skipped are skipped"; a class IC schedules in no term has no grading period to go in.
    for klass in classes:
        course = _ref(klass.get("course"))
        terms = [_ref(term) for term in klass.get("terms") or []]
        reasons = set()
        if not _active(klass):
            reasons.add(INACTIVE_IN_IC)
        if _trial(klass):
            reasons.add(TRIAL_SCHEDULE)
        if _ref(klass.get("school")) not in has_building:
            reasons.add(UNMAPPED_SCHOOL)
        if course not in expected.present["course"]:
            reasons.add(COURSE_NOT_PROVISIONED)
        if not terms:
            reasons.add(NO_TERM_IN_IC)
        elif not any(term in has_period for term in terms):
            reasons.add(UNMAPPED_TERM)
        expected.add("section", klass["sourcedId"], reasons, [("course", course)])

    # enrollments -- README provision step 1: "teachers become section admins, students members",
    # of the sections and users provisioned; dropped (tobedeleted) enrollments are inactive.
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
        expected.add("enrollment", f"{section}:{user}", reasons, [("section", section), ("user", user)])
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


def held_by_lms(lms, district) -> dict[str, Counter]:
    """Per kind, the keys of what the Schoology emulator holds, counted (above 1: stored twice;
    a course code in two buildings counts twice)."""
    code_of_school = {
        org.get("identifier") or org["sourcedId"]: school_key(org["sourcedId"])
        for org in district.records("orgs", "1.2")
        if org.get("type") == "school"
    }
    sessions = district.records("academicSessions", "1.2")
    term_of_title = {session["title"]: term_key(session["sourcedId"]) for session in sessions}
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
