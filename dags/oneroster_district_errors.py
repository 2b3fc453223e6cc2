"""Lists the district files that do not validate among the Airflow UI's DAG import errors.

Each bad file, with its fields and problems, is raised as this file's import error, so the
"Dag Import Errors" banner names it. It is kept apart from ``oneroster_districts.py`` because
Airflow marks every DAG of a file with an import error stale: raised there, one district's typo
would switch off every district's DAG. That file still builds the bad district's DAG, which
fails every run and emails the district.
"""

from __future__ import annotations

from include.config import load_districts


class InvalidDistrictFiles(ValueError):
    """One or more district files do not validate; the message names each file and field."""


_, _errors = load_districts()
if _errors:
    raise InvalidDistrictFiles(
        f"{len(_errors)} district file(s) invalid; each district's DAG fails every run until its file is fixed: "
        + " | ".join(map(str, _errors))
    )
