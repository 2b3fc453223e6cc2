"""The provisioning fault scenarios' checks and ledger line, whatever the LMS: each row of the rules'
expectation (``tests/expected_provisioning.py``) against what the LMS holds (per kind, its keys
counted: the caller reads its own LMS emulator) and what the run's staged lists say."""

from __future__ import annotations

from collections import Counter

from include.staging import read_frame
from tests.expected_provisioning import KINDS, TASKS, Expected, enrollment_keys
from tests.fault_ledger import ScenarioLedger, record
from tests.provisioning_support import counted, report_of


def listed(outcome, district) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per kind, what the run lists as failed (key -> the LMS's message) and skipped (key ->
    reason), from the staged lists of the provisioning tasks that ran."""
    pairs = enrollment_keys(district)
    failed, skipped = {}, {}
    for kind, task_id in TASKS.items():
        manifest = outcome.returned.get(f"provision.{task_id}")
        if manifest is None:
            failed[kind], skipped[kind] = {}, {}
            continue
        errors = read_frame(manifest["errors_uri"])
        left_out = read_frame(manifest["skipped_uri"])
        keys = left_out["key"].map(pairs) if kind == "enrollment" else left_out["key"]
        failed[kind] = dict(zip(errors["key"], errors["error"], strict=True))
        skipped[kind] = dict(zip(keys, left_out["reason"], strict=True))
    return failed, skipped


def duplicates(held: dict[str, Counter]) -> int:
    return sum(count - 1 for counter in held.values() for count in counter.values() if count > 1)


def unexpected_in_lms(held: dict[str, Counter], expectation: Expected) -> list[str]:
    """What the LMS holds that the rules do not put there (a record they leave out, or none of IC's)."""
    return [
        f"{kind} {key}" + (f" (the rules say: {sorted(expectation.skipped[kind][key])})"
                           if key in expectation.skipped[kind] else " (not IC's)")
        for kind in KINDS
        for key in sorted(set(held[kind]) - expectation.present[kind])
    ]


def ledger(scenario: str, faults: int, outcome, expectation: Expected, held: dict[str, Counter], district,
           held_back: str | None = None) -> ScenarioLedger:
    """Every row of the expectation in exactly one of posted / failed / skipped / lost, the
    LMS's duplicates counted from what it holds (``held``).

    An object the rules put in the LMS is ``posted`` if the LMS holds it, ``failed`` if the
    run lists it with the LMS's message, ``skipped`` only if the run says what it hangs off
    did not reach the LMS and that is so; a record the rules leave out is ``skipped`` if the
    run lists it with a reason the rules give for it (or, again, because what it hangs off is
    not in the LMS). Anything else is lost. ``held_back``: the run failed before writing and
    the failure email gave this reason, so the rows it did not post count as failed with it."""
    failed, skipped = listed(outcome, district)
    for kind in KINDS:
        reasons = [*failed[kind].values(), *skipped[kind].values()]
        assert all(isinstance(reason, str) and reason.strip() for reason in reasons), f"{kind}: a row without reason"
    if "provision.sync_report" in outcome.returned:  # the report a person reads says the same
        report = report_of(outcome)
        for kind in KINDS:
            assert counted(report, kind, "failed") == len(failed[kind]), kind
            assert counted(report, kind, "skipped") == len(skipped[kind]), kind
    unexpected = unexpected_in_lms(held, expectation)
    assert not unexpected, f"the LMS holds {len(unexpected)} object(s) the rules leave out: {unexpected[:5]}"
    counts = Counter()
    lost_examples = []
    for kind in KINDS:
        for key in sorted(expectation.present[kind]):
            reason = skipped[kind].get(key)
            if key in held[kind]:
                counts["posted"] += 1
            elif key in failed[kind]:
                counts["failed"] += 1
            elif expectation.skip_is_right(kind, key, reason, held):
                counts["skipped"] += 1
            elif held_back:
                counts["failed"] += 1
            else:
                counts["lost"] += 1
                lost_examples.append(f"{kind} {key}" + (f" (skipped: {reason!r})" if reason else ""))
        for key, reasons in sorted(expectation.skipped[kind].items()):
            if expectation.skip_is_right(kind, key, skipped[kind].get(key), held):
                counts["skipped"] += 1
            elif held_back:
                counts["failed"] += 1
            else:
                counts["lost"] += 1
                lost_examples.append(
                    f"{kind} {key}: the run says {skipped[kind].get(key) or failed[kind].get(key)!r}, "
                    f"the rules {sorted(reasons)}"
                )
    rows_in = sum(len(expectation.rows(kind)) for kind in KINDS)
    entry = ScenarioLedger(scenario, faults, rows_in, counts["posted"], counts["skipped"], counts["failed"],
                           duplicates(held), rows_in - counts["posted"] - counts["skipped"] - counts["failed"])
    try:
        return record(entry)
    except AssertionError as error:
        raise AssertionError(f"{error}; for example {lost_examples[:5]}") from None


def assert_provisioned_in_full(outcome, expectation: Expected, held: dict[str, Counter], district) -> None:
    """A fault that was ridden out leaves no trace: nothing failed, the LMS holds exactly what
    the rules put there, once each, and the run lists exactly what they leave out, each with a
    reason they give for it."""
    assert outcome.state == "success", outcome.task_states
    report = report_of(outcome)
    assert not (report["outcome"] == "failed").any(), report[report["outcome"] == "failed"].to_string()
    failed, skipped = listed(outcome, district)
    for kind in KINDS:
        assert not failed[kind], (kind, failed[kind])
        assert set(held[kind]) == expectation.present[kind], (
            kind,
            "missing:", sorted(expectation.present[kind] - set(held[kind]))[:5],
            "not the rules':", sorted(set(held[kind]) - expectation.present[kind])[:5],
        )
        assert not [key for key, count in held[kind].items() if count > 1], f"{kind}: stored twice"
        assert set(skipped[kind]) == set(expectation.skipped[kind]), kind
        wrong = {key: reason for key, reason in skipped[kind].items()
                 if reason not in expectation.skipped[kind][key]}
        assert not wrong, f"{kind} skipped with a reason the rules do not give: {list(wrong.items())[:5]}"
