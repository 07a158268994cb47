"""Shared test setup: no hub calls (a hidden download fails fast instead of hanging), few threads, tiny models."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# runs that tests start log to a throwaway store, never to the repository's mlruns/
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp(prefix='treegrpo-mlflow-')}/mlflow.db")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_PROMPTS = REPO.parent / "shared" / "data" / "hpdv2" / "prompts_test.txt"
# the bundled HPDv2-style sample with a hash split: what the data tests read (params.yaml reads the world's files)
SAMPLE_DATA = {"source": "local", "path": "data/sample/prompts.jsonl", "eval_source": "split", "eval_path": None}


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A tiny SD3.5-architecture pipeline saved in diffusers format, built once per test session."""
    from treegrpo.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd3", size="tiny", seed=0)


def make_params(tiny_dir: Path, out_dir: Path, **overrides):
    """params.yaml as shipped, pointed at `tiny_dir` and `out_dir`, with dotted overrides (`train__iterations=2`).

    The reward is JPEG compressibility unless overridden: these tests train the tiny random-weight model on prompts
    outside the world's grammar, which the shipped `composition` reward refuses. The learning rate is 1e-2, the one
    chosen on that model (the shipped 1e-3 was chosen on the pretrained world)."""
    import yaml

    from treegrpo.config import parse_params
    from treegrpo.config.base import set_dotted

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"]["pretrained"] = str(tiny_dir)
    raw["train"]["output_dir"] = str(out_dir)
    raw["reward"]["weights"] = {"jpeg_compressibility": 1.0}
    raw["train"]["learning_rate"] = 1e-2
    for dotted, value in overrides.items():
        set_dotted(raw, dotted.replace("__", "."), value, "make_params")
    return parse_params(raw), raw
