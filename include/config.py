"""District configuration: one YAML file per district under ``include/districts/``.

The files are read at DAG-parse time, so everything here is pure (no network, no
database, no Airflow Variables). A bad file raises :class:`DistrictConfigError` whose
message names the file, the field and what is wrong.
"""

from __future__ import annotations

import os
import re
import string
import zlib
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

DISTRICTS_DIR = Path(__file__).parent / "districts"
DISTRICTS_DIR_ENV = "ONEROSTER_DISTRICTS_DIR"
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's safe loader where PyYAML was built with it (its wheels are): ten times the pure-Python
loader's speed, which the dag-processor feels with hundreds of district files."""

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
IC_MAX_CONCURRENCY = 5
RETENTION_DAYS_MAX = 366
"""A run folder is a night's working copy, not an archive (what later nights need is in the state
folder): a year covers looking back over a whole school year's nights."""


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a district file must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PeakHours(_Strict):
    """IC asks for serial calls during the school day; times are UTC like the schedule."""

    start: time
    end: time

    def contains(self, moment: datetime) -> bool:
        now = moment.time()
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end


class InfiniteCampus(_Strict):
    """How hard this district's Infinite Campus may be used; how it is reached (URL, app name,
    OneRoster version, credentials) lives in the Airflow connection ``conn_id``."""

    conn_id: str = Field(min_length=1)
    pool: str = Field(
        default="infinite_campus",
        min_length=1,
        description="Airflow pool per IC host; its slots must equal max_concurrency.",
    )
    max_concurrency: int = Field(default=IC_MAX_CONCURRENCY, ge=1, le=IC_MAX_CONCURRENCY)
    peak_concurrency: int = Field(default=1, ge=1, le=IC_MAX_CONCURRENCY)
    peak_hours: PeakHours | None = None
    page_size: int = Field(default=50_000, ge=1, le=50_000, description="records per request; IC allows 50,000")
    requests_per_second: float | None = Field(
        default=None, gt=0, description="IC's rate limit for this application, if it has one; never exceeded"
    )
    delta_extracts: bool = Field(
        default=True, description="after a full extract, nightly runs ask IC only for changed records"
    )
    delta_overlap_minutes: int = Field(default=60, ge=0, description="how far back a delta reaches before the last")
    full_extract_every_days: int = Field(
        default=7, ge=1, description="a full extract at least this often: deletions can hide from a delta"
    )
    max_attempts: int = Field(default=6, ge=1, le=10, description="per IC request, on 429/5xx/dropped connections")
    backoff_seconds: float = Field(default=1.0, ge=0, le=60, description="first retry delay, doubling")

    @model_validator(mode="after")
    def _peak_not_above_off_peak(self) -> InfiniteCampus:
        if self.peak_concurrency > self.max_concurrency:
            raise ValueError("peak_concurrency must not exceed max_concurrency")
        return self

    def concurrency_at(self, moment: datetime) -> int:
        if self.peak_hours is not None and self.peak_hours.contains(moment):
            return self.peak_concurrency
        return self.max_concurrency


class ActiveYearRule(_Strict):
    """A school year is named by the calendar year it ends in (2026-27 is 2027, as OneRoster does)."""

    starts: str = Field(default="07-01", description="MM-DD on which a new school year starts")

    @field_validator("starts")
    @classmethod
    def _month_day(cls, value: str) -> str:
        if not re.fullmatch(r"\d\d-\d\d", value):
            raise ValueError("must be MM-DD, e.g. 07-01")
        month, day = (int(part) for part in value.split("-"))
        date(2001, month, day)  # raises ValueError for 02-30 and the like
        return value

    def school_year_of(self, moment: date | datetime) -> int:
        month, day = (int(part) for part in self.starts.split("-"))
        on = moment.date() if isinstance(moment, datetime) else moment
        return on.year + 1 if (on.month, on.day) >= (month, day) else on.year


class TaskRetries(_Strict):
    """Airflow task retries: exponential backoff from ``delay_seconds``, capped."""

    count: int = Field(default=3, ge=0, le=10)
    delay_seconds: float = Field(default=60, ge=0)
    max_delay_seconds: float = Field(default=1800, ge=0)


