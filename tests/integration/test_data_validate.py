"""The GX suite on good and bad prompt tables: pass, fail with a named summary, quarantine, and the bundled sample and
the real HPDv2 sample end to end (ingest -> validate -> load_prompts)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import SAMPLE_DATA
from treegrpo.config import build
from treegrpo.config.data import DataParams
from treegrpo.data import load_prompts
from treegrpo.data.ingest import ingest_prompts
from treegrpo.data.validate import build_table, validate_prompts
from treegrpo.utils.errors import UserError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REAL_SAMPLE = REPO.parent / "shared" / "data" / "hpdv2" / "prompts_test.txt"

CLEAN_TRAIN = [f"a clean prompt number {i} about a red house" for i in range(30)]
CLEAN_EVAL = [f"an eval prompt {i} of a blue boat" for i in range(6)]
# train rows 30..36 and eval row 6, each breaking what its comment says
BAD_TRAIN = ["bad\x07bell prompt",    # 30: a control character
             "   ",                   # 31: whitespace only, and 2 CLIP tokens (start + end) < 3
             None,                    # 32: null
             "ok",                    # 33: 2 characters < 3
             "x " * 120,              # 34: 122 CLIP tokens > 77
             "broken \ufffd text",    # 35: U+FFFD
             CLEAN_TRAIN[0]]          # 36: duplicate of train row 0
BAD_EVAL = [CLEAN_TRAIN[1]]           # eval 6: also train row 1


def data_params(tmp_path: Path, **overrides) -> DataParams:
    raw = {**yaml.safe_load((REPO / "params.yaml").read_text())["data"], **SAMPLE_DATA}
    raw.update(path=str(REPO / raw["path"]), ingested_dir=str(tmp_path / "ingested"),
               validated_dir=str(tmp_path / "validated"))
    raw.update(overrides)
    return build(DataParams, raw, "data")


def write_ingested(params: DataParams, train: list, eval_: list) -> None:
    out = Path(params.ingested_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("eval", eval_)):
        pq.write_table(pa.table({"prompt": pa.array(rows, pa.string()), "source": [f"{split}.txt"] * len(rows),
                                 "style": pa.array([None] * len(rows), pa.string()),
                                 "source_index": list(range(len(rows)))}), out / f"{split}.parquet")


def failed_checks(report: Path) -> dict[str, dict]:
    entries = json.loads(report.read_text())["runs"]["ingested"]["failed"]
    return {e["check"]: e for e in entries}


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to open a socket connection."""
    attempts = []

    def refuse(self, address, *args):
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_bundled_sample_ingests_and_validates(tmp_path, monkeypatch, no_network):
    # folders relative to the working directory, as params.yaml has them under `dvc repro`
    monkeypatch.chdir(tmp_path)
    params = data_params(Path("."))
    ingest_prompts(params)
    result = validate_prompts(params)
    out = Path(params.validated_dir)
    assert params.validated_dir == "validated"
    assert (result.status, result.rows, result.quarantined) == ("passed", {"train": 37, "eval": 11}, 0)
    assert len(load_prompts(out / "train.parquet")) == 37 and len(load_prompts(out / "eval.parquet")) == 11
    assert pq.read_schema(out / "train.parquet").names == ["prompt", "source", "style", "source_index"]
    report = json.loads(result.report.read_text())
    assert report["status"] == "passed" and len(report["runs"]["ingested"]["passed"]) == 15
    assert result.data_docs == out / "data_docs" / "index.html" and result.data_docs.is_file()
    assert not (out / "quarantine.parquet").exists()
    assert no_network == []  # GX (analytics included) never tried the network


def test_clip_token_counts_by_hand(tmp_path):
    import pandas as pd

    table = build_table({"train": pd.DataFrame({"prompt": ["a cat", "A CAT!!", None]}),
                         "eval": pd.DataFrame({"prompt": ["a cat"]})})
    # start + 'a' + 'cat' + end = 4; the tokenizer lowercases and '!!' is one more piece
    assert table["clip_tokens"].tolist()[:2] == [4, 5]
    assert table["clip_tokens"].isna().tolist() == [False, False, True, False]
    # 'a cat' is in both splits; the null belongs to no prompt and counts as 1
    assert table["splits_per_prompt"].tolist() == [2, 1, 1, 2]


def test_cached_clip_counts_equal_simple_tokenizer_encode():
    from open_clip.tokenizer import SimpleTokenizer

    from treegrpo.data.validate import clip_token_counts

    prompts = ["A CAT!!", "caf\u00e9 \u732b 12,345 it's", "&amp; x", "e\u0301t\u00e9", "don't stop", "a  b\tc"]
    if REAL_SAMPLE.is_file():
        prompts += [line for line in REAL_SAMPLE.read_text().split("\n") if line]
    tokenizer = SimpleTokenizer()
    assert clip_token_counts(prompts) == [len(tokenizer.encode(p)) + 2 for p in prompts]


