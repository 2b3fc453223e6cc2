"""Wait for the LMS's final-grade auto-export on the district's SFTP server, holding no worker.

The provider's :class:`SFTPTrigger` watches the dedicated directory in the triggerer until
a file matching the export (the auto-export process title, else any ``*.csv``) is newer
than the last one processed; then the newest by name is taken once its size has stayed
the same for ``stable_seconds`` (a file still being written is not taken), again waiting
in the triggerer. Only the file's name, size and time go through XCom.
"""

from __future__ import annotations

import fnmatch
import stat
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd
from airflow.providers.sftp.hooks.sftp import SFTPHook
from airflow.providers.sftp.triggers.sftp import SFTPTrigger
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException

from include.config import GradePassback
from include.staging import read_frame, stage_frame, staging_path
from plugins.operators.extract import skip_unless_running


def last_export_path(staging_root: str, district: str):
    """The export last processed (name, mtime): one per district, whatever the school year."""
    return staging_path(staging_root, district, "state", "grades/last_export")


class ExportFileSensor(BaseOperator):
    template_fields: Sequence[str] = ("staging_root",)
    ui_color = "#f0e4f7"

    def __init__(self, *, district: str, passback: GradePassback, staging_root: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.district = district
        self.passback = passback
        self.staging_root = staging_root

    @property
    def pattern(self) -> str:
        return f"{self.passback.export_title}*" if self.passback.export_title else "*.csv"

    def _last(self) -> dict[str, Any] | None:
        path = last_export_path(self.staging_root, self.district)
        if not path.exists():
            return None
        row = read_frame(path).iloc[0]
        return {"name": str(row["name"]), "mtime": float(row["mtime"])}

    def _newest(self, last: dict[str, Any] | None) -> dict[str, Any] | None:
        """The newest matching file by name among those modified after the last one processed."""
        hook = SFTPHook(ssh_conn_id=self.passback.sftp_conn_id)
        with hook.get_managed_conn() as sftp:
            entries = sftp.listdir_attr(self.passback.remote_dir)
        candidates = [
            entry for entry in entries
            if stat.S_ISREG(entry.st_mode or 0) and fnmatch.fnmatch(entry.filename, self.pattern)
            and (last is None or (entry.st_mtime or 0) > last["mtime"])
        ]
        if not candidates:
            return None
        newest = max(candidates, key=lambda entry: entry.filename)
        return {"name": newest.filename, "size": int(newest.st_size or 0), "mtime": float(newest.st_mtime or 0)}

    def execute(self, context: Context) -> dict[str, Any]:
        skip_unless_running(context, "grades")
        return self._wait()

    def _wait(self) -> dict[str, Any]:
        last = self._last()
        newer_than = datetime.fromtimestamp(last["mtime"], tz=timezone.utc) if last else None
        self.log.info(
            "District %s: waiting for an export matching %s in %s on %s%s",
            self.district, self.pattern, self.passback.remote_dir, self.passback.sftp_conn_id,
            f", newer than {last['name']}" if last else "",
        )
        self.defer(
            trigger=SFTPTrigger(
                path=self.passback.remote_dir,
                file_pattern=self.pattern,
                sftp_conn_id=self.passback.sftp_conn_id,
                newer_than=newer_than.strftime("%Y%m%d%H%M%S") if newer_than else None,
                poke_interval=self.passback.poke_interval_seconds,
            ),
            method_name="found",
            timeout=timedelta(hours=self.passback.timeout_hours),
        )

    def found(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if event and event.get("status") == "error":
            raise AirflowException(f"Watching {self.passback.remote_dir} on SFTP failed: {event.get('message')}")
        return self._settle(context, self._newest(self._last()))

    def _candidate_path(self, context: Context):
        """The file seen before the last pause, kept in staging: a resumed task has no memory."""
        return staging_path(self.staging_root, self.district, context["run_id"], "grades/export_candidate")

    def _settle(self, context: Context, candidate: dict[str, Any] | None) -> dict[str, Any]:
        if candidate is None:  # the trigger saw a file that is gone or not newer: keep waiting
            return self._wait()
        stage_frame(self._candidate_path(context), pd.DataFrame([candidate]))
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=self.passback.stable_seconds)), method_name="settled"
        )

    def settled(self, context: Context, event: Any = None) -> dict[str, Any]:
        seen = read_frame(self._candidate_path(context)).iloc[0].to_dict()
        now = self._newest(self._last())
        if now and now["name"] == seen["name"] and now["size"] == int(seen["size"]) and now["size"]:
            self.log.info("Export %s is complete (%d bytes)", now["name"], now["size"])
            return {"path": f"{self.passback.remote_dir.rstrip('/')}/{now['name']}", **now}
        self.log.info("Export %s is still being written; waiting %ss more", (now or {}).get("name"),
                      self.passback.stable_seconds)
        return self._settle(context, now)
