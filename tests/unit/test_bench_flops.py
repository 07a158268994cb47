"""FLOP counting through torch's counter, and the table of GPU peaks the MFU divides by."""

import pytest
import torch
import torch.nn.functional as F

from treegrpo.bench.flops import count_flops, peak_bf16, tflops


def test_a_linear_counts_two_flops_per_multiply_add():
    m, k, n = 3, 8, 5
    layer = torch.nn.Linear(k, n)
    x = torch.randn(m, k)
    assert count_flops(lambda: layer(x)) == 2 * m * n * k == 240
    # forward and backward of the weight and the input: 3 matmuls of the same size
    x.requires_grad_(True)
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * m * n * k


def test_attention_on_the_cpu_kernel_counts_like_the_math_kernels_matmuls():
    """The CPU's fused attention (the default there) has no formula in torch's table: mapped to torch's own SDPA
    formula it counts what the math kernel's two batched matmuls count: 2 * 2 * b h s s d."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    b, h, s, d = 2, 4, 16, 8
    q = torch.randn(b, h, s, d)
    default = count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    with sdpa_kernel(SDPBackend.MATH):
        math = count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    assert default == math == 2 * (2 * b * h * s * s * d)


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.5), ("NVIDIA H100 NVL", 835.5),
    ("NVIDIA H200", 989.4), ("NVIDIA H200 NVL", 835.5), ("NVIDIA A100-SXM4-80GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L40S", 362.05), ("NVIDIA L4", 121.0), ("NVIDIA A10", 125.0),
])
def test_peak_by_device_name_takes_the_specific_entry_first(name, peak):
    found = peak_bf16(name)
    assert found is not None and found.tflops == peak and "datasheet" in found.source


def test_unknown_devices_and_the_cpu_have_no_peak():
    assert peak_bf16("NVIDIA GeForce GTX 1080") is None and peak_bf16(None) is None


def test_tflops_is_flops_per_second_over_1e12():
    assert tflops(3e12, 2.0) == 1.5
    assert tflops(1.0, 0.0) != tflops(1.0, 0.0)  # NaN without time
