"""Ingestion: normalisation, dedupe counts, the hash split and its stability, explicit eval sources, the hub path
(a fabricated offline hub cache), the real 400-prompt sample, and `load_prompts`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import SAMPLE_DATA
from treegrpo.config import ParamsError, build
from treegrpo.config.data import DataParams
from treegrpo.data import load_prompts
from treegrpo.data.ingest import ingest_prompts, normalize, prompt_digest, split_of
from treegrpo.utils.errors import UserError

REPO = Path(__file__).resolve().parents[2]
REAL_SAMPLE = REPO.parent / "shared" / "data" / "hpdv2" / "prompts_test.txt"




def data_params(tmp_path: Path, **overrides) -> DataParams:
    """params.yaml's data section on the bundled sample, with its outputs under tmp_path and `overrides` applied."""
    raw = {**yaml.safe_load((REPO / "params.yaml").read_text())["data"], **SAMPLE_DATA}
    raw.update(path=str(REPO / raw["path"]), ingested_dir=str(tmp_path / "ingested"),
               validated_dir=str(tmp_path / "validated"))
    raw.update(overrides)
    return build(DataParams, raw, "data")


def table(params: DataParams, split: str) -> list[dict]:
    return pq.read_table(Path(params.ingested_dir) / f"{split}.parquet").to_pylist()


def prompts(params: DataParams, split: str) -> list[str]:
    return [row["prompt"] for row in table(params, split)]


# --- params ------------------------------------------------------------------------------------------------------

def test_params_yaml_data_section_is_the_embedded_default():
    params = build(DataParams, yaml.safe_load((REPO / "params.yaml").read_text())["data"], "data")
    # the world's RL split and RL-unseen prompts (written by the `world` stage), with no second split of them
    assert (params.source, params.eval_source, params.on_failure) == ("local", "local", "fail")
    assert (params.path, params.eval_path) == ("data/world/rl.jsonl", "data/world/unseen.jsonl")
    assert (REPO / SAMPLE_DATA["path"]).is_file()  # the bundled sample stays for the tests above and users


