"""The plan as changes: what to create, update or deactivate against the last provisioned state.

The state of a kind is a table of what this integration provisioned and the LMS accepted:
the item's fields, a fingerprint of them, and the LMS id. Comparing fingerprints sends
nothing for unchanged objects. What IC no longer has is handled as the vendors do: users,
courses and the rest stay in the LMS and are reported; enrollments and guardian links
are dropped. Objects the LMS holds that this integration never created (a course admin
added by hand) are not in the state and so are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import get_origin

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from include.frames import SLICE, distinct_in_order, flatten, in_key_order, isin, positions, take, text_array
from include.lms.target import ITEM_TYPES, ItemResult, ObjectKind
from include.provisioning.plan import PENDING, Desired, item_fields, with_term_rows
from include.staging import FrameParts

DROPPED_WHEN_REMOVED: frozenset[ObjectKind] = frozenset({"enrollment", "guardian_link"})
STATE_COLUMNS = ["key", "school", "fingerprint", "lms_id"]


def empty_state(kind: ObjectKind) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=np.uint64 if column == "fingerprint" else object)
                         for column in [*STATE_COLUMNS, *item_fields(kind)[1:]]})


def _joined(values: pd.Series) -> pd.Series:
    """Each list as its sorted items joined by ``|``, sorted and joined by arrow, not per row."""
    parents, items = flatten(values)
    order = np.lexsort((pd.factorize(items.to_numpy(zero_copy_only=False), sort=True)[0], parents))
    sizes = np.bincount(parents, minlength=len(values))
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]), pa.int64())
    lists = pa.LargeListArray.from_arrays(offsets, pc.cast(items.take(order), pa.large_string()))
    joined = pc.binary_join(lists, pa.scalar("|", pa.large_string()))
    return pd.Series(pa.chunked_array([joined]).to_pandas().array, index=values.index)


def _field_hashes(values: pd.Series, is_list: bool) -> np.ndarray:
    """``hash_array`` of ``str(value)`` per row (a missing value as ``None``): distinct text a
    slice at a time (only one slice of millions of keys is ever Python strings), anything else
    once per distinct value (an enrollment's section and user repeat over millions of rows, a
    user's given name and building over thousands)."""
    if is_list:
        values = _joined(values)
    if _distinct_text(values):
        return np.concatenate([np.empty(0, dtype=np.uint64)] + [
            pd.util.hash_array(values.iloc[start:start + SLICE].to_numpy(dtype=object, na_value="None"),
                               categorize=False)
            for start in range(0, len(values), SLICE)
        ])
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, uniques = values.cat.codes.to_numpy(), values.cat.categories
    else:
        codes, uniques = pd.factorize(values)
    texts = (np.asarray(uniques, dtype=object) if pd.api.types.is_string_dtype(uniques.dtype)
             else np.asarray([str(value) for value in uniques], dtype=object))
    return pd.util.hash_array(np.append(texts, "None"), categorize=False)[codes]


def _distinct_text(values: pd.Series) -> bool:
    """Whether ``values`` are text (not a categorical) that mostly differ, judged on a slice."""
    if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_string_dtype(values.dtype):
        return False
    sample = values.iloc[:SLICE]
    return sample.nunique(dropna=False) * 2 > len(sample)


def fingerprint_hashes(rows: pd.DataFrame, kind: ObjectKind) -> np.ndarray:
    """The rows' fingerprints: a stable hash of the fields the LMS receives, lists compared as
    sorted values, kept as numbers (in the state too).

    ``pd.util.hash_pandas_object`` of ``str(value)`` per field, but each distinct value is
    turned into text once (an enrollment's section and user repeat over millions of rows),
    distinct values are hashed a slice at a time, and each field's hashes are folded into the
    row's as soon as they are known (as ``hash_pandas_object`` combines a frame's columns). The
    key is left out: a fingerprint is only ever compared with the state's for the same key, and
    hashing eight million distinct keys took two seconds of every night.
    """
    fields = {name: field for name, field in ITEM_TYPES[kind].model_fields.items() if name != "key"}
    if rows.empty:
        return np.empty(0, dtype=np.uint64)
    hashes = np.full(len(rows), 0x345678, dtype=np.uint64)
    mult = np.uint64(1000003)
    for position, (name, field) in enumerate(fields.items()):
        inverse = len(fields) - position
        hashes ^= _field_hashes(rows[name], get_origin(field.annotation) is list)
        hashes *= mult
        mult += np.uint64(82520 + inverse + inverse)
    return hashes + np.uint64(97531)


def current_fingerprints(state: pd.DataFrame, kind: ObjectKind) -> pd.DataFrame:
    """The state with its fingerprints as :func:`fingerprint_hashes` makes them. A state staged by
    an earlier version (text fingerprints with the key hashed in) has them made again from its own
    fields, which are what the LMS was last sent: the change of version sends nothing again."""
    if pd.api.types.is_unsigned_integer_dtype(state["fingerprint"].dtype):
        return state
    return state.assign(fingerprint=fingerprint_hashes(state, kind))


@dataclass(frozen=True)
class Changes:
    kind: ObjectKind
    create: pd.DataFrame
    update: pd.DataFrame
    deactivate: pd.DataFrame
    unchanged: pd.DataFrame
    removed: pd.DataFrame  # gone from IC, kept in the LMS and reported
    skipped: pd.DataFrame
    unchanged_at: np.ndarray  # where each unchanged row is in the state the plan was made against

    def counts(self) -> dict[str, int]:
        return {
            "create": len(self.create),
            "update": len(self.update),
            "deactivate": len(self.deactivate),
            "unchanged": len(self.unchanged),
            "removed_in_ic": len(self.removed),
            "skipped": len(self.skipped),
        }


def _where(rows: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    """``rows[mask]``, without a copy when every row is in: a first night creates all of them,
    a quiet night leaves all of them unchanged."""
    return rows if mask.all() else rows[mask]


def _same_fingerprint(stored: pd.Series, at: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Whether the state's fingerprint at ``at`` (-1: none) is each row's."""
    same = np.zeros(len(at), dtype=bool)
    known = np.flatnonzero(at >= 0)
    same[known] = stored.to_numpy(dtype=np.uint64)[at[known]] == hashes[known]
    return same


def _fingerprinted(rows: pd.DataFrame, hashes: np.ndarray, mask: np.ndarray) -> pd.DataFrame:
    """``rows[mask]`` with their fingerprints."""
    chosen = _where(rows, mask)
    return chosen.assign(fingerprint=hashes[mask])


def _matched(keys: pd.Series, at: np.ndarray, others: pd.Series) -> np.ndarray:
    """Which ``keys`` are among ``others``, given where each of ``others`` is among them (``at``):
    read off ``at`` when the keys are distinct and in order (a staged state's are), else looked up."""
    if not distinct_in_order(keys):
        return isin(keys, others).to_numpy()
    matched = np.zeros(len(keys) + 1, dtype=bool)
    matched[at] = True  # -1, no key, marks the extra last place
    return matched[:-1]


def plan_changes(
    desired: Desired, state: pd.DataFrame, *, full: bool = False, hashes: np.ndarray | None = None
) -> Changes:
    """``full`` re-sends every object that exists (the vendors' "request full run"), e.g. after
    someone changed the LMS by hand; deactivations still follow the state.

    What is sent (create, update) carries its fingerprint; what is unchanged has the state's
    already, and carries none (a quiet night leaves millions of enrollments unchanged).
    ``hashes``: :func:`fingerprint_hashes` of ``desired.rows`` if already made (a task makes
    them before it reads the state, so that the making and the state are not in memory at the
    same time)."""
    kind = desired.kind
    rows = desired.rows
    if hashes is None:
        hashes = fingerprint_hashes(rows, kind)
    at = positions(rows["key"], state["key"])
    known = at >= 0
    same = known & _same_fingerprint(state["fingerprint"], at, hashes)
    create = _fingerprinted(rows, hashes, ~known)
    resend = known & (full | ~same)
    changed = _fingerprinted(rows, hashes, resend)
    changed = changed.assign(lms_id=take(state["lms_id"], at[resend], changed.index))
    kept = known & (not full) & same
    unchanged = _where(rows, kept)
    gone = state[~_matched(state["key"], at, rows["key"])]
    dropped = kind in DROPPED_WHEN_REMOVED
    skipped = desired.skipped[~isin(desired.skipped["key"], gone["key"])]
    return Changes(
        kind=kind,
        create=create.reset_index(drop=True),
        update=changed.reset_index(drop=True),
        deactivate=(gone if dropped else gone.iloc[0:0]).reset_index(drop=True),
        unchanged=unchanged.reset_index(drop=True),
        removed=(gone.iloc[0:0] if dropped else gone).reset_index(drop=True),
        skipped=skipped.reset_index(drop=True),
        unchanged_at=at[kept],
    )


OUTCOME_COLUMNS = ["key", "ok", "lms_id", "error"]
OUTCOME_SCHEMA = pa.schema([("key", pa.string()), ("ok", pa.bool_()), ("lms_id", pa.string()), ("error", pa.string())])


def outcome_frame(results: Iterable[ItemResult]) -> pd.DataFrame:
    """The LMS's answers as a table (text kept in arrow: a first night answers millions of items)."""
    rows = [(result.key, result.ok, result.lms_id, result.error) for result in results]
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in OUTCOME_COLUMNS]
    table = pa.table([pa.array(values, field.type) for values, field in zip(columns, OUTCOME_SCHEMA, strict=True)],
                     schema=OUTCOME_SCHEMA)
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def accepted(outcomes: Mapping[str, pd.DataFrame], *actions: str) -> pd.DataFrame:
    """The keys the LMS took for ``actions`` and the ids it gave (the last answer per key wins)."""
    frames = [outcomes[action] for action in actions if action in outcomes and not outcomes[action].empty]
    answers = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (frames[0] if frames else outcome_frame([]))
    taken = _where(answers[["key", "lms_id"]], answers["ok"].to_numpy(dtype=bool))
    return taken if distinct_in_order(taken["key"]) else taken.drop_duplicates("key", keep="last")


def next_state(state: pd.DataFrame, changes: Changes, outcomes: Mapping[str, pd.DataFrame]) -> FrameParts:
    """The state after applying ``changes`` (``outcomes``: the LMS's answers per action, as
    :func:`outcome_frame`): accepted items recorded, failed ones left as they were (so the
    next run tries them again), dropped ones removed. In key order, for ``stage_frame``: the
    state's rows and the changes' are merged as the file is written, not copied into one frame."""
    written, taken_keys = [], []
    for action, frame in (("create", changes.create), ("update", changes.update)):
        taken = accepted(outcomes, action)
        at = positions(frame["key"], taken["key"])
        returned = take(taken["lms_id"], at, frame.index)
        if "lms_id" in frame:  # an update the LMS answered without an id keeps the one it had
            returned = returned.where(returned.notna(), frame["lms_id"])
        written.append((frame.assign(lms_id=returned), at >= 0))
        taken_keys.append(frame["key"][at >= 0])
    taken_keys.append(accepted(outcomes, "deactivate")["key"])
    replaced = np.zeros(len(state), dtype=bool)
    for keys in taken_keys:
        if len(keys) and len(state):
            replaced |= isin(state["key"], keys).to_numpy()
    parts = [(state, ~replaced), *written]
    columns = tuple(empty_state(changes.kind).columns)
    order = in_key_order((frame["key"] for frame, _ in parts), (kept for _, kept in parts))
    if not len(order):
        return FrameParts((empty_state(changes.kind),), order, columns)
    return FrameParts(tuple(frame for frame, _ in parts), order, columns)


def existing_count(changes: Changes, outcomes: dict[str, pd.DataFrame], dry_run: bool) -> int:
    """How many objects of the kind exist in the LMS (in a dry run: would): the rows of the
    result table, counted without making it."""
    created = len(changes.create) if dry_run else len(accepted(outcomes, "create"))
    return created + len(changes.update) + len(changes.unchanged)


def result_table(
    changes: Changes, outcomes: dict[str, pd.DataFrame], state: pd.DataFrame, dry_run: bool,
    terms: pd.DataFrame | None = None, titles: Mapping[str, str] | None = None,
) -> FrameParts | pd.DataFrame:
    """Every object of this kind that exists (or, in a dry run, would) with its LMS id,
    for the steps after this one: the night's parts with their ids, merged in key order as
    the table is staged (a first night has millions of rows). Grading periods (a few rows)
    come whole, with a row per term of the plan's ``terms`` (:func:`plan.with_term_rows`;
    ``titles``: the LMS's titles of the existing periods the map names)."""
    table = _result_parts(changes, outcomes, state, dry_run)
    return table if terms is None else with_term_rows(table.whole(), terms, titles or {})


def _result_parts(changes: Changes, outcomes: dict[str, pd.DataFrame], state: pd.DataFrame,
                  dry_run: bool) -> FrameParts:
    taken = accepted(outcomes, "create", "update")
    parts = [(action, rows) for action, rows in
             (("create", changes.create), ("update", changes.update), ("unchanged", changes.unchanged))
             if not rows.empty] or [("create", changes.create)]
    with_ids = []
    for action, rows in parts:
        # In arrow: a first night has millions. What was not sent keeps the state's id, found
        # where the plan found it; what was sent takes the id the LMS answered with, else (an
        # update may come back without one) the one it had.
        if action == "unchanged":
            lms_ids = text_array(take(state["lms_id"], changes.unchanged_at, rows.index))
        else:
            at = positions(rows["key"], taken["key"])
            lms_ids = (text_array(take(taken["lms_id"], at, rows.index)) if (at >= 0).any()
                       else pa.nulls(len(rows), pa.string()))
            if "lms_id" in rows:
                lms_ids = pc.coalesce(lms_ids, text_array(rows["lms_id"]))
        rows = rows.drop(columns=["lms_id", "fingerprint"], errors="ignore")
        if dry_run:
            pending = pc.binary_join_element_wise(PENDING, text_array(rows["key"]), "")
            lms_ids = pc.coalesce(lms_ids, pending)
        with_ids.append(rows.assign(lms_id=pd.Series(pd.arrays.ArrowExtensionArray(lms_ids), index=rows.index)))
    order = in_key_order((rows["key"] for rows in with_ids),
                              (rows["lms_id"].notna().to_numpy() for rows in with_ids))
    return FrameParts(tuple(with_ids), order, tuple(with_ids[0].columns))
