"""The export sensor's wait in the triggerer (:class:`plugins.sensors.export_trigger.ExportTrigger`), run
in this process against the SFTP server emulator over real SSH: asyncssh keeps its per-connection
INFO chatter to itself, the trigger says at most once per look what it waits for, and it fires
on the same file the provider's trigger does."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
import structlog
from airflow.providers.sftp.hooks.sftp import SFTPHookAsync
from airflow.providers.sftp.triggers.sftp import SFTPTrigger
from airflow.sdk.exceptions import TaskDeferred

from include.config import DISTRICTS_DIR, load_district
from include.grades.processed import mark_processed
from include.sandbox.sftp_server import SFTPServer
from plugins.sensors.export import TRIGGER_WAITING, ExportFileSensor
from plugins.sensors.export_trigger import ExportTrigger

CONFIG = load_district(DISTRICTS_DIR / "demo.yaml")
EXPORT_DIR = CONFIG.grade_passback.remote_dir
POKE_SECONDS = 0.3
PROCESSED = datetime(2026, 12, 1, 6, tzinfo=UTC).timestamp()
YESTERDAYS, TODAYS = "final-grades-20261201.csv", "final-grades-20261202.csv"
CONTENTS = "Section School Code,Student Number,Grade\n600000,s1000042,A\n"


@pytest.fixture
def sftp(tmp_path, monkeypatch) -> Iterator[SFTPServer]:
    """The demo district's export folder, holding yesterday's export, behind connection ``sftp_demo``."""
    root = tmp_path / "sftp"
    (root / EXPORT_DIR.strip("/")).mkdir(parents=True)
    with SFTPServer(root, username="exporter", password="sftp-test-secret") as server:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONFIG.grade_passback.sftp_conn_id.upper()}",
                           json.dumps(server.connection()))
        put(server, YESTERDAYS, PROCESSED)
        yield server


def put(server: SFTPServer, name: str, mtime: float) -> None:
    path = server.root / EXPORT_DIR.strip("/") / name
    path.write_text(CONTENTS)
    os.utime(path, (mtime, mtime))


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """The standard library's log records at INFO and up (the triggerer's default level), with the
    ``asyncssh`` logger unset, as a triggerer starts with it."""
    root, asyncssh_logger = logging.getLogger(), logging.getLogger("asyncssh")
    kept = root.level, asyncssh_logger.level
    root.setLevel(logging.INFO)
    asyncssh_logger.setLevel(logging.NOTSET)
    handler = _Records()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.setLevel(kept[0])
        asyncssh_logger.setLevel(kept[1])


@pytest.fixture
def looks(monkeypatch) -> list[str]:
    """Each directory listing an async SFTP hook makes: one per look of a trigger."""
    listed: list[str] = []
    listing = SFTPHookAsync.read_directory

    async def read_directory(self, path: str = ""):
        listed.append(path)
        return await listing(self, path)

    monkeypatch.setattr(SFTPHookAsync, "read_directory", read_directory)
    return listed


async def watch(trigger, looks: list[str], *, drop_after: int, drop: Callable[[], None] | None = None,
                timeout: float = 30):
    """Runs ``trigger`` until it has begun ``drop_after`` looks without firing, then calls ``drop``
    and returns its first event (without ``drop``: stops it and returns None)."""
    events = trigger.run()
    first = asyncio.ensure_future(anext(events))
    try:
        async with asyncio.timeout(timeout):
            while len(looks) < drop_after:
                assert not first.done(), f"it fired before the new file: {first.result()}"
                await asyncio.sleep(0.01)
            if drop is None:
                return None
            drop()
            return await first
    finally:
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await events.aclose()


def chatter(records: list[logging.LogRecord]) -> list[str]:
    return [f"{record.name} {record.levelname}: {record.getMessage()}" for record in records
            if record.name.split(".")[0] == "asyncssh" and record.levelno < logging.WARNING]


def waiting_lines(logs: list[dict], records: list[logging.LogRecord]) -> list[str]:
    """The trigger's lines about its wait, whether structlog or the standard library carried them."""
    lines = [str(entry.get("event")) for entry in logs] + [record.getMessage() for record in records]
    return [line for line in lines if line.startswith(TRIGGER_WAITING)]


