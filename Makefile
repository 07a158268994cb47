# The two things a new user does (README quick start), plus helpers. Both targets set up .venv first (idempotent).
VENV ?= .venv
BIN := $(VENV)/bin
# DVC stages call `treegrpo` and `dvc`: put the environment first on PATH
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE ?= 1
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true

.PHONY: setup run test lint docs mlflow-ui gpu-worker
setup:
	@scripts/setup.sh

# Run the whole DVC pipeline on params.yaml (the embedded default as shipped).
run: setup
	$(BIN)/dvc repro

# Everything that can run on this machine (GPU tests skip themselves without a GPU).
test: setup
	$(BIN)/python -m pytest -p no:cacheprovider tests

lint: setup
	$(BIN)/ruff check treegrpo flows tests

# The documentation site (mkdocs.yml, docs/) on http://127.0.0.1:8000, rebuilt on every edit; `mkdocs build
# --strict` is what the suite checks (tests/integration/test_docs.py).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

# The MLflow UI on the local store (tracking.uri's default): runs, the registry, aliases.
mlflow-ui: setup
	mkdir -p mlruns && $(BIN)/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1 --port 5000

# A GPU host in one command: Prefect server (background), the process pool `gpu`, the deployment, a worker.
gpu-worker: setup
	scripts/prefect_gpu.sh up
