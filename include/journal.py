"""A task's journal of what an external system already took, for retries that never resend it.

Each batch's answers are staged as one more part before the next batch is sent, so a
task retried after a crash (or cleared and re-run) skips what was taken and resends at
most the batch that was in flight; nothing is rewritten, so the cost stays linear in the
items however many millions a night sends. A part's name is its place and a name of its
own: two tries of a task that overlap on two workers (one still running on a worker the
scheduler gave up on) never overwrite each other's parts, whatever the storage. Beside it, the
adapter's receipts (:class:`Receipts`) keep what a batch outlives its call by: a Canvas import
still running when the task failed, which its retry waits for instead of uploading again.
"""

from __future__ import annotations

import uuid

import pandas as pd
import pyarrow.compute as pc
from airflow.sdk import ObjectStoragePath

from include.frames import text_array
from include.staging import atomic_file, read_frame, stage_frame


class Journal:
    def __init__(self, directory: ObjectStoragePath, empty: pd.DataFrame):
        self.directory = directory
        self._empty = empty
        self._parts = (
            sorted((part for part in directory.iterdir() if not part.name.startswith(".")), key=lambda p: p.name)
            if directory.exists() else []
        )  # a part still being written is a hidden temporary file (on an object store: not there yet)

    def read(self) -> pd.DataFrame:
        """Every answer journaled so far, in the order they came."""
        frames = [read_frame(part) for part in self._parts]
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else (frames[0] if frames else self._empty)

    def append(self, answers: pd.DataFrame) -> None:
        part = self.directory / f"{len(self._parts):06d}-{uuid.uuid4().hex[:12]}.parquet"
        stage_frame(part, answers)
        self._parts.append(part)


class Receipts:
    """An adapter's receipts (:class:`include.lms.target.Receipts`) as one small file each in a
    directory beside the journal, written whole or not at all."""

    def __init__(self, directory: ObjectStoragePath):
        self.directory = directory

    def get(self, name: str) -> str | None:
        path = self.directory / name
        return path.read_text() if path.exists() else None

    def put(self, name: str, value: str) -> None:
        with atomic_file(self.directory / name) as file:
            file.write(value.encode())


def versioned(keys: pd.Series, versions: pd.Series) -> pd.Series:
    """(key, version) as one text per item: an item is done only in the version that was sent
    (versions as text or numbers; a journal begun by an earlier version may hold both)."""
    if versions.dtype == object:
        versions = versions.astype(str)
    joined = pc.binary_join_element_wise(text_array(keys), text_array(versions), "\x1f")
    return pd.Series(pd.arrays.ArrowExtensionArray(joined), index=keys.index)