def deferred_trigger(staging_root: str) -> ExportTrigger:
    """The trigger the demo district's sensor defers to when yesterday's export is all there is,
    rebuilt from its serialized form as the triggerer rebuilds it."""
    passback = CONFIG.grade_passback.model_copy(update={"poke_interval_seconds": POKE_SECONDS})
    sensor = ExportFileSensor(task_id="wait_for_export", district="demo", passback=passback,
                              staging_root=staging_root)
    with pytest.raises(TaskDeferred) as deferred:
        sensor._wait({"run_id": "manual__today"})
    classpath, kwargs = deferred.value.trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    trigger = getattr(importlib.import_module(module), name)(**kwargs)
    assert type(trigger) is ExportTrigger and trigger.serialize() == (classpath, kwargs)
    return trigger


def test_the_trigger_is_the_providers_under_its_own_importable_path():
    trigger = ExportTrigger(path=EXPORT_DIR, file_pattern="final-grades*", sftp_conn_id="sftp_demo",
                            newer_than="20261201060001", poke_interval=2)
    classpath, kwargs = trigger.serialize()
    assert classpath == "plugins.sensors.export_trigger.ExportTrigger"
    assert kwargs == SFTPTrigger(**kwargs).serialize()[1]


def test_the_trigger_keeps_asyncssh_quiet_and_says_once_per_look_what_it_waits_for(
        sftp, records, looks, tmp_path):
    staging_root = (tmp_path / "staging").as_uri()
    mark_processed(staging_root, "demo", {"name": YESTERDAYS, "mtime": PROCESSED}, "scheduled__yesterday")
    trigger = deferred_trigger(staging_root)
    assert trigger.newer_than == "20261201060001" and trigger.poke_interval == POKE_SECONDS

    # The provider's own trigger, in the same set-up: asyncssh's INFO lines are there to be seen.
    provider = SFTPTrigger(**trigger.serialize()[1])
    assert asyncio.run(watch(provider, looks, drop_after=2)) is None
    assert len(chatter(records)) >= 5, "asyncssh logs each connection at INFO"
    records.clear()
    looks.clear()

    with structlog.testing.capture_logs() as logs:
        event = asyncio.run(watch(trigger, looks, drop_after=4,
                                  drop=lambda: put(sftp, TODAYS, PROCESSED + 86_400)))
    assert event.payload["status"] == "success", event.payload
    assert TODAYS in event.payload["message"] and YESTERDAYS not in event.payload["message"]

    assert chatter(records) == []
    assert logging.getLogger("asyncssh").getEffectiveLevel() == logging.WARNING
    empty_looks = len(looks) - 1  # the last one found today's export
    waiting = waiting_lines(logs, records)
    assert empty_looks >= 3 and 1 <= len(waiting) <= empty_looks, (len(looks), waiting)
    assert waiting[0] == (
        f"{TRIGGER_WAITING} final-grades* in {EXPORT_DIR} on sftp_demo, modified at or after "
        f"2026-12-01T06:00:01+00:00 (no such file yet; 1 look(s) so far); looking again in {POKE_SECONDS}s"
    )
    everything = json.dumps(logs, default=str) + " ".join(record.getMessage() for record in records)
    assert "s1000042" not in everything and "Student Number" not in everything, "no file contents"


def test_a_level_set_for_asyncssh_is_kept(sftp, records, looks):
    logging.getLogger("asyncssh").setLevel(logging.INFO)
    trigger = ExportTrigger(path=EXPORT_DIR, file_pattern="final-grades*", sftp_conn_id="sftp_demo",
                            newer_than="20261201060001", poke_interval=POKE_SECONDS)
    assert asyncio.run(watch(trigger, looks, drop_after=2)) is None
    assert chatter(records), "someone debugging asyncssh still sees its lines"
