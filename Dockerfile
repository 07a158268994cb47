# The GPU worker image: the project installed by scripts/setup.sh (the same script as `make` and CI), run as a
# non-root user; by default it starts a Prefect worker for the process pool `gpu` (prefect.yaml, docs/docker.md).
#   docker build -t treegrpo:latest .
#   docker run --gpus all -e PREFECT_API_URL=http://HOST:4200/api -e MLFLOW_TRACKING_URI=http://HOST:5000 treegrpo
# The same image serves a Docker work pool (deployment train-docker): Prefect then runs a flow run in it instead.
# torch's wheels bring their own CUDA 13 libraries (cuDNN included); the base image matches them and sets up the
# NVIDIA container runtime's environment.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ARG DEBIAN_FRONTEND=noninteractive
# python3 (3.12) and venv for setup.sh; git for DVC (stages run in a git checkout) and the runs' commit tags;
# a compiler for the sdists without wheels (fairscale)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev git ca-certificates \
        build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 --user-group --shell /bin/bash treegrpo
WORKDIR /opt/treegrpo

# requirements first: the long install is cached until they change
COPY --chown=treegrpo:treegrpo requirements/ requirements/
COPY --chown=treegrpo:treegrpo scripts/ scripts/
COPY --chown=treegrpo:treegrpo pyproject.toml README.md ./
COPY --chown=treegrpo:treegrpo treegrpo/ treegrpo/
COPY --chown=treegrpo:treegrpo flows/ flows/
RUN mkdir -p /opt/venv && chown treegrpo:treegrpo /opt/venv /opt/treegrpo
USER 10001:10001
RUN VENV=/opt/venv PYTHON=python3 scripts/setup.sh && rm -rf /home/treegrpo/.cache/pip

# the rest of the repository (dvc.yaml, params.yaml, prefect.yaml, data/, .git for DVC)
COPY --chown=treegrpo:treegrpo . .

ENV PATH=/opt/venv/bin:$PATH \
    VENV=/opt/venv \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    PYTHONUNBUFFERED=1

# a worker for the GPU pool; override the pool with: docker run ... treegrpo prefect worker start --pool NAME
CMD ["prefect", "worker", "start", "--pool", "gpu", "--type", "process"]
