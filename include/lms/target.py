"""What provisioning needs from an LMS, in the LMS's neutral terms.

The plan (``include/provisioning``) speaks only these items; an adapter per LMS turns them
into its API calls: Schoology REST v1 (payloads in ``include/lms/schoology.py``, protocol in
``plugins/hooks/schoology.py``) and Canvas SIS imports (``include/lms/canvas.py``,
``plugins/hooks/canvas.py``). An LMS need not hold every kind (:data:`KINDS_HELD_BY`): Canvas
has no object for an IC course, each IC class is a Canvas course of its own.

Every item carries a ``key``: the external id the LMS keeps for it (IC's sourcedId or a
code derived from it), so that sending an item twice updates it instead of duplicating
it. Where the LMS needs its own id for a reference that the plan already knows (the
building a user belongs to, the course of a section, the grading periods of a section),
the item carries that LMS id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from include.privacy import redacted

Action = Literal["create", "update", "deactivate"]
ObjectKind = Literal["building", "grading_period", "user", "course", "section", "enrollment", "guardian_link"]
CatalogKind = Literal["building", "grading_period", "role"]


class LmsItem(BaseModel):
    # a value that does not validate is a person's data: the error names the field, not the value
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)
    kind: ClassVar[ObjectKind]

    key: str

    def identifiers(self) -> tuple[str, ...]:
        """The values an LMS message about this item could name a person by (none for an item
        that is not about one); replaced in messages that leave the staged reports."""
        return ()


class Building(LmsItem):
    kind: ClassVar[ObjectKind] = "building"

    title: str
    building_code: str


class GradingPeriod(LmsItem):
    kind: ClassVar[ObjectKind] = "grading_period"

    title: str
    start: date
    end: date


class User(LmsItem):
    """``key`` is the LMS's unique external id for the person (Schoology: school_uid)."""

    kind: ClassVar[ObjectKind] = "user"

    given_name: str
    family_name: str
    preferred_first_name: str | None
    email: str | None
    username: str | None
    role_id: str
    building_id: str
    additional_building_ids: list[str]

    def identifiers(self) -> tuple[str, ...]:
        return tuple(value for value in (self.key, self.username, self.email, self.given_name, self.family_name,
                                         self.preferred_first_name) if value)


class Course(LmsItem):
    """``key`` is the course code, unique per building."""

    kind: ClassVar[ObjectKind] = "course"

    title: str
    building_id: str


class Section(LmsItem):
    """``key`` is the section's school code (Schoology: section_school_code), unique in the LMS.
    ``course_id`` is empty for an LMS that holds no courses (:data:`KINDS_HELD_BY`)."""

    kind: ClassVar[ObjectKind] = "section"

    course_key: str
    course_id: str
    building_id: str
    title: str
    section_code: str
    grading_period_ids: list[str]


class Enrollment(LmsItem):
    """``key`` is ``<section key>:<user key>``; teachers are section admins, students members."""

    kind: ClassVar[ObjectKind] = "enrollment"

    course_key: str
    section_key: str
    section_id: str
    user_key: str
    admin: bool

    def identifiers(self) -> tuple[str, ...]:
        return self.key, self.user_key


class GuardianLink(LmsItem):
    """``key`` is ``<guardian key>:<student key>``."""

    kind: ClassVar[ObjectKind] = "guardian_link"

    guardian_key: str
    student_key: str

    def identifiers(self) -> tuple[str, ...]:
        return self.key, self.guardian_key, self.student_key


ITEM_TYPES: dict[ObjectKind, type[LmsItem]] = {
    item.kind: item for item in (Building, GradingPeriod, User, Course, Section, Enrollment, GuardianLink)
}


# The kinds each LMS holds: Canvas has no object for an IC course (a course per school); each IC
# class becomes a Canvas course with its one section, in the sub-account of the class's school.
KINDS_HELD_BY: dict[str, frozenset[ObjectKind]] = {
    "schoology": frozenset(ITEM_TYPES),
    "canvas": frozenset(ITEM_TYPES) - {"course"},
}


class ItemResult(BaseModel):
    """The LMS's answer for one item: its LMS id when it worked, the LMS's message when not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    ok: bool
    lms_id: str | None = None
    error: str | None = None


def without_identifiers(results: Sequence[ItemResult], items: Sequence[LmsItem]) -> list[ItemResult]:
    """``results`` (one per item, in order) with each refusal's message cleared of the person its
    item is about (:func:`include.privacy.redacted`): the key stays, the message can be logged."""
    return [result if result.ok or not result.error else
            result.model_copy(update={"error": redacted(result.error, item.identifiers(), reference="<person>",
                                                                unknown_people=False)})
            for result, item in zip(results, items, strict=True)]


class Receipts(Protocol):
    """Where an adapter notes what it sent for a batch and must not send again (Canvas: the id of an
    import it uploaded), kept with the task's journal: a retried task reads it back."""

    def get(self, name: str) -> str | None:
        ...

    def put(self, name: str, value: str) -> None:
        ...


@dataclass(frozen=True)
class SectionGrades:
    """One section's final grades as an LMS's API gives them, in the grade export's fields
    (:data:`include.grades.export.ROW_COLUMNS` less the row number): section, student, grading
    period, term percent, term letter, course percent, course letter; ``kept_aside``: (section,
    student or None, why) for what cannot become a row; ``made_in_lms``: students the LMS lists with
    no IC id (people made in the LMS), counted, never passed back."""

    rows: list[tuple]
    kept_aside: list[tuple[str, str | None, str]]
    made_in_lms: int
    assignment_rows: list[tuple] = ()  # include.grades.assignments.ASSIGNMENT_FIELDS, when asked for


class LmsGradeSource(Protocol):
    """An LMS whose final grades are read from its API (Canvas), not from an export file on SFTP."""

    def final_grades(self, sections: Iterable[str], *, assignments: bool = False) -> Iterator[SectionGrades]:
        """The grades of each section (IC class sourcedId) in turn, in the order given; with
        ``assignments``, its students' assignment scores too."""
        ...


class LmsTarget(Protocol):
    """An LMS as provisioning sees it.

    ``apply`` must be idempotent: creating an item whose key the LMS already holds adopts
    or updates that object and returns its id (a retried task never duplicates), and
    deactivating one that is already gone is ``ok``. It returns one result per item, in
    order; per-item failures are results, not exceptions. Exceptions mean the whole call
    could not be made (credentials refused, LMS down after retries).
    """

    batch_size: int  # items given to ``apply_batches`` at a time: the caller journals each batch's answers

    def catalog(self, kind: CatalogKind) -> dict[str, str]:
        """What already exists in the LMS that a district's maps may point at: LMS id -> title."""
        ...

    def apply(self, action: Action, items: Sequence[LmsItem]) -> list[ItemResult]:
        """Create, update or deactivate items of one kind, batched as the LMS allows."""
        ...

    def apply_batches(self, action: Action, batches: Iterable[Sequence[LmsItem]],
                      receipts: Receipts | None = None) -> Iterator[list[ItemResult]]:
        """``apply`` over a stream of batches, the results of each yielded in turn (so the caller can
        record them before the next), the next batch's calls under way meanwhile. ``receipts``: the
        task's, for an adapter whose batch outlives a call (an import still running when the task
        failed), so that a retry of the same batch waits for it rather than sending it again."""
        ...
