"""The plan as changes: what to create, update or deactivate against the last provisioned state.

The state of a kind is a table of what this integration provisioned and the LMS accepted:
the item's fields, a fingerprint of them, and the LMS id. Comparing fingerprints sends
nothing for unchanged objects. What IC no longer has is handled as the vendors do: users,
courses and the rest stay in the LMS and are reported; enrollments and guardian links
are dropped. Objects the LMS holds that this integration never created (a course admin
added by hand) are not in the state and so are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from include.lms.target import ItemResult, ObjectKind
from include.provisioning.plan import Desired, item_fields

DROPPED_WHEN_REMOVED: frozenset[ObjectKind] = frozenset({"enrollment", "guardian_link"})
STATE_COLUMNS = ["key", "school", "fingerprint", "lms_id"]


def empty_state(kind: ObjectKind) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in [*STATE_COLUMNS, *item_fields(kind)[1:]]})


def fingerprint(rows: pd.DataFrame, kind: ObjectKind) -> pd.Series:
    """A stable hash of the fields the LMS receives; lists are compared as sorted values."""
    fields = item_fields(kind)
    if rows.empty:
        return pd.Series(dtype=str, index=rows.index)
    text = pd.DataFrame(
        {
            field: rows[field].map(lambda value: "|".join(map(str, sorted(value))) if isinstance(value, list) else str(value))
            for field in fields
        },
        index=rows.index,
    )
    return pd.util.hash_pandas_object(text, index=False).astype(str)


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


def plan_changes(desired: Desired, state: pd.DataFrame, *, full: bool = False) -> Changes:
    """``full`` re-sends every object that exists (the vendors' "request full run"), e.g. after
    someone changed the LMS by hand; deactivations still follow the state."""
    kind = desired.kind
    rows = desired.rows.copy()
    rows["fingerprint"] = fingerprint(rows, kind)
    known = state.set_index("key")
    previous = rows["key"].map(known["fingerprint"]) if not known.empty else pd.Series(None, index=rows.index)
    create = rows[previous.isna()]
    same = previous == rows["fingerprint"]
    changed = rows[previous.notna() & (full | ~same)].copy()
    changed["lms_id"] = changed["key"].map(known["lms_id"]) if not known.empty else None
    unchanged = rows[previous.notna() & ~full & same]
    gone = state[~state["key"].isin(rows["key"])]
    dropped = kind in DROPPED_WHEN_REMOVED
    skipped = desired.skipped[~desired.skipped["key"].isin(gone["key"])]
    return Changes(
        kind=kind,
        create=create.reset_index(drop=True),
        update=changed.reset_index(drop=True),
        deactivate=(gone if dropped else gone.iloc[0:0]).reset_index(drop=True),
        unchanged=unchanged.reset_index(drop=True),
        removed=(gone.iloc[0:0] if dropped else gone).reset_index(drop=True),
        skipped=skipped.reset_index(drop=True),
    )


def next_state(state: pd.DataFrame, changes: Changes, results: dict[str, list[ItemResult]]) -> pd.DataFrame:
    """The state after applying ``changes``: accepted items recorded, failed ones left as they
    were (so the next run tries them again), dropped ones removed."""
    accepted = {
        action: {result.key: result.lms_id for result in results.get(action, []) if result.ok}
        for action in ("create", "update", "deactivate")
    }
    written = []
    for action, frame in (("create", changes.create), ("update", changes.update)):
        ok = frame[frame["key"].isin(list(accepted[action]))].copy()
        returned = ok["key"].map(accepted[action])
        ok["lms_id"] = returned.where(returned.notna(), ok.get("lms_id"))
        written.append(ok)
    replaced = set().union(*(set(frame["key"]) for frame in written), accepted["deactivate"])
    kept = state[~state["key"].isin(replaced)]
    columns = list(empty_state(changes.kind).columns)
    frames = [frame.reindex(columns=columns) for frame in (kept, *written) if not frame.empty]
    if not frames:
        return empty_state(changes.kind)
    return pd.concat(frames, ignore_index=True).sort_values("key", kind="stable").reset_index(drop=True)