class Deadline(_Strict):
    """When a night's run must be done: ``within_hours`` of its scheduled time, or ``by`` a
    UTC time of day (the schedule must then name a fixed hour and minute)."""

    within_hours: float | None = Field(default=None, gt=0, le=72)
    by: time | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Deadline:
        if (self.within_hours is None) == (self.by is None):
            raise ValueError("give exactly one of within_hours or by")
        return self

    def after_scheduled_time(self, schedule: str) -> timedelta:
        if self.within_hours is not None:
            return timedelta(hours=self.within_hours)
        fields = schedule.split()
        if len(fields) != 5 or not (fields[0].isdigit() and fields[1].isdigit()):
            raise ValueError(f"deadline.by needs a schedule with a fixed minute and hour, got {schedule!r}")
        scheduled = timedelta(hours=int(fields[1]), minutes=int(fields[0]))
        by = timedelta(hours=self.by.hour, minutes=self.by.minute)
        return (by - scheduled) % timedelta(days=1) or timedelta(days=1)


class Notifications(_Strict):
    """Who hears about failures and missed deadlines, through which Airflow SMTP connection."""

    emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)
    smtp_conn_id: str = Field(default="smtp_default", min_length=1)
    deadline: Deadline | None = None


DO_NOT_SYNC = "do_not_sync"
LmsId = Annotated[str, Field(min_length=1, pattern=r"^\S+$")]
RoleTarget = Annotated[str, Field(min_length=1, pattern=r"^\S+$", description=f"LMS role id or {DO_NOT_SYNC!r}")]


class Lms(_Strict):
    """Where provisioning writes, whichever LMS it is; how it is reached (URL, keys, token) lives in
    the Airflow connection."""

    conn_id: str = Field(min_length=1)
    pool: str = Field(default="lms", min_length=1, description="Airflow pool bounding concurrent LMS calls")
    max_attempts: int = Field(default=6, ge=1, le=10, description="per LMS call, on 429/5xx/dropped connections")
    backoff_seconds: float = Field(default=1.0, ge=0, le=60, description="first retry delay, doubling")


class SchoologyLms(Lms):
    """Schoology, through its REST v1 API: objects created, updated and deactivated in bulk calls."""

    target: Literal["schoology"] = "schoology"
    # Schoology documents no rate limit (nor 429, nor Retry-After): the defaults are ours, kept low;
    # raise them for a district whose Schoology is known to take more
    requests_per_second: float = Field(default=5.0, gt=0, le=1000,
                                       description="never faster; Schoology documents no limit, so 5 by default")
    max_in_flight: int = Field(default=2, ge=1, le=32,
                               description="bulk calls under way at once: the rate limit × the LMS's answer time "
                                           "(2 by default: calls signed on several threads may reach Schoology "
                                           "with timestamps out of sequence, which it refuses)")


class CanvasLms(Lms):
    """Canvas, through SIS imports: each batch of changes one CSV import into the root account."""

    target: Literal["canvas"]
    rows_per_import: int = Field(default=10_000, ge=1, le=1_000_000,
                                 description="changes sent in one SIS import (its answers journaled as one part)")
    dropped_enrollments: Literal["deleted", "completed"] = Field(
        default="deleted", description="what an enrollment IC dropped becomes in Canvas (completed: its "
                                       "grades stay readable in the course)")
    grade_score: Literal["current", "final"] = Field(
        default="current", description="the Canvas score passed back as a term or overall grade: current "
                                       "(graded work only) or final (ungraded work counting as zero); a "
                                       "teacher's final grade override wins over either")


def _lms_target(settings: object) -> str:
    if isinstance(settings, dict):
        return settings.get("target", "schoology")
    return getattr(settings, "target", "schoology")


LMS_TARGETS = ("schoology", "canvas")
LmsConfig = Annotated[
    Annotated[SchoologyLms, Tag("schoology")] | Annotated[CanvasLms, Tag("canvas")],
    Discriminator(_lms_target, custom_error_type="lms_target",
                  custom_error_message=f"target must be one of {', '.join(LMS_TARGETS)}"),
]


class ExistingBuilding(_Strict):
    building_id: LmsId


class ExistingGradingPeriod(_Strict):
    grading_period_id: LmsId


TERM_TITLE_FIELDS = ("title", "school", "school_year", "start", "end")


