"""The SFTP server, read by Airflow's SFTP provider (hook, async hook, sensor) over real SSH on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import asyncssh
import paramiko
import pytest
from airflow.providers.sftp.hooks.sftp import SFTPHook, SFTPHookAsync
from airflow.providers.sftp.sensors.sftp import SFTPSensor
from airflow.providers.sftp.triggers.sftp import SFTPTrigger

from include.sandbox.sftp_server import SFTPServer
from plugins.sensors.export import trigger_newer_than

USERNAME = "lms-export"
PASSWORD = "sftp-test-password"
EXPORT = b"student_id,section_id,term,score\n" + b"".join(
    f"{n:06d},1201,Q1,{n % 100}\n".encode() for n in range(20_000)
)


@pytest.fixture
def sftp(tmp_path):
    root = tmp_path / "sftp-root"
    (root / "exports").mkdir(parents=True)
    with SFTPServer(root, username=USERNAME, password=PASSWORD) as server:
        yield server


def use_connection(monkeypatch, conn_id: str, value: dict) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
    return conn_id


@pytest.fixture
def sftp_conn(sftp, monkeypatch) -> str:
    return use_connection(monkeypatch, "sftp_test", sftp.connection())


def hook(conn_id: str) -> SFTPHook:
    """One connection attempt: the provider's default retries 3 times, 3-5 s apart."""
    return SFTPHook(ssh_conn_id=conn_id, conn_retry_attempts=1)


def put_export(sftp, name: str, data: bytes = EXPORT, mtime: float | None = None):
    path = sftp.root / "exports" / name
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_the_connection_checks_the_host_key(sftp, sftp_conn, monkeypatch):
    assert sftp.connection() == {
        "conn_type": "sftp",
        "host": "127.0.0.1",
        "port": sftp.port,
        "login": USERNAME,
        "password": PASSWORD,
        "extra": {"host_key": sftp.host_key_base64, "no_host_key_check": False},
    }
    assert hook(sftp_conn).list_directory("/") == ["exports"]
    typed = {**sftp.connection(),
             "extra": {"host_key": f"ssh-rsa {sftp.host_key_base64}", "no_host_key_check": False}}
    assert hook(use_connection(monkeypatch, "sftp_typed", typed)).list_directory("/") == ["exports"]

    impostor = paramiko.RSAKey.generate(2048).get_base64()
    wrong = {**sftp.connection(), "extra": {"host_key": impostor, "no_host_key_check": False}}
    with pytest.raises(paramiko.BadHostKeyException):
        hook(use_connection(monkeypatch, "sftp_wrong_key", wrong)).list_directory("/")
    with pytest.raises(ValueError, match="Must check host key"):
        SFTPHook(ssh_conn_id=use_connection(monkeypatch, "sftp_both", {
            **sftp.connection(), "extra": {"host_key": sftp.host_key_base64, "no_host_key_check": True}}))


def test_a_known_hosts_line_verifies_it_and_a_wrong_password_is_refused(sftp, tmp_path, monkeypatch):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sftp.known_hosts_line + "\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(sftp.host, sftp.port, USERNAME, PASSWORD, look_for_keys=False, allow_agent=False,
                   timeout=5)
    with client, client.open_sftp() as session:
        assert session.normalize(".") == "/"
    stranger = paramiko.SSHClient()
    stranger.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        stranger.connect(sftp.host, sftp.port, USERNAME, PASSWORD, look_for_keys=False, allow_agent=False,
                         timeout=5)
    stranger.close()
    wrong = {**sftp.connection(), "password": "not-the-password"}
    with pytest.raises(paramiko.AuthenticationException):
        hook(use_connection(monkeypatch, "sftp_wrong_password", wrong)).list_directory("/")


def test_lists_stats_and_downloads_through_the_hook(sftp, sftp_conn, tmp_path):
    mtime = datetime(2026, 11, 2, 6, 30, 15, tzinfo=UTC).timestamp()
    put_export(sftp, "grades_20261102.csv", mtime=mtime)
    put_export(sftp, "grades_20261101.csv", b"student_id\n", mtime=mtime - 86_400)
    sftp_hook = hook(sftp_conn)
    assert sftp_hook.list_directory("/exports") == ["grades_20261101.csv", "grades_20261102.csv"]
    listing = sftp_hook.describe_directory("/exports")
    local_stamp = datetime.fromtimestamp(mtime).strftime("%Y%m%d%H%M%S")  # the hook formats in local time
    assert listing["grades_20261102.csv"] == {"size": len(EXPORT), "type": "file", "modify": local_stamp}
    assert listing["grades_20261101.csv"]["size"] == len(b"student_id\n")
    assert sftp_hook.get_mod_time("/exports/grades_20261102.csv") == local_stamp
    assert sftp_hook.get_files_by_pattern("/exports", "grades_*.csv") == ["grades_20261101.csv",
                                                                        "grades_20261102.csv"]
    assert sftp_hook.path_exists("/exports/grades_20261102.csv")
    assert not sftp_hook.path_exists("/exports/nope")
    with sftp_hook.get_managed_conn():
        sftp_hook.retrieve_file("/exports/grades_20261102.csv", str(tmp_path / "downloaded.csv"))
    assert (tmp_path / "downloaded.csv").read_bytes() == EXPORT


