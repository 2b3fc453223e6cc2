"""``python -m bench --districts N``: the DAG files at N districts, as the dag-processor and a task see them.

N copies of the demo district's file (each its own ``district``) in a directory of their own; then, each
in a fresh process as Airflow's are, parsed through Airflow's ``DagBag`` (timed as ``airflow dags
report`` times a file): each of the 16 DAG files ``dags/oneroster_districts_NN_of_16.py`` as the
dag-processor parses them (each in a process of its own, in parallel), the task's DAG file with the
parsing context a task's start-up sets (one district's DAG), and ``dags/oneroster_district_errors.py``,
the dag-processor's other file that reads every district file. Each phase counts the district files
it opened and says which heavy modules (pandas, pyarrow, numpy, paramiko, the SFTP/SSH hooks) the
parse imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.measure import PhaseResult
from include.config import (
    DAG_FILE_SHARDS,
    DISTRICTS_DIR,
    DISTRICTS_DIR_ENV,
    dag_id_for,
    shard_file_name,
    shard_of,
)

DAGS = Path(__file__).resolve().parents[1] / "dags"
DAG_FILES = [DAGS / shard_file_name(shard) for shard in range(DAG_FILE_SHARDS)]
ERRORS_FILE = DAGS / "oneroster_district_errors.py"
HEAVY_MODULES = ("pandas", "pyarrow", "numpy", "paramiko", "airflow.providers.sftp.hooks.sftp",
                 "airflow.providers.ssh.hooks.ssh")
# what Airflow's task runner sets before it parses the DAG file (read by airflow.sdk.get_parsing_context)
PARSING_CONTEXT_DAG_ID = "_AIRFLOW_PARSING_CONTEXT_DAG_ID"
PARSING_CONTEXT_TASK_ID = "_AIRFLOW_PARSING_CONTEXT_TASK_ID"


def write_districts(directory: Path, count: int) -> list[str]:
    """``count`` district files, the demo's settings under their own names; their DAG ids in order."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.yaml"):
        stale.unlink()
    demo = (DISTRICTS_DIR / "demo.yaml").read_text(encoding="utf-8")
    if "\ndistrict: demo\n" not in demo:
        raise ValueError("the demo's file no longer names its district on a line 'district: demo' of its own")
    names = [f"district_{index:04d}" for index in range(count)]
    for name in names:
        own = demo.replace("\ndistrict: demo\n", f"\ndistrict: {name}\n", 1)
        (directory / f"{name}.yaml").write_text(own, encoding="utf-8")
    return [dag_id_for(name) for name in names]


def dag_file_of(dag_id: str) -> Path:
    """The DAG file that builds a district's DAG (the DAG's fileloc, which a task's start-up parses)."""
    return DAGS / shard_file_name(shard_of(dag_id.removeprefix(dag_id_for(""))))


def dag_file_parse(districts: str, dag_file: Path, dag_id: str | None = None) -> PhaseResult:
    """Parse ``dag_file`` with ``DagBag`` in this (fresh) process, as the dag-processor does, or with
    ``dag_id`` as a task's start-up does; its records are the DAGs built, its requests the district
    files opened, its seconds the file's parse as ``DagBag`` times it."""
    os.environ[DISTRICTS_DIR_ENV] = districts
    if dag_id is not None:
        os.environ[PARSING_CONTEXT_DAG_ID] = dag_id
        os.environ[PARSING_CONTEXT_TASK_ID] = "first_night"
    from airflow.dag_processing.dagbag import DagBag

    opened: set[str] = set()

    def count_district_files(event: str, arguments: tuple) -> None:
        if event == "open" and isinstance(arguments[0], str) and arguments[0].startswith(districts):
            opened.add(arguments[0])

    sys.addaudithook(count_district_files)  # for the rest of this process, which ends with the phase
    bag = DagBag(dag_folder=str(dag_file))
    if bag.import_errors:
        raise RuntimeError(f"{dag_file.name} did not parse: {bag.import_errors}")
    (stat,) = bag.dagbag_stats
    heavy = [module for module in HEAVY_MODULES if module in sys.modules]
    return PhaseResult(
        f"{'task start-up' if dag_id else 'dag-processor'}: {dag_file.name}",
        records=stat.dag_num, requests=len(opened), seconds=stat.duration.total_seconds(),
        extra={"file": dag_file.name, "tasks": stat.task_num, "heavy_modules": heavy, "dag_ids": sorted(bag.dag_ids)},
    )


def slowest_of(parses: list[PhaseResult]) -> PhaseResult:
    """The dag-processor's parse of every DAG file, one fresh process each, as one result: the DAGs,
    tasks and district files of them all, the slowest file's seconds (the files are parsed in
    parallel, each under its own timeout) and, in ``extra``, every file's seconds and their sum."""
    slowest = max(parses, key=lambda parse: parse.seconds)
    return PhaseResult(
        f"dag-processor: {len(parses)} DAG files (slowest)",
        records=sum(parse.records for parse in parses), requests=sum(parse.requests for parse in parses),
        seconds=slowest.seconds, peak_rss_mib=max(parse.peak_rss_mib for parse in parses),
        extra={"tasks": sum(parse.extra["tasks"] for parse in parses),
               "heavy_modules": sorted({module for parse in parses for module in parse.extra["heavy_modules"]}),
               "dag_ids": sorted(dag_id for parse in parses for dag_id in parse.extra["dag_ids"]),
               "slowest_file": slowest.extra["file"],
               "seconds_per_file": {parse.extra["file"]: parse.seconds for parse in parses},
               "seconds_total": sum(parse.seconds for parse in parses)},
    )
