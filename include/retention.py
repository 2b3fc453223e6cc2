"""Which of a district's staged run folders a night removes: pure, given a listing and the runs.

Every run stages the night's extracts (the full users collection among them), plans, journals and
grade exports under ``<root>/<district>/<run folder>/``. What a later night needs from an earlier
one lives beside them, in the folders the project keeps (:data:`~include.staging.KEPT_FOLDERS`:
the state, with the extract snapshots a delta night merges into, the provisioned and posted state
and the processed exports), so a run folder is only read by its own run: its tasks, their retries,
and the run cleared and run again. A folder is removed once its run is finished and the run last
wrote to it more than ``retention_days`` ago, except the current run's and the last successful
run's (the newest inputs known to be good, for a person to look back at).

A folder's age is its newest object's modification time. The file system sets it (the local
disk's clock on ``file://``, the object store's on ``s3://``) on every write, whoever wrote, so it
is there for any folder, any run, any version of this project. Nothing staged records the run's
logical date (the manifests are in XCom), and a logical date says when the night was meant for,
not when it wrote: a past school year synced today, a cleared run re-run, would look years old.
A folder whose listing gives no time is kept: a folder is never removed on a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from include.staging import KEPT_FOLDERS, folder_name

FINISHED = frozenset({"success", "failed"})
KEPT_BECAUSE = (
    "the project's folder",  # the state: never a run's
    "the current run",
    "a run not finished",  # running, queued, or cleared to run again: its tasks read their own files
    "the last successful run",
    "no modification time",
    "within retention",
)


@dataclass(frozen=True)
class RunFolder:
    """A folder directly under ``<root>/<district>/``: its name, when its newest object was
    written (None: the listing did not say) and its objects' bytes."""

    name: str
    last_written: datetime | None
    size: int


@dataclass(frozen=True)
class RetentionPlan:
    cutoff: datetime
    remove: tuple[RunFolder, ...]
    kept: dict[str, int]  # folders kept, by the first reason in KEPT_BECAUSE that holds


class RetentionManifest(BaseModel):
    """What the retention task returns: counts and the cutoff, never a folder's contents."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str = "staging_retention"
    district: str
    retention_days: int = Field(ge=1)
    cutoff: datetime
    removed: int = Field(ge=0)
    removed_bytes: int = Field(ge=0)
    kept: dict[str, int]
    run_id: str
    created_at: datetime


def modified_at(info: Mapping[str, Any]) -> datetime | None:
    """An object's modification time from its fsspec listing entry: ``mtime`` (a POSIX time on
    local disks, a datetime on some object stores) or ``LastModified`` (S3), in UTC."""
    value = info.get("mtime", info.get("LastModified"))
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and value > 0:
        return datetime.fromtimestamp(value, timezone.utc)
    return None


def folders_in(listing: Mapping[str, Mapping[str, Any]], base: str) -> list[RunFolder]:
    """The folders directly under ``base`` in ``listing`` (an fsspec ``find(base, detail=True)``:
    every object under it, by key), in name order; objects directly under ``base`` are in none."""
    prefix = base.rstrip("/") + "/"
    objects: dict[str, list[Mapping[str, Any]]] = {}
    for key, info in listing.items():
        if key.startswith(prefix):
            name, inside, _ = key[len(prefix):].partition("/")
            if inside:
                objects.setdefault(name, []).append(info)
    folders = []
    for name, infos in sorted(objects.items()):
        times = [modified_at(info) for info in infos]
        last_written = None if None in times else max(times)
        folders.append(RunFolder(name, last_written, sum(int(info.get("size") or 0) for info in infos)))
    return folders


def plan_retention(
    folders: Iterable[RunFolder],
    *,
    run_states: Mapping[str, str],
    current_run_id: str,
    now: datetime,
    retention_days: int,
) -> RetentionPlan:
    """The folders to remove: those last written before ``now - retention_days`` that no reason in
    :data:`KEPT_BECAUSE` keeps. ``run_states`` holds the state of every run Airflow knows of the
    DAG, by run id (a folder no known run maps to, its run's record cleaned from Airflow's
    database, is finished); run ids that map to the same folder all count."""
    folders = list(folders)
    cutoff = now - timedelta(days=retention_days)
    states: dict[str, set[str]] = {}
    for run_id, state in run_states.items():
        states.setdefault(folder_name(run_id), set()).add(state)
    succeeded = [folder for folder in folders
                 if "success" in states.get(folder.name, ()) and folder.last_written is not None]
    last_success = max(succeeded, key=lambda folder: folder.last_written).name if succeeded else None
    current = folder_name(current_run_id)

    def why_kept(folder: RunFolder) -> str | None:
        reasons = (
            folder.name in KEPT_FOLDERS,
            folder.name == current,
            bool(states.get(folder.name, set()) - FINISHED),
            folder.name == last_success,
            folder.last_written is None,
            folder.last_written is not None and folder.last_written >= cutoff,
        )
        return next((reason for reason, holds in zip(KEPT_BECAUSE, reasons, strict=True) if holds), None)

    kept = dict.fromkeys(KEPT_BECAUSE, 0)
    remove = []
    for folder in folders:
        reason = why_kept(folder)
        if reason is None:
            remove.append(folder)
        else:
            kept[reason] += 1
    return RetentionPlan(cutoff, tuple(remove), kept)
