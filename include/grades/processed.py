"""Which grade exports were processed: one list per district in the state (name, mtime, run id),
read by the export sensor to wait past them and written by the reconciliation once a file is done."""

from __future__ import annotations

from typing import Any

import pandas as pd

from include.staging import district_state_path, read_frame, stage_frame


def last_export_path(staging_root: str, district: str):
    """The exports processed (name, mtime, run_id), oldest first: one list per district, whatever
    the school year."""
    return district_state_path(staging_root, district, "grades/last_export")


def processed_exports(staging_root: str, district: str) -> pd.DataFrame:
    path = last_export_path(staging_root, district)
    history = read_frame(path) if path.exists() else pd.DataFrame(columns=["name", "mtime", "run_id"])
    if "run_id" not in history.columns:  # written before runs were recorded
        history["run_id"] = None
    return history


def mark_processed(staging_root: str, district: str, source: dict[str, Any], run_id: str,
                   keep: int = 100) -> None:
    """Record ``source`` as the export ``run_id`` processed (once per run: a re-run replaces its entry)."""
    history = processed_exports(staging_root, district)
    history = history[history["run_id"] != run_id]
    entry = pd.DataFrame({"name": [source["name"]], "mtime": [float(source["mtime"])], "run_id": [run_id]})
    history = pd.concat([history, entry], ignore_index=True).tail(keep).reset_index(drop=True)
    stage_frame(last_export_path(staging_root, district), history.astype({"name": str, "mtime": float,
                                                                           "run_id": object}))
