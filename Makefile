# Two commands on a fresh machine:  make demo  |  make test
# Everything else here is what those two need.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Test files run in parallel, one worker each at a time; most of their time is spent waiting on
# Airflow, the emulators and real retry delays, not on the CPU.
TEST_WORKERS ?= 2
# One import root for dags/, plugins/ and include/ under pytest, `airflow dags test`,
# the scheduler and the image alike (the Dockerfile sets the same).
export PYTHONPATH := $(CURDIR)

.PHONY: demo test settings constraints clean

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r requirements-dev.txt -c constraints.txt
	touch $@

## Run the demo districts' DAGs end to end against local emulators (OneRoster 1.2 and 1.1).
demo: $(VENV)/.installed
	$(PY) -m include.sandbox.demo

## Run the whole test suite (what CI runs).
test: $(VENV)/.installed
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

## Load airflow_settings.yaml (connections, pools, variables) into the Airflow at $$AIRFLOW_HOME.
settings: $(VENV)/.installed
	$(PY) -m include.settings airflow_settings.yaml

## Re-pin every transitive dependency after changing requirements*.txt.
constraints: $(VENV)/.installed
	{ sed -n '1,2p' constraints.txt; $(VENV)/bin/pip freeze --exclude pip --exclude setuptools --exclude wheel; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) .airflow .pytest_cache