class Terms(_Strict):
    """IC terms (academicSessions) -> LMS grading periods.

    A grading period the integration creates stands for one IC term (its sourcedId), never for a
    title: IC gives each school its own terms, titled alike ("S1", "Q1"...), and an LMS such as
    Schoology wants grading-period titles unique across the whole account. The created title is
    ``title_template`` filled with the term's ``title``, the ``school`` whose provisioned classes
    use it (its building code; empty, and the spaces around it closed up, for a term classes of
    several schools use), the ``school_year`` and the ``start``/``end`` days. Titles still alike
    get the days added, then the term's key. Terms of several schools share one period only with
    ``share_alike`` and only when their title and days are the same."""

    consolidate_year: bool = Field(default=False, description="one year-long grading period per school year")
    unlisted: Literal["create", "skip"] = "create"
    map: dict[str, Literal["create", "skip"] | ExistingGradingPeriod] = Field(default_factory=dict)
    title_template: str = Field(default="{school_year} {school} {title}",
                                description="title of a created grading period: {title}, {school}, "
                                            "{school_year}, {start}, {end}")
    share_alike: bool = Field(default=False, description="terms of different schools with the same title and "
                                                         "days share one grading period")

    @field_validator("title_template")
    @classmethod
    def _known_fields(cls, template: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as error:
            raise ValueError(f"not a title template ({error})") from None
        unknown = sorted(names - set(TERM_TITLE_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; a title may use {', '.join(TERM_TITLE_FIELDS)}")
        if "title" not in names:
            raise ValueError("must contain {title}, the IC term's own title")
        return template


class RoleOverrides(_Strict):
    student: RoleTarget | None = None
    teacher: RoleTarget | None = None
    administrator: RoleTarget | None = None
    guardian: RoleTarget | None = None


class Roles(_Strict):
    """IC role families -> LMS role ids (or do_not_sync)."""

    student: RoleTarget
    teacher: RoleTarget
    administrator: RoleTarget
    guardian: RoleTarget

    def for_school(self, overrides: RoleOverrides | None) -> Roles:
        if overrides is None:
            return self
        return self.model_copy(update=overrides.model_dump(exclude_none=True))


EnrollmentPlace = Literal["admin", "member", "skip"]
# OneRoster's enrollment roles (1.1 and 1.2 together) and where each is put in a section by default:
# the staff of a class manage it (section admin), students are members, the rest is not synced.
ENROLLMENT_ROLES: dict[str, EnrollmentPlace] = {
    "administrator": "admin",
    "teacher": "admin",
    "aide": "admin",
    "proctor": "admin",
    "student": "member",
    "guardian": "skip",
    "parent": "skip",
    "relative": "skip",
}


class EnrollmentDates(_Strict):
    """What an enrollment's beginDate/endDate (inclusive) mean on the run's date: one that ended
    before it is not in the LMS (it is deactivated there); one that begins after it is ``hold``:
    skipped until that day, or ``enrol``: in the section ahead of its first day."""

    future: Literal["enrol", "hold"] = "enrol"


class Provisioning(_Strict):
    """How IC's roster lands in the LMS: unmapped schools are skipped with everything in them."""

    schools: dict[str, Literal["create", "skip"] | ExistingBuilding] = Field(default_factory=dict)
    terms: Terms = Terms()
    roles: Roles
    roles_by_school: dict[str, RoleOverrides] = Field(default_factory=dict)
    enrollment_roles: dict[str, EnrollmentPlace] = Field(
        default_factory=lambda: dict(ENROLLMENT_ROLES),
        description="OneRoster enrollment role -> admin | member | skip in the section; roles not listed "
                    "keep their default (" + ", ".join(f"{role}: {place}" for role, place in ENROLLMENT_ROLES.items())
                    + ")",
    )
    enrollment_dates: EnrollmentDates = EnrollmentDates()

    @field_validator("enrollment_roles")
    @classmethod
    def _known_enrollment_roles(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(ENROLLMENT_ROLES))
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))} is not a OneRoster enrollment role "
                             f"(one of {', '.join(ENROLLMENT_ROLES)})")
        return {**ENROLLMENT_ROLES, **value}


class ExportColumns(_Strict):
    """Header names of the LMS's final-grade auto-export; the defaults are Schoology's."""

    section: str = "Section School Code"
    student: str = "Unique User ID"
    grading_period: str = "Grading Period"
    term_percent: str = "Grading Period Grade"
    term_score: str = "Grading Period Letter"
    course_percent: str = "Course Grade"
    course_score: str = "Course Letter"


