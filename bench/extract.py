"""Extract phases: the IC emulator in its own process, the raw-transfer bound, our extract
(the real operator, one process per collection as one Airflow task each) and the plain
sequential client most integrations are. The emulator serves IC's gradebook too, behind the
same latency and rate limit, for the grade posts (:mod:`bench.post`).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

import requests

from bench.measure import PhaseResult, ServerProcess, prepared_as_a_task
from include.oneroster.models import COLLECTIONS
from plugins.hooks.retrying import TokenBucket

CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-local-only-secret"
VENDOR_KEY = "bench-vendor"
VENDOR_SECRET = "bench-local-only-vendor-secret"
APP_NAME = "bench"
SCHOOL_YEAR = 2027
CONN_ID = "ic_bench"


@dataclass(frozen=True)
class EmulatorSettings:
    """The district and how IC behaves: ``latency`` per request, ``record_latency`` per record
    served (IC's own time to build a page), ``rate_limit`` requests per second (None: none)."""

    students: int
    seed: int
    latency: float
    record_latency: float
    rate_limit: float | None
    page_size: int


def _serve(settings: EmulatorSettings, pipe) -> None:
    from include.sandbox.generator import DistrictSpec, SyntheticDistrict
    from include.sandbox.ic_emulator import ICEmulator

    district = SyntheticDistrict(DistrictSpec(seed=settings.seed, students=settings.students,
                                              school_year=SCHOOL_YEAR))
    with ICEmulator(district, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, app_name=APP_NAME,
                    vendor_key=VENDOR_KEY, vendor_secret=VENDOR_SECRET, record_latency=settings.record_latency,
                    rate_limit=settings.rate_limit) as ic:
        ic.latency = settings.latency
        started = time.perf_counter()
        pages = ic.prerender("1.2", settings.page_size)
        pipe.send({"base_url": ic.base_url, "counts": district.expected_counts(), "pages": pages,
                   "prerender_seconds": time.perf_counter() - started})
        while True:
            command, *args = pipe.recv()
            if command == "stop":
                return
            if command == "modify":
                collection, count, at = args
                pipe.send(len(district.modify(collection, count, at)))
            elif command == "stats":
                pipe.send({"rate_limited": ic.rate_limited, "max_in_flight": ic.max_in_flight,
                           "requests": ic.request_count})
            elif command == "prepare_gradebook":
                ic.gradebook.build_indexes()
                ic.reset_stats()
                pipe.send(None)
            elif command == "gradebook":
                pipe.send(_ledger(ic.gradebook))


def _ledger(gradebook) -> dict[str, int]:
    """What reached the gradebook: results stored, results written more than once (a PUT sent
    again), (lineItem, student) pairs holding more than one result, and the lineItems and
    categories stored, with those written more than once."""

    def again(collection: str) -> int:
        return sum(1 for writes in gradebook.writes[collection].values() if writes.created + writes.updated > 1)

    return {"results": len(gradebook.stored("results")),
            "written more than once": again("results"),
            "duplicates": len(gradebook.duplicates()),
            "lineItems": len(gradebook.stored("lineItems")),
            "lineItems written more than once": again("lineItems"),
            "categories": len(gradebook.stored("categories")),
            "categories written more than once": again("categories")}


class EmulatorProcess(ServerProcess):
    """The IC emulator in a process of its own."""

    def __init__(self, settings: EmulatorSettings):
        super().__init__(_serve, settings, "ic-emulator")

    @property
    def base_url(self) -> str:
        return self.info["base_url"]

    @property
    def counts(self) -> dict[str, int]:
        return self.info["counts"]

    def modify(self, collection: str, count: int, at: datetime) -> int:
        return self.ask("modify", collection, count, at)

    def prepare_gradebook(self) -> None:
        """The gradebook's indexes built (IC's own work, not ours to measure) and the stats
        started afresh, so the most requests in flight are the grade posts' own."""
        self.ask("prepare_gradebook")

    def gradebook(self) -> dict[str, int]:
        return self.ask("gradebook")


def use_ic_connection(base_url: str) -> None:
    """The Airflow connection to the bench's IC in this process's environment, as a task reads it:
    one connection for the rostering reads and the gradebook's PUTs, as a district has."""
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({
        "conn_type": "infinite_campus_oneroster", "host": base_url, "login": CLIENT_ID, "password": CLIENT_SECRET,
        "extra": {"app_name": APP_NAME, "oneroster_version": "1.2", "vendor_key": VENDOR_KEY,
                  "vendor_secret": VENDOR_SECRET},
    })


def rostering_url(base_url: str) -> str:
    return f"{base_url}/campus/api/oneroster/v1p2/{APP_NAME}/ims/oneroster/rostering/v1p2"


def _token(base_url: str) -> str:
    response = requests.post(f"{base_url}/campus/oauth2/token", params={"appName": APP_NAME},
                             data={"grant_type": "client_credentials"}, auth=(CLIENT_ID, CLIENT_SECRET), timeout=30)
    response.raise_for_status()
    return response.json()["access_token"]


def _get(session: requests.Session, url: str, headers: dict, params: dict) -> requests.Response:
    """A GET that waits out a 429's Retry-After, as any client must under a rate limit."""
    while (response := session.get(url, headers=headers, params=params, timeout=600)).status_code == 429:
        time.sleep(float(response.headers.get("Retry-After", 1)))
    response.raise_for_status()
    return response


def requests_needed(counts: dict[str, int], page_size: int) -> int:
    """Pages of every collection at ``page_size``, plus the token request."""
    return 1 + sum(max(1, math.ceil(count / page_size)) for count in counts.values())


def raw_transfer_phase(base_url: str, counts: dict[str, int], page_size: int, concurrency: int,
                       rate_limit: float | None) -> PhaseResult:
    """The same pages at the same concurrency (and rate), read and thrown away: what the transfer
    alone costs."""
    bucket = TokenBucket(rate_limit) if rate_limit else None
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {_token(base_url)}"}
    sessions: dict[int, requests.Session] = {}
    received = requests_made = 0

    def fetch(job: tuple[str, int]) -> int:
        collection, offset = job
        if bucket:
            bucket.take()
        session = sessions.setdefault(threading.get_ident(), requests.Session())
        return len(_get(session, f"{rostering_url(base_url)}/{collection}", headers,
                        {"limit": page_size, "offset": offset}).content)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for collection in COLLECTIONS:  # one collection after another, as the DAG's extract tasks run
            received += fetch((collection, 0))
            offsets = range(page_size, counts[collection], page_size)
            received += sum(pool.map(fetch, [(collection, offset) for offset in offsets]))
            requests_made += 1 + len(offsets)
    return PhaseResult("raw transfer bound", records=sum(counts.values()), requests=requests_made + 1,
                       bytes=received, seconds=time.perf_counter() - started)


def extract_phase(base_url: str, collection: str, staging_root: str, run_id: str, page_size: int,
                  concurrency: int, rate_limit: float | None, full: bool) -> PhaseResult:
    """One collection through the real extract operator, as its Airflow task runs it."""
    use_ic_connection(base_url)
    from include.config import ActiveYearRule, InfiniteCampus
    from plugins.operators.extract import OneRosterExtractOperator

    ic = InfiniteCampus(conn_id=CONN_ID, pool="ic_bench", max_concurrency=concurrency,
                        peak_concurrency=1, page_size=page_size, requests_per_second=rate_limit)
    operator = OneRosterExtractOperator(task_id=collection, collection=collection, district="bench",
                                        infinite_campus=ic, active_year_rule=ActiveYearRule(),
                                        staging_root=staging_root)
    prepared_as_a_task()
    started = time.perf_counter()
    manifest = operator.execute({"params": {"active_year": SCHOOL_YEAR, "full_run": full}, "run_id": run_id,
                                 "logical_date": datetime.now(timezone.utc)})
    seconds = time.perf_counter() - started
    return PhaseResult(f"extract {collection}", records=manifest["row_count"],
                       requests=manifest["request_count"], bytes=manifest["response_bytes"], seconds=seconds,
                       extra={"uri": manifest["uri"], "mode": manifest["extract_mode"],
                              "fetched": manifest["fetched_count"]})


def sequential_phase(base_url: str, counts: dict[str, int], budget_seconds: float) -> PhaseResult:
    """requests + json, limit=100, one page after another, as most integrations are written.

    Reading a large district this way takes hours, so each collection is read for its share
    of ``budget_seconds`` (by record count) and its own rate is projected onto its size.
    """
    session = requests.Session()
    headers = {"Authorization": f"Bearer {_token(base_url)}"}
    total = sum(counts.values())
    records = requests_made = received = 0
    seconds = projected = 0.0
    for collection in COLLECTIONS:
        share = max(1.0, budget_seconds * counts[collection] / total)
        started = time.perf_counter()
        read = offset = 0
        while offset < counts[collection] and time.perf_counter() - started < share:
            response = _get(session, f"{rostering_url(base_url)}/{collection}", headers,
                            {"limit": 100, "offset": offset})
            read += len(response.json()[collection])
            received += len(response.content)
            requests_made += 1
            offset += 100
        spent = time.perf_counter() - started
        records, seconds = records + read, seconds + spent
        projected += spent * counts[collection] / read if read else 0.0
    return PhaseResult("sequential client (limit=100)", records=records, requests=requests_made, bytes=received,
                       seconds=seconds, extra={"projected_seconds": projected, "district_records": total})
