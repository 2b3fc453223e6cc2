"""Lists the district files that do not validate among the Airflow UI's DAG import errors, and the
district DAG files missing from this folder.

Each bad file, with its fields and problems, is raised as this file's import error, so the
"Dag Import Errors" banner names it. It is kept apart from the ``oneroster_districts_NN_of_16.py``
files because Airflow marks every DAG of a file with an import error stale: raised there, one
district's typo would switch off every district of that file. They still build the bad district's
DAG, which fails every run and emails the district. A shard file missing (a deployment that copied
only some) would leave its districts without a DAG, silently: it is raised here, naming the file and
the districts it would build.
"""

from __future__ import annotations

from pathlib import Path

from include.config import (
    DAG_FILE_SHARDS,
    district_of_file,
    districts_dir,
    load_districts,
    shard_file_name,
    shard_of,
)


class InvalidDistrictFiles(ValueError):
    """District files that do not validate, or district DAG files missing; the message names each."""


def _missing_shard_files() -> list[str]:
    """Each missing DAG file, with the districts whose DAG it would build (the districts directory is
    listed again only when a file is missing)."""
    here = Path(__file__).parent
    missing = {shard: shard_file_name(shard) for shard in range(DAG_FILE_SHARDS)
               if not (here / shard_file_name(shard)).exists()}
    if not missing:
        return []
    districts = sorted({district_of_file(path) for path in districts_dir().glob("*.yaml")})
    return [f"dags/{name} is missing, so these districts have no DAG: "
            + (", ".join(district for district in districts if shard_of(district) == shard) or "none yet")
            for shard, name in missing.items()]


_, _errors = load_districts()
_problems = _missing_shard_files()
if _errors:
    _problems.append(f"{len(_errors)} district file(s) invalid; each district's DAG fails every run until its "
                     "file is fixed: " + " | ".join(map(str, _errors)))
if _problems:
    raise InvalidDistrictFiles(" | ".join(_problems))
