# The integration alone on the official Airflow image of the pinned version: dags/, plugins/
# and include/ without the sandbox (the emulators, the demo runner) and without any district
# file (a deployment mounts or copies in its own: README, Deployment). No tests, benchmark or
# demo settings; .dockerignore keeps them out of the build context as well.
# tests/test_image.py checks what lands here, without Docker.
FROM apache/airflow:3.3.2-python3.11

# The versions CI tested: requirements.txt (the runtime only) with every transitive version
# pinned by constraints.txt; Airflow named too, so pip cannot move it off the image's own.
# pip check fails the build if that leaves a package the image had without what it needs.
COPY --chown=airflow:root requirements.txt constraints.txt /opt/airflow/
RUN pip install --no-cache-dir "apache-airflow==3.3.2" \
        -r /opt/airflow/requirements.txt -c /opt/airflow/constraints.txt \
    && pip check

# The project itself, for its Airflow provider entry point alone (pyproject.toml: the connection
# types infinite_campus_oneroster and schoology, their forms and Test button). It installs no
# package and no dependency: the code below is imported through PYTHONPATH, as everywhere.
COPY --chown=airflow:root pyproject.toml /opt/airflow/
RUN pip install --no-cache-dir --no-deps /opt/airflow \
    && rm -rf /opt/airflow/build /opt/airflow/*.egg-info

COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
# include/ one package at a time: not include/sandbox/, not include/districts/.
COPY --chown=airflow:root include/*.py /opt/airflow/include/
COPY --chown=airflow:root include/grades/ /opt/airflow/include/grades/
COPY --chown=airflow:root include/lms/ /opt/airflow/include/lms/
COPY --chown=airflow:root include/oneroster/ /opt/airflow/include/oneroster/
COPY --chown=airflow:root include/provisioning/ /opt/airflow/include/provisioning/

# One import root for dags/, plugins/ and include/, as `make` sets it locally.
ENV PYTHONPATH=/opt/airflow \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