class ScoreBand(_Strict):
    """One line of an IC score group: a percent at or above ``min_percent`` earns ``score``."""

    score: str = Field(min_length=1)
    min_percent: float = Field(ge=0, le=1000)


class GradingWindow(_Strict):
    opens: date
    closes: date


class GradingWindowRule(_Strict):
    """Where IC's grading window is not listed: it opens before a term ends and closes after."""

    opens_days_before_end: int = Field(default=14, ge=0, le=366)
    closes_days_after_end: int = Field(default=7, ge=0, le=366)


class AssignmentPassback(_Strict):
    """Assignment scores, LMS -> IC's gradebook (an LMS read through its API: Canvas): a lineItem per
    assignment, in the IC category of its assignment group, and a result per student score."""

    start_date: date = Field(description="assignments assigned (unlocked, else created) before this day are "
                                         "not sent")
    missing: Literal["skip", "zero", "not_submitted"] = Field(
        default="skip", description="work the LMS marks missing and nobody scored: not sent (skip), sent as a "
                                    "score of 0 (zero), or sent with IC's status not submitted; either way its "
                                    "result is flagged missing")
    late: Literal["flag", "ignore"] = Field(
        default="flag", description="work the LMS marks late: its result flagged late in IC (flag), or no late "
                                    "flag sent at all (ignore)")


class GradePassback(_Strict):
    """LMS final grades -> IC grading tasks: from the LMS's auto-export file on SFTP (Schoology), or
    read from the LMS's API (Canvas), which needs none of the SFTP settings."""

    sftp_conn_id: str | None = Field(default=None, min_length=1, description="where the LMS's export lands; "
                                     "not for an LMS whose grades are read from its API (Canvas)")
    remote_dir: str = Field(default="/", pattern=r"^/")
    export_title: str | None = Field(default=None, description="the auto-export process title; else newest *.csv")
    stable_seconds: float = Field(default=30, ge=0, le=3600)
    poke_interval_seconds: float = Field(default=60, gt=0, le=3600)
    timeout_hours: float = Field(default=6, gt=0, le=48)
    columns: ExportColumns = ExportColumns()
    term_task_ids: list[str] = Field(default_factory=list)
    overall_task_ids: list[str] = Field(default_factory=list)
    letter_grades: bool = False
    teacher_opt_in: bool = False
    score_groups: dict[str, list[ScoreBand]] = Field(default_factory=dict)
    task_score_groups: dict[str, str] = Field(default_factory=dict, description="task id -> score group")
    windows: dict[str, GradingWindow] = Field(default_factory=dict, description="IC term sourcedId -> window")
    window_rule: GradingWindowRule = GradingWindowRule()
    mapping_csv: str | None = Field(
        default=None, min_length=1,
        description="a file in the districts directory, named relative to it: "
        "lms_grading_period,ic_term[,school]",
    )
    assignments: AssignmentPassback | None = Field(
        default=None, description="assignment scores too (an LMS read through its API only)")

    @field_validator("mapping_csv")
    @classmethod
    def _inside_the_districts_directory(cls, value: str | None) -> str | None:
        """The file is read from the districts directory joined with this name: an absolute name or
        ``..`` would read a file from anywhere the workers can."""
        if value is None:
            return value
        if re.match(r"^([\\/]|[A-Za-z]:)", value) or ".." in re.split(r"[\\/]", value):
            raise ValueError("must be a path relative to the districts directory and inside it "
                             "(e.g. acme_terms.csv): no absolute path, no '..'")
        return value

    @model_validator(mode="after")
    def _tasks_and_groups(self) -> GradePassback:
        if not self.term_task_ids and not self.overall_task_ids:
            raise ValueError("give at least one of term_task_ids or overall_task_ids")
        tasks = {*self.term_task_ids, *self.overall_task_ids}
        for task, group in self.task_score_groups.items():
            if task not in tasks:
                raise ValueError(f"task_score_groups: {task!r} is not a term or overall task id")
            if group not in self.score_groups:
                raise ValueError(f"task_score_groups.{task}: no score group {group!r} in score_groups")
        return self


# what only a grade export file needs: an LMS whose grades are read from its API takes none of them
EXPORT_SETTINGS = frozenset({"sftp_conn_id", "remote_dir", "export_title", "stable_seconds",
                             "poke_interval_seconds", "timeout_hours", "columns"})


