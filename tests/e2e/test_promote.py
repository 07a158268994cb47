"""The promotion habit against a shared `mlflow server` on 127.0.0.1: `treegrpo register` then `treegrpo promote`
moves `champion` to a better version, refuses a worse one (exit 1, champion unchanged), and accepts a forced one
with its reason recorded as tags. (The same weights registered twice, --force without a reason: see
tests/integration/test_registry.py.)"""

import json

import pytest
import torch
import yaml
from safetensors.torch import save_file

from tests.conftest import REPO
from tests.e2e.conftest import e2e_env, free_port, server
from treegrpo.cli import main

pytestmark = pytest.mark.e2e

PROMPTS = ["a red cube on a table", "a green forest at dawn"]


def fake_outputs(work, name: str, jpeg: float, seed: int) -> str:
    """A trained LoRA (random weights), its evaluation and history under work/name; returns its params file."""
    root = work / name
    (root / "train" / "lora").mkdir(parents=True)
    g = torch.Generator().manual_seed(seed)
    save_file({"transformer.x.lora_A.weight": torch.randn(4, 8, generator=g)},
              str(root / "train" / "lora" / "pytorch_lora_weights.safetensors"))
    (root / "train" / "history.json").write_text(json.dumps([{"iteration": i, "reward_mean": jpeg + i / 10}
                                                             for i in range(3)]))
    stats = {"jpeg_compressibility": {"mean": jpeg, "sem": 0.01}, "color_fraction": {"mean": 0.3, "sem": 0.02}}
    base = {k: {"mean": v["mean"] - 0.1, "sem": v["sem"]} for k, v in stats.items()}
    (root / "eval").mkdir()
    (root / "eval" / "metrics.json").write_text(json.dumps({"n_prompts": 2, "base": base, "trained": stats}))
    (root / "eval" / "table.md").write_text(f"| Model | JPEG |\n|---|---|\n| trained | {jpeg} |\n")
    (root / "eval" / "scores.jsonl").write_text("".join(
        json.dumps({"model": m, "index": i, "seed": i, "prompt": p}) + "\n"
        for m in ("base", "trained") for i, p in enumerate(PROMPTS)))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["output_dir"], raw["eval"]["output_dir"] = str(root / "train"), str(root / "eval")
    raw["eval"]["lora"], raw["tracking"]["output_dir"] = str(root / "train" / "lora"), str(root / "register")
    raw["eval"]["rewards"] = ["jpeg_compressibility", "color_fraction"]
    raw["tracking"]["primary_reward"] = "jpeg_compressibility"
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return str(root / "params.yaml")


def test_promote_against_an_mlflow_server(tmp_path, monkeypatch, capsys):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    for key, value in (("MLFLOW_TRACKING_URI", uri), ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
                       ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
        monkeypatch.setenv(key, value)  # what a shared server's users export
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    cmd = ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}", "--artifacts-destination", str(store / "art")]
    good, worse, best = (fake_outputs(tmp_path, n, j, s) for n, j, s in
                         (("good", -3.0, 1), ("worse", -3.5, 2), ("best", -2.5, 3)))

    def treegrpo(*args, code=0):
        """The `treegrpo` command in this process (the CLI's own entry point; no interpreter start each time)."""
        assert main(list(args)) == code
        return capsys.readouterr().out

    with server(cmd, f"{uri}/health", tmp_path, e2e_env(), tmp_path / "mlflow.log"):
        assert "version 1 (alias candidate)" in treegrpo("register", "--params", good)
        assert "first champion" in treegrpo("promote", "--params", good)

        treegrpo("register", "--params", worse)  # version 2, now the candidate
        assert "does not beat champion version 1" in treegrpo("promote", "--params", worse, code=1)

        forced = treegrpo("promote", "--params", worse, "--force", "--reason", "rollback drill")
        assert "forced: version 2 is now champion" in forced

        treegrpo("register", "--params", best)  # version 3
        assert "version 3 is now champion" in treegrpo("promote", "--params", best)

        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        v2 = client.get_model_version("treegrpo-lora", "2")
        assert v2.tags["promotion_forced"] == "True" and v2.tags["promotion_reason"] == "rollback drill"
        assert v2.tags["previous_champion"] == "1"
        v3 = client.get_model_version_by_alias("treegrpo-lora", "champion")
        assert v3.version == "3" and v3.tags["previous_champion"] == "2" and v3.tags["promotion_forced"] == "False"
        assert v3.tags["eval.jpeg_compressibility"] == repr(-2.5)
        assert len(client.search_model_versions("name = 'treegrpo-lora'")) == 3
