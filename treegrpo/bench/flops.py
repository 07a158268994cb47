"""How close to the hardware: the FLOPs of the transformer calls the benchmark times, counted by
`torch.utils.flop_counter.FlopCounterMode` (torch's per-operator formulas, not a hand formula for the model), and
the dense bf16 peak of known GPUs, for the model FLOPs utilisation (MFU = achieved FLOP/s / peak).

What is counted: every matmul, convolution and attention product of the call (forward; backward too for a call with
gradients: activation gradients through the whole network plus the weight gradients of the trainable LoRA
matrices, and the recomputed forward when gradient checkpointing is on). Element-wise work (norms, activations,
softmax) counts nothing, as in torch's counter and the usual MFU convention.

Notation: rows = batch entries of one transformer call (CFG's doubling included), L = text tokens.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch

# Dense (no structured sparsity) BF16 tensor-core peaks, TFLOP/s, by device name as torch reports it
# (`torch.cuda.get_device_properties(i).name`, e.g. "NVIDIA H100 80GB HBM3"). The datasheets print the sparse
# figure with an asterisk; the dense one is half of it. First match wins: the specific names come first.
PEAK_BF16_TFLOPS: list[tuple[str, float, str]] = [
    (r"H100.*PCIe", 756.5, "NVIDIA H100 Tensor Core GPU datasheet: H100 PCIe BF16 1,513 TFLOPS with sparsity"),
    (r"H100.*NVL", 835.5, "NVIDIA H100 Tensor Core GPU datasheet: H100 NVL BF16 1,671 TFLOPS with sparsity"),
    (r"H100", 989.4, "NVIDIA H100 Tensor Core GPU datasheet: H100 SXM BF16 1,979 TFLOPS with sparsity"),
    (r"H200.*NVL", 835.5, "NVIDIA H200 Tensor Core GPU datasheet: H200 NVL BF16 1,671 TFLOPS with sparsity"),
    (r"H200", 989.4, "NVIDIA H200 Tensor Core GPU datasheet: H200 SXM BF16 1,979 TFLOPS with sparsity"),
    (r"A100", 312.0, "NVIDIA A100 Tensor Core GPU datasheet: BF16 312 TFLOPS (624 with sparsity), SXM and PCIe"),
    (r"L40S", 362.05, "NVIDIA L40S datasheet: BF16 362.05 TFLOPS (733 with sparsity)"),
    (r"\bL4\b", 121.0, "NVIDIA L4 datasheet: BF16 242 TFLOPS with sparsity"),
    (r"\bA10\b", 125.0, "NVIDIA A10 datasheet: BF16 125 TFLOPS (250 with sparsity)"),
]


class Peak(NamedTuple):
    tflops: float  # dense bf16, TFLOP/s
    source: str  # where the number comes from


def peak_bf16(device_name: str | None) -> Peak | None:
    """The dense bf16 peak of a GPU named `device_name` (None: not in PEAK_BF16_TFLOPS, or no GPU)."""
    if not device_name:
        return None
    for pattern, tflops, source in PEAK_BF16_TFLOPS:
        if re.search(pattern, device_name):
            return Peak(tflops, source)
    return None


def _cpu_attention_formulas() -> dict[Any, Callable[..., int]]:
    """torch's own SDPA formulas for the CPU's fused attention kernel, which its counter does not map (without
    this, attention on the CPU counts 0 under the default backend and 2 bmm under the math backend)."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    pairs = [("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention"),
             ("_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_flash_attention_backward")]
    mapping = {}
    for cpu_name, name in pairs:
        if not hasattr(aten, cpu_name) or getattr(aten, name) not in flop_counter.flop_registry:
            continue
        formula = flop_counter.flop_registry[getattr(aten, name)]  # already takes tensors (shape-wrapped)

        def raw(*args, _formula=formula, **kwargs) -> int:
            return _formula(*args, **kwargs)

        raw._get_raw = True  # FlopCounterMode: pass the tensors through, do not wrap again
        mapping[getattr(aten, cpu_name)] = raw
    return mapping


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs that `fn()` runs, as `torch.utils.flop_counter.FlopCounterMode` counts them (a backward inside `fn`
    is counted too). A multiply-add is 2 FLOPs: a Linear of (m, k) inputs to n outputs is 2 m n k."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        fn()
    return int(counter.get_total_flops())


def random_inputs(transformer: torch.nn.Module, rows: int, tokens: int, latent_shape: tuple[int, ...],
                  dtype: torch.dtype, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random keyword inputs of one SD3 transformer call with `rows` batch entries and `tokens` text tokens."""
    cfg = transformer.config
    device = next(transformer.parameters()).device
    return {
        "hidden_states": torch.randn((rows, *latent_shape), generator=gen).to(device, dtype),  # (rows, C, h, w)
        "encoder_hidden_states": torch.randn((rows, tokens, cfg.joint_attention_dim), generator=gen)
        .to(device, dtype),  # (rows, L, D)
        "pooled_projections": torch.randn((rows, cfg.pooled_projection_dim), generator=gen)
        .to(device, dtype),  # (rows, P)
        "timestep": (torch.rand((rows,), generator=gen) * 1000).to(device, dtype),  # (rows,)
    }


class CallFlops:
    """FLOPs of transformer calls by shape, each distinct (rows, L, grad) counted once by replaying it on random
    inputs under `count_flops` (a call's FLOPs depend on its shapes only); later calls of a known shape are free.

    Args:
        transformer: the SD3 transformer as the trainer calls it (with LoRA).
        latent_shape: (C, h, w).
        dtype: its compute dtype (inputs are cast to it).
        autocast: a context-manager factory, e.g. `accelerator.autocast`.
    """

    def __init__(self, transformer: torch.nn.Module, latent_shape: tuple[int, ...], dtype: torch.dtype,
                 autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext):
        self.transformer, self.latent_shape, self.dtype, self.autocast = transformer, latent_shape, dtype, autocast
        self.known: dict[tuple[int, int, bool], int] = {}

    def of(self, rows: int, tokens: int, grad: bool) -> int:
        """FLOPs of one call: forward only, or (grad) forward plus the backward of the output's sum."""
        key = (rows, tokens, grad)
        if key not in self.known:
            self.known[key] = self._replay(rows, tokens, grad)
        return self.known[key]

    def total(self, calls: Iterable[tuple[int, int, bool]]) -> int:
        """Sum over (rows, L, grad) calls."""
        return sum(self.of(*key) * n for key, n in Counter(calls).items())

    def _replay(self, rows: int, tokens: int, grad: bool) -> int:
        model = self.transformer
        inputs = random_inputs(model, rows, tokens, self.latent_shape, self.dtype, torch.Generator().manual_seed(0))
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [p.grad for p in params]  # the replay's gradients must not leak into the trainer's next step
        was_training = model.training
        model.train(grad)  # as the trainer: eval() to sample, train() to update (gradient checkpointing)

        def call() -> None:
            with torch.set_grad_enabled(grad), self.autocast():
                # eager even when `model.compile` is on (`_call_impl`, not the compiled call): the same operators,
                # and torch's counter sees each of them
                out = model._call_impl(**inputs, return_dict=False)[0]
            if grad:
                out.float().sum().backward()

        try:
            return count_flops(call)
        finally:
            for p, g in zip(params, saved, strict=True):
                p.grad = g
            model.train(was_training)


def tflops(flops: float, seconds: float) -> float:
    """Achieved TFLOP/s (NaN without time)."""
    return flops / seconds / 1e12 if seconds > 0 else float("nan")
