"""Wait for the LMS's final-grade auto-export on the district's SFTP server, holding no worker.

The task looks once; when no file matching the export (the auto-export process title, else
any ``*.csv``) is newer than the last one processed, the provider's :class:`SFTPTrigger`
watches the dedicated directory in the triggerer until one is. Then the newest by name is
taken once its size has stayed the same for ``stable_seconds`` (a file still being written
is not taken), waiting in the triggerer unless the wait is a few seconds. Only the file's
name, size and time go through XCom.

``timeout_hours`` bounds the whole wait from the task's first try, pauses and retries included:
a file that stays empty or keeps growing, or no file at all, fails the task for good at the
deadline (no retry: a retried wait would hold the next night back), saying so. A cleared task
waits ``timeout_hours`` afresh. An SFTP server that is down or drops the
connection is waited out (it cannot deliver the export meanwhile); a refused login or host key
fails at once. A cleared run takes the export it processed the first time (the processed
exports are recorded with their run), not only a newer one.

The wait in the triggerer is :class:`~plugins.sensors.export_trigger.ExportTrigger` (a module of its
own, imported by the triggerer and this task only): the provider's trigger, firing on the same
files, that keeps asyncssh's connection chatter (some eighteen INFO lines per look) out of the
task's trigger log and says there at most once per poke interval what it is still waiting for.
"""

from __future__ import annotations

import fnmatch
import logging
import stat
import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    TaskDeferralTimeout,
)

from include.config import GradePassback
from plugins.operators.run_params import skip_unless_running

SLEPT_IN_THE_WORKER_SECONDS = 10.0
"""Stability waits and pauses this short are slept in the task, not deferred. A deferral that
resumes within seconds races the scheduler's reading of the deferring process's exit, and Airflow
3.3.2 then fails the resumed try as "killed externally" (apache/airflow#72716); a worker held a few
seconds costs less."""


def trigger_newer_than(processed_mtime: float) -> str:
    """``SFTPTrigger``'s ``newer_than`` for files after the one processed last. The trigger fires for
    files modified at or after it, to the whole second (SFTP's times have no fraction): the
    processed file's own time would fire at once on that same file, the second after it does not."""
    after = datetime.fromtimestamp(int(processed_mtime) + 1, tz=timezone.utc)
    return after.strftime("%Y%m%d%H%M%S")


TRIGGER_WAITING = "Still waiting for a file matching"
"""How :class:`ExportTrigger`'s line about the wait begins."""


