"""The export sensor's wait in the triggerer: the SFTP provider's trigger, firing on the same files,
with asyncssh's connection chatter kept out of the task's trigger log and one line per poke interval
at most saying what it still waits for.

Apart from :mod:`plugins.sensors.export` because it is built on the provider's classes (paramiko,
asyncssh): the DAG file imports the sensor, the triggerer and the sensor's ``execute`` import this.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from airflow.providers.sftp.hooks.sftp import SFTPHookAsync
from airflow.providers.sftp.triggers.sftp import SFTPTrigger
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import TriggerEvent

from plugins.sensors.export import TRIGGER_WAITING, quiet_asyncssh


class _ReportingHookAsync(SFTPHookAsync):
    """The provider's async hook, calling ``nothing_yet`` after each look that found no file."""

    def __init__(self, *, nothing_yet: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._nothing_yet = nothing_yet

    async def sense_files_by_pattern(self, path: str, fnmatch_pattern: str,
                                     newer_than: datetime | None = None) -> list[str]:
        try:
            found = await super().sense_files_by_pattern(path, fnmatch_pattern, newer_than)
        except (AirflowException, FileNotFoundError) as error:  # SFTPTrigger looks again after these
            self._nothing_yet(f"the directory could not be read: {error}")
            raise
        if not found:
            self._nothing_yet("no such file yet")
        return found


class ExportTrigger(SFTPTrigger):
    """:class:`SFTPTrigger` (same arguments, same events) with asyncssh quieted (see
    :func:`quiet_asyncssh`) and one line per poke interval at most saying what is awaited: the
    pattern, the directory, the connection and the moment a file must be modified at or after.
    Never a file's contents."""

    CLASSPATH = "plugins.sensors.export_trigger.ExportTrigger"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._looks = 0
        self._said_at: float | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The provider's arguments under this class's path, which the triggerer imports (the
        project's root is on its ``PYTHONPATH``)."""
        _, kwargs = super().serialize()
        return self.CLASSPATH, kwargs

    def _get_async_hook(self) -> SFTPHookAsync:
        return _ReportingHookAsync(sftp_conn_id=self.sftp_conn_id, host=self.remote_host,
                                   no_host_key_check=self.no_host_key_check, nothing_yet=self._nothing_yet)

    def _nothing_yet(self, why: str) -> None:
        self._looks += 1
        now = time.monotonic()
        if self._said_at is not None and now - self._said_at < self.poke_interval:
            return
        self._said_at = now
        newer_than = self.newer_than_utc
        since = f", modified at or after {newer_than.isoformat()}" if newer_than else ""
        self.log.info("%s %s in %s on %s%s (%s; %d look(s) so far); looking again in %gs", TRIGGER_WAITING,
                      self.file_pattern, self.path, self.sftp_conn_id, since, why, self._looks,
                      self.poke_interval)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        quiet_asyncssh()
        async for event in super().run():
            yield event