@pytest.mark.parametrize(("key", "value", "message"), [
    ("eval_fraction", 0.0, "data.eval_fraction=0.0: must be in"),
    ("eval_source", "local", "data.eval_path=None: must be a prompt file or folder"),
    ("max_chars", 2, "data.max_chars=2: must be >= data.min_chars = 3"),
    ("min_clip_tokens", 1, "data.min_clip_tokens=1: must be >= 2"),
    ("max_eval_prompts", 1, "data.max_eval_prompts=1: must be null"),
    ("on_failure", "ignore", "data.on_failure='ignore': must be one of 'fail', 'quarantine'"),
    ("split_salt", "x" * 65, "must be 1 to 64 bytes"),
    ("validated_dir", "/tmp/x/ingested/", "must differ from data.ingested_dir"),
])
def test_bad_data_params_name_key_and_fix(tmp_path, key, value, message):
    tmp_path = Path("/tmp/x")  # the folders are only named, never created
    with pytest.raises(ParamsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data_params(tmp_path, **{key: value})


# --- normalise and split -----------------------------------------------------------------------------------------

def test_normalize_nfc_and_whitespace():
    # e + combining acute (NFD) composes to U+00E9; tabs, newlines and a no-break space collapse to one space
    assert normalize("  caf" + "e\u0301\t\n au\u00a0 lait  ") == "caf\u00e9 au lait"
    assert normalize(" \t\n") == ""


def test_normalize_replaces_lone_surrogates():
    # JSON can carry "\ud800"; Parquet's UTF-8 cannot, so it becomes U+FFFD for validation to flag
    assert normalize(json.loads('"a\\ud800b"')) == "a\ufffdb"


def test_split_threshold_by_hand():
    threshold = int(0.25 * 2**64)  # eval iff the first 8 digest bytes, big-endian, are below this
    assert split_of(bytes(16), 0.25) == "eval"
    assert split_of(b"\xff" * 16, 0.25) == "train"
    assert split_of((threshold - 1).to_bytes(8, "big") + bytes(8), 0.25) == "eval"
    assert split_of(threshold.to_bytes(8, "big") + bytes(8), 0.25) == "train"


def test_split_fraction_is_close_to_eval_fraction():
    n = 20_000
    evals = sum(split_of(prompt_digest(f"prompt number {i}", "treegrpo"), 0.25) == "eval" for i in range(n))
    # binomial sd = sqrt(0.25 * 0.75 / 20000) ~ 0.003: +-0.015 is five sd
    assert abs(evals / n - 0.25) < 0.015


def test_digest_depends_on_salt():
    assert prompt_digest("a cat", "one") != prompt_digest("a cat", "two")
    assert prompt_digest("a cat", "one") == prompt_digest("a cat", "one")


# --- ingest ------------------------------------------------------------------------------------------------------

def test_dedupe_counts_on_a_handwritten_file(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("\n".join([
        "a red fox",
        "a   red fox ",      # duplicate once whitespace is collapsed
        "A red fox",         # not a duplicate: case is kept
        "cafe\u0301 at dawn",  # NFD ...
        "caf\u00e9 at dawn",   # ... duplicate of it in NFC
        "",                  # blank line: a separator, not a record
        "a red fox",         # duplicate
        "the moon",
    ]) + "\n")
    params = data_params(tmp_path, path=str(path))
    stats = ingest_prompts(params)
    (src,) = stats.sources
    # 7 records (the blank line is skipped), 3 duplicates, 4 distinct prompts kept
    assert (src.records, src.duplicates, src.cross_split_duplicates, src.empty) == (7, 3, 0, 0)
    assert stats.rows["train"] + stats.rows["eval"] == 4
    kept = sorted(prompts(params, "train") + prompts(params, "eval"))
    assert kept == ["A red fox", "a red fox", "caf\u00e9 at dawn", "the moon"]
    # provenance: the first occurrence's 0-based line wins
    rows = {r["prompt"]: r for r in table(params, "train") + table(params, "eval")}
    assert (rows["a red fox"]["source"], rows["a red fox"]["source_index"]) == (str(path), 0)
    assert rows["caf\u00e9 at dawn"]["source_index"] == 3
    assert json.loads((tmp_path / "ingested" / "stats.json").read_text())["duplicates"] == 3


def test_split_is_stable_when_prompts_are_added(tmp_path):
    old = [f"a watercolor of lighthouse number {i}" for i in range(300)]
    new = [f"an oil painting of harbour number {i}" for i in range(200)]
    (tmp_path / "old.txt").write_text("\n".join(old) + "\n")
    (tmp_path / "both.txt").write_text("\n".join(new[:100] + old[::-1] + new[100:]) + "\n")  # reordered, interleaved
    before = data_params(tmp_path / "a", path=str(tmp_path / "old.txt"))
    after = data_params(tmp_path / "b", path=str(tmp_path / "both.txt"))
    ingest_prompts(before)
    ingest_prompts(after)
    eval_before, eval_after = set(prompts(before, "eval")), set(prompts(after, "eval"))
    assert eval_before == eval_after & set(old)
    assert set(prompts(before, "train")) == set(prompts(after, "train")) & set(old)
    assert 0 < len(eval_before) < len(old)


def test_explicit_eval_source_overrides_the_split(tmp_path):
    bench = tmp_path / "hpdv2" / "benchmark"
    bench.mkdir(parents=True)
    (bench / "anime.json").write_text(json.dumps(["an anime cat", "an anime dog"]))
    (bench / "photo.json").write_text(json.dumps(["a photo of a bridge", "an anime cat"]))  # dup across files
    train = tmp_path / "train.jsonl"
    train.write_text('"a photo of a bridge"\n"a new prompt"\n"another prompt"\n"a new prompt"\n')
    params = data_params(tmp_path, path=str(train), eval_source="local", eval_path=str(bench.parent))
    stats = ingest_prompts(params)
    assert prompts(params, "eval") == ["an anime cat", "an anime dog", "a photo of a bridge"]
    assert [r["style"] for r in table(params, "eval")] == ["anime", "anime", "photo"]
    assert prompts(params, "train") == ["a new prompt", "another prompt"]
    assert [(s.role, s.records, s.duplicates, s.cross_split_duplicates) for s in stats.sources] == [
        ("eval", 2, 0, 0), ("eval", 2, 1, 0), ("train", 4, 1, 1)]
    assert stats.rows == {"train": 2, "eval": 3}
    assert stats.eval_fraction is None


def test_null_and_blank_json_prompts_are_kept_for_validation(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps([{"prompt": None}, {"prompt": "  "}, {"prompt": "a cat"}, {"prompt": None}]))
    params = data_params(tmp_path, path=str(path))
    (src,) = ingest_prompts(params).sources
    assert (src.records, src.empty, src.duplicates) == (4, 3, 0)
    assert sorted(prompts(params, "train") + prompts(params, "eval"), key=str) == ["", None, None, "a cat"]


def test_output_schema(tmp_path):
    params = data_params(tmp_path)
    ingest_prompts(params)
    schema = pq.read_schema(Path(params.ingested_dir) / "train.parquet")
    assert schema.names == ["prompt", "source", "style", "source_index"]
    assert [str(t) for t in schema.types] == ["string", "string", "string", "int64"]
    outputs = sorted(p.name for p in Path(params.ingested_dir).iterdir())
    assert outputs == ["eval.parquet", "stats.json", "train.parquet"]


def test_bundled_sample(tmp_path):
    params = data_params(tmp_path)
    stats = ingest_prompts(params)
    assert stats.rows == {"train": 37, "eval": 11}  # the split params.yaml's comment promises
    assert set(stats.styles["eval"]) == {"anime", "concept-art", "paintings", "photo"}
    assert sum(stats.styles["train"].values()) == 37


def test_a_bad_source_leaves_no_partial_or_stale_outputs(tmp_path):
    ingest_prompts(data_params(tmp_path))  # a good run first: its outputs must not survive the bad one
    (tmp_path / "bad.json").write_text('["ok", 3]')
    params = data_params(tmp_path, path=str(tmp_path / "bad.json"))
    with pytest.raises(UserError, match="item 1 is a int"):
        ingest_prompts(params)
    assert list(Path(params.ingested_dir).iterdir()) == []


@pytest.mark.skipif(not REAL_SAMPLE.is_file(), reason=f"{REAL_SAMPLE} is absent")
def test_real_hpdv2_test_prompts(tmp_path):
    params = data_params(tmp_path, path=str(REAL_SAMPLE))
    stats = ingest_prompts(params)
    (src,) = stats.sources
    # 400 lines, all distinct; 18 of them end in a space, which normalisation strips
    assert (src.records, src.duplicates, src.empty) == (400, 0, 0)
    kept = prompts(params, "train") + prompts(params, "eval")
    assert len(kept) == 400 and all(p == p.strip() for p in kept)
    assert 0.18 < stats.rows["eval"] / 400 < 0.32


# --- the hub, from a fabricated offline cache ----------------------------------------------------------------------

def _hub_cache(root: Path, repo: str, files: dict[str, object], commit: str = "0123abcd") -> None:
    """huggingface_hub's cache layout: refs/main names a commit, snapshots/<commit>/ holds the files."""
    base = root / f"datasets--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(commit)
    for name, content in files.items():
        path = base / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))


