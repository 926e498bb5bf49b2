# Two commands on a fresh machine:  `make repro` (the main job)  and  `make test`.
# Both set themselves up first (idempotent; skipped when nothing changed).
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test bench gpu-check study study-report clean-runs

setup:
	@bash .ci/setup

# `obcp repro` is `dvc repro` with exit codes 0 done, 2 bad input, 3 waiting for answers (docs/reliability.md);
# make itself exits 2 whenever its recipe fails: scripts that need the code call `obcp repro`
repro: setup
	obcp repro $(ARGS)

test: setup
	python -m pytest -q

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
