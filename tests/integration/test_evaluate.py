"""`treegrpo evaluate` on the tiny pipeline: base vs LoRA, the metrics JSON, the Table-1 Markdown, the PNG grid."""

import dataclasses
import json

import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import REPO
from treegrpo.cli import main
from treegrpo.config import load_params
from treegrpo.recipes.evaluation import evaluate, sample, summarize
from treegrpo.rewards.weight_free import ColorFraction, JpegCompressibility
from treegrpo.utils.errors import UserError

pytestmark = pytest.mark.integration
PROMPTS = ["a red car", "a blue house by the sea", "a green dragon"]


@pytest.fixture(scope="module")
def params(tiny_pipeline_dir, tmp_path_factory):
    p = load_params(REPO / "params.yaml")
    out = tmp_path_factory.mktemp("eval")
    return dataclasses.replace(
        p, model=dataclasses.replace(p.model, pretrained=str(tiny_pipeline_dir), device="cpu"),
        reward=dataclasses.replace(p.reward, stand_in_dir=str(out / "stand-ins"), device="cpu"),
        eval=dataclasses.replace(p.eval, lora=str(out / "lora"), output_dir=str(out / "report"), batch_size=2,
                                 grid_prompts=2, samples_per_prompt=1,
                                 # PROMPTS are not the world's: every eval reward of params.yaml but the world's
                                 rewards=[r for r in p.eval.rewards if not r.startswith("composition")]))


@pytest.fixture(scope="module")
def pipe(params):
    from treegrpo.models.pipeline import load_pipeline

    return load_pipeline(params.model)


def _save_lora(params, pipe, scale: float) -> None:
    """Write a LoRA to eval.lora: add an adapter, set its B matrices (all zero: the adapter changes nothing),
    save it, and take it off the transformer again."""
    from treegrpo.models.lora import add_lora, save_lora

    add_lora(pipe.transformer, params.lora)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, scale, generator=torch.Generator().manual_seed(1))  # scale 0 gives exact zeros
    save_lora(pipe.transformer, params.eval.lora)
    pipe.transformer.delete_adapters("default")


def test_summary_is_mean_and_standard_error():
    stats = summarize({"r": torch.tensor([1.0, 2.0, 3.0, 6.0])})["r"]
    assert stats["mean"] == pytest.approx(3.0)
    assert stats["sem"] == pytest.approx((14 / 3) ** 0.5 / 2)  # sample std sqrt(14/3), over sqrt(4)
    assert summarize({"r": torch.tensor([5.0])})["r"]["sem"] is None


def test_fixed_seed_per_prompt_independent_of_batching(params, pipe):
    pipe.set_progress_bar_config(disable=True)
    a = sample(pipe, PROMPTS, params)
    b = sample(pipe, PROMPTS, dataclasses.replace(params, eval=dataclasses.replace(params.eval, batch_size=1)))
    assert a.shape == (3, 3, 64, 64) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    c = sample(pipe, PROMPTS[:1], dataclasses.replace(params, eval=dataclasses.replace(params.eval, seed=1)))
    assert not torch.allclose(a[:1], c)  # another seed, another image


def test_identity_lora_scores_exactly_as_the_base(params, pipe):
    """B = 0: the trained model is the base model, so every difference of means is exactly zero."""
    _save_lora(params, pipe, scale=0.0)
    rewards = {"jpeg_compressibility": JpegCompressibility(), "color_fraction": ColorFraction()}
    metrics = evaluate(params, PROMPTS, pipe=pipe, rewards=rewards)
    assert metrics["n_prompts"] == 3
    assert set(metrics) == {"eval_set", "n_prompts", "samples_per_prompt", "base", "trained", "delta"}
    assert metrics["delta"] == {"jpeg_compressibility": 0.0, "color_fraction": 0.0}
    pipe.unload_lora_weights()