def quiet_asyncssh() -> None:
    """asyncssh logs each connection, login, SFTP session and close at INFO: the trigger connects
    anew for every look, so a 2-second poke interval made hundreds of lines a minute in the task's
    log. Its warnings and errors still show; a level a logging config gave ``asyncssh`` is kept.
    This is the triggerer's whole process (asyncssh has one logger)."""
    logger = logging.getLogger("asyncssh")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _connection_refused_by_policy(message: str) -> bool:
    """Wrong password or an untrusted host key: waiting cannot help, a person must fix the connection."""
    lowered = message.casefold()
    return any(sign in lowered for sign in ("permission denied", "authentication", "host key", "not trusted"))


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

    def _last(self, context: Context | None = None) -> dict[str, Any] | None:
        """The export processed last before this run: a cleared run sees the state it first saw,
        so it takes its own export again instead of waiting for a newer one."""
        from include.grades.processed import processed_exports

        history = processed_exports(self.staging_root, self.district)
        if context is not None:
            own = (history["run_id"] == context["run_id"]).to_numpy().nonzero()[0]
            if len(own):
                history = history.iloc[: own[0]]
        if history.empty:
            return None
        row = history.iloc[-1]
        return {"name": str(row["name"]), "mtime": float(row["mtime"])}

    def _newest(self, last: dict[str, Any] | None) -> dict[str, Any] | None:
        """The newest matching file by name among those modified after the last one processed."""
        from airflow.providers.sftp.hooks.sftp import SFTPHook

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

    # -- the wait's deadline: timeout_hours from the start of the try, across every pause ---------

    def _deadline_path(self, context: Context):
        from include.staging import staging_path

        return staging_path(self.staging_root, self.district, context["run_id"], "grades/export_deadline")

    def _left(self, context: Context) -> float:
        """Seconds left before the wait gives up (no deadline recorded: a wait not started by execute)."""
        from include.staging import read_frame

        path = self._deadline_path(context)
        if not path.exists():
            return float("inf")
        deadline = float(read_frame(path).iloc[0]["deadline"])
        return deadline - datetime.now(timezone.utc).timestamp()

    def _give_up_if_late(self, context: Context, why: str) -> None:
        if self._left(context) <= 0:
            raise self._timed_out(why)

    def _timed_out(self, why: str) -> AirflowSensorTimeout:
        """The wait is over for good: Airflow fails the task without a retry."""
        return AirflowSensorTimeout(
            f"No grade export arrived in {self.passback.remote_dir} on {self.passback.sftp_conn_id} "
            f"within {self.passback.timeout_hours:g} h: {why}"
        )

    def execute(self, context: Context) -> dict[str, Any]:
        skip_unless_running(context, "grades")
        self._start_the_clock(context)
        return self._wait(context)

    def _start_the_clock(self, context: Context) -> None:
        """The deadline is set by the task's first try and kept by its retries; clearing the task
        (which Airflow counts in the run's ``clear_number``) starts a new wait."""
        import pandas as pd

        from include.staging import read_frame, stage_frame

        path = self._deadline_path(context)
        cleared = int(getattr(context["dag_run"], "clear_number", 0) or 0)
        if path.exists():
            recorded = read_frame(path).iloc[0]
            if "clear_number" in recorded and int(recorded["clear_number"]) == cleared:
                return
        deadline = datetime.now(timezone.utc) + timedelta(hours=self.passback.timeout_hours)
        stage_frame(path, pd.DataFrame({"deadline": [deadline.timestamp()], "clear_number": [cleared]}))

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context):
        """A deferral that reached the deadline fails the task for good, as a sensor's timeout does."""
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except TaskDeferralTimeout:
            raise self._timed_out("no matching file newer than the last one processed") from None

    def _wait(self, context: Context) -> dict[str, Any]:
        """Looks once before deferring: an export already there (the usual morning) is taken
        without a deferral that would resume at once."""
        while True:
            self._give_up_if_late(context, "no matching file newer than the last one processed")
            candidate = self._look(context)
            if candidate is None:
                self._defer_until_a_file_arrives(context)
            taken = self._settle(context, candidate)
            if taken is not None:
                return taken

    def _defer_until_a_file_arrives(self, context: Context) -> None:
        from plugins.sensors.export_trigger import ExportTrigger

        last = self._last(context)
        newer_than = trigger_newer_than(last["mtime"]) if last else None
        self.log.info(
            "District %s: waiting for an export matching %s in %s on %s%s",
            self.district, self.pattern, self.passback.remote_dir, self.passback.sftp_conn_id,
            f", newer than {last['name']}" if last else "",
        )
        self.defer(
            trigger=ExportTrigger(
                path=self.passback.remote_dir,
                file_pattern=self.pattern,
                sftp_conn_id=self.passback.sftp_conn_id,
                newer_than=newer_than,
                poke_interval=self.passback.poke_interval_seconds,
            ),
            method_name="found",
            timeout=timedelta(seconds=max(1.0, min(self._left(context), self.passback.timeout_hours * 3600))),
        )

    def _pause(self, context: Context, problem: str) -> None:
        """The SFTP server is down or dropped us: the export cannot arrive meanwhile, so keep
        waiting until the deadline, then fail saying why."""
        self._give_up_if_late(context, f"the SFTP server kept failing: {problem}")
        self.log.warning("District %s: SFTP server %s unreachable (%s); trying again in %ss", self.district,
                         self.passback.sftp_conn_id, problem, self.passback.poke_interval_seconds)
        self._hold(self.passback.poke_interval_seconds, "resume")

    def _hold(self, seconds: float, method_name: str) -> None:
        """Wait ``seconds``: deferred, to resume at ``method_name``, or slept in the worker when that
        short (see :data:`SLEPT_IN_THE_WORKER_SECONDS`), to return here."""
        if seconds > SLEPT_IN_THE_WORKER_SECONDS:
            self.defer(trigger=TimeDeltaTrigger(timedelta(seconds=seconds)), method_name=method_name)
        time.sleep(seconds)

    def resume(self, context: Context, event: Any = None) -> dict[str, Any]:
        return self._wait(context)

    def _look(self, context: Context) -> dict[str, Any] | None:
        """The newest candidate, looking again after each pause while the server fails."""
        import paramiko

        while True:
            try:
                return self._newest(self._last(context))
            except (OSError, EOFError, paramiko.SSHException, AirflowException) as error:
                if _connection_refused_by_policy(str(error)):
                    raise
                self._pause(context, f"{type(error).__name__}: {error}")

    def found(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if event and event.get("status") == "error":
            message = str(event.get("message"))
            if _connection_refused_by_policy(message):
                raise AirflowFailException(
                    f"SFTP connection {self.passback.sftp_conn_id} refused while watching "
                    f"{self.passback.remote_dir}: {message}. Check the connection's login, password and "
                    "host_key."
                )
            self._pause(context, message)
        return self._settle(context, self._look(context)) or self._wait(context)

    def _candidate_path(self, context: Context):
        """The file seen before the last pause, kept in staging: a resumed task has no memory."""
        from include.staging import staging_path

        return staging_path(self.staging_root, self.district, context["run_id"], "grades/export_candidate")

    def _settle(self, context: Context, candidate: dict[str, Any] | None) -> dict[str, Any] | None:
        """The candidate once its size stayed the same for ``stable_seconds``; None when it is gone
        or no longer the newest (the wait goes on)."""
        import pandas as pd

        from include.staging import stage_frame

        while candidate is not None:
            stage_frame(self._candidate_path(context), pd.DataFrame([candidate]))
            self._hold(self.passback.stable_seconds, "settled")
            taken, candidate = self._compare(context)
            if taken is not None:
                return taken
        return None

    def settled(self, context: Context, event: Any = None) -> dict[str, Any]:
        taken, candidate = self._compare(context)
        return taken or self._settle(context, candidate) or self._wait(context)

    def _compare(self, context: Context) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(the export, None) when the file seen last is unchanged and not empty; else (None, the
        newest file now, to be watched again)."""
        from include.staging import read_frame

        seen = read_frame(self._candidate_path(context)).iloc[0].to_dict()
        now = self._look(context)
        if now and now["name"] == seen["name"] and now["size"] == int(seen["size"]) and now["size"]:
            self.log.info("Export %s is complete (%d bytes)", now["name"], now["size"])
            return {"path": f"{self.passback.remote_dir.rstrip('/')}/{now['name']}", **now}, None
        if now and not now["size"]:
            state = f"{now['name']} is empty (0 bytes): the export job wrote nothing"
        else:
            state = f"{(now or seen)['name']} was still being written"
        self._give_up_if_late(context, state)
        self.log.info("Export %s: not taken yet (%s); checking again in %ss", (now or {}).get("name"), state,
                      self.passback.stable_seconds)
        return None, now
