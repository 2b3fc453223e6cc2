"""District files: the shipped ones validate; bad ones name the file, the field and the problem."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from include.config import DISTRICTS_DIR, DistrictConfigError, PeakHours, load_district, load_districts

GOOD = """\
district: {name}
name: Test District
infinite_campus:
  conn_id: ic_test
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_districts_validate():
    configs, errors = load_districts(DISTRICTS_DIR)
    assert errors == []
    assert {config.district for config in configs} >= {"demo", "demo_v11"}
    assert all(config.dag_id == f"oneroster_{config.district}" for config in configs)


def test_defaults_fill_a_minimal_file(tmp_path):
    config = load_district(write(tmp_path, "tiny", GOOD.format(name="tiny")))
    assert config.infinite_campus.max_concurrency == 5
    assert config.infinite_campus.page_size == 50_000
    assert config.schedule == "0 6 * * *"
    assert config.active_year.starts == "07-01"
    assert config.retention_days == 30


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        (GOOD.format(name="bad") + "  max_concurrency: 12\n", "infinite_campus.max_concurrency", "less than or equal to 5"),
        (GOOD.format(name="bad") + "  page_size: 60000\n", "infinite_campus.page_size", "less than or equal to 50000"),
        (GOOD.format(name="bad") + "  conn_idd: typo\n", "infinite_campus.conn_idd", "Extra inputs are not permitted"),
        (GOOD.format(name="bad").replace("  conn_id: ic_test\n", "  pool: x\n"), "infinite_campus.conn_id", "Field required"),
        (GOOD.format(name="bad") + "schedule: every night\n", "schedule", "5-field cron"),
        (GOOD.format(name="bad") + "active_year: {starts: '02-30'}\n", "active_year.starts", "day is out of range"),
        (GOOD.format(name="bad") + "notifications: {emails: [not-an-address]}\n", "notifications.emails.0", "should match pattern"),
        (
            GOOD.format(name="bad") + "  max_concurrency: 2\n  peak_concurrency: 3\n",
            "infinite_campus",
            "peak_concurrency must not exceed max_concurrency",
        ),
        (GOOD.format(name="other"), "district", "must match the file name"),
        (
            GOOD.format(name="bad") + "provisioning:\n  roles: {student: a, teacher: b, administrator: c, guardian: d}\n",
            "(top level)",
            "lms (target and conn_id) is missing",
        ),
        (
            GOOD.format(name="bad")
            + "lms: {conn_id: lms}\nprovisioning:\n  schools: {'100': {building: x}}\n"
            + "  roles: {student: a, teacher: b, administrator: c, guardian: d}\n",
            "provisioning.schools.100",
            "building_id",
        ),
        (
            GOOD.format(name="bad") + "lms: {conn_id: lms}\nprovisioning:\n  roles: {student: a, teacher: b}\n",
            "provisioning.roles.administrator",
            "Field required",
        ),
        (GOOD.format(name="bad") + "lms: {target: blackboard, conn_id: lms}\n", "lms",
         "target must be one of schoology, canvas"),
        (GOOD.format(name="bad") + "lms: {target: canvas, conn_id: lms, rows_per_import: 0}\n",
         "lms.rows_per_import", "greater than or equal to 1"),
        (GOOD.format(name="bad") + "lms: {target: canvas, conn_id: lms, max_in_flight: 4}\n",
         "lms.max_in_flight", "Extra inputs are not permitted"),
        (GOOD.format(name="bad") + "lms: {conn_id: lms, dropped_enrollments: completed}\n",
         "lms.dropped_enrollments", "Extra inputs are not permitted"),
        (GOOD.format(name="bad") + "lms: {target: canvas, conn_id: lms}\n"
         + "grade_passback: {sftp_conn_id: s, remote_dir: /x, term_task_ids: [a], overall_task_ids: [b]}\n",
         "grade_passback", "through its API, not an export file: remove remote_dir, sftp_conn_id"),
        (GOOD.format(name="bad") + "lms: {conn_id: lms}\n"
         + "grade_passback: {term_task_ids: [a], overall_task_ids: [b]}\n",
         "grade_passback", "sftp_conn_id is missing"),
        (GOOD.format(name="bad") + "grade_passback: {term_task_ids: [a]}\n", "grade_passback",
         "sftp_conn_id is missing"),
        (GOOD.format(name="bad") + "lms: {target: canvas, conn_id: lms, grade_score: total}\n",
         "lms.grade_score", "'current' or 'final'"),
        (GOOD.format(name="bad") + "lms: {conn_id: lms}\ngrade_passback: {sftp_conn_id: s, term_task_ids: [a], "
         "assignments: {start_date: 2026-09-01}}\n", "grade_passback.assignments",
         "read from an LMS's API (lms.target canvas)"),
        (GOOD.format(name="bad") + "lms: {target: canvas, conn_id: lms}\ngrade_passback: {term_task_ids: [a], "
         "assignments: {start_date: 2026-09-01, missing: late}}\n", "grade_passback.assignments.missing",
         "'skip', 'zero' or 'not_submitted'"),
        (GOOD.format(name="bad") + "retention_days: 0\n", "retention_days", "greater than or equal to 1"),
        (GOOD.format(name="bad") + "retention_days: 367\n", "retention_days", "less than or equal to 366"),
        (GOOD.format(name="bad") + "retention_days: yes\n", "retention_days", "valid integer (got True)"),
        (GOOD.format(name="bad") + "retention_days: 7.5\n", "retention_days", "valid integer (got 7.5)"),
        ("district: bad\nname: [unclosed\n", "cannot be read as YAML", ""),
        ("- just\n- a list\n", "must be a mapping", ""),
    ],
)
def test_bad_file_names_file_field_and_problem(tmp_path, text, field, problem):
    path = write(tmp_path, "bad", text)
    with pytest.raises(DistrictConfigError) as raised:
        load_district(path)
    message = str(raised.value)
    assert message.startswith(str(path.resolve()) + ": ")
    assert field in message
    assert problem in message


