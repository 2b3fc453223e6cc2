"""One read of a collection, checked: every record once, and a count that adds up.

A server pages by offset, and a collection that changes while it is paged shifts under the
reader: a record can be served twice and another not at all. A server's total (X-Total-Count)
tells when something went missing; records served twice show that the collection moved even
when no total is sent. A read that shows either is read again (:data:`READS_PER_EXTRACT` in
all); whatever read is kept, each sourcedId is staged once, its newest ``dateLastModified``
winning, and what was dropped or did not add up is counted for the manifest and the sync report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

READS_PER_EXTRACT = 3  # a read that moved under the reader is read again, this many reads in all


@dataclass(frozen=True)
class ReadCheck:
    """What one read was told and given: the server's total (None: it sends none), the records
    served (staged or quarantined) and the distinct sourcedIds among the staged ones."""

    server_total: int | None
    served: int
    staged: int
    distinct: int

    @property
    def duplicates(self) -> int:
        """Staged records whose sourcedId an other staged record has too (all but one are dropped)."""
        return self.staged - self.distinct

    @property
    def settled(self) -> bool:
        """Nothing moved: no record served twice, and as many served as the server said it had."""
        return self.duplicates == 0 and self.server_total in (None, self.served)

    def describe(self) -> str:
        parts = []
        if self.duplicates:
            parts.append(f"{self.duplicates} record(s) served twice")
        if self.server_total not in (None, self.served):
            parts.append(f"the server said {self.server_total} record(s) and served {self.served}")
        return "; ".join(parts) or "settled"


def check_read(ids: pa.ChunkedArray | pa.Array, served: int, server_total: int | None) -> ReadCheck:
    """The check of a read whose staged sourcedIds are ``ids``."""
    return ReadCheck(server_total, served, len(ids), pc.count_distinct(ids).as_py() if len(ids) else 0)


def superseded(ids: pa.ChunkedArray | pa.Array, modified: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Which rows another row of the same sourcedId supersedes: the row with the newest
    ``modified`` stays (a missing date is the oldest; of equal dates, the last served)."""
    count = len(ids)
    rows = pa.table({"id": ids, "modified": modified, "row": pa.array(np.arange(count))})
    order = pc.sort_indices(rows, sort_keys=[("id", "ascending"), ("modified", "ascending", "at_start"),
                                             ("row", "ascending")]).to_numpy()
    ordered_ids = rows.column("id").take(order).combine_chunks()
    last_of_id = np.ones(count, dtype=bool)
    if count > 1:
        last_of_id[:-1] = pc.not_equal(ordered_ids.slice(0, count - 1), ordered_ids.slice(1)).to_numpy(
            zero_copy_only=False)
    dropped = np.ones(count, dtype=bool)
    dropped[order[last_of_id]] = False
    return dropped
