"""What of a system's message may leave the staged reports (include/privacy.py), an LMS refusal
cleared of its person, and the failure email: HTML-escaped, identifiers masked, sent for real."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from airflow.sdk import DAG

from include.lms.target import Building, Enrollment, ItemResult, User, without_identifiers
from include.privacy import redacted
from include.sandbox.smtp_sink import SMTPSink
from plugins.notifications.alerts import FAILURE_BODY, TaskFailureNotifier

STUDENT = {"key": "1000004", "given_name": "Zoë", "family_name": "Okafor-Lindqvist", "preferred_first_name": None,
           "email": "stu1000004@students.example.org", "username": "zoe okafor", "role_id": "9",
           "building_id": "77", "additional_building_ids": []}


@pytest.mark.parametrize("message, identifiers, shown", [
    ("student 1000004 is not actively enrolled", [], "student <id> is not actively enrolled"),
    ("student s1000004 is not actively enrolled", [], "student <id> is not actively enrolled"),
    ("mail stu1000004@students.example.org bounced", [], "mail <email> bounced"),
    ("user 7f0c8a52-1b6e-4c1e-9a59-2f7a3cbbd001 locked", [], "user <id> locked"),
    ("Zoë Okafor-Lindqvist (zoe okafor) is taken", ["Zoë", "Okafor-Lindqvist", "zoe okafor"],
     "<id> <id> (<id>) is taken"),
    ("Limit reached for Li", ["Li"], "Limit reached for <id>"),  # whole words only
    ("score group locked in section 42", [], "score group locked in section 42"),  # short numbers stay
])
def test_a_message_keeps_what_it_says_and_loses_whom(message, identifiers, shown):
    assert redacted(message, identifiers) == shown


def test_a_message_about_a_known_person_keeps_the_class_and_line_item_ids():
    message = "result 600000-202701-T1-1000004: student 1000004 (stu1000004@students.example.org) is not enrolled"
    assert redacted(message, ["1000004"], reference="<student>", unknown_people=False) == (
        "result 600000-202701-T1-<student>: student <student> (<email>) is not enrolled")


def test_a_long_message_is_cut():
    assert len(redacted("x" * 1000)) == 300


def test_an_lms_refusal_loses_the_person_its_item_is_about_and_keeps_its_key():
    student = User(**STUDENT)
    enrollment = Enrollment(key="600012:1000004", course_key="MATH", section_key="600012", section_id="5",
                            user_key="1000004", admin=False)
    building = Building(key="1001", title="North High", building_code="1001")
    results = [
        ItemResult(key=student.key, ok=False, error="username 'zoe okafor' (Zoë Okafor-Lindqvist) already in use"),
        ItemResult(key=enrollment.key, ok=False, error="User 1000004 not found in section 600012"),
        ItemResult(key=building.key, ok=False, error="building 1001 North High is archived"),
        ItemResult(key="x", ok=True, lms_id="12"),
    ]
    cleared = without_identifiers(results, [student, enrollment, building, building])
    assert [result.key for result in cleared] == [student.key, enrollment.key, building.key, "x"]
    assert cleared[0].error == "username '<person>' (<person> <person>) already in use"
    assert cleared[1].error == "User <person> not found in section 600012"
    assert cleared[2].error == "building 1001 North High is archived"  # not about a person
    assert cleared[3] == results[3]


def test_an_item_that_does_not_validate_does_not_repeat_its_values():
    with pytest.raises(ValueError) as refused:
        User(**{**STUDENT, "role_id": None})
    assert "Okafor" not in str(refused.value) and "stu1000004" not in str(refused.value)


def test_the_failure_email_escapes_its_values_and_masks_email_addresses(monkeypatch):
    with SMTPSink() as smtp:
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_PRIVACY", json.dumps(smtp.connection("oneroster@localhost")))
        notifier = TaskFailureNotifier(to=["team@district.invalid"], smtp_conn_id="smtp_privacy",
                                       subject="[oneroster {{ dag.dag_id }}] {{ ti.task_id }} failed",
                                       html_content=FAILURE_BODY)
        dag = DAG("oneroster_privacy", schedule=None)
        ti = SimpleNamespace(task_id="grades.post", try_number=1, log_url="http://127.0.0.1/log?a=1&b=2")
        notifier({
            "dag": dag, "ti": ti, "run_id": "manual__<b>rehearsal</b>", "logical_date": "2026-12-01",
            "exception": ValueError("final-grades-20261201.csv: <row> of stu1000004@students.example.org"),
        })
        (mail,) = smtp.wait_for(1)
    body = mail.body
    assert "manual__&lt;b&gt;rehearsal&lt;/b&gt;" in body and "<b>rehearsal</b>" not in body
    assert "final-grades-20261201.csv: &lt;row&gt; of &lt;email&gt;" in body
    assert "a=1&amp;b=2" in body
    assert "stu1000004" not in body
