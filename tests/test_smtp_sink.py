"""The SMTP sink, fed by Airflow's SMTP provider (hook and notifier) over real SMTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
import time
from types import SimpleNamespace

import pytest
from airflow.providers.smtp.hooks.smtp import SmtpHook
from airflow.providers.smtp.notifications.smtp import SmtpNotifier
from airflow.sdk import DAG

from include.sandbox.smtp_sink import SMTPSink

SENDER = "airflow@district.example"


@pytest.fixture
def smtp():
    with SMTPSink() as sink:
        yield sink


@pytest.fixture
def smtp_conn(smtp, monkeypatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_TEST", json.dumps(smtp.connection(from_email=SENDER)))
    return "smtp_test"


def test_the_connection_is_plain_smtp_on_loopback(smtp):
    assert smtp.connection(from_email=SENDER) == {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": smtp.port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": SENDER, "timeout": 10,
                  "retry_limit": 0},
    }
    assert smtp.port > 0


def test_smtp_hook_delivers_subject_body_and_every_recipient(smtp, smtp_conn):
    with SmtpHook(smtp_conn_id=smtp_conn) as hook:
        hook.send_email_smtp(
            to=["sis-team@acme.example"],
            cc="principal@acme.example",
            bcc=["audit@acme.example"],
            subject="Grade passback: 3 rows failed",
            html_content="<p>Section 1201, term Q1: <b>window closed</b></p>",
        )
    [mail] = smtp.wait_for(1)
    assert mail.envelope_from == SENDER
    assert sorted(mail.envelope_to) == ["audit@acme.example", "principal@acme.example",
                                        "sis-team@acme.example"]
    assert mail.message["To"] == "sis-team@acme.example" and mail.message["Cc"] == "principal@acme.example"
    assert mail.message["Bcc"] is None, "Bcc travels only in the envelope"
    assert mail.subject == "Grade passback: 3 rows failed"
    assert "<b>window closed</b>" in mail.body


def test_smtp_notifier_renders_its_templates_from_the_task_context(smtp, smtp_conn):
    notifier = SmtpNotifier(
        to="sis-team@acme.example",
        subject="[{{ dag.dag_id }}] {{ ti.task_id }} failed",
        html_content="<p>{{ ti.task_id }} failed on try {{ ti.try_number }}</p>",
        smtp_conn_id=smtp_conn,
    )
    context = {"dag": DAG("oneroster_acme", schedule=None),
               "ti": SimpleNamespace(task_id="extract.users", try_number=3)}
    notifier(context)  # what Airflow does with an on_failure_callback
    [mail] = smtp.wait_for(1)
    assert mail.subject == "[oneroster_acme] extract.users failed"
    assert mail.body.strip() == "<p>extract.users failed on try 3</p>"
    assert mail.envelope_from == SENDER, "from_email comes from the connection"
    assert mail.envelope_to == ("sis-team@acme.example",)


def test_awaited_notifier_sends_too(smtp, smtp_conn):
    """A deadline alert's AsyncCallback awaits the notifier in the triggerer (aiosmtplib underneath)."""
    notifier = SmtpNotifier(to="sis-team@acme.example", subject="Sync for acme is late",
                            html_content="<p>not finished by its deadline</p>", smtp_conn_id=smtp_conn)

    async def run():
        await notifier

    asyncio.run(run())
    assert smtp.wait_for(1)[0].subject == "Sync for acme is late"


def test_a_connection_that_keeps_tls_on_is_refused(smtp, monkeypatch):
    """The sink speaks plain SMTP only; disable_ssl / disable_tls are what make the provider agree."""
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_TLS", json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
         "extra": {"from_email": SENDER, "timeout": 5}}
    ))
    with pytest.raises(ssl.SSLError):
        SmtpHook(smtp_conn_id="smtp_tls").get_conn()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_TLS", json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp.port,
         "extra": {"from_email": SENDER, "timeout": 5, "disable_ssl": True}}
    ))
    with pytest.raises(smtplib.SMTPNotSupportedError):
        SmtpHook(smtp_conn_id="smtp_tls").get_conn()
    assert smtp.messages == []


def test_wait_for_times_out_clearly_and_clear_forgets(smtp):
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"expected 1 message\(s\) .* within 0.2s, received 0"):
        smtp.wait_for(1, timeout=0.2)
    assert time.monotonic() - started < 2
    with smtplib.SMTP(smtp.host, smtp.port, timeout=5) as client:
        client.sendmail(SENDER, ["a@acme.example"], "Subject: one\r\n\r\nfirst\r\n")
        client.sendmail(SENDER, ["b@acme.example"], "Subject: two\r\n\r\nsecond\r\n")
    assert [mail.subject for mail in smtp.wait_for(2)] == ["one", "two"]
    assert smtp.messages[1].body.strip() == "second"
    smtp.clear()
    assert smtp.messages == []
    with pytest.raises(TimeoutError, match="received 0"):
        smtp.wait_for(1, timeout=0.1)
