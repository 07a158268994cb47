"""`model.attention_backend` and `model.compile` (`treegrpo.models.sd3.configure_transformer`): off by default, and
on they give the results of the default path (sampling's velocity and the update's LoRA gradients) on a small SD3
transformer with LoRA."""

import copy

import pytest
import torch

from treegrpo.bench.flops import random_inputs
from treegrpo.config.model import LoraParams
from treegrpo.models.lora import add_lora
from treegrpo.models.sd3 import configure_transformer
from treegrpo.utils.errors import UserError

pytestmark = pytest.mark.integration
LATENT = (4, 8, 8)


@pytest.fixture(scope="module")
def transformer():
    """One joint-attention block (plus SD3.5's dual-attention), LoRA with non-zero B so it shapes the output."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    model = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                                  attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                  caption_projection_dim=16, pooled_projection_dim=8, pos_embed_max_size=8,
                                  dual_attention_layers=(0,), qk_norm="rms_norm")
    add_lora(model, LoraParams(rank=2, alpha=2.0, dropout=0.0,
                               target_modules=["attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    return model


def _run(model, inputs):
    """(sampling's output without gradients, the update's LoRA gradients of a loss on the output)."""
    model.eval()
    with torch.no_grad():
        sample = model(**inputs, return_dict=False)[0]
    model.train()
    model.zero_grad(set_to_none=True)
    model(**inputs, return_dict=False)[0].square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return sample, grads


def _inputs(model):
    return random_inputs(model, 3, 5, LATENT, torch.float32, torch.Generator().manual_seed(1))


def _assert_same(a, b, atol):
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=atol)
    assert a[1].keys() == b[1].keys() and len(a[1]) > 0 and all("lora" in n for n in a[1])
    for name in a[1]:
        torch.testing.assert_close(a[1][name], b[1][name], rtol=0, atol=atol, msg=name)


@pytest.mark.parametrize("backend", ["math", "flash"])
def test_pinned_attention_backend_gives_the_default_results(transformer, backend):
    reference = _run(copy.deepcopy(transformer), _inputs(transformer))
    pinned = configure_transformer(copy.deepcopy(transformer), attention_backend=backend)
    # the kernels sum in different orders: float32 rounding, ~1e-7 measured on outputs of size ~1
    _assert_same(_run(pinned, _inputs(transformer)), reference, atol=1e-5)


def test_attention_backend_reaches_every_attention_call(transformer):
    """A kernel the CPU lacks fails (so the pin is in force), with the key and the fix named."""
    pinned = configure_transformer(copy.deepcopy(transformer), attention_backend="efficient")
    if torch.cuda.is_available():
        pytest.skip("the check needs a kernel the device lacks; on the CPU that is 'efficient'")
    with pytest.raises(UserError, match=r"model.attention_backend='efficient'.*use 'default'"):
        pinned(**_inputs(transformer), return_dict=False)
    with pytest.raises(UserError, match="must be one of"):
        configure_transformer(copy.deepcopy(transformer), attention_backend="sage")


def test_pinned_backend_holds_in_gradient_checkpointing_recomputation(transformer):
    """Checkpointing recomputes the forward in the backward, outside the forward's context: without the same pin
    there (checkpoint's context_fn) the recomputation picks another kernel, saves other tensors, and fails."""
    reference = _run(copy.deepcopy(transformer), _inputs(transformer))
    checkpointed = configure_transformer(copy.deepcopy(transformer), attention_backend="math",
                                         gradient_checkpointing=True)
    _assert_same(_run(checkpointed, _inputs(transformer)), reference, atol=1e-5)


def test_compile_in_place_gives_the_eager_results(transformer):
    """torch.compile of the module in place: the same parameters and state-dict names (LoRA save, checkpoints and
    DDP see the same module), the compiled graphs run, and sampling and the update match eager. Traced with the
    aot_eager backend (dynamo's capture and AOTAutograd's joint forward-backward graph, no code generation: seconds;
    inductor on this CPU costs ~2 minutes of C++ compilation for a 1-layer model: see the gpu test below)."""
    from torch._dynamo.utils import counters

    reference = _run(copy.deepcopy(transformer), _inputs(transformer))
    model = copy.deepcopy(transformer)
    names = list(model.state_dict())
    configure_transformer(model, compile=True, compile_backend="aot_eager")
    counters.clear()
    result = _run(model, _inputs(transformer))
    assert list(model.state_dict()) == names
    assert counters["stats"]["unique_graphs"] >= 2  # a no-grad graph for sampling, a training graph for the update
    _assert_same(result, reference, atol=1e-6)


@pytest.mark.gpu
def test_inductor_compile_matches_eager_on_the_gpu(transformer):
    """What `model.compile: true` runs on a GPU (inductor, triton kernels): the same results up to rounding."""
    model = copy.deepcopy(transformer).cuda()
    reference = _run(copy.deepcopy(model), _inputs(model))
    result = _run(configure_transformer(model, compile=True), _inputs(model))
    _assert_same(result, reference, atol=1e-4)  # TF32 and fused kernels on the GPU: ~1e-6 expected
