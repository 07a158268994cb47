"""The registered model's pyfunc: prompts in, images out, from the base pipeline with a version's LoRA.

`treegrpo.recipes.registry` logs it ("models from code": `registry.MODEL_CODE` imports it from here, nothing
pickled); load a version with `mlflow.pyfunc.load_model("models:/NAME@champion")`.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd


class LoraText2Image(mlflow.pyfunc.PythonModel):
    """The registered model: the base pipeline with the version's LoRA. `predict` takes prompts, returns images.

    Input: a list of prompts, or a DataFrame with a `prompt` column. Params: `seed` (prompt i uses seed + i),
    `num_inference_steps` and `guidance_scale` (0 / -1: the values the model was trained with).
    Output: uint8 images, (N, H, W, 3) at the trained resolution (`PIL.Image.fromarray(images[0])`).
    """

    def load_context(self, context) -> None:
        from treegrpo.config import ModelParams, build
        from treegrpo.models.lora import load_lora
        from treegrpo.models.pipeline import load_pipeline

        self.config = dict(context.model_config)
        self.model = build(ModelParams, self.config["model"], "model")
        self.pipe = load_pipeline(self.model)
        load_lora(self.pipe, context.artifacts["lora"])
        self.pipe.set_progress_bar_config(disable=True)

    # the annotation is what MLflow hands `predict` under `signature()`'s column schema; one MLflow infers no schema
    # from, so it does not warn "Add type hints to the `predict` method" when this class is defined
    def predict(self, context, model_input: pd.DataFrame, params=None):
        import numpy as np
        import torch

        if hasattr(model_input, "columns"):  # a DataFrame: the `prompt` column, or the only one
            model_input = model_input["prompt"] if "prompt" in model_input.columns else model_input.iloc[:, 0]
        prompts = [str(p) for p in model_input]
        params = params or {}
        seed = int(params.get("seed") or 0)
        steps = int(params.get("num_inference_steps") or 0) or self.config["num_inference_steps"]
        cfg = params.get("guidance_scale")
        cfg = self.config["guidance_scale"] if cfg is None or cfg < 0 else float(cfg)
        generators = [torch.Generator().manual_seed(seed + i) for i in range(len(prompts))]
        res = self.model.resolution
        out = self.pipe(prompts, num_inference_steps=steps, guidance_scale=cfg, height=res, width=res,
                        generator=generators, max_sequence_length=self.model.max_sequence_length, output_type="np")
        return (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)  # (N, H, W, 3)
