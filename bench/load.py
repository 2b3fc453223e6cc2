"""Load phases: an LMS emulator in its own process and the real provisioning tasks.

Each step runs ``ProvisionOperator.execute`` (read the staged extracts, plan, diff, send
to the LMS, journal, record the state) in a fresh process, as its Airflow task would. The
LMS is Schoology (:class:`LmsSettings`: it answers after ``latency`` and refuses more than
``rate_limit`` requests a second; the requests a step made are counted by the emulator, so
the rate-limit bound, requests ÷ the limit, is the LMS's own figure) or Canvas
(:class:`CanvasModel`: each SIS import waits ``upload_seconds`` before it starts and takes
``seconds_per_row`` a row; Canvas runs them one at a time, so the emulator's sum of that
modelled time over the imports it ran is the bound).
"""

from __future__ import annotations

import json
import os
import resource
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure import PhaseResult, ServerProcess, UpstreamManifests, prepared_as_a_task

if TYPE_CHECKING:
    from include.config import Provisioning

LMS_KEY = "bench-consumer"
LMS_SECRET = "bench-local-only-consumer-secret"
CANVAS_TOKEN = "bench-local-only-canvas-token"
LMS_CONN_ID = "lms_bench"
SCHOOL_YEAR = 2027
UNLIMITED = 1000.0  # the most a district file may configure: no pacing to speak of


@dataclass(frozen=True)
class LmsSettings:
    rate_limit: float | None  # requests per second (None: none)
    latency: float  # the LMS's own time per request, seconds
    in_flight: int  # bulk calls our tasks keep under way (``lms.max_in_flight``)


@dataclass(frozen=True)
class CanvasModel:
    """Canvas as the bench models it, and how the district's tasks meet it."""

    upload_seconds: float  # from the upload until the import starts (storing it, the queue)
    seconds_per_row: float  # Canvas's time to process a row of an import
    rows_per_import: int  # the district file's ``lms.rows_per_import``
    poll_seconds: float  # the connection's ``poll_seconds``: the longest wait between two status reads


def _answer_until_stopped(pipe, stats) -> None:
    """Answer every command with ``stats()`` until ``stop``."""
    while True:
        command, *_ = pipe.recv()
        if command == "stop":
            return
        pipe.send(stats())


def _serve(settings: LmsSettings | CanvasModel, pipe) -> None:
    if isinstance(settings, CanvasModel):
        _serve_canvas(settings, pipe)
        return
    from include.sandbox.lms_emulator import SchoologyEmulator

    with SchoologyEmulator(consumer_key=LMS_KEY, consumer_secret=LMS_SECRET, rate_limit=settings.rate_limit,
                           latency=settings.latency, max_recorded=1) as lms:
        pipe.send({"base_url": lms.base_url, "school_id": lms.school_id})
        _answer_until_stopped(pipe, lambda: {"write_requests": lms.write_requests, "rate_limited": lms.rate_limited,
                                             "requests": lms.request_count})


