"""Grade passback as pure functions: the export parser, the posting plan and the reconciliation."""

from __future__ import annotations

import io
from datetime import date

import pandas as pd
import pytest

from include.config import ExportColumns, GradePassback
from include.grades.export import ExportFormatError, ParsedExport, read_export
from include.grades.plan import GradeContext, plan_postings
from include.grades.reconciliation import (
    OUTCOMES,
    Reconciliation,
    ReconciliationError,
    format_reconciliation,
    reconcile,
    refusals,
    withheld,
)
from tests.provisioning_support import extract_frames

HEADER = "Section School Code,Unique User ID,Grading Period,Grading Period Grade,Grading Period Letter,Course Grade"
S1 = "Semester 1 2026-27"
IN_S1_WINDOW = date(2026, 12, 20)  # semester 1 ends 2026-12-20; default window 12-06 .. 12-27
BANDS = {"AF": [{"score": "A", "min_percent": 90}, {"score": "B", "min_percent": 80},
                {"score": "C", "min_percent": 70}, {"score": "D", "min_percent": 60}]}
YEAR_LONG, SEMESTER_ONE, SEMESTER_TWO, OTHER_SCHOOL = "600000", "600006", "600007", "600009"


@pytest.fixture(scope="module")
def frames(demo_district):
    return extract_frames(demo_district)


def config(**overrides) -> GradePassback:
    settings = {"sftp_conn_id": "sftp_demo", "term_task_ids": ["T1"], "overall_task_ids": ["F1"]}
    settings.update(overrides)
    return GradePassback.model_validate(settings)


def context(frames, **overrides) -> GradeContext:
    classes = frames["classes"]
    settings = {
        "sections": pd.DataFrame({"key": classes["sourced_id"], "lms_id": "L" + classes["sourced_id"],
                                  "course_key": classes["course_sourced_id"]}),
        "grading_periods": pd.DataFrame({"key": ["term-202701", "term-202702"], "lms_id": ["GP-1", "GP-2"],
                                         "title": [S1, "Semester 2 2026-27"]}),
        "users": frames["users"],
        "classes": classes,
        "sessions": frames["academicSessions"],
        "mapping": None,
        "opt_in": None,
        "run_date": IN_S1_WINDOW,
        "config": config(),
        "posted": pd.DataFrame({"result_id": pd.Series(dtype=object), "fingerprint": pd.Series(dtype=object)}),
    }
    settings.update(overrides)
    return GradeContext(**settings)


