"""The LMS adapter for a district's ``lms.target`` (and the grade source of an LMS whose grades are read
from its API): the one place that knows which exist."""

from __future__ import annotations

from include.config import CanvasLms, Lms, SchoologyLms
from include.lms.target import LmsGradeSource, LmsTarget


def lms_target(config: Lms) -> LmsTarget:
    if isinstance(config, SchoologyLms):
        from plugins.hooks.schoology import SchoologyHook

        return SchoologyHook(
            config.conn_id,
            requests_per_second=config.requests_per_second,
            max_in_flight=config.max_in_flight,
            max_attempts=config.max_attempts,
            backoff_base=config.backoff_seconds,
        )
    if isinstance(config, CanvasLms):
        from plugins.hooks.canvas import CanvasHook

        return CanvasHook(
            config.conn_id,
            rows_per_import=config.rows_per_import,
            dropped_enrollments=config.dropped_enrollments,
            grade_score=config.grade_score,
            max_attempts=config.max_attempts,
            backoff_base=config.backoff_seconds,
        )
    raise ValueError(f"no LMS adapter for target {getattr(config, 'target', None)!r}")


def lms_grade_source(config: Lms) -> LmsGradeSource:
    """The LMS whose API the district's final grades are read from (Canvas); an LMS whose grades come
    as an export file (Schoology) has none."""
    if isinstance(config, CanvasLms):
        return lms_target(config)
    raise ValueError(f"{config.target} grades come from its export file, not from its API")