def _serve_canvas(settings: CanvasModel, pipe) -> None:
    from include.sandbox.canvas_emulator import CanvasEmulator

    with CanvasEmulator(token=CANVAS_TOKEN, upload_seconds=settings.upload_seconds,
                        seconds_per_row=settings.seconds_per_row, max_recorded=1) as canvas:
        pipe.send({"base_url": canvas.base_url, "account_id": canvas.account_id})
        _answer_until_stopped(pipe, lambda: {
            "requests": canvas.request_count, "rate_limited": canvas.rate_limited,
            "imports": canvas.imports_received, "modelled_seconds": canvas.modelled_seconds,
            "uploaded_bytes": canvas.bytes_received, "held": canvas.held(),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


class LmsProcess(ServerProcess):
    """The LMS emulator, Schoology's or Canvas's as ``settings`` say, in a process of its own (it
    holds the whole district's objects)."""

    def __init__(self, settings: LmsSettings | CanvasModel):
        super().__init__(_serve, settings, "lms-emulator")


def _district_lms(settings: LmsSettings | CanvasModel, lms: dict):
    """The LMS connection (in this process's environment, as a task reads it) and the district
    file's ``lms`` settings the step runs with."""
    from include.config import CanvasLms, SchoologyLms

    if isinstance(settings, CanvasModel):
        connection = {"conn_type": "canvas", "host": lms["base_url"], "password": CANVAS_TOKEN,
                      "extra": {"account_id": lms["account_id"], "poll_seconds": settings.poll_seconds}}
        district_lms = CanvasLms(target="canvas", conn_id=LMS_CONN_ID, rows_per_import=settings.rows_per_import,
                                 backoff_seconds=0.5)
    else:
        connection = {"conn_type": "schoology", "host": lms["base_url"], "login": LMS_KEY, "password": LMS_SECRET,
                      "extra": {"school_id": lms["school_id"]}}
        district_lms = SchoologyLms(conn_id=LMS_CONN_ID, requests_per_second=settings.rate_limit or UNLIMITED,
                                    max_in_flight=settings.in_flight, backoff_seconds=0.5)
    os.environ[f"AIRFLOW_CONN_{LMS_CONN_ID.upper()}"] = json.dumps(connection)
    return district_lms


def provision_step_phase(kind: str, extract_uris: dict[str, str], config_path: str, provisioning: Provisioning,
                         staging_root: str, run_id: str, manifests_file: str, lms: dict,
                         settings: LmsSettings | CanvasModel) -> PhaseResult:
    """One provisioning step through the real operator; its manifest is kept in ``manifests_file``
    (the bench's own bookkeeping, on local disk whatever the staging root) for the steps after it."""
    district_lms = _district_lms(settings, lms)
    from include.config import ActiveYearRule
    from include.provisioning.steps import STEP_BY_KIND
    from plugins.operators.provision import ProvisionOperator

    step = STEP_BY_KIND[kind]
    kept = Path(manifests_file)
    manifests = json.loads(kept.read_text()) if kept.exists() else {}
    manifests.update({f"extract.{collection}": {"uri": uri} for collection, uri in extract_uris.items()})
    operator = ProvisionOperator(
        task_id=step.task_id, kind=kind, district="bench", config_file=config_path, provisioning=provisioning,
        lms=district_lms, active_year_rule=ActiveYearRule(), staging_root=staging_root,
    )
    context = {"ti": UpstreamManifests(f"provision.{step.task_id}", manifests), "run_id": run_id,
               "params": {"active_year": SCHOOL_YEAR}, "logical_date": datetime.now(timezone.utc)}
    prepared_as_a_task()
    started = time.perf_counter()
    manifest = operator.execute(context)
    seconds = time.perf_counter() - started
    manifests[f"provision.{step.task_id}"] = manifest
    kept.write_text(json.dumps(manifests))
    counts = manifest["counts"]
    sent = sum(counts.get(action, 0) for action in ("create", "update", "deactivate"))
    return PhaseResult(f"provision {kind}", records=sent, seconds=seconds,
                       extra={"counts": counts, "objects": manifest["row_count"]})


def provision_night(lms: LmsProcess, extract_uris: dict[str, str], config_path: str, staging_root: str,
                    run_id: str, manifests_file: Path, run_phase) -> list[PhaseResult]:
    """Every provisioning step in order, each through ``run_phase`` (a fresh process), with the
    LMS requests it carried out (the rate-limit bound's count) and the 429s it was answered, and
    on Canvas the imports it made and the time Canvas's model gave them (``extra``). The
    steps hand their manifests on through ``manifests_file``, which must not exist yet. The bench's
    maps (:func:`bench_provisioning`) are made once here, outside the steps' processes: a step's clock
    then counts only what its task does, on an object store the S3 client's set-up included, as a real
    task's would."""
    from bench.transform import bench_provisioning
    from include.provisioning.steps import steps_for

    provisioning = bench_provisioning(config_path, extract_uris["orgs"])
    results = []
    for step in steps_for("canvas" if isinstance(lms.settings, CanvasModel) else "schoology"):
        before = lms.stats()
        result = run_phase(provision_step_phase, step.kind, extract_uris, config_path, provisioning, staging_root,
                           run_id, str(manifests_file), lms.info, lms.settings)
        after = lms.stats()
        result.extra["rate_limited"] = after["rate_limited"] - before["rate_limited"]
        if "imports" in after:  # Canvas
            result.extra["imports"] = after["imports"] - before["imports"]
            result.extra["modelled_seconds"] = after["modelled_seconds"] - before["modelled_seconds"]
            result.bytes = after["uploaded_bytes"] - before["uploaded_bytes"]
        result.requests = after["requests"] - before["requests"] - result.extra["rate_limited"]  # a 429 is not one
        result.phase = f"{run_id}: provision {step.kind}"
        results.append(result)
    return results
