# Herald's front door. Every target installs what it needs into .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONPATH := $(CURDIR)/layers/herald:$(CURDIR)
export SAM_CLI_TELEMETRY := 0
# Tests and tools never reach a real AWS account.
export AWS_DEFAULT_REGION ?= us-east-1

FN ?= api
EVENT ?= events/api/get-contact.json
PORT ?= 3000
# Flow delays pass TIME_SCALE times faster (86400: a day in a second) — `make run TIME_SCALE=86400` for the flow demo.
TIME_SCALE ?= 1
ENV ?= default

.PHONY: run test lint types template unit integration e2e bench build deploy invoke clean venv

venv: $(STAMP)
$(STAMP): requirements-dev.txt layers/herald/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

## run: start Herald on the embedded AWS (API on http://127.0.0.1:$(PORT))
run: $(STAMP)
	$(BIN)/python -m local run --port $(PORT) --time-scale $(TIME_SCALE)

## test: lint + types + template checks + sam build + every test tier
test: lint types template build
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

template: $(STAMP)
	$(BIN)/sam validate --lint --template template.yaml
	$(BIN)/cfn-lint template.yaml

build: $(STAMP)
	$(BIN)/sam build --template template.yaml

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit
integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration
e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e

## bench: run every benchmark in bench/ (prints figures and JSON lines); BENCH=name runs one
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

## deploy: sam build, then deploy with the samconfig environment ENV (default, prod)
deploy: build
	$(BIN)/sam deploy --config-env $(ENV)

## invoke: run one function on one event against the embedded AWS
invoke: $(STAMP)
	$(BIN)/python -m local invoke $(FN) $(EVENT)

clean:
	rm -rf .aws-sam .mypy_cache .ruff_cache .pytest_cache .hypothesis
