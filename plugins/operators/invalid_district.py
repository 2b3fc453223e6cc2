"""The one task of a district whose file failed validation: fail, naming the file and fields.

A district file with a typo must not quietly stop that district's nights (nor, through an import
error, every district's: see ``dags/oneroster_district_errors.py``). Its DAG keeps its id and
schedule and runs this task instead of a sync; it fails without retrying, so the district's
failure email carries what to fix every night until the file is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException


class InvalidDistrictFileOperator(BaseOperator):
    """Fails for good with the district file's problems; nothing is read or written."""

    template_fields: Sequence[str] = ()
    ui_color = "#f4a6a6"

    def __init__(self, *, file: str, problems: list[str], **kwargs):
        super().__init__(retries=0, **kwargs)
        self.file = file
        self.problems = problems

    def execute(self, context: Context) -> None:
        raise AirflowFailException(
            f"The district file {self.file} is invalid, so this district was not synced: "
            + "; ".join(self.problems)
            + ". Fix the file; the next run syncs as usual."
        )
