"""The transform benchmark's phases at a small scale, in-process: their figures add up."""

from __future__ import annotations

from bench.transform import grade_transform_phase, plan_night, write_extract_cache
from include.config import DISTRICTS_DIR


def test_plan_phases_over_a_small_district(tmp_path):
    cache = write_extract_cache(2_000, seed=7, directory=str(tmp_path / "extract"), workers=1)
    assert cache.records == sum(cache.extra["counts"].values()) > 0 and cache.bytes > 0

    config = str(DISTRICTS_DIR / "demo.yaml")
    full = plan_night(str(tmp_path / "extract"), config, str(tmp_path / "work"), "full", isolated=False)
    assert [result.phase for result in full] == [
        f"plan.full.{kind}"
        for kind in ("building", "grading_period", "user", "guardian_link", "course", "section", "enrollment")
    ]
    for result in full:
        assert result.records == result.extra["planned"] + result.extra["skipped"] > 0
        assert result.extra["create"] == result.extra["planned"] and result.extra["unchanged"] == 0
    enrollments = full[-1]
    assert enrollments.extra["planned"] > cache.extra["counts"]["enrollments"] // 2

    delta = plan_night(str(tmp_path / "extract"), config, str(tmp_path / "work"), "delta", isolated=False)
    for before, after in zip(full, delta, strict=True):
        assert after.extra["unchanged"] == before.extra["planned"]
        assert after.extra["create"] == after.extra["update"] == after.extra["deactivate"] == 0


def test_grade_transform_phase_counts_every_row():
    result = grade_transform_phase(20_000, seed=3)
    assert result.records == 20_000 and result.seconds > 0
    actions = result.extra["actions"]
    assert result.extra["postings"] == sum(actions.values()) > result.records
    assert actions["post"] > 0 and actions["skipped"] > 0
    assert sum(result.extra["outcomes"].values()) == result.records
    assert result.extra["outcomes"]["posted"] > 0
