"""The LMS adapter for a district's ``lms.target``: the one place that knows which exist."""

from __future__ import annotations

from include.config import CanvasLms, Lms, SchoologyLms
from include.lms.target import LmsTarget


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
            max_attempts=config.max_attempts,
            backoff_base=config.backoff_seconds,
        )
    raise ValueError(f"no LMS adapter for target {getattr(config, 'target', None)!r}")