def test_writes_renames_and_removes_through_the_hook(sftp, sftp_conn, tmp_path):
    local = tmp_path / "upload.csv"
    local.write_bytes(b"id\n1\n")
    sftp_hook = hook(sftp_conn)
    sftp_hook.create_directory("/archive/2027")
    sftp_hook.store_file("/archive/2027/upload.csv.part", str(local))
    with sftp_hook.get_managed_conn() as session:
        session.rename("/archive/2027/upload.csv.part", "/archive/2027/upload.csv")
        put_export(sftp, "taken.csv", b"x")
        with pytest.raises(OSError):
            session.rename("/archive/2027/upload.csv", "/exports/taken.csv")
    assert (sftp.root / "archive" / "2027" / "upload.csv").read_bytes() == b"id\n1\n"
    sftp_hook.delete_file("/archive/2027/upload.csv")
    sftp_hook.delete_directory("/archive/2027")
    assert sftp_hook.list_directory("/archive") == []
    with pytest.raises(OSError):
        sftp_hook.delete_file("/archive/missing.csv")


def test_the_served_root_cannot_be_escaped(sftp, sftp_conn):
    (sftp.root.parent / "outside.txt").write_text("secret")
    sftp_hook = hook(sftp_conn)
    assert sftp_hook.list_directory("/../..") == ["exports"]
    assert not sftp_hook.path_exists("/../outside.txt")


def test_a_file_being_written_shows_a_growing_size(sftp, sftp_conn):
    path = put_export(sftp, "grades_partial.csv", EXPORT[:1000])
    sftp_hook = hook(sftp_conn)
    sizes = [sftp_hook.describe_directory("/exports")["grades_partial.csv"]["size"]]
    for end in (5000, len(EXPORT)):
        with path.open("ab") as growing:
            growing.write(EXPORT[sizes[-1]:end])
        sizes.append(sftp_hook.describe_directory("/exports")["grades_partial.csv"]["size"])
    assert sizes == [1000, 5000, len(EXPORT)]


# paramiko's client prefetch thread may die with the connection ("Socket is closed"): client noise
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_drop_mid_download_fails_the_download_once(sftp, sftp_conn, tmp_path):
    put_export(sftp, "grades.csv")
    put_export(sftp, "other.csv")
    sftp.inject("drop_mid_download", after_bytes=64 * 1024, path_contains="grades")
    sftp_hook = hook(sftp_conn)
    with sftp_hook.get_managed_conn():
        sftp_hook.retrieve_file("/exports/other.csv", str(tmp_path / "other.csv"))
    assert (tmp_path / "other.csv").read_bytes() == EXPORT, "only matching paths are cut"
    try:
        with sftp_hook.get_managed_conn():
            sftp_hook.retrieve_file("/exports/grades.csv", str(tmp_path / "grades.csv"))
    except (paramiko.SSHException, EOFError, OSError):
        pass  # the reset surfaced; paramiko may instead take it for the end of the file, hence the size check
    assert (tmp_path / "grades.csv").stat().st_size <= 64 * 1024 < len(EXPORT)
    with sftp_hook.get_managed_conn():
        sftp_hook.retrieve_file("/exports/grades.csv", str(tmp_path / "grades.csv"))
    assert (tmp_path / "grades.csv").read_bytes() == EXPORT, "the fault was used up"
    with pytest.raises(ValueError, match="unknown fault"):
        sftp.inject("meteor")


def test_a_stopped_server_refuses_and_a_restarted_one_serves_on_the_same_port(sftp, sftp_conn):
    port, key = sftp.port, sftp.host_key_base64
    open_hook = hook(sftp_conn)
    with open_hook.get_managed_conn() as session:
        assert session.listdir("/") == ["exports"]
        sftp.stop()
        assert not sftp.running
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            session.listdir("/")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((sftp.host, port), timeout=2).close()
    with pytest.raises(paramiko.ssh_exception.NoValidConnectionsError):
        hook(sftp_conn).list_directory("/")
    sftp.start()
    assert (sftp.port, sftp.host_key_base64) == (port, key)
    assert hook(sftp_conn).list_directory("/") == ["exports"]


