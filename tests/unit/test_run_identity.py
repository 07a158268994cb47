""""The same run", said once: the train stage of dvc.yaml covers what the fingerprint covers; a checkpoint past the
requested end is never a resume point; an MLflow run key changes with the trajectory and the end."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from treegrpo.config import load_params, to_dict
from treegrpo.rewards import REWARD_NAMES
from treegrpo.training import run_identity


@pytest.fixture(scope="module")
def train_stage() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _covered(dotted: str, named: list[str]) -> bool:
    return any(dotted == n or dotted.startswith(n + ".") for n in named)


def test_the_train_stage_params_cover_every_fingerprinted_key(train_stage):
    """`dvc exp run -S baselines.group_size=8` must re-run training: every key the fingerprint hashes is a param."""
    named = [p for p in train_stage["params"] if isinstance(p, str)]
    hashed = list(_leaves(run_identity.fingerprinted_params(load_params(REPO / "params.yaml"))))
    assert {k.split(".")[0] for k in hashed} == set(run_identity.TRAINING_SECTIONS)
    missing = [k for k in hashed if not _covered(k, named)]
    assert not missing, f"dvc.yaml's train stage lacks params {missing}"
    # and the keys that move the end (or the grids) re-run it too, where the trainer then resumes
    assert all(_covered(f"train.{k}", named) for k in run_identity.RESUMABLE_KEYS)


def _resolve(dep: str, raw: dict) -> str:
    def value(match):
        node = raw
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    return re.sub(r"\$\{([^}]+)\}", value, dep)


def test_the_train_stage_deps_cover_the_fingerprinted_code_prompts_and_model(train_stage):
    """Every module the fingerprint hashes, for any reward training may use, is a dep (itself or its folder); so are
    the prompts and the base model the shipped params train on."""
    from treegrpo.rewards.registry import REWARDS

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    deps = [Path(_resolve(d, raw)) for d in train_stage["deps"]]
    code = run_identity.training_code([REWARDS[name] for name in REWARD_NAMES])
    assert "treegrpo.rewards.weight_free" in code and "treegrpo.rewards.clip" in code
    for name in code:
        file = run_identity.module_file(name).resolve().relative_to(REPO)
        assert any(file == d or d in file.parents for d in deps), f"dvc.yaml's train stage lacks a dep on {file}"
    assert Path(raw["data"]["validated_dir"]) in deps  # the prompts
    assert Path(raw["model"]["pretrained"]) in deps  # the base model's files


def test_a_run_resumes_only_its_own_checkpoints_at_or_below_its_end():
    me = run_identity.RunIdentity("abc", 4)
    assert me.resumes("abc", 0) and me.resumes("abc", 4)
    assert not me.resumes("abc", 40)  # a longer run's model is never this run's answer
    assert not me.resumes("other", 2) and not me.resumes(None, 2)


def test_the_run_key_is_the_trajectory_and_the_end():
    p = load_params(REPO / "params.yaml")
    fp = run_identity.params_fingerprint
    assert fp(p) == fp(dataclasses.replace(p, train=dataclasses.replace(p.train, iterations=4, sample_every=3)))
    assert fp(p) != fp(dataclasses.replace(p, baselines=dataclasses.replace(p.baselines, group_size=8)))
    assert fp(p) != fp(dataclasses.replace(p, reward=dataclasses.replace(p.reward, batch_size=3)))
    assert fp(p) != fp(p, prompts=["a cat"]) != fp(p, model="other bytes")
    assert fp(p) == fp(dataclasses.replace(p, eval=dataclasses.replace(p.eval, seed=5)))  # eval is not training
    assert run_identity.RunIdentity("abc", 4).key != run_identity.RunIdentity("abc", 40).key
    assert "train" in to_dict(p) and set(run_identity.TRAINING_SECTIONS) <= set(to_dict(p))


def test_the_reward_modules_are_training_code():
    from treegrpo.rewards.weight_free import JpegCompressibility

    code = run_identity.training_code({"jpeg_compressibility": JpegCompressibility()})
    assert code[: len(run_identity.TRAINING_CODE)] == run_identity.TRAINING_CODE
    assert code[len(run_identity.TRAINING_CODE):] == ("treegrpo.rewards.weight_free",)
    assert run_identity.training_code({"lambda": lambda images, prompts: images}) == run_identity.TRAINING_CODE


def test_one_folder_hasher_reads_paths_and_bytes_and_big_files_by_their_head(tmp_path):
    import hashlib

    from treegrpo.recipes.registry import lora_digest

    lora = tmp_path / "lora"
    (lora / "sub").mkdir(parents=True)
    (lora / "pytorch_lora_weights.safetensors").write_bytes(b"weights")
    (lora / "sub" / "a.json").write_bytes(b"{}")
    by_hand = hashlib.sha256(b"pytorch_lora_weights.safetensors\0weights" + b"sub/a.json\0{}").hexdigest()
    assert lora_digest(lora) == run_identity.folder_digest(lora) == by_hand  # the registry's identity, unchanged

    model = tmp_path / "model"
    model.mkdir()
    big = bytearray(2**20 + 10)
    (model / "w.bin").write_bytes(bytes(big))
    head = run_identity.folder_digest(model, head_above=2**20)
    assert head == hashlib.sha256(b"w.bin\0" + f"{2**20 + 10}\0".encode() + bytes(2**20)).hexdigest()
    big[-1] = 1  # past the first MiB: the head reads the same
    (model / "w.bin").write_bytes(bytes(big))
    assert run_identity.folder_digest(model, head_above=2**20) == head
    assert run_identity.folder_digest(model) != run_identity.folder_digest(model, head_above=2**20)
    assert run_identity.model_identity(str(model)) == run_identity.folder_digest(model)  # 1 MiB < 64 MiB: whole
    assert run_identity.model_identity("stabilityai/stable-diffusion-3.5-medium") == ""  # a hub id