class DistrictConfig(_Strict):
    """Everything that differs between districts; one DAG is built from each."""

    district: Identifier
    name: str = Field(min_length=1)
    schedule: str = Field(default="0 6 * * *", description="cron, UTC")
    start_date: date = date(2026, 7, 1)
    tags: list[str] = Field(default_factory=list)
    active_year: ActiveYearRule = ActiveYearRule()
    task_retries: TaskRetries = TaskRetries()
    infinite_campus: InfiniteCampus
    lms: LmsConfig | None = None
    provisioning: Provisioning | None = None
    grade_passback: GradePassback | None = None
    notifications: Notifications = Notifications()
    retention_days: int = Field(
        default=30, ge=1, le=RETENTION_DAYS_MAX, strict=True,  # strict: YAML's `yes` is no 1
        description="a run's staged folder is removed this many days after the run last wrote to it",
    )

    @model_validator(mode="after")
    def _provisioning_needs_an_lms(self) -> DistrictConfig:
        if self.provisioning is not None and self.lms is None:
            raise ValueError("provisioning is configured but lms (target and conn_id) is missing")
        passback = self.grade_passback
        if passback is not None and isinstance(self.lms, CanvasLms):
            given = sorted(EXPORT_SETTINGS & passback.model_fields_set)
            if given:
                raise ValueError(f"grade_passback: grades come back from Canvas through its API, not an export "
                                 f"file: remove {', '.join(given)}")
        elif passback is not None and passback.sftp_conn_id is None:
            raise ValueError("grade_passback: sftp_conn_id is missing (the SFTP connection the LMS's grade "
                             "export lands on)")
        elif passback is not None and passback.assignments is not None:
            raise ValueError("grade_passback.assignments: assignment scores are read from an LMS's API (lms.target "
                             "canvas); an export file has final grades only")
        if self.notifications.deadline is not None:
            self.notifications.deadline.after_scheduled_time(self.schedule)
        return self

    @field_validator("schedule")
    @classmethod
    def _five_field_cron(cls, value: str) -> str:
        if len(value.split()) != 5 and not value.startswith("@"):
            raise ValueError("must be a 5-field cron expression (UTC) or an @preset")
        return value

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.district)


class DistrictConfigError(ValueError):
    """A district file that cannot be used; the message names the file and each bad field."""

    def __init__(self, path: Path, problems: list[str], settings: dict | None = None):
        self.path = path
        self.problems = problems
        self.settings = settings or {}  # what the file holds, when it is a YAML mapping
        super().__init__(f"{_display(path)}: " + "; ".join(problems))


class InvalidDistrict(BaseModel):
    """What a district file that failed validation still says, each setting read on its own
    (its default where that setting is bad too). The district keeps a DAG on its own schedule
    that fails every night naming the file's problems, and emails them where ``notifications``
    can be read: a typo must not silently stop one district's syncs, nor anyone else's."""

    model_config = ConfigDict(frozen=True)

    district: str
    file: str
    problems: list[str]
    name: str
    schedule: str
    start_date: date
    notifications: Notifications

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.district)


def invalid_district(error: DistrictConfigError) -> InvalidDistrict:
    """The readable parts of the file behind ``error`` (see :class:`InvalidDistrict`)."""
    raw = error.settings
    defaults = DistrictConfig.model_fields
    readable = {}
    for setting in ("schedule", "start_date", "notifications"):
        try:
            readable[setting] = DistrictConfig.__pydantic_validator__.validate_assignment(
                DistrictConfig.model_construct(), setting, raw[setting]
            ).__dict__[setting]
        except (KeyError, ValidationError, ValueError):
            readable[setting] = defaults[setting].get_default(call_default_factory=True)
    name = raw.get("name")
    return InvalidDistrict(
        district=district_of_file(error.path),
        file=_display(error.path),
        problems=error.problems,
        name=name if isinstance(name, str) and name.strip() else error.path.stem,
        **readable,
    )


def _display(path: Path) -> str:
    """Project-relative for the shipped files, absolute for files mounted elsewhere."""
    try:
        return str(path.resolve().relative_to(DISTRICTS_DIR.parent.parent))
    except ValueError:
        return str(path.resolve())


def _field_path(location: tuple[int | str, ...]) -> str:
    """``lms.requests_per_second``: without the tag pydantic adds after ``lms`` (its target)."""
    parts = [part for at, part in enumerate(location)
             if not (at and location[at - 1] == "lms" and part in LMS_TARGETS)]
    return ".".join(str(part) for part in parts) or "(top level)"


