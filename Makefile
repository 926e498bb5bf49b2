# Two commands on a fresh machine:  `make repro` (the main job)  and  `make test`.
# Both set themselves up first (idempotent; skipped when nothing changed): `repro` installs only
# what the pipeline needs (.ci/setup); `test` adds the tests' system packages (.ci/setup-test).
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
# Python writes its bytecode caches (__pycache__/, ignored by git and DVC) for what make runs:
# with PYTHONDONTWRITEBYTECODE set, as on some CI images, and the set-up's `--no-compile`, every
# process would compile torch, DVC and pandas from source again (docs/setup-and-tests.md).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: setup setup-test repro test docs bench gpu-check study study-report clean-runs

setup:
	@bash .ci/setup

setup-test: setup
	@bash .ci/setup-test

# `obcp repro` is `dvc repro` with exit codes 0 done, 2 bad input, 3 waiting for answers (docs/reliability.md);
# make itself exits 2 whenever its recipe fails: scripts that need the code call `obcp repro`
repro: setup
	obcp repro $(ARGS)

# One pytest worker per core (pytest-xdist); a file's tests stay on one worker, so its module
# fixtures are built once. TEST_ARGS adds pytest options, e.g. TEST_ARGS=--durations=30.
test: setup-test
	python -m pytest -q -n auto --dist loadfile $(TEST_ARGS)

# Regenerate docs/parameters.md, docs/cli.md and the README's and docs' tables from the code and the
# committed reports, then build the site into site/ (offline; `mkdocs serve` previews it)
docs: setup
	python -m pipeline.tools.docs
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet

bench: setup
	obcp bench

gpu-check: setup
	obcp gpu-check

# The study grid (pipeline/tools/study/study.yaml): resumable, hours on CPU; then reports/study.md
study: setup
	obcp study run
	obcp study report

study-report: setup
	obcp study report

clean-runs:
	rm -rf data/runs reports/ledger/seed* reports/metrics/seed*
