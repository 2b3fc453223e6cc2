"""The teacher opt-in Variable: which IC sections may have grades posted when opt-in is on.

A district with ``grade_passback.teacher_opt_in: true`` keeps, in the Airflow Variable
``oneroster_grade_opt_in_<district>``, a JSON list of the IC class sourcedIds whose teachers
opted in, e.g. ``["1521311", "1521312"]`` (``[]`` until the first teacher does). Only those
sections' grades are posted; the rest are skipped "not opted in". A Variable that is missing or
not in that form fails the plan naming the Variable: read wrongly, it would post grades no
teacher agreed to, or skip every grade of the night.
"""

from __future__ import annotations

import json

EXPECTED_FORM = 'a JSON list of IC class sourcedIds, e.g. ["1521311", "1521312"] ([] if no teacher has opted in yet)'


class OptInVariableError(ValueError):
    """The opt-in Variable is missing or not in the expected form; the message names it."""


def opt_in_variable(district: str) -> str:
    """The Variable holding ``district``'s opted-in sections."""
    return f"oneroster_grade_opt_in_{district}"


def opted_in_sections(variable: str, value: str | None) -> frozenset[str]:
    """The IC class sourcedIds in the Variable ``variable`` whose stored text is ``value`` (None: it does not exist)."""
    if value is None:
        raise OptInVariableError(f"teacher_opt_in is on but the Variable {variable} does not exist: create it as "
                                 f"{EXPECTED_FORM}")
    try:
        sections = json.loads(value)
    except ValueError:
        sections = None
    if not isinstance(sections, list):
        raise OptInVariableError(f"the Variable {variable} is not {EXPECTED_FORM}")
    bad = [position for position, section in enumerate(sections)
           if isinstance(section, bool) or not isinstance(section, (str, int)) or not str(section).strip()]
    if bad:
        raise OptInVariableError(f"the Variable {variable} is not {EXPECTED_FORM}: entries at positions "
                                 f"{', '.join(map(str, bad[:10]))} are not sourcedIds")
    return frozenset(str(section).strip() for section in sections)