def test_the_provider_sensor_pokes_it(sftp, sftp_conn):
    sensor = SFTPSensor(task_id="wait_for_export", path="/exports", file_pattern="grades_*.csv",
                        sftp_conn_id=sftp_conn)
    assert sensor.poke({}) is False
    put_export(sftp, "roster.csv")
    assert sensor.poke({}) is False
    put_export(sftp, "grades_20261102.csv", mtime=datetime(2026, 11, 2, 6, tzinfo=UTC).timestamp())
    assert sensor.poke({}) is True
    fresh_only = SFTPSensor(task_id="wait_for_fresh_export", path="/exports", file_pattern="grades_*.csv",
                            newer_than=datetime(2026, 11, 3, tzinfo=UTC), sftp_conn_id=sftp_conn)
    assert fresh_only.poke({}) is False
    one_file = SFTPSensor(task_id="wait_for_file", path="/exports/grades_20261102.csv",
                          sftp_conn_id=sftp_conn)
    assert one_file.poke({}) is True


def test_the_async_hook_of_the_deferrable_sensor_verifies_and_reads_it(sftp, sftp_conn, monkeypatch):
    """SFTPSensor(deferrable=True) polls from the triggerer through SFTPHookAsync (asyncssh)."""
    stamp = datetime(2026, 11, 2, 6, tzinfo=UTC).timestamp()
    put_export(sftp, "grades_20261102.csv", mtime=stamp)

    async def sense(conn_id: str):
        async_hook = SFTPHookAsync(sftp_conn_id=conn_id)
        return await async_hook.sense_files_by_pattern(
            "/exports", "grades_*.csv", newer_than=datetime(2026, 11, 1, tzinfo=UTC))

    assert asyncio.run(sense(sftp_conn)) == ["grades_20261102.csv"]
    impostor = paramiko.RSAKey.generate(2048).get_base64()
    wrong = {**sftp.connection(), "extra": {"host_key": impostor, "no_host_key_check": False}}
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(sense(use_connection(monkeypatch, "sftp_async_wrong_key", wrong)))


def test_a_host_key_file_keeps_the_key_across_servers(tmp_path):
    key_path = tmp_path / "keys" / "sftp_host_rsa"
    with SFTPServer(tmp_path, username=USERNAME, password=PASSWORD, host_key_path=key_path) as first:
        key = first.host_key_base64
    assert key_path.exists() and oct(key_path.stat().st_mode & 0o777) == "0o600"
    with SFTPServer(tmp_path, username=USERNAME, password=PASSWORD, host_key_path=key_path) as second:
        assert second.host_key_base64 == key
        assert second.known_hosts_line == f"[127.0.0.1]:{second.port} ssh-rsa {key}"


def test_serves_concurrent_sessions(sftp, sftp_conn, tmp_path):
    put_export(sftp, "grades.csv")

    def download(n: int) -> bytes:
        worker = hook(sftp_conn)
        with worker.get_managed_conn():
            worker.retrieve_file("/exports/grades.csv", str(tmp_path / f"copy{n}.csv"))
        return (tmp_path / f"copy{n}.csv").read_bytes()

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert all(data == EXPORT for data in pool.map(download, range(6)))


def test_the_sensors_trigger_waits_past_the_export_it_processed_and_fires_for_a_newer_one(sftp, sftp_conn):
    """The auto-export leaves yesterday's file beside today's: SFTPTrigger's newer_than is inclusive
    (to the second), so the processed file's own time would fire at once, every time, on that file."""
    processed = datetime(2026, 11, 1, 6, 0, 0, tzinfo=UTC).timestamp()
    put_export(sftp, "grades_20261101.csv", mtime=processed)
    trigger = SFTPTrigger(path="/exports", file_pattern="grades_*.csv", sftp_conn_id=sftp_conn,
                          newer_than=trigger_newer_than(processed), poke_interval=0.2)

    async def first_event(seconds: float):
        events = trigger.run()
        try:
            return await asyncio.wait_for(anext(events), seconds)
        except TimeoutError:
            return None
        finally:
            await events.aclose()

    assert asyncio.run(first_event(1.5)) is None, "it fired on the export already processed"
    put_export(sftp, "grades_20261102.csv", mtime=processed + 1)
    event = asyncio.run(first_event(5))
    assert event is not None and event.payload["status"] == "success"
    assert "grades_20261102.csv" in event.payload["message"] and "20261101" not in event.payload["message"]
