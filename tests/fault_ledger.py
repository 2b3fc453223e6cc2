"""The fault suite's ledger: one line per scenario of what went in, what reached the far
side and what was lost or duplicated; printed as a table at the end of the test session."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

COLUMNS = ("scenario", "faults", "rows_in", "posted", "skipped", "failed", "duplicates", "lost")


@dataclass(frozen=True)
class ScenarioLedger:
    """What one fault scenario put in and what became of it.

    ``faults`` counts the faults injected (answers replaced, connections cut, bad rows or
    files, killed processes); ``rows_in`` the rows or objects that should have reached the
    far side; ``posted`` / ``skipped`` / ``failed`` what the run's own report accounts for;
    ``duplicates`` the objects stored more than once on the far side; ``lost`` the rows
    neither on the far side nor reported skipped or failed with a reason.
    """

    scenario: str
    faults: int
    rows_in: int
    posted: int
    skipped: int
    failed: int
    duplicates: int
    lost: int


LEDGER: list[ScenarioLedger] = []


def record(entry: ScenarioLedger) -> ScenarioLedger:
    """Add a scenario to the table, then hold it to the suite's promise: nothing lost, nothing twice."""
    LEDGER.append(entry)
    assert entry.duplicates == 0, f"{entry.scenario}: {entry.duplicates} object(s) stored twice"
    assert entry.lost == 0, f"{entry.scenario}: {entry.lost} row(s) unaccounted for"
    return entry


def summary_lines() -> list[str]:
    """The ledger as a fixed-width table with a totals line."""
    if not LEDGER:
        return []
    rows = [[str(value) for value in asdict(entry).values()] for entry in LEDGER]
    totals = ["TOTAL (%d scenarios)" % len(LEDGER)] + [
        str(sum(getattr(entry, field.name) for entry in LEDGER)) for field in fields(ScenarioLedger)[1:]
    ]
    widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *rows, totals)]

    def line(cells) -> str:
        return "  ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths)))

    rule = "  ".join("-" * width for width in widths)
    return [line(COLUMNS), rule, *(line(row) for row in rows), rule, line(totals)]