def load_district(path: Path) -> DistrictConfig:
    """Read and validate one district file."""
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=YAML_LOADER)
    except (OSError, yaml.YAMLError) as error:
        raise DistrictConfigError(path, [f"cannot be read as YAML: {error}"]) from error
    if not isinstance(raw, dict):
        raise DistrictConfigError(path, ["must be a mapping of settings"])
    try:
        config = DistrictConfig.model_validate(raw)
    except ValidationError as error:
        problems = [
            f"{_field_path(item['loc'])}: {item['msg']}"
            + (f" (got {item['input']!r})" if not isinstance(item["input"], dict) else "")
            for item in error.errors(include_url=False)
        ]
        raise DistrictConfigError(path, problems, raw) from None
    if config.district != path.stem:
        raise DistrictConfigError(
            path, [f"district: {config.district!r} must match the file name {path.stem!r}"], raw
        )
    return config


def dag_id_for(district: str) -> str:
    """The id of a district's DAG (the same whether its file validates or not)."""
    return f"oneroster_{district}"


def district_of_file(path: Path) -> str:
    """The district a file is for, as its DAG id names it: the file name's stem, with what a DAG id
    cannot hold replaced (a valid file's stem is its ``district``, so it stays as it is)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)


DAG_FILE_SHARDS = 16
"""How many DAG files the districts' DAGs are spread over (``dags/oneroster_districts_NN_of_16.py``):
the dag-processor parses each file in a process of its own, in parallel, under its own timeout, so a
file's parse time is that of its share of the districts, not of all of them."""
SHARD_FILE = re.compile(r"^oneroster_districts_(\d{2})_of_(\d{2})\.py$")


def shard_file_name(shard: int) -> str:
    """The name of the DAG file that builds the DAGs of shard ``shard``."""
    return f"oneroster_districts_{shard:02d}_of_{DAG_FILE_SHARDS}.py"


def shard_of_file(dag_file: str | Path) -> int:
    """The shard a DAG file builds, read from its name; a name of another shard count is an error
    (its districts would be built twice, or not at all)."""
    name = Path(dag_file).name
    matched = SHARD_FILE.match(name)
    if matched is None or int(matched.group(2)) != DAG_FILE_SHARDS or int(matched.group(1)) >= DAG_FILE_SHARDS:
        raise ValueError(f"{name} is not one of the {DAG_FILE_SHARDS} district DAG files "
                         f"{shard_file_name(0)} ... {shard_file_name(DAG_FILE_SHARDS - 1)}: remove it")
    return int(matched.group(1))


def shard_of(district: str) -> int:
    """Which DAG file builds a district's DAG: a hash of the district (as :func:`district_of_file`
    gives it), the same in every process and on every machine."""
    return zlib.crc32(district.encode("utf-8")) % DAG_FILE_SHARDS


def districts_dir() -> Path:
    """``include/districts`` unless a deployment mounts district files elsewhere."""
    return Path(os.environ.get(DISTRICTS_DIR_ENV) or DISTRICTS_DIR)


def district_file(district: str) -> str:
    """Where the district's file is, as a data engineer looks for it (see :func:`_display`)."""
    return _display(districts_dir() / f"{district}.yaml")


def load_districts(
    directory: Path | None = None, dag_id: str | None = None, shard: int | None = None
) -> tuple[list[DistrictConfig], list[DistrictConfigError]]:
    """Every district file in name order; bad files are returned as errors, not raised,
    so that one district's typo does not take the other districts' DAGs down.

    With ``dag_id`` only the file(s) whose DAG that is are read (a task runs in its own DAG: it
    reads its own district's file, not the hundreds of others); with ``shard`` only the files of
    that DAG file's districts (:func:`shard_of`). The other files' names are listed, never opened.
    An id no file gives returns nothing."""
    directory = directory or districts_dir()
    configs: list[DistrictConfig] = []
    errors: list[DistrictConfigError] = []
    paths = sorted(directory.glob("*.yaml"))
    if dag_id is not None:
        paths = [path for path in paths if dag_id_for(district_of_file(path)) == dag_id]
    if shard is not None:
        paths = [path for path in paths if shard_of(district_of_file(path)) == shard]
    for path in paths:
        try:
            configs.append(load_district(path))
        except DistrictConfigError as error:
            errors.append(error)
    return configs, errors