def test_report_on_the_embedded_default_rewards(params, pipe):
    """The shipped eval rewards but the world's (the paper's four on tiny stand-ins, JPEG); a non-zero LoRA changes
    the images."""
    _save_lora(params, pipe, scale=0.3)
    metrics = evaluate(params, PROMPTS, pipe=pipe)
    pipe.unload_lora_weights()
    out = params.eval.output_dir
    assert json.loads(open(f"{out}/metrics.json").read()) == metrics
    for model in ("base", "trained"):
        assert list(metrics[model]) == list(params.eval.rewards)
        for stats in metrics[model].values():
            assert set(stats) == {"mean", "sem"} and stats["sem"] >= 0
    assert metrics["delta"]["jpeg_compressibility"] != 0.0
    table = open(f"{out}/table.md").read()
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| Model | HPS-v2.1 † | ImageReward † | Aesthetic † | CLIPScore † | JPEG")
    assert lines[2].startswith("| base (") and lines[3].startswith("| trained (LoRA ") and len(lines) == 4
    assert "tiny random-weight stand-in" in table
    grid = Image.open(f"{out}/grid.png")
    assert grid.size[0] > 300 and grid.size[1] > 300  # 2 rows x 2 models
    rows = [json.loads(line) for line in open(f"{out}/scores.jsonl")]
    assert len(rows) == 6 and rows[0]["seed"] == params.eval.seed and "hpsv2" in rows[0]


def test_missing_lora_is_a_user_error(params):
    missing = dataclasses.replace(params, eval=dataclasses.replace(params.eval, lora="/nonexistent/lora"))
    with pytest.raises(UserError, match="eval.lora: null"):
        evaluate(missing, PROMPTS, pipe=object(), rewards={})


def test_cli_with_a_prompt_file(params, tmp_path, capsys):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"]["pretrained"] = params.model.pretrained
    raw["reward"]["stand_in_dir"] = params.reward.stand_in_dir
    raw["eval"].update(lora=None, rewards=["hpsv2", "color_fraction"], output_dir=str(tmp_path / "report"),
                       extra_sets={})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "prompts.txt").write_text("a red car\n\na yellow flower\n")
    args = ["evaluate", "--params", str(tmp_path / "params.yaml"), "--prompts"]
    assert main([*args, str(tmp_path / "prompts.txt")]) == 0
    printed = capsys.readouterr().out
    assert "| base (" in printed and "trained" not in printed.split("|---")[1]  # base only: eval.lora is null
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["n_prompts"] == 2
    assert main([*args, str(tmp_path / "none.txt")]) == 2  # a missing prompt file: one line, exit 2


def test_cli_shows_the_table_not_loading_bars_or_the_text_encoder_lora_warning(params, pipe, tmp_path, capfd,
                                                                                caplog):
    """One display, the command's: diffusers' loading bars are off, and its 'No LoRA keys associated to
    CLIPTextModelWithProjection' warning (true of every transformer-only LoRA, ours included) is not shown."""
    import logging

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.enable_progress_bar()  # the library default, whatever an earlier test in this process did
    transformers_logging.enable_progress_bar()
    lora_params = dataclasses.replace(params, eval=dataclasses.replace(params.eval, lora=str(tmp_path / "lora")))
    _save_lora(lora_params, pipe, scale=0.0)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"]["pretrained"] = params.model.pretrained
    raw["eval"].update(lora=str(tmp_path / "lora"), rewards=["color_fraction"], output_dir=str(tmp_path / "report"),
                       extra_sets={})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "prompts.txt").write_text("a red car\n")
    caplog.set_level(logging.WARNING)
    args = ["evaluate", "--params", str(tmp_path / "params.yaml"), "--prompts", str(tmp_path / "prompts.txt")]
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert "| base (" in out and "trained" in out  # the table, base and trained
    assert "Loading" not in err and "it/s]" not in err and "s/it]" not in err
    assert not [r for r in caplog.records if "No LoRA keys" in r.getMessage()]


class _RenderingPipe:
    """A stand-in pipeline that draws what each prompt says (the world's renderer), except that it draws nothing for
    prompts in `blank`: evaluation's accuracy per category is then known by hand."""

    def __init__(self, blank=()):
        self.blank, self.calls = set(blank), []

    def set_progress_bar_config(self, **_):
        pass

    def __call__(self, prompts, generator, height, width, **_):
        from types import SimpleNamespace

        import torchvision.transforms.functional as TF

        from treegrpo.world.grammar import parse_prompt
        from treegrpo.world.render import render

        seeds = [g.initial_seed() for g in generator]
        self.calls.append(list(zip(prompts, seeds, strict=True)))
        images = [TF.to_tensor(Image.new("RGB", (width, height), (235, 235, 235)) if p in self.blank
                               else render(parse_prompt(p), height, seed))
                  for p, seed in zip(prompts, seeds, strict=True)]
        return SimpleNamespace(images=torch.stack(images))


