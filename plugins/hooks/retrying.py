"""The retry policy both hooks share: a throttle answer (429, 503) waits the server's Retry-After
and, without one (or with one that cannot be read), capped exponential backoff; other 5xx answers
and dropped connections are retried with capped exponential backoff; anything else is raised at
once. A throttle's wait holds every call of the hook (``hold``), not only the one throttled. After
the last attempt the hook's own "unavailable" error says what kept failing."""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TypeVar

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

# A refused connection, a timeout, or a body cut off mid-transfer: worth another attempt.
DROPPED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
T = TypeVar("T")


class Transient(Exception):
    """A failure that another attempt may not have; ``retry_after`` is the server's wish, if any;
    ``throttled``: the server said it is overloaded (429, 503), so every call should wait."""

    def __init__(self, message: str, retry_after: float | None = None, *, throttled: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.throttled = throttled


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now; None when there is none
    or it cannot be read (the caller then backs off on its own)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())
    return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None


class RetryPolicy:
    def __init__(
        self,
        *,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
        max_retry_after: float,
        unavailable: Callable[[str], Exception],
        log: logging.Logger,
        hold: Callable[[float], None] | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.unavailable = unavailable
        self.log = log
        self.hold = hold  # pauses every call of the hook (a throttle's wait)
        self.retry_count = 0
        self._lock = threading.Lock()

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, Transient) and error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        return min(self.backoff_base * 2 ** (state.attempt_number - 1), self.backoff_max)

    def _before_sleep(self, state: RetryCallState) -> None:
        with self._lock:
            self.retry_count += 1
        error = state.outcome.exception() if state.outcome else None
        if self.hold and isinstance(error, Transient) and error.throttled and state.next_action:
            self.hold(state.next_action.sleep)
        self.log.warning(
            "Request failed (%s); retry %d of %d in %.1fs",
            state.outcome.exception() if state.outcome else None,
            state.attempt_number,
            self.max_attempts - 1,
            state.next_action.sleep if state.next_action else 0.0,
        )

    def call(self, attempt: Callable[[], T], what: str) -> T:
        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(Transient),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Transient as error:
            raise self.unavailable(f"{what} still failing after {self.max_attempts} attempts: {error}") from None


class TokenBucket:
    """Paces calls: one token refilled ``rate`` times a second (None: no pacing), so calls are
    evenly spaced, never faster; and :meth:`hold` stops every caller until a server's
    Retry-After has passed, so one 429 pauses all the requests a hook has in flight.

    Calls are spaced ``HEADROOM`` wider than the rate: requests leave from several threads
    and arrive a few milliseconds apart from when they left, and a server counting them in
    a sliding window would otherwise see two closer than it allows and answer 429."""

    HEADROOM = 1.05

    def __init__(self, rate: float | None):
        self._interval = self.HEADROOM / rate if rate else 0.0
        self._next = time.monotonic()
        self._held_until = 0.0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self._interval
        while (wait := max(at, self._held_until) - time.monotonic()) > 0:
            time.sleep(wait)

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._held_until = max(self._held_until, time.monotonic() + seconds)