def test_a_canvas_district_reads_its_grades_without_sftp_settings(tmp_path):
    config = load_district(write(tmp_path, "tiny", GOOD.format(name="tiny") + "lms: {target: canvas, conn_id: lms, "
                                 "grade_score: final}\ngrade_passback: {term_task_ids: [a]}\n"))
    assert config.grade_passback.sftp_conn_id is None and config.lms.grade_score == "final"


def test_one_bad_file_does_not_hide_the_others(tmp_path):
    write(tmp_path, "alpha", GOOD.format(name="alpha"))
    write(tmp_path, "beta", GOOD.format(name="beta") + "  max_concurrency: 0\n")
    write(tmp_path, "gamma", GOOD.format(name="gamma"))
    configs, errors = load_districts(tmp_path)
    assert [config.district for config in configs] == ["alpha", "gamma"]
    assert len(errors) == 1 and "beta.yaml" in str(errors[0])


def test_school_year_follows_the_year_start_rule(tmp_path):
    config = load_district(write(tmp_path, "tiny", GOOD.format(name="tiny")))
    rule = config.active_year
    assert rule.school_year_of(date(2026, 6, 30)) == 2026
    assert rule.school_year_of(date(2026, 7, 1)) == 2027
    assert rule.school_year_of(datetime(2027, 1, 15, tzinfo=timezone.utc)) == 2027


def test_peak_hours_drop_concurrency_to_serial(tmp_path):
    config = load_district(
        write(tmp_path, "tiny", GOOD.format(name="tiny") + "  peak_hours: {start: '12:00', end: '21:00'}\n")
    )
    ic = config.infinite_campus
    assert ic.concurrency_at(datetime(2026, 11, 2, 13, 0, tzinfo=timezone.utc)) == 1
    assert ic.concurrency_at(datetime(2026, 11, 2, 3, 0, tzinfo=timezone.utc)) == 5
    overnight = PeakHours(start="22:00", end="04:00")
    assert overnight.contains(datetime(2026, 11, 2, 23, 0)) and not overnight.contains(datetime(2026, 11, 2, 12, 0))


PASSBACK = "grade_passback:\n  sftp_conn_id: sftp\n  term_task_ids: ['1']\n  mapping_csv: {name}\n"


@pytest.mark.parametrize("name", ["terms.csv", "maps/terms.csv", "./terms.csv", "terms..csv"])
def test_a_mapping_csv_inside_the_districts_directory_is_taken(tmp_path, name):
    config = load_district(write(tmp_path, "ok", GOOD.format(name="ok") + PASSBACK.format(name=f"'{name}'")))
    assert config.grade_passback.mapping_csv == name


OUTSIDE = "must be a path relative to the districts directory and inside it"


@pytest.mark.parametrize(("name", "problem"), [
    *((name, OUTSIDE) for name in ("/etc/passwd", "../other/terms.csv", "maps/../../terms.csv", "..",
                                   "\\\\server\\share\\terms.csv", "C:/terms.csv", "maps\\..\\..\\terms.csv")),
    ("", "at least 1 character"),
])
def test_a_mapping_csv_outside_the_districts_directory_is_refused(tmp_path, name, problem):
    """The plan task reads the districts directory joined with the name: an absolute name or '..' would
    read any file the workers can."""
    path = write(tmp_path, "bad", GOOD.format(name="bad") + PASSBACK.format(name=f"'{name}'"))
    with pytest.raises(DistrictConfigError) as raised:
        load_district(path)
    assert str(raised.value).startswith(f"{path.resolve()}: grade_passback.mapping_csv: ")
    assert problem in str(raised.value) and repr(name) in str(raised.value)
