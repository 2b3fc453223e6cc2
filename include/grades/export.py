"""The LMS's final-grade auto-export (a CSV on SFTP), parsed into one row per grade.

The file comes from a district-run export process, so it is read defensively: any of the
encodings the LMS or a spreadsheet round-trip produces (UTF-8 with or without BOM, UTF-16
with or without BOM, Windows-1252), headers matched loosely through
:class:`~include.config.ExportColumns`, and every row that cannot be trusted kept aside
with the reason (never dropped) so the reconciliation accounts for it: wrong field count,
blank ids, non-numeric or negative grades (extra credit above 100% is kept), duplicates,
conflicting rows, and the last row of a file that ends without a line break (cut off).
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from include.config import ExportColumns

REQUIRED = ("section", "student", "grading_period")
PERCENTS = ("term_percent", "course_percent")
FIELDS = (*REQUIRED, "term_percent", "term_score", "course_percent", "course_score")
ROW_COLUMNS = ["row", *FIELDS]
REPEATED = ("grading_period", "term_score", "course_score")  # a few values over every row: categorical
QUARANTINE_COLUMNS = ["row", "section", "student", "reason"]
# the rows and the rows kept aside as staged, whichever the source (a file, or an LMS's API)
ROW_SCHEMA = pa.schema([("row", pa.int64()), *((name, pa.float64() if name in PERCENTS else pa.string())
                                              for name in FIELDS)])
QUARANTINE_SCHEMA = pa.schema([("row", pa.int64()), ("section", pa.string()), ("student", pa.string()),
                               ("reason", pa.string())])
CONFLICTING = "conflicting grades for the same student, section and grading period"
DUPLICATE = "duplicate of row "
TRUNCATED = "the file ends in the middle of this row (no line break after it): cut off?"
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"


class ExportFormatError(ValueError):
    """The file is not a grade export this district's column map can read."""


@dataclass(frozen=True)
class ParsedExport:
    """``rows``: the grades to consider; ``quarantined``: rows kept aside (row, section, student, reason)."""

    rows: pd.DataFrame
    quarantined: pd.DataFrame