def test_failures_are_named_with_counts_and_first_rows(tmp_path, caplog):
    params = data_params(tmp_path)
    write_ingested(params, CLEAN_TRAIN + BAD_TRAIN, CLEAN_EVAL + BAD_EVAL)
    out = Path(params.validated_dir)
    out.mkdir(parents=True)
    (out / "train.parquet").write_text("stale output of an earlier run")
    with pytest.raises(UserError) as err:
        validate_prompts(params)
    message = str(err.value)
    assert "\n" not in message and message.startswith("prompt validation failed: 8 of 15 expectations")
    assert message.endswith("set data.on_failure: quarantine to train on the clean rows")
    assert not (out / "train.parquet").exists() and not (out / "eval.parquet").exists()
    assert (out / "data_docs" / "index.html").is_file()
    failed = failed_checks(out / "report.json")
    counts = {check: e["unexpected_count"] for check, e in failed.items()}
    assert counts == {
        "no null prompt": 1, "no empty or whitespace-only prompt": 1, "length in [3, 1000] characters": 1,
        "length in [3, 77] CLIP tokens": 2, "no control characters": 1,
        "no invalid Unicode (U+FFFD, noncharacters)": 1, "unique prompts within each split": 2,
        "no prompt in both train and eval": 2,
    }
    assert failed["no control characters"]["first_rows"] == [
        {"file": "train.parquet", "row": 30, "value": "bad\x07bell prompt", "source": "train.txt", "source_index": 30}]
    assert [(r["file"], r["row"]) for r in failed["no prompt in both train and eval"]["first_rows"]] == [
        ("train.parquet", 1), ("eval.parquet", 6)]
    tokens = failed["length in [3, 77] CLIP tokens"]["first_rows"]
    assert [(r["row"], r["clip_tokens"]) for r in tokens] == [(31, 2), (34, 122)]
    assert tokens[1]["value"].endswith("…") and len(tokens[1]["value"]) == 80
    summary = (out / "report.txt").read_text()
    assert "FAILED no control characters (expect_column_values_to_not_match_regex on prompt): 1 of 44 rows" in summary
    assert "    train.parquet row 30: 'bad\\x07bell prompt'" in summary
    assert summary in caplog.text + "\n"


def test_quarantine_sets_bad_rows_aside_and_trains_on_the_rest(tmp_path):
    params = data_params(tmp_path, on_failure="quarantine")
    write_ingested(params, CLEAN_TRAIN + BAD_TRAIN, CLEAN_EVAL + BAD_EVAL)
    result = validate_prompts(params)
    out = Path(params.validated_dir)
    # bad: train rows 0, 1, 30..36 (9) and eval row 6; clean: 37 - 9 = 28 train, 6 eval
    assert (result.status, result.rows, result.quarantined) == ("quarantined", {"train": 28, "eval": 6}, 10)
    assert load_prompts(out / "train.parquet") == CLEAN_TRAIN[2:]
    assert load_prompts(out / "eval.parquet") == CLEAN_EVAL
    # the ingested column types survive, even an all-null style column
    assert [str(t) for t in pq.read_schema(out / "train.parquet").types] == ["string", "string", "string", "int64"]
    bad = pq.read_table(out / "quarantine.parquet").to_pylist()
    assert [(r["split"], r["row"]) for r in bad] == [("train", r) for r in (0, 1, *range(30, 37))] + [("eval", 6)]
    assert bad[3]["failed"] == "no empty or whitespace-only prompt; length in [3, 77] CLIP tokens"
    report = json.loads(result.report.read_text())
    assert report["status"] == "quarantined" and report["runs"]["clean"]["failed"] == []


def test_quarantine_cannot_fix_a_table_level_failure(tmp_path):
    params = data_params(tmp_path, on_failure="quarantine")
    write_ingested(params, CLEAN_TRAIN, CLEAN_EVAL[:2])  # 2 eval prompts < min_eval_prompts = 4
    with pytest.raises(UserError, match=r"1 of 15 expectations \(eval split size within bounds\).*table-level"):
        validate_prompts(params)
    entry = failed_checks(Path(params.validated_dir) / "report.json")["eval split size within bounds"]
    assert (entry["row_level"], entry["observed"]) == (False, 2)


def test_quarantine_fails_when_the_clean_rows_fall_below_the_bounds(tmp_path):
    params = data_params(tmp_path, on_failure="quarantine")
    write_ingested(params, CLEAN_TRAIN, CLEAN_EVAL[:3] + ["\x00nul", "  "])  # 3 clean eval rows < 4
    with pytest.raises(UserError, match="the clean rows alone fail"):
        validate_prompts(params)
    assert not (Path(params.validated_dir) / "train.parquet").exists()


def test_bad_ingested_tables(tmp_path):
    params = data_params(tmp_path)
    with pytest.raises(UserError, match=r"train.parquet: no such file; run `treegrpo ingest` first"):
        validate_prompts(params)
    write_ingested(params, CLEAN_TRAIN, CLEAN_EVAL)
    pq.write_table(pa.table({"text": ["a cat"]}), Path(params.ingested_dir) / "eval.parquet")
    with pytest.raises(UserError, match=r"eval.parquet: Parquet without a 'prompt' column \(it has text\)"):
        validate_prompts(params)


@pytest.mark.skipif(not REAL_SAMPLE.is_file(), reason=f"{REAL_SAMPLE} is absent")
def test_real_hpdv2_test_prompts_pass_the_suite(tmp_path):
    params = data_params(tmp_path, path=str(REAL_SAMPLE))
    stats = ingest_prompts(params)
    result = validate_prompts(params)
    assert result.status == "passed" and sum(result.rows.values()) == 400
    assert result.rows == stats.rows


def test_cli_validate_failure_prints_summary_and_one_line_error(tmp_path, capsys, caplog):
    from treegrpo.cli import main

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update(ingested_dir=str(tmp_path / "ingested"), validated_dir=str(tmp_path / "validated"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    write_ingested(data_params(tmp_path), CLEAN_TRAIN + ["bad\x1bescape"], CLEAN_EVAL)
    assert main(["validate", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("treegrpo validate: error: prompt validation failed: 1 of 15 expectations "
                          "(no control characters)") and err.count("\n") == 1
    assert "train.parquet row 30: 'bad\\x1bescape'" in caplog.text
