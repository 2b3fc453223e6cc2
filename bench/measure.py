"""Run one benchmark phase in a fresh process and measure it: wall time and peak RSS.

A fresh process per phase is what an Airflow task is, so its peak RSS is the task's
peak RSS, not the benchmark's accumulated heap.
"""

from __future__ import annotations

import multiprocessing
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class PhaseResult:
    """One phase's figures; ``extra`` holds what only that phase knows (bounds, ratios)."""

    phase: str
    records: int = 0
    requests: int = 0
    bytes: int = 0
    seconds: float = 0.0
    peak_rss_mib: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


def prepared_as_a_task() -> None:
    """What Airflow's task runner has done before it calls ``execute``: building the task's
    context loads the plugins (``integrate_macros_plugins``; a quarter of a second). A phase
    calls it before it starts its clock, so that its time is the task's ``execute``, as a
    phase that builds its own context would otherwise also count the loading."""
    from airflow.sdk.plugins_manager import integrate_macros_plugins

    integrate_macros_plugins()


class UpstreamManifests:
    """What an operator asks of its task instance outside Airflow: its id and its upstream
    tasks' manifests (their XComs)."""

    def __init__(self, task_id: str, manifests: dict[str, dict]):
        self.task_id = task_id
        self._manifests = manifests

    def xcom_pull(self, task_ids: str) -> dict:
        return self._manifests[task_ids]


def _child(queue, fn: Callable[..., PhaseResult], args: tuple, kwargs: dict) -> None:
    try:
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        if not result.seconds:
            result.seconds = time.perf_counter() - started
        result.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        queue.put(("ok", result))
    except BaseException as error:  # reported to the parent, which raises it
        queue.put(("error", f"{type(error).__name__}: {error}"))


def run_isolated(fn: Callable[..., PhaseResult], *args: Any, **kwargs: Any) -> PhaseResult:
    """``fn(*args, **kwargs)`` in a spawned process; its PhaseResult with the process's peak RSS."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, fn, args, kwargs))
    process.start()
    status, payload = queue.get()
    process.join()
    if status != "ok":
        raise RuntimeError(f"benchmark phase {getattr(fn, '__name__', fn)} failed: {payload}")
    return payload


class ServerProcess:
    """An emulator in a process of its own, so it never competes with the tasks for the GIL.

    ``serve(settings, pipe)`` sends what the client needs to reach it (``info``) once it is
    up, then answers commands (``stats`` and its own) until it receives ``stop``.
    """

    def __init__(self, serve: Callable[[Any, Any], None], settings: Any, name: str):
        self.settings = settings
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=serve, args=(settings, child), name=name)

    def __enter__(self):
        self._process.start()
        self.info = self._pipe.recv()
        return self

    def __exit__(self, *exc_info) -> None:
        self._pipe.send(("stop",))
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.kill()

    def ask(self, *command: Any) -> Any:
        self._pipe.send(command)
        return self._pipe.recv()

    def stats(self) -> dict:
        return self.ask("stats")
