"""IC's answers to the postings -> one outcome per export row: the reconciliation.

Pure pandas, no network, no Airflow. :func:`reconcile` folds IC's answers to the postings of
:func:`include.grades.plan.plan_postings` back so that every row of the file, quarantined ones
included, ends in exactly one outcome. For the post task, :func:`withheld` answers for the
results of a lineItem IC refused (they are not sent) and :func:`refusals` sums IC's refusals
up per lineItem for its log, which, like :func:`format_reconciliation`'s, shows no student's id.

Millions of postings: the outcomes are worked out on integer codes (:mod:`include.frames`)
and kept as categoricals; no Python object is made per row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include import frames
from include.frames import AT_ONCE, TEXT
from include.grades.plan import WINDOW_CLOSED
from include.privacy import redacted

ROW_OUTCOME_COLUMNS = ["row", "section", "student", "outcome", "reason"]
OUTCOMES = ("posted", "unchanged", "skipped", "failed")
IC_STATUSES = ("created", "updated", "window closed", "rejected")

NO_ANSWER = "no answer from IC"
MALFORMED = "malformed: "  # an export file's row kept aside
NOT_READ = "not read from the LMS: "  # what an LMS's API gave that could not become a grade row
REJECTED = "rejected by IC"
LOGGED_STUDENT = "<student>"  # what a log line shows for a student's id


class ReconciliationError(RuntimeError):
    """Rows and outcomes do not add up: a row would go unaccounted for."""


@dataclass(frozen=True)
class Reconciliation:
    rows: pd.DataFrame  # row, section, student, outcome, reason: one per export row, quarantined included
    counts: dict[str, int]
    postings: pd.DataFrame  # the postings with their final outcome and reason


# -- IC's answers back to rows ---------------------------------------------------------------------


def _commonest(codes: np.ndarray) -> int:
    """The commonest of non-negative codes (-1 if none), counted a slice at a time."""
    counts = np.zeros(int(codes.max(initial=-1)) + 1, dtype=np.int64)
    for start in range(0, len(codes), AT_ONCE):
        part = np.bincount(codes[start: start + AT_ONCE])
        counts[: len(part)] += part
    return int(counts.argmax()) if len(counts) else -1


def _in_step(ids: pa.ChunkedArray, sent: np.ndarray, answered: pa.ChunkedArray) -> bool:
    """Whether the answers are for the sent results (the postings where ``sent``) one for one, in order."""
    if int(np.count_nonzero(sent)) != len(answered) or not len(answered):
        return False
    done = 0
    for start in range(0, len(ids), AT_ONCE):
        piece = ids.slice(start, AT_ONCE).filter(pa.array(sent[start: start + AT_ONCE]))
        if not pc.all(pc.equal(piece, answered.slice(done, len(piece))), skip_nulls=False).as_py():
            return False
        done += len(piece)
    return True


def _last_answers(result_ids: pd.Series, sent: np.ndarray, answers: pd.DataFrame,
                  unusual: np.ndarray) -> np.ndarray | None:
    """For each sent posting (where ``sent``), the position of IC's last answer for its result
    (-1: none; None: the answers are the sent postings', one for one).

    The answers normally come back one for one in the order the results were sent; then a result
    can have a later, different answer only if one of its answers is ``unusual`` (says other than
    most do), and only those results are looked up. Otherwise every result id is.
    """
    ids, answered = frames.chunked_text(result_ids), frames.chunked_text(answers["result_id"])
    if _in_step(ids, sent, answered):
        if not unusual.any():
            return None  # the i-th answer is the i-th sent posting's
        named = pc.is_in(ids, value_set=frames.flat(answered.filter(pa.array(unusual))))
        named = named.to_numpy(zero_copy_only=False)
        involved = np.flatnonzero(named[sent])
        del named
        codes = frames.flat(pc.dictionary_encode(frames.take_chunked(ids, np.flatnonzero(sent)[involved])))
        codes = codes.indices.to_numpy()
        last = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        np.maximum.at(last, codes, involved)
        found = np.arange(len(answered))
        found[involved] = last[codes]
        return found
    backwards = frames.flat(answered).take(pa.array(np.arange(len(answered) - 1, -1, -1)))
    found = pc.index_in(frames.take_chunked(ids, np.flatnonzero(sent)), value_set=backwards)
    found = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
    return np.where(found >= 0, len(answered) - 1 - found, -1)


def _posting_outcomes(postings: pd.DataFrame,
                      outcomes: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, list]:
    """The postings with their outcome and reason, and the same as codes: outcome into OUTCOMES,
    reason into the returned texts. Per posting only a few one-byte codes are held."""
    status, statuses = frames.encoded(outcomes["status"])
    unknown = set(statuses.to_pylist()) - set(IC_STATUSES) | ({None} if (status < 0).any() else set())
    if unknown:
        raise ValueError(f"unknown IC outcome status(es): {sorted(unknown, key=str)}")
    status = frames.gather(
        np.asarray([IC_STATUSES.index(text) for text in statuses.to_pylist()], dtype=np.int8),
        status, 4)  # into IC_STATUSES; 4: no answer
    message, messages = frames.encoded(outcomes["message"])
    said = [REJECTED if text.strip() == "" else text for text in messages.to_pylist()] + [REJECTED]
    blank = np.asarray([text.strip() == "" for text in messages.to_pylist()] + [True])  # by message
    message = frames.gather(np.arange(len(said) - 1).astype(frames.code_type(len(said))), message,
                            len(said) - 1)  # into said
    unusual = status != _commonest(status)
    unusual |= message != _commonest(message)

    action = postings["action"]
    sent, skipped = (action == "post").to_numpy(), (action == "skipped").to_numpy()
    found = _last_answers(postings["result_id"], sent, outcomes, unusual)
    del unusual
    kind = np.full(len(postings), 4, dtype=np.int8)
    kind[sent] = status if found is None else frames.gather(status, found, 4)
    outcome = frames.gather(np.asarray([0, 0, 2, 3, 3], dtype=np.int8), kind)  # into OUTCOMES
    np.copyto(outcome, 2, where=skipped)
    np.copyto(outcome, 1, where=(action == "unchanged").to_numpy())

    reason, reasons = frames.encoded(postings["reason"])
    reason_at, texts = frames.distinct([*reasons.to_pylist(), WINDOW_CLOSED, NO_ANSWER, "", *said])
    reason_at = reason_at.astype(frames.code_type(len(texts)))
    fixed = len(reasons)  # then WINDOW_CLOSED, NO_ANSWER, "", and what IC said
    reason = np.where(skipped, frames.gather(reason_at, reason), reason_at[fixed + 2])
    del skipped
    lines = np.flatnonzero(sent & (kind >= 2))  # sent: window closed, rejected, no answer
    if len(lines):
        answer = np.cumsum(sent, dtype=frames.index_type(len(sent)))[lines] - 1
        answer = answer if found is None else found[answer]
        answered = frames.gather(message, answer, len(said) - 1).astype(np.int64)
        replied = fixed + 3 + answered
        window = kind[lines] == 2  # IC's message says why (closed, or the day it opens), else WINDOW_CLOSED
        said_here = np.select([window & blank[answered], window | (kind[lines] == 3)], [fixed, replied],
                              fixed + 1)
        reason[lines] = reason_at[said_here]
    del sent, kind
    final = postings.assign(
        outcome=frames.categorical_from_arrow(*frames.compact(outcome, pa.array(OUTCOMES, TEXT))),
        reason=frames.categorical_from_arrow(*frames.compact(reason, pa.array(texts, TEXT))))
    return final, outcome, reason, texts


def _decided(numbers: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Where each row's postings start (in row order) and, for each row, the posting that decides
    its outcome: failed > posted > unchanged > skipped, the first such posting of the row; and the
    order that sorts the postings by row (None: they are). Worked out a slice of rows at a time."""
    order = _sorting(numbers)
    if order is not None:
        numbers, outcome = numbers[order], outcome[order]
    new_row = np.ones(len(numbers), dtype=bool)
    np.not_equal(numbers[1:], numbers[:-1], out=new_row[1:])
    position = frames.index_type(len(numbers))
    starts = np.concatenate([np.flatnonzero(new_row[first: first + AT_ONCE]).astype(position) + first
                             for first in range(0, len(numbers), AT_ONCE)] or [np.empty(0, dtype=position)])
    del new_row
    decider = np.empty(len(starts), dtype=starts.dtype)
    ranks = np.asarray([1, 2, 3, 0], dtype=np.int64)  # by OUTCOMES: failed first, then posted, ...
    for first in range(0, len(starts), AT_ONCE):
        low = int(starts[first])
        high = int(starts[first + AT_ONCE]) if first + AT_ONCE < len(starts) else len(numbers)
        ranked = ranks[outcome[low:high]] * (high - low) + np.arange(high - low)
        best = np.minimum.reduceat(ranked, starts[first: first + AT_ONCE] - low)
        decider[first: first + AT_ONCE] = best % (high - low) + low
    return starts, decider if order is None else order[decider], order


def _rows_match(numbers: np.ndarray, starts: np.ndarray, order: np.ndarray | None, rows: np.ndarray) -> bool:
    """Whether the postings' rows (their numbers at ``starts``, in ``order``) are exactly ``rows``."""
    if len(starts) != len(rows):
        return False
    for first in range(0, len(rows), AT_ONCE):
        at = starts[first: first + AT_ONCE]
        if not np.array_equal(numbers[at if order is None else order[at]], rows[first: first + AT_ONCE]):
            return False
    return True


def _sorting(numbers: np.ndarray) -> np.ndarray | None:
    """None when the numbers are in order already, else the stable order that sorts them."""
    return None if (numbers[1:] >= numbers[:-1]).all() else np.argsort(numbers, kind="stable")


def reconcile(rows: pd.DataFrame, quarantined: pd.DataFrame, postings: pd.DataFrame,
              outcomes: pd.DataFrame, kept_aside_as: str = MALFORMED) -> Reconciliation:
    """One outcome per export row: failed > posted > unchanged > skipped, with the reason that decided it;
    a quarantined row is skipped, its reason after ``kept_aside_as`` (:data:`MALFORMED` for an export
    file's, :data:`NOT_READ` for what an LMS's API gave)."""
    final, outcome, reason, reasons = _posting_outcomes(postings, outcomes)
    posting_rows = final["row"].to_numpy(dtype=np.int64)
    starts, decider, by_row = _decided(posting_rows, outcome)
    row_numbers = rows["row"].to_numpy(dtype=np.int64)
    order = _sorting(row_numbers)
    numbers = row_numbers if order is None else row_numbers[order]
    if not _rows_match(posting_rows, starts, by_row, numbers):
        decided = posting_rows[starts if by_row is None else by_row[starts]]
        stray = np.setdiff1d(decided, row_numbers)
        if len(stray):
            raise ReconciliationError(f"postings for rows that are not in the export: {stray.tolist()[:10]}")
        at = np.minimum(np.searchsorted(decided, numbers), max(len(decided) - 1, 0))
        missing = numbers[decided[at] != numbers] if len(decided) else numbers
        if len(missing):
            raise ReconciliationError(f"export rows with no planned posting: {missing.tolist()[:10]}")
        decider = decider[at]

    def as_text(frame: pd.DataFrame, column: str, order: np.ndarray | None) -> pd.Series:
        values = frame[column].reset_index(drop=True).astype("str")
        return values if order is None else values.take(order).reset_index(drop=True)

    outcome, reason = outcome[decider], reason[decider]
    section, student = as_text(rows, "section", order), as_text(rows, "student", order)
    if len(quarantined):
        why, whys = frames.encoded(quarantined["reason"].astype(str))
        reason_at, reasons = frames.distinct(reasons + [kept_aside_as + text for text in whys.to_pylist()])
        numbers = np.concatenate([numbers, quarantined["row"].to_numpy(dtype=np.int64)])
        outcome = np.concatenate([outcome, np.full(len(quarantined), 2, dtype=outcome.dtype)])
        why = np.where(why >= 0, len(reason_at) - len(whys) + why, -1)
        reason = frames.gather(reason_at, np.concatenate([reason, why]))
        section = pd.concat([section, as_text(quarantined, "section", None)], ignore_index=True)
        student = pd.concat([student, as_text(quarantined, "student", None)], ignore_index=True)
        merged = _sorting(numbers)
        if merged is not None:
            numbers, outcome, reason = numbers[merged], outcome[merged], reason[merged]
            section, student = (values.take(merged).reset_index(drop=True) for values in (section, student))
    result = pd.DataFrame({
        "row": numbers, "section": section, "student": student,
        "outcome": frames.categorical_from_arrow(*frames.compact(outcome, pa.array(OUTCOMES, TEXT))),
        "reason": frames.categorical_from_arrow(*frames.compact(reason, pa.array(reasons, TEXT))),
    }, copy=False)[ROW_OUTCOME_COLUMNS]
    expected = len(rows) + len(quarantined)
    counts = {name: int(np.count_nonzero(outcome == code)) for code, name in enumerate(OUTCOMES)}
    if sum(counts.values()) != expected or (numbers[1:] == numbers[:-1]).any():
        raise ReconciliationError(
            f"{sum(counts.values())} row outcomes for {expected} export rows "
            f"({len(rows)} parsed, {len(quarantined)} quarantined); row numbers must be distinct"
        )
    return Reconciliation(rows=result, counts=counts, postings=final)


def withheld(postings: pd.DataFrame, refused: pd.DataFrame) -> pd.DataFrame:
    """The answers of the postings not sent because IC refused their lineItem or what it needs
    (``refused``: line_item_id, status, message): each takes its lineItem's status and message, as
    the journal holds IC's answers (result_id, fingerprint, status, message)."""
    held = postings.loc[frames.isin(postings["line_item_id"], refused["line_item_id"]).to_numpy(),
                        ["line_item_id", "result_id", "fingerprint"]]
    held = held.astype({"line_item_id": str, "fingerprint": str})
    return held.merge(refused.astype({"line_item_id": str}), on="line_item_id")[
        ["result_id", "fingerprint", "status", "message"]]


def without_students(texts: pd.Series, students: pd.Series) -> pd.Series:
    """Each text with its student's id, where it stands as a word of its own (in a result's sourcedId,
    in IC's message), replaced by ``<student>``, and email addresses masked
    (:func:`include.privacy.redacted`): what a log line or an email may show of IC's messages.
    Texts repeat (one IC message for a lineItem's every result): each distinct pair is redacted once."""
    pairs = pd.DataFrame({"text": texts.astype(str).to_numpy(), "student": students.astype(str).to_numpy()})
    distinct = pairs.drop_duplicates()
    shown = {(text, student): redacted(text, [student], reference=LOGGED_STUDENT, limit=None,
                                       unknown_people=False)
             for text, student in zip(distinct["text"], distinct["student"], strict=True)}
    return pd.Series([shown[pair] for pair in zip(pairs["text"], pairs["student"], strict=True)],
                     index=texts.index, dtype=object)


def refusals(postings: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """IC's answers other than created / updated, one line per lineItem, status and message (the
    student's id left out, see :func:`without_students`) for the task log: how many results and from
    which export rows, the most results first."""
    refused = outcomes.loc[~outcomes["status"].isin(["created", "updated"]),
                           ["result_id", "status", "message"]]
    sent = postings.loc[frames.isin(postings["result_id"], refused["result_id"]).to_numpy(),
                        ["result_id", "line_item_id", "student", "row"]]
    joined = refused.merge(sent.astype({"line_item_id": str, "student": str}), on="result_id")
    joined["message"] = without_students(joined["message"], joined["student"])
    lines = joined.groupby(["line_item_id", "status", "message"], sort=False)["row"].agg(
        results="size", rows=lambda rows: sorted(rows))
    return lines.reset_index().sort_values("results", ascending=False, kind="stable").reset_index(drop=True)


def _logged_reasons(rec: Reconciliation) -> dict[str, str]:
    """IC's reasons that name their posting's student, as a log line shows them."""
    postings = rec.postings
    answered = postings[((postings["action"] == "post") & (postings["outcome"] != "posted")).to_numpy()]
    shown = without_students(answered["reason"], answered["student"])
    return {reason: text for reason, text in zip(answered["reason"].astype(str), shown, strict=True)
            if reason != text}


def format_reconciliation(rec: Reconciliation, top: int = 5) -> str:
    """A few lines for the task log: counts and the commonest reasons, never a student or a name
    (IC's messages show ``<student>`` for the student they name; the staged report keeps them whole)."""
    total = sum(rec.counts.values())
    lines = [f"grade passback: {total} export rows: "
             + ", ".join(f"{outcome} {rec.counts.get(outcome, 0)}" for outcome in OUTCOMES)]
    logged = _logged_reasons(rec)
    for outcome in ("skipped", "failed"):
        reasons = Counter()
        for reason, count in Counter(rec.rows.loc[rec.rows["outcome"] == outcome, "reason"]).items():
            reasons[logged.get(reason, reason)] += count
        if reasons:
            common = reasons.most_common(top)
            more = len(reasons) - len(common)
            lines.append(f"{outcome} because: " + "; ".join(f"{reason} ({count})" for reason, count in common)
                         + (f"; and {more} other reason(s)" if more else ""))
    return "\n".join(lines)