def decode(data: bytes) -> str:
    """UTF-16 by its BOM (or, without one, by the zero bytes ASCII text has in UTF-16), UTF-8 with
    or without BOM if it decodes, else the Windows code page Excel writes."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    utf16 = _utf16_without_bom(data)
    if utf16:
        return data.decode(utf16)
    data = data.removeprefix(codecs.BOM_UTF8)
    for encoding in ("utf-8", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _utf16_without_bom(data: bytes) -> str | None:
    """"utf-16-le" / "utf-16-be" when nearly every other byte of the start is zero, as Latin
    text in UTF-16 has and UTF-8 or a Windows code page never has in a CSV."""
    sample = data[: min(len(data), 1024) // 2 * 2]
    if len(sample) < 8:
        return None
    halves = {"utf-16-le": sample[1::2], "utf-16-be": sample[0::2]}
    for encoding, high in halves.items():
        low = sample[0::2] if encoding == "utf-16-le" else sample[1::2]
        if high.count(0) >= 0.9 * len(high) and low.count(0) <= 0.1 * len(low):
            return encoding
    return None


def _header_key(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split()).casefold()


def _locate(header: list[str], columns: ExportColumns) -> dict[str, int]:
    """Field name -> position in the file; the first of repeated headers wins."""
    positions: dict[str, int] = {}
    for index, name in enumerate(header):
        positions.setdefault(_header_key(name), index)
    found = {field: positions[_header_key(getattr(columns, field))] for field in FIELDS
             if _header_key(getattr(columns, field)) in positions}
    missing = [repr(getattr(columns, field)) for field in REQUIRED if field not in found]
    if "term_percent" not in found and "term_score" not in found:
        missing.append(f"one of {columns.term_percent!r} or {columns.term_score!r}")
    if missing:
        listed = ", ".join(repr(name.replace("\ufeff", "").strip()) for name in header)
        raise ExportFormatError(
            f"grade export is missing the header(s) {', '.join(missing)}; headers found: {listed}"
        )
    return found


def _blank(values: pd.Series) -> pd.Series:
    return values.isna() | (values.fillna("") == "")


def _nullable(values: pd.Series) -> pd.Series:
    """Text with blanks as None, in an object column so a missing value stays None."""
    return values.astype(object).where(~_blank(values), None)


def _empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype="int64" if column == "row" else object)
                         for column in QUARANTINE_COLUMNS})


def read_export(data: bytes, columns: ExportColumns) -> ParsedExport:
    """Parse an export: rows to post, and quarantined rows with the reason they cannot be.

    ``row`` numbers the records after the header (so row N is the file's record N + 1);
    empty lines are not rows, and empty fields after the last header are the trailing
    commas spreadsheets add, not a wrong field count.
    """
    text = decode(data)
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records or not any(field.strip() for field in records[0]):
        raise ExportFormatError("grade export is empty: no header line")
    header, body = records[0], records[1:]
    positions = _locate(header, columns)
    width = len(header)
    numbered = [(number, record) for number, record in enumerate(body, start=1) if record]
    # A file whose last line has no line break was most likely cut off while being written or
    # copied: its last row may hold half a grade ("9" of "95"), so it is kept aside, not posted.
    cut_off = numbered[-1][0] if numbered and not text.endswith(("\n", "\r")) else None

    shaped, quarantined = [], []
    for number, record in numbered:
        extra = record[width:]
        if number == cut_off:
            quarantined.append((number, None, None, TRUNCATED))
        elif len(record) < width or any(field.strip() for field in extra):
            quarantined.append((number, None, None, f"expected {width} fields, got {len(record)}"))
        else:
            shaped.append([number, *(record[positions[field]].strip() if field in positions else None
                                     for field in FIELDS)])
    frame = pd.DataFrame(shaped, columns=ROW_COLUMNS)
    frame = frame.astype({"row": "int64", **dict.fromkeys(FIELDS, object)})
    for field in FIELDS:
        frame[field] = _nullable(frame[field])

    reason = pd.Series(None, index=frame.index, dtype=object)
    reason = reason.mask(reason.isna() & frame["section"].isna(), "blank section")
    reason = reason.mask(reason.isna() & frame["student"].isna(), "blank student")
    for field in PERCENTS:
        text = frame[field].fillna("").astype(str).str.strip().str.removesuffix("%").str.strip()
        numeric = text.str.fullmatch(_NUMBER)
        bad = frame[field].notna() & ~numeric
        reason = reason.mask(reason.isna() & bad, "non-numeric grade " + frame[field].map(repr))
        value = pd.to_numeric(text.where(numeric), errors="coerce").astype("float64")
        reason = reason.mask(reason.isna() & (value < 0), "negative grade " + frame[field].map(repr))
        frame[field] = value
    invalid = reason.notna()
    quarantine = frame.loc[invalid, ["row", "section", "student"]].assign(reason=reason[invalid])
    valid = frame[~invalid]

    first = valid.groupby(list(FIELDS), dropna=False)["row"].transform("first")
    duplicate = valid["row"] != first
    duplicates = valid.loc[duplicate, ["row", "section", "student"]].assign(
        reason=DUPLICATE + first[duplicate].astype(str)
    )
    distinct = valid[~duplicate].assign(period=valid["grading_period"].fillna(""))
    keys = ["section", "student", "period"]
    conflicting = distinct.groupby(keys)["row"].transform("size") > 1
    clashing = distinct[conflicting]
    listed = clashing.groupby(keys)["row"].agg(lambda rows: ", ".join(map(str, rows))).rename("rows")
    conflicts = clashing.join(listed, on=keys)
    conflicts = conflicts[["row", "section", "student"]].assign(
        reason=f"{CONFLICTING}, rows " + conflicts["rows"].astype(str)
    )
    kept = distinct[~conflicting].reset_index(drop=True)

    shape_errors = pd.DataFrame(quarantined, columns=QUARANTINE_COLUMNS)
    parts = [part for part in (shape_errors, quarantine, duplicates, conflicts) if not part.empty]
    quarantine_all = (
        pd.concat(parts, ignore_index=True).astype({"row": "int64", "section": object, "student": object,
                                                    "reason": object})
        if parts else _empty_quarantine()
    )
    quarantine_all = quarantine_all.sort_values("row", kind="stable").reset_index(drop=True)
    rows = kept[ROW_COLUMNS].astype(dict.fromkeys(REPEATED, "str"))
    rows = rows.astype(dict.fromkeys(REPEATED, "category"))
    return ParsedExport(rows=rows, quarantined=quarantine_all[QUARANTINE_COLUMNS])