@pytest.fixture
def offline_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_hub_benchmark_and_annotations_with_mirror_fallback(tmp_path, offline_hub):
    cache = tmp_path / "hub"
    styles = ("anime", "concept-art", "paintings", "photo")
    # the original repository has the benchmark; only the mirror has train.json
    _hub_cache(cache, "zhwang/HPDv2", {f"benchmark/{s}.json": [f"{s} prompt {i}" for i in range(3)] for s in styles})
    _hub_cache(cache, "ymhao/HPDv2", {"train.json": [{"prompt": f"train prompt {i % 5}", "rank": [1, 2]}
                                                      for i in range(12)]}, commit="feedbeef")
    params = data_params(tmp_path, source="hub", eval_source="hub", hub_cache_dir=str(cache))
    stats = ingest_prompts(params)
    assert stats.rows == {"train": 5, "eval": 12}  # 12 train records hold 5 distinct prompts
    assert [s.duplicates for s in stats.sources] == [0, 0, 0, 0, 7]
    assert stats.styles["eval"] == dict.fromkeys(styles, 3)
    assert stats.sources[0].source == "hf://datasets/zhwang/HPDv2@0123abcd/benchmark/anime.json"
    assert stats.sources[-1].source == "hf://datasets/ymhao/HPDv2@feedbeef/train.json"


def test_hub_file_missing_everywhere(tmp_path, offline_hub):
    cache = tmp_path / "hub"
    _hub_cache(cache, "zhwang/HPDv2", {"train.json": ["a"]})
    params = data_params(tmp_path, source="hub", hub_cache_dir=str(cache), hub_train_files=["train.json", "x.json"])
    with pytest.raises(UserError, match=r"could not get x.json from zhwang/HPDv2 or ymhao/HPDv2 \(zhwang/HPDv2: "
                                        r"LocalEntryNotFoundError; ymhao/HPDv2: LocalEntryNotFoundError\)"):
        ingest_prompts(params)


# --- load_prompts --------------------------------------------------------------------------------------------------

def test_load_prompts(tmp_path):
    pq.write_table(pa.table({"prompt": ["b", "a"], "source": ["s", "s"]}), tmp_path / "train.parquet")
    assert load_prompts(tmp_path / "train.parquet") == ["b", "a"]


def test_load_prompts_errors(tmp_path):
    with pytest.raises(UserError, match="no such prompt set; run `treegrpo ingest` and `treegrpo validate`"):
        load_prompts(tmp_path / "train.parquet")
    pq.write_table(pa.table({"caption": ["a"]}), tmp_path / "c.parquet")
    with pytest.raises(UserError, match=r"no 'prompt' column \(it has caption\)"):
        load_prompts(tmp_path / "c.parquet")
    (tmp_path / "t.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="is not a readable Parquet file"):
        load_prompts(tmp_path / "t.parquet")
