"""The LMS adapter for a district's ``lms.target``: the one place that knows which exist."""

from __future__ import annotations

from include.config import Lms
from include.lms.target import LmsTarget
from plugins.hooks.schoology import SchoologyHook


def lms_target(config: Lms) -> LmsTarget:
    if config.target == "schoology":
        return SchoologyHook(
            config.conn_id,
            requests_per_second=config.requests_per_second,
            max_in_flight=config.max_in_flight,
            max_attempts=config.max_attempts,
            backoff_base=config.backoff_seconds,
        )
    raise ValueError(f"no LMS adapter for target {config.target!r}")
