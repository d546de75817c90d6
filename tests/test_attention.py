"""Attention kernels: every backend against the plain formula, chunk edge cases, gradients through
checkpointed chunks, fused SDPA dispatch with unequal widths, fp32 statistics, errors."""

from __future__ import annotations

import pytest
import torch

from globalctx.layers import nl_attention as A


def dense(form, q, k, v, scale=1.0):
    if form == "concatenation":
        f = torch.relu(q[:, :, None] + k[:, None, :]) / k.shape[1]
    else:
        logits = q @ k.transpose(1, 2)
        f = (logits * scale).softmax(-1) if form == "softmax" else logits / k.shape[1]
    return f @ v


def inputs(form, n=2, length=13, lk=7, d=5, dv=3, dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    shape_q, shape_k = ((n, length), (n, lk)) if form == "concatenation" else ((n, length, d), (n, lk, d))
    ts = [torch.randn(s, generator=g, dtype=dtype) for s in (shape_q, shape_k, (n, lk, dv))]
    return [t.requires_grad_(requires_grad) for t in ts]


CASES = [
    ("softmax", "sdpa"),
    ("softmax", "chunked"),
    ("softmax", "reference"),
    ("dot_product", "linear"),
    ("dot_product", "chunked"),
    ("dot_product", "reference"),
    ("concatenation", "linear"),
    ("concatenation", "chunked"),
    ("concatenation", "reference"),
]


@pytest.mark.parametrize("chunk_size", [None, 1, 4, 13, 100])
@pytest.mark.parametrize("form,backend", CASES)
def test_kernels_match_dense(form, backend, chunk_size):
    q, k, v = inputs(form)
    y = A.attention(form, q, k, v, scale=0.7, backend=backend, chunk_size=chunk_size)
    assert y.shape == (2, 13, 3)
    torch.testing.assert_close(y, dense(form, q, k, v, 0.7), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("form,backend", CASES)
def test_gradients_match_dense(form, backend):
    q, k, v = inputs(form, requires_grad=True)
    y = A.attention(form, q, k, v, scale=0.7, backend=backend, chunk_size=4)
    gy = torch.randn_like(y)
    grads = torch.autograd.grad(y, (q, k, v), gy)
    ref = torch.autograd.grad(dense(form, q, k, v, 0.7), (q, k, v), gy)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d,dv", [(4, 4), (3, 8), (8, 3)])
def test_sdpa_uses_flash_kernel_with_unequal_widths(d, dv):
    from torch.profiler import profile

    q, k, v = inputs("softmax", d=d, dv=dv, dtype=torch.float32)
    with profile() as prof:
        y = A.softmax_attention(q, k, v, scale=0.5, backend="sdpa")
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names
    torch.testing.assert_close(y, dense("softmax", q, k, v, 0.5), rtol=1e-5, atol=1e-6)


def test_sdpa_accepts_strided_views():
    """Views with last-dim stride 1 but a wider row stride (slices of a fused qkv GEMM) work."""
    qkv = torch.randn(2, 9, 12)
    q, k, v = qkv[..., :4], qkv[..., 4:8], qkv[..., 8:]
    torch.testing.assert_close(A.softmax_attention(q, k, v, scale=0.5), dense("softmax", q, k, v, 0.5))
    qt = torch.randn(2, 4, 9).transpose(1, 2)  # last-dim stride 9: made contiguous, not the math kernel
    torch.testing.assert_close(A.softmax_attention(qt, k, v, scale=0.5), dense("softmax", qt, k, v, 0.5))


@pytest.mark.parametrize("form,backend", [c for c in CASES if c[1] != "sdpa"])
def test_reduced_precision_computes_in_fp32(form, backend):
    q, k, v = inputs(form, dtype=torch.float32)
    q = q * 300  # fp16 logits would overflow (|q.k| up to ~1e5 > 65504)
    ref = dense(form, q.double(), k.double(), v.double(), 0.7)
    y = A.attention(form, q.half(), k.half(), v.half(), scale=0.7, backend=backend, chunk_size=4)
    assert torch.isfinite(y).all()
    assert y.dtype == (torch.float16 if form == "softmax" else torch.float32)
    tol = 5e-2 * ref.abs().max().item()
    if form != "softmax":  # saturated softmax flips with fp16 rounding of q; the others must be close
        torch.testing.assert_close(y.double(), ref, rtol=5e-2, atol=tol)


def test_default_chunk_size_bounds_block():
    assert A.default_chunk_size(1, 16384) * 16384 <= A.CHUNK_ELEMENTS
    assert A.default_chunk_size(4, 10**9) == 1
    assert A.default_chunk_size(1, 10) == A.CHUNK_ELEMENTS // 10


def test_resolve_backend():
    assert A.resolve_backend("softmax", "auto") == "sdpa"
    assert A.resolve_backend("dot_product", "auto") == "linear"
    assert A.resolve_backend("concatenation", "auto") == "linear"
    with pytest.raises(ValueError, match="valid backends"):
        A.resolve_backend("softmax", "flash")
    with pytest.raises(ValueError, match="cannot compute"):
        A.resolve_backend("concatenation", "sdpa")
    with pytest.raises(ValueError, match="valid forms"):
        A.resolve_backend("cosine", "auto")
    with pytest.raises(ValueError, match="valid forms"):
        A.attention("cosine", *inputs("softmax"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_autocast_matches_reference():
    from globalctx.layers import NonLocal

    m = NonLocal(64, zero_init_last=False).cuda().eval()
    x = torch.randn(2, 64, 32, 32, device="cuda")
    ref = NonLocal(64, zero_init_last=False, backend="reference").cuda().eval()
    ref.load_state_dict(m.state_dict())
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        y, yr = m(x), ref(x)
    torch.testing.assert_close(y.float(), yr.float(), rtol=2e-2, atol=2e-2)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        assert torch.isfinite(m(x * 1e3)).all()


@pytest.mark.parametrize("backend", ["linear", "chunked"])
def test_concatenation_ties(backend):
    """Integer-valued a, b: many a_i + b_j == 0 (ReLU(0) = 0) and many equal b_j."""
    g = torch.Generator().manual_seed(3)
    a = torch.randint(-3, 4, (2, 17), generator=g).double()
    b = torch.randint(-3, 4, (2, 11), generator=g).double()
    v = torch.randn(2, 11, 4, generator=g, dtype=torch.float64)
    y = A.concat_attention(a, b, v, backend=backend, chunk_size=5)
    torch.testing.assert_close(y, dense("concatenation", a, b, v), rtol=1e-12, atol=1e-12)
