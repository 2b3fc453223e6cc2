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

from include.lms.target import ITEM_TYPES, ItemResult, ObjectKind
from include.provisioning.plan import (
    Desired,
    flatten,
    isin,
    item_fields,
    plain,
    positions,
    sorted_by_key,
    take,
)

DROPPED_WHEN_REMOVED: frozenset[ObjectKind] = frozenset({"enrollment", "guardian_link"})
STATE_COLUMNS = ["key", "school", "fingerprint", "lms_id"]
HASH_SLICE = 500_000


def empty_state(kind: ObjectKind) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in [*STATE_COLUMNS, *item_fields(kind)[1:]]})


def _joined(values: pd.Series) -> pd.Series:
    """Each list as its sorted items joined by ``|``, sorted and joined by arrow, not per row."""
    parents, items = flatten(values)
    order = np.lexsort((pd.factorize(items.to_numpy(zero_copy_only=False), sort=True)[0], parents))
    sizes = np.bincount(parents, minlength=len(values))
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]), pa.int64())
    lists = pa.LargeListArray.from_arrays(offsets, pc.cast(items.take(order), pa.large_string()))
    joined = pc.binary_join(lists, pa.scalar("|", pa.large_string()))
    return pd.Series(pa.chunked_array([joined]).to_pandas().array, index=values.index)


def _as_text(values: pd.Series, is_list: bool) -> pd.Series | pd.Categorical:
    """``str(value)`` per row (a missing value as ``None``), computed once per distinct value."""
    if is_list:
        return _joined(values)
    if pd.api.types.is_string_dtype(values.dtype) and not isinstance(values.dtype, pd.CategoricalDtype):
        return values.astype(object).where(values.notna(), "None") if values.hasnans else values
    codes, uniques = pd.factorize(values)
    texts = pd.Index([str(value) for value in uniques] + ["None"], dtype=object)
    text_codes, distinct = pd.factorize(texts)
    return pd.Categorical.from_codes(text_codes[codes], categories=pd.Index(distinct, dtype=object))


def _text_hashes(text: pd.Series | pd.Categorical) -> np.ndarray:
    """``hash_array`` of each row's text: per category, or in slices so that only one slice
    of a column of millions of distinct keys is ever Python strings at a time."""
    if isinstance(text, pd.Categorical):
        hashed = pd.util.hash_array(np.asarray(text.categories, dtype=object), categorize=False)
        return hashed[text.codes]
    return np.concatenate([
        pd.util.hash_array(text.iloc[start:start + HASH_SLICE].to_numpy(dtype=object), categorize=False)
        for start in range(0, len(text), HASH_SLICE)
    ])


def _combined(hashes: list[np.ndarray]) -> np.ndarray:
    """Row hashes from column hashes, as ``pd.util.hash_pandas_object`` combines a frame's."""
    mult = np.uint64(1000003)
    out = np.zeros_like(hashes[0]) + np.uint64(0x345678)
    for position, column in enumerate(hashes):
        inverse = len(hashes) - position
        out ^= column
        out *= mult
        mult += np.uint64(82520 + inverse + inverse)
    return out + np.uint64(97531)


def fingerprint(rows: pd.DataFrame, kind: ObjectKind) -> pd.Series:
    """A stable hash of the fields the LMS receives; lists are compared as sorted values.

    ``pd.util.hash_pandas_object`` of ``str(value)`` per field, as it has always been (a state
    written before keeps its fingerprints), but each distinct value is turned into text once
    (an enrollment's section and user repeat over millions of rows) and distinct keys are
    hashed a slice at a time.
    """
    fields = ITEM_TYPES[kind].model_fields
    if rows.empty:
        return pd.Series(dtype=str, index=rows.index)
    hashes = _combined([
        _text_hashes(_as_text(rows[name], get_origin(field.annotation) is list))
        for name, field in fields.items()
    ])
    text = pa.chunked_array([pc.cast(pa.array(hashes), pa.string())]).to_pandas()
    return pd.Series(text.array, index=rows.index)


@dataclass(frozen=True)
class Changes:
    kind: ObjectKind
    create: pd.DataFrame
    update: pd.DataFrame
    deactivate: pd.DataFrame
    unchanged: pd.DataFrame
    removed: pd.DataFrame  # gone from IC, kept in the LMS and reported
    skipped: pd.DataFrame

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


def plan_changes(desired: Desired, state: pd.DataFrame, *, full: bool = False) -> Changes:
    """``full`` re-sends every object that exists (the vendors' "request full run"), e.g. after
    someone changed the LMS by hand; deactivations still follow the state."""
    kind = desired.kind
    rows = desired.rows.assign(fingerprint=fingerprint(desired.rows, kind))
    at = positions(rows["key"], state["key"])
    known = at >= 0
    same = known & (take(state["fingerprint"], at, rows.index) == rows["fingerprint"]).to_numpy(dtype=bool)
    create = _where(rows, ~known)
    resend = known & (full | ~same)
    changed = _where(rows, resend)
    changed = changed.assign(lms_id=take(state["lms_id"], at[resend], changed.index))
    unchanged = _where(rows, known & (not full) & same)
    gone = state[~isin(state["key"], rows["key"])]
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
    frames = [outcomes[action] for action in actions if action in outcomes]
    answers = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (frames[0] if frames else outcome_frame([]))
    taken = answers.loc[answers["ok"].to_numpy(dtype=bool), ["key", "lms_id"]]
    return taken.drop_duplicates("key", keep="last")


def next_state(state: pd.DataFrame, changes: Changes, outcomes: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The state after applying ``changes`` (``outcomes``: the LMS's answers per action, as
    :func:`outcome_frame`): accepted items recorded, failed ones left as they were (so the
    next run tries them again), dropped ones removed."""
    written = []
    for action, frame in (("create", changes.create), ("update", changes.update)):
        taken = accepted(outcomes, action)
        ok = frame[isin(frame["key"], taken["key"])].copy()
        returned = take(taken["lms_id"], positions(ok["key"], taken["key"]), ok.index)
        ok["lms_id"] = returned.where(returned.notna(), ok.get("lms_id"))
        written.append(ok)
    replaced = pd.concat([*(frame["key"].astype(object) for frame in written),
                          accepted(outcomes, "deactivate")["key"]], ignore_index=True)
    kept = state[~isin(state["key"], replaced)]
    columns = list(empty_state(changes.kind).columns)
    frames = [frame.reindex(columns=columns) for frame in (kept, *written) if not frame.empty]
    if not frames:
        return empty_state(changes.kind)
    state = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return plain(sorted_by_key(state)).reset_index(drop=True)
