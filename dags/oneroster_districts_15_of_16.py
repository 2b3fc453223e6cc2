"""Airflow DAG file: the DAGs of the districts of this file's shard, the number in its name.

The district DAGs are spread over 16 such files, all alike, so that each one's parse stays short
with hundreds of districts (``include.config.shard_of`` says which file builds which district's
DAG); ``dags/district_dags.py`` builds them.
"""

from dags.district_dags import register_shard

register_shard(__file__, globals())