def export(*lines: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode("utf-8")


def answered(postings: pd.DataFrame, status: str = "created", message: str = "") -> pd.DataFrame:
    sent = postings.loc[postings["action"] == "post", "result_id"]
    return pd.DataFrame({"result_id": sent, "status": status, "message": message})


def run(data: bytes, ctx: GradeContext, outcomes=None) -> tuple[ParsedExport, pd.DataFrame, Reconciliation]:
    """Parse, plan and reconcile (every sent posting accepted unless told otherwise), checking the sums."""
    parsed = read_export(data, ctx.config.columns)
    postings = plan_postings(parsed.rows, ctx)
    rec = reconcile(parsed.rows, parsed.quarantined, postings,
                    answered(postings) if outcomes is None else outcomes(postings))
    data_rows = len(parsed.rows) + len(parsed.quarantined)
    assert sum(rec.counts.values()) == data_rows == len(rec.rows)
    assert set(rec.counts) == set(OUTCOMES)
    return parsed, postings, rec


def outcome(rec: Reconciliation, row: int) -> tuple[str, str]:
    found = rec.rows.set_index("row").loc[row]
    return found["outcome"], found["reason"]


def posting(postings: pd.DataFrame, row: int, task: str = "T1") -> pd.Series:
    found = postings[(postings["row"] == row) & (postings["task_id"] == task)]
    assert len(found) == 1
    return found.iloc[0]


# -- reading the export --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "cp1252"])
def test_encodings_and_boms_read_the_same(frames, encoding):
    columns = ExportColumns(grading_period="Période de notation")
    text = ("Section School Code,Unique User ID,Période de notation,Grading Period Grade\r\n"
            f"{YEAR_LONG},s1000000,Été,91.5\r\n{YEAR_LONG},s1000001,Été,80\r\n")
    parsed = read_export(text.encode(encoding), columns)
    assert parsed.quarantined.empty
    assert list(parsed.rows["grading_period"]) == ["Été", "Été"]
    assert list(parsed.rows["term_percent"]) == [91.5, 80.0]
    assert list(parsed.rows["row"]) == [1, 2]
    assert parsed.rows["term_score"].isna().all() and parsed.rows["course_score"].isna().all()


def test_headers_matched_through_the_column_map_loosely(frames):
    columns = ExportColumns(section="Section Code", student="School UID", grading_period="Term",
                            term_percent="Final %")
    data = export(f"{SEMESTER_ONE},s1000000,{S1},88", header="\ufeff  section  CODE ,SCHOOL uid,term,FINAL %")
    parsed = read_export(data, columns)
    assert parsed.rows[["section", "student", "grading_period"]].values.tolist() == [[SEMESTER_ONE, "s1000000", S1]]
    assert parsed.rows["term_percent"].tolist() == [88.0]
    ctx = context(frames, config=config(columns=columns))
    _, _, rec = run(data, ctx)
    assert rec.counts["posted"] == 1


def test_missing_required_headers_are_named_with_the_headers_found():
    with pytest.raises(ExportFormatError) as error:
        read_export(b"Section School Code,Student,Grade\n1,2,3\n", ExportColumns())
    message = str(error.value)
    assert "'Unique User ID'" in message and "'Grading Period'" in message
    assert "one of 'Grading Period Grade' or 'Grading Period Letter'" in message
    assert "headers found: 'Section School Code', 'Student', 'Grade'" in message
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\n", b"\xff\xfe"])
def test_an_empty_file_is_an_error(data):
    with pytest.raises(ExportFormatError, match="empty"):
        read_export(data, ExportColumns())


def test_a_header_only_file_has_no_rows(frames):
    parsed, postings, rec = run(export(), context(frames))
    assert parsed.rows.empty and parsed.quarantined.empty and postings.empty
    assert list(parsed.rows.columns) == ["row", "section", "student", "grading_period", "term_percent",
                                         "term_score", "course_percent", "course_score"]
    assert rec.counts == dict.fromkeys(OUTCOMES, 0)


def test_malformed_rows_are_quarantined_with_their_reasons(frames):
    data = export(
        f"{YEAR_LONG},s1000000,{S1},92,A,",            # 1 fine
        f"{YEAR_LONG},s1000001,{S1}",                  # 2 too few fields
        f"{YEAR_LONG},,{S1},80,B,",                    # 3 blank student
        f" ,s1000002,{S1},80,B,",                      # 4 blank section
        f"{YEAR_LONG},s1000003,{S1},abc,,",            # 5 non-numeric
        f"{YEAR_LONG},s1000004,{S1},-2,,",             # 6 negative
        f"{YEAR_LONG},s1000000,{S1},92.0,A,",          # 7 duplicate of 1
        f"{YEAR_LONG},s1000005,{S1},70,C,",            # 8 conflicting with 9
        f"{YEAR_LONG},s1000005,{S1},71,C,",            # 9
        f"{YEAR_LONG},s1000006,{S1},nan,,",            # 10 not a number either
        f"{YEAR_LONG},s1000007,{S1},75,C,,extra",      # 11 too many fields
        "",                                            # a blank line is not a row
        f'{YEAR_LONG},s1000008,"Semester 1\n2026-27","95 %","A",',  # 13 quoted, embedded newline
    )
    parsed, _, rec = run(data, context(frames))
    reasons = dict(zip(parsed.quarantined["row"], parsed.quarantined["reason"], strict=True))
    conflict = "conflicting grades for the same student, section and grading period, rows 8, 9"
    assert reasons == {
        2: "expected 6 fields, got 3", 3: "blank student", 4: "blank section",
        5: "non-numeric grade 'abc'", 6: "negative grade '-2'", 7: "duplicate of row 1",
        8: conflict, 9: conflict, 10: "non-numeric grade 'nan'", 11: "expected 6 fields, got 7",
    }
    assert list(parsed.quarantined.columns) == ["row", "section", "student", "reason"]
    assert parsed.rows["row"].tolist() == [1, 13]
    assert parsed.rows.set_index("row").loc[13, "term_percent"] == 95.0
    assert outcome(rec, 7) == ("skipped", "malformed: duplicate of row 1")
    assert rec.counts == {"posted": 1, "unchanged": 0, "skipped": 11, "failed": 0}


def test_a_trailing_empty_field_is_tolerated(frames):
    parsed = read_export(export(f"{YEAR_LONG},s1000000,{S1},92,A,,"), ExportColumns())
    assert parsed.quarantined.empty and len(parsed.rows) == 1


# -- the posting rules -----------------------------------------------------------------------------


def test_postings_carry_deterministic_ids_and_ic_student_ids(frames):
    _, postings, rec = run(export(f"{YEAR_LONG},s1000000,{S1},92.5,,88"), context(frames))
    term, overall = posting(postings, 1, "T1"), posting(postings, 1, "F1")
    assert (term["section"], term["school"], term["term"], term["student"]) == (YEAR_LONG, "100", "202701", "1000000")
    assert term["line_item_id"] == f"{YEAR_LONG}-202701-T1"
    assert term["result_id"] == f"{YEAR_LONG}-202701-T1-1000000"
    assert (term["task_kind"], term["percent"], overall["task_kind"], overall["percent"]) == ("term", 92.5, "overall", 88.0)
    assert term["action"] == overall["action"] == "post" and term["reason"] == ""
    assert rec.counts["posted"] == 1
    # values repeated over millions of postings (text, and percents: a grade has a few hundred) are
    # categorical; the result id (one per posting) is arrow-backed text; the score stays an object
    # column so that a score not sent is None
    assert list(postings.dtypes.astype(str)) == (["int64"] + ["category"] * 7 + ["str", "category", "object"]
                                                 + ["category"] * 4)
    assert postings["percent"].cat.categories.dtype == "float64"


def test_unmapped_section_and_unknown_student(frames):
    data = export(f"699999,s1000000,{S1},90,,", f"{YEAR_LONG},s9999999,{S1},90,,", f"{YEAR_LONG},1000000,{S1},90,,")
    _, postings, rec = run(data, context(frames))
    assert outcome(rec, 1) == ("skipped", "unmapped section")
    assert outcome(rec, 2) == ("skipped", "student unknown to IC")
    assert outcome(rec, 3) == ("skipped", "student unknown to IC")  # the LMS holds IC's 1.1 id, not the 1.2 one
    assert set(postings["task_id"]) == {""} and len(postings) == 3


def test_a_section_not_provisioned_is_unmapped(frames):
    ctx = context(frames)
    ctx = context(frames, sections=ctx.sections[ctx.sections["key"] != YEAR_LONG])
    _, _, rec = run(export(f"{YEAR_LONG},s1000000,{S1},90,,"), ctx)
    assert outcome(rec, 1) == ("skipped", "unmapped section")


def test_unmapped_terms(frames):
    data = export(
        f"{SEMESTER_TWO},s1000000,{S1},90,,",   # a semester-2 class graded for semester 1
        f"{YEAR_LONG},s1000001,Q9,90,,",        # no such grading period
        f"{YEAR_LONG},s1000002,gp-1,90,,",      # the LMS grading period id, any case
        f"{YEAR_LONG},s1000003,,90,,",          # blank grading period
    )
    _, postings, rec = run(data, context(frames))
    assert outcome(rec, 1) == outcome(rec, 2) == outcome(rec, 4) == ("skipped", "unmapped term")
    assert outcome(rec, 3) == ("posted", "")
    assert posting(postings, 3)["term"] == "202701"


def test_mapping_csv_with_schools(frames):
    mapping = pd.read_csv(io.StringIO(
        "lms_grading_period,ic_term,school\nFall,202701,100\nSpring,202702,100\nFall,202701,101\n"
    ), dtype=str)
    ctx = context(frames, mapping=mapping)
    data = export(f"{YEAR_LONG},s1000000,fall,90,,", f"{OTHER_SCHOOL},s1000020,Fall,90,,",
                  "600018,s1000040,Fall,90,,", f"{YEAR_LONG},s1000001,Spring,90,,", f"{YEAR_LONG},s1000002,{S1},90,,")
    _, postings, rec = run(data, ctx)
    assert outcome(rec, 1) == outcome(rec, 2) == ("posted", "")
    assert posting(postings, 2)["term"] == "202701" and posting(postings, 2)["school"] == "101"
    assert outcome(rec, 3) == ("skipped", "school not included")
    # spring maps to semester 2, which ends 2027-06-05: by the default rule its window opens 14 days before
    assert outcome(rec, 4) == ("skipped", "window opens on 2027-05-22")
    assert outcome(rec, 5) == ("skipped", "unmapped term")  # with a mapping, the LMS titles are not used


def test_mapping_without_schools_covers_every_school(frames):
    mapping = pd.DataFrame({"lms_grading_period": ["Fall"], "ic_term": [202701]})
    data = export(f"{YEAR_LONG},s1000000,Fall,90,,", "600018,s1000040,Fall,90,,")
    _, _, rec = run(data, context(frames, mapping=mapping))
    assert rec.counts["posted"] == 2


def test_two_periods_mapped_to_one_ic_term_do_not_overwrite_each_other(frames):
    mapping = pd.DataFrame({"lms_grading_period": ["Fall", "S1"], "ic_term": ["202701", "202701"]})
    data = export(f"{YEAR_LONG},s1000000,Fall,90,,", f"{YEAR_LONG},s1000000,S1,85,,")
    _, _, rec = run(data, context(frames, mapping=mapping, config=config(overall_task_ids=[])))
    assert outcome(rec, 1) == outcome(rec, 2) == ("skipped", "several rows for the same IC result, rows 1, 2")


def test_closed_window_from_term_dates_and_listed_windows(frames):
    data = export(f"{YEAR_LONG},s1000000,{S1},90,,")
    for run_date, expected in [(date(2026, 12, 5), ("skipped", "window opens on 2026-12-06")),
                               (date(2026, 12, 6), ("posted", "")), (date(2026, 12, 27), ("posted", "")),
                               (date(2026, 12, 28), ("skipped", "window closed"))]:
        _, _, rec = run(data, context(frames, run_date=run_date))
        assert outcome(rec, 1) == expected
    listed = config(windows={"202701": {"opens": "2027-01-01", "closes": "2027-01-31"}})
    _, _, rec = run(data, context(frames, run_date=date(2027, 1, 15), config=listed))
    assert outcome(rec, 1) == ("posted", "")
    _, _, rec = run(data, context(frames, run_date=IN_S1_WINDOW, config=listed))
    assert outcome(rec, 1) == ("skipped", "window opens on 2027-01-01")
    _, _, rec = run(data, context(frames, run_date=date(2027, 2, 1), config=listed))
    assert outcome(rec, 1) == ("skipped", "window closed")
    wide = config(window_rule={"opens_days_before_end": 30, "closes_days_after_end": 60})
    _, _, rec = run(data, context(frames, run_date=date(2027, 2, 1), config=wide))
    assert outcome(rec, 1) == ("posted", "")


def test_teacher_opt_in(frames):
    data = export(f"{YEAR_LONG},s1000000,{S1},90,,", f"{SEMESTER_ONE},s1000001,{S1},90,,")
    _, _, rec = run(data, context(frames, opt_in=frozenset({SEMESTER_ONE})))
    assert outcome(rec, 1) == ("skipped", "not opted in") and outcome(rec, 2) == ("posted", "")
    _, _, rec = run(data, context(frames, opt_in=frozenset()))
    assert rec.counts["skipped"] == 2
    _, _, rec = run(data, context(frames, opt_in=None))
    assert rec.counts["posted"] == 2


def test_term_and_overall_tasks(frames):
    data = export(f"{YEAR_LONG},s1000000,{S1},90,,", f"{YEAR_LONG},s1000001,{S1},,,85",
                  f"{YEAR_LONG},s1000002,{S1},,,")
    _, postings, rec = run(data, context(frames, config=config(term_task_ids=["T1", "T2"], overall_task_ids=["F1"])))
    assert postings[postings["row"] == 1]["task_id"].tolist() == ["T1", "T2", "F1"]
    assert postings[postings["row"] == 1]["action"].tolist() == ["post", "post", "skipped"]
    assert posting(postings, 1, "F1")["reason"] == "no grade"
    assert postings[postings["row"] == 2]["action"].tolist() == ["skipped", "skipped", "post"]
    assert posting(postings, 2, "F1")["percent"] == 85.0
    assert outcome(rec, 1) == outcome(rec, 2) == ("posted", "")
    assert outcome(rec, 3) == ("skipped", "no grade")

    _, postings, rec = run(data, context(frames, config=config(overall_task_ids=[])))
    assert outcome(rec, 2) == ("skipped", "no task") and posting(postings, 2, "")["task_kind"] == ""
    _, _, rec = run(data, context(frames, config=config(term_task_ids=[])))
    assert outcome(rec, 1) == ("skipped", "no task") and outcome(rec, 2) == ("posted", "")


def test_a_single_term_course_posts_the_term_grade_as_the_overall_grade(frames):
    data = export(f"{SEMESTER_ONE},s1000000,{S1},91,,", f"{YEAR_LONG},s1000001,{S1},91,,",
                  f"{SEMESTER_ONE},s1000002,{S1},91,,78")
    _, postings, _ = run(data, context(frames))
    assert posting(postings, 1, "F1")[["percent", "action"]].tolist() == [91.0, "post"]
    assert posting(postings, 2, "F1")[["action", "reason"]].tolist() == ["skipped", "no grade"]
    assert posting(postings, 3, "F1")["percent"] == 78.0
    _, _, rec = run(data[: data.index(b"\n") + 1] + f"{SEMESTER_ONE},s1000000,{S1},91,,\n".encode(),
                    context(frames, config=config(term_task_ids=[])))
    assert rec.counts["posted"] == 1


def test_letter_grades_on_and_off(frames):
    data = export(f"{YEAR_LONG},s1000000,{S1},91,A-,", f"{YEAR_LONG},s1000001,{S1},,B+,")
    _, postings, _ = run(data, context(frames, config=config(overall_task_ids=[])))
    assert posting(postings, 1)[["percent", "score"]].tolist() == [91.0, None]
    assert pd.isna(posting(postings, 2)["percent"]) and posting(postings, 2)["score"] == "B+"
    _, postings, _ = run(data, context(frames, config=config(overall_task_ids=[], letter_grades=True)))
    assert posting(postings, 1)[["percent", "score"]].tolist() == [91.0, "A-"]
    assert posting(postings, 1)["fingerprint"] == "91.0|A-"


@pytest.mark.parametrize("letters", [True, False])
def test_score_groups(frames, letters):
    grouped = config(overall_task_ids=[], letter_grades=letters, score_groups=BANDS, task_score_groups={"T1": "AF"})
    data = export(
        f"{YEAR_LONG},s1000000,{S1},84.5,,",   # 1 percent only -> B
        f"{YEAR_LONG},s1000001,{S1},,a,",      # 2 score only, spelled loosely
        f"{YEAR_LONG},s1000002,{S1},91,B,",    # 3 both: sent as is
        f"{YEAR_LONG},s1000003,{S1},42,,",     # 4 below every band
        f"{YEAR_LONG},s1000004,{S1},,Z,",      # 5 not in the group
        f"{YEAR_LONG},s1000005,{S1},60,,",     # 6 exactly on the lowest band
    )
    _, postings, rec = run(data, context(frames, config=grouped))
    assert posting(postings, 1)[["percent", "score", "score_group"]].tolist() == [84.5, "B" if letters else None, "AF"]
    assert pd.isna(posting(postings, 2)["percent"]) and posting(postings, 2)["score"] == "A"
    assert posting(postings, 3)[["percent", "score"]].tolist() == [91.0, "B" if letters else None]
    assert outcome(rec, 4) == outcome(rec, 5) == ("skipped", "bad score")
    assert posting(postings, 6)["score"] == ("D" if letters else None)
    assert rec.counts == {"posted": 4, "unchanged": 0, "skipped": 2, "failed": 0}


def test_oneroster_1_1_sends_percents_only_and_keeps_letter_only_grades_aside(frames):
    grouped = config(overall_task_ids=[], letter_grades=True, score_groups=BANDS, task_score_groups={"T1": "AF"})
    data = export(
        f"{YEAR_LONG},s1000000,{S1},84.5,B,",  # 1 both: the percent only
        f"{YEAR_LONG},s1000001,{S1},,A,",      # 2 a letter alone has nothing 1.1 can carry
        f"{YEAR_LONG},s1000002,{S1},42,,",     # 3 below every band: IC would refuse it
        f"{YEAR_LONG},s1000003,{S1},,,",       # 4 no grade at all
    )
    _, postings, rec = run(data, context(frames, config=grouped, oneroster_version="1.1"))
    assert posting(postings, 1)[["percent", "score", "fingerprint"]].tolist() == [84.5, None, "84.5|"]
    assert outcome(rec, 2) == ("skipped", "letter grade only: OneRoster 1.1 takes a percent")
    assert outcome(rec, 3) == ("skipped", "bad score")
    assert outcome(rec, 4) == ("skipped", "no grade")
    assert rec.counts == {"posted": 1, "unchanged": 0, "skipped": 3, "failed": 0}


def test_extra_credit_is_kept(frames):
    grouped = config(overall_task_ids=[], letter_grades=True, score_groups=BANDS, task_score_groups={"T1": "AF"})
    _, postings, rec = run(export(f"{YEAR_LONG},s1000000,{S1},104.5,,"), context(frames, config=grouped))
    assert posting(postings, 1)[["percent", "score", "action"]].tolist() == [104.5, "A", "post"]
    assert rec.counts["posted"] == 1


def test_unchanged_since_the_last_post_is_not_sent_again(frames):
    first = export(f"{YEAR_LONG},s1000000,{S1},90,,", f"{YEAR_LONG},s1000001,{S1},80,,")
    _, postings, _ = run(first, context(frames))
    sent = postings[postings["action"] == "post"][["result_id", "fingerprint"]]
    again = context(frames, posted=sent)
    _, postings, rec = run(first, again)
    assert set(postings["action"]) == {"unchanged", "skipped"}  # the overall tasks have no grade
    assert rec.counts == {"posted": 0, "unchanged": 2, "skipped": 0, "failed": 0}
    changed = export(f"{YEAR_LONG},s1000000,{S1},90,,", f"{YEAR_LONG},s1000001,{S1},81,,")
    _, postings, rec = run(changed, again)
    assert outcome(rec, 1) == ("unchanged", "") and outcome(rec, 2) == ("posted", "")
    assert posting(postings, 2)["fingerprint"] == "81.0|"


# -- IC's answers and the reconciliation -----------------------------------------------------------


def test_ic_answers_fold_back_to_one_outcome_per_row(frames):
    data = export(
        f"{YEAR_LONG},s1000000,{S1},90,,88",
        f"{YEAR_LONG},s1000001,{S1},90,,88",
        f"{YEAR_LONG},s1000002,{S1},90,,",
        f"{YEAR_LONG},s1000003,{S1},90,,",
        f"{YEAR_LONG},s1000004,{S1},oops,,",
    )

    def answers(postings):
        sent = postings[postings["action"] == "post"].set_index("row")
        return pd.DataFrame({
            "result_id": [sent.loc[1, "result_id"].iloc[0], sent.loc[1, "result_id"].iloc[1],
                          sent.loc[2, "result_id"].iloc[0], sent.loc[2, "result_id"].iloc[1],
                          sent.loc[3, "result_id"]],
            "status": ["created", "rejected", "updated", "updated", "window closed"],
            "message": ["", "student 1000000 is not enrolled in class 600000", "", "", ""],
        })

    _, _, rec = run(data, context(frames), outcomes=answers)
    assert outcome(rec, 1) == ("failed", "student 1000000 is not enrolled in class 600000")
    assert outcome(rec, 2) == ("posted", "")
    assert outcome(rec, 3) == ("skipped", "window closed"), "a window refusal without a message"
    assert outcome(rec, 4) == ("failed", "no answer from IC")
    assert outcome(rec, 5) == ("skipped", "malformed: non-numeric grade 'oops'")
    assert rec.counts == {"posted": 1, "unchanged": 0, "skipped": 2, "failed": 2}
    by_result = rec.postings.set_index("result_id")
    assert by_result.loc[f"{YEAR_LONG}-202701-F1-1000001", "outcome"] == "posted"

    log = format_reconciliation(rec)
    assert "5 export rows: posted 1, unchanged 0, skipped 2, failed 2" in log
    assert "window closed (1)" in log and "no answer from IC (1)" in log
    assert "s1000" not in log and "Jalen" not in log


def test_ic_refusing_a_grading_window_skips_the_rows_with_its_message_closed_or_opening_later(frames):
    data = export(f"{YEAR_LONG},s1000000,{S1},90,,", f"{YEAR_LONG},s1000001,{S1},90,,",
                  f"{YEAR_LONG},s1000002,{S1},90,,")
    closed = "window closed: grading window closed for Semester 1 2026-27 (202701)"
    later = "window opens on 2026-12-22: grading window not yet open for Semester 1 2026-27 (202701)"

    def answers(postings):
        sent = postings[postings["action"] == "post"]
        said = {1: ("window closed", closed), 2: ("window closed", later), 3: ("created", "")}
        return pd.DataFrame({"result_id": sent["result_id"], "status": [said[row][0] for row in sent["row"]],
                             "message": [said[row][1] for row in sent["row"]]})

    _, _, rec = run(data, context(frames), outcomes=answers)
    assert [outcome(rec, row) for row in (1, 2, 3)] == [("skipped", closed), ("skipped", later), ("posted", "")]
    assert rec.counts["failed"] == 0


def test_the_reconciliation_log_shows_ics_messages_without_the_student_they_name(frames):
    data = export(f"{YEAR_LONG},s1000000,{S1},90,,", f"{YEAR_LONG},s1000001,{S1},90,,")

    def answers(postings):
        sent = postings[postings["action"] == "post"]
        return pd.DataFrame({
            "result_id": sent["result_id"], "status": "rejected",
            "message": [f"422: result {result}: student {student} is not actively enrolled in class {YEAR_LONG}"
                        for result, student in zip(sent["result_id"], sent["student"].astype(str), strict=True)],
        })

    _, postings, rec = run(data, context(frames), outcomes=answers)
    students = set(postings["student"].astype(str))
    assert students == {"1000000", "1000001"}
    assert all(any(student in reason for student in students) for reason in rec.rows["reason"]), \
        "the report keeps IC's messages whole"
    log = format_reconciliation(rec)
    assert not any(student in log for student in students)
    assert (f"422: result {YEAR_LONG}-202701-T1-<student>: student <student> is not actively enrolled in class "
            f"{YEAR_LONG} (2)") in log


def test_results_of_a_line_item_ic_refused_take_its_answer_and_refusals_are_logged_per_line_item(frames):
    data = export(f"{YEAR_LONG},s1000000,{S1},90,,88", f"{YEAR_LONG},s1000001,{S1},90,,88")
    _, postings, _ = run(data, context(frames))
    sent = postings[postings["action"] == "post"]
    refused_item = f"{YEAR_LONG}-202701-F1"
    refused = pd.DataFrame({"line_item_id": [refused_item], "status": ["rejected"],
                            "message": [f"IC refused lineItem {refused_item}: 422: the task is locked"]})
    held = withheld(sent, refused)
    assert sorted(held["result_id"]) == [f"{refused_item}-1000000", f"{refused_item}-1000001"]
    assert set(held["status"]) == {"rejected"} and set(held["message"]) == set(refused["message"])
    assert list(held.columns) == ["result_id", "fingerprint", "status", "message"]
    others = sent[sent["line_item_id"] != refused_item]
    answers = pd.concat([held, pd.DataFrame({
        "result_id": others["result_id"], "status": ["created", "rejected"],
        "message": ["", f"422: result {YEAR_LONG}-202701-T1-1000001: student 1000001 is not enrolled"]})])
    lines = refusals(sent, answers)
    assert lines[["line_item_id", "status", "results"]].values.tolist() == [
        [refused_item, "rejected", 2], [f"{YEAR_LONG}-202701-T1", "rejected", 1]]
    assert lines["rows"].tolist() == [[1, 2], [2]]
    assert lines["message"].tolist()[1] == (f"422: result {YEAR_LONG}-202701-T1-<student>: "
                                            "student <student> is not enrolled")


def test_reconcile_refuses_rows_left_unaccounted(frames):
    parsed = read_export(export(f"{YEAR_LONG},s1000000,{S1},90,,", f"{YEAR_LONG},s1000001,{S1},90,,"),
                         ExportColumns())
    postings = plan_postings(parsed.rows, context(frames))
    with pytest.raises(ReconciliationError, match="no planned posting"):
        reconcile(parsed.rows, parsed.quarantined, postings[postings["row"] == 1], answered(postings))
    with pytest.raises(ReconciliationError, match="not in the export"):
        reconcile(parsed.rows[parsed.rows["row"] == 1], parsed.quarantined, postings, answered(postings))
    with pytest.raises(ValueError, match="unknown IC outcome"):
        reconcile(parsed.rows, parsed.quarantined, postings, answered(postings, status="ok"))


def test_a_whole_district_export_is_accounted_for(frames):
    """Every active student enrollment graded for semester 1, as the LMS would export it."""
    enrollments = frames["enrollments"]
    students = frames["users"].set_index("sourced_id")["legacy_sourced_id"]
    graded = enrollments[(enrollments["role"] == "student")]
    lines = [f"{row.class_sourced_id},{students[row.user_sourced_id]},{S1},{60 + index % 45},,{70 + index % 30}"
             for index, row in enumerate(graded.itertuples())]
    lines += ["600000,,Semester 1 2026-27,90,,", "nope"]
    ctx = context(frames, config=config(letter_grades=True, score_groups=BANDS, task_score_groups={"T1": "AF"}),
                  opt_in=frozenset(frames["classes"]["sourced_id"][::2]))
    _, postings, rec = run(export(*lines), ctx)
    assert len(rec.rows) == len(lines) and rec.rows["row"].tolist() == list(range(1, len(lines) + 1))
    reasons = rec.rows["reason"].value_counts().to_dict()
    assert {"not opted in", "unmapped term"} <= set(reasons)  # semester-2 and trial classes
    assert rec.counts["posted"] > 0 and rec.counts["failed"] == 0
    assert not postings["result_id"].dropna().duplicated().any()


def test_frames_read_back_from_parquet_and_an_empty_state(frames, tmp_path):
    """The tasks stage every frame as Parquet between steps, which turns None into NaN."""

    def through_parquet(frame: pd.DataFrame) -> pd.DataFrame:
        path = tmp_path / "frame.parquet"
        frame.to_parquet(path, index=False)
        return pd.read_parquet(path)

    data = export(f"{YEAR_LONG},s1000000,{S1},90,,", f"{SEMESTER_ONE},s1000001,{S1},,B,", "oops")
    parsed = read_export(data, ExportColumns())
    rows, quarantined = through_parquet(parsed.rows), through_parquet(parsed.quarantined)
    postings = through_parquet(plan_postings(rows, context(frames, config=config(letter_grades=True))))
    outcomes = through_parquet(answered(postings).assign(message=None))
    rec = reconcile(rows, quarantined, postings, outcomes)
    assert rec.counts == {"posted": 2, "unchanged": 0, "skipped": 1, "failed": 0}
    assert posting(postings, 2, "F1")["score"] == "B"

    no_state = context(frames, sections=pd.DataFrame(columns=["key", "lms_id", "course_key"]),
                       grading_periods=pd.DataFrame(columns=["key", "lms_id", "title"]),
                       posted=pd.DataFrame(columns=["result_id", "fingerprint"]))
    _, _, rec = run(data, no_state)
    assert rec.counts["skipped"] == 3 and set(rec.rows["reason"]) == {"unmapped section", "malformed: expected 6 fields, got 1"}
