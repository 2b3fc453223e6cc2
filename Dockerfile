# The DAG package on the official Airflow image of the pinned version.
FROM apache/airflow:3.3.2-python3.11

# The image carries Airflow's own constraints; requirements.txt pins the rest.
COPY --chown=airflow:root requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==3.3.2" -r /opt/airflow/requirements.txt

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/

# One import root for dags/, plugins/ and include/, as `make` sets it locally.
ENV PYTHONPATH=/opt/airflow \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
