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

# The last pip install is the project itself, for its Airflow provider entry point alone
# (pyproject.toml: the connection types infinite_campus_oneroster and schoology, their forms and
# Test button): it installs no package, the code is imported from here through PYTHONPATH.
$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check \
		-r requirements.txt -r requirements-dev.txt -c constraints.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps .
	rm -rf build *.egg-info  # the build's leftovers (an egg-info here would list the project twice)
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
	{ sed -n '1,2p' constraints.txt; $(VENV)/bin/pip freeze --exclude pip --exclude setuptools --exclude wheel --exclude oneroster-airflow; } > constraints.new
	mv constraints.new constraints.txt

clean:
	rm -rf $(VENV) .airflow .pytest_cache