def test_accuracy_per_category_and_several_images_per_prompt(params, tmp_path):
    from treegrpo.rewards.composition import Composition, CompositionAccuracy

    prompts = ["a red circle", "a blue square", "two triangles", "a circle to the left of a square"]
    p = dataclasses.replace(params, eval=dataclasses.replace(params.eval, lora=None, samples_per_prompt=3,
                                                             output_dir=str(tmp_path), batch_size=4))
    pipe = _RenderingPipe(blank={"a blue square"})
    metrics = evaluate(p, prompts, pipe=pipe,
                       rewards={"composition_accuracy": CompositionAccuracy(), "composition": Composition()})
    # 3 images per prompt, seeds 0 + 3i + j, in batches of 4 images
    seeds = [s for call in pipe.calls for _, s in call]
    assert seeds == list(range(12)) and max(len(c) for c in pipe.calls) == 4
    # every render meets its prompt; the blank square meets none of its colour prompt's 4 constraints but
    # "nothing else" (1/4): accuracy 3/4 over prompts, colour category 1/2 (two colour prompts, one blank)
    assert metrics["base"]["composition_accuracy"]["mean"] == pytest.approx(0.75)
    cats = metrics["by_category"]["base"]["composition_accuracy"]
    assert cats["colour"] == {"mean": pytest.approx(0.5), "sem": pytest.approx(0.5), "n": 2}
    assert cats["counting"]["mean"] == 1.0 and cats["position"]["mean"] == 1.0
    assert metrics["by_category"]["base"]["composition"]["colour"]["mean"] == pytest.approx((1 + 0.25) / 2)
    table = (tmp_path / "table.md").read_text()
    assert "Accuracy (all constraints) per category" in table and "| colour (2) | counting (1) |" in table
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["sample"] for r in rows} == {0, 1, 2}
    from treegrpo.recipes.evaluation import read_scores, scored_prompts

    assert scored_prompts(read_scores(tmp_path / "scores.jsonl")) == prompts


def test_extra_sets_are_sampled_after_the_eval_set_and_reported_beside_it(params, tmp_path):
    """The eval set keeps its seeds and the top level of metrics.json; each extra set continues the seeds and is
    reported under `sets` and in its own table; the grid spreads its rows over the eval set's categories."""
    from treegrpo.recipes.evaluation import grid_rows, read_scores, scored_prompts
    from treegrpo.rewards.composition import Composition, CompositionAccuracy

    main_set = ["a red circle", "a green circle", "two triangles", "a square below a circle"]
    extra = {"held": ["a blue square", "a yellow triangle"]}
    p = dataclasses.replace(params, eval=dataclasses.replace(params.eval, lora=None, samples_per_prompt=2,
                                                             output_dir=str(tmp_path), batch_size=3, grid_prompts=3,
                                                             extra_sets={"held": "held.jsonl"}))
    pipe = _RenderingPipe(blank={"a blue square"})
    metrics = evaluate(p, main_set, pipe=pipe, extra_sets=extra,
                       rewards={"composition_accuracy": CompositionAccuracy(), "composition": Composition()})
    seeds = [s for call in pipe.calls for _, s in call]
    assert seeds == list(range(12))  # 4 prompts x 2, then the extra set's 2 x 2
    assert metrics["n_prompts"] == 4 and metrics["base"]["composition_accuracy"]["mean"] == 1.0
    held = metrics["sets"]["held"]
    assert held["n_prompts"] == 2 and held["base"]["composition_accuracy"]["mean"] == pytest.approx(0.5)
    assert held["by_category"]["base"]["composition_accuracy"]["colour"]["n"] == 2
    table = (tmp_path / "table.md").read_text()
    assert table.index("prompts (the eval set)") < table.index("## held: 2 prompts, held.jsonl")
    rows = read_scores(tmp_path / "scores.jsonl")
    assert len(rows) == 12 and [r["seed"] for r in rows if r["set"] == "held"] == [8, 9, 10, 11]
    assert scored_prompts(rows) == main_set
    # categories colour, colour, counting, position: one of each kind first
    assert grid_rows(["colour", "colour", "counting", "position"], 3) == [0, 2, 3]
    assert grid_rows(["colour", "colour", "counting", "position"], 10) == [0, 2, 3, 1]
