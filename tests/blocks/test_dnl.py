"""Disentangled Non-local block: equality with a transcription of the official forward on
official-layout weights, backends, identity at init, gradcheck, autocast, kernels, rows, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import globalctx
from globalctx.layers import DisentangledNonLocal

SHAPES = {1: (2, 16, 12), 2: (2, 16, 6, 5), 3: (2, 16, 2, 4, 4)}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def official_dnl(sd, x, *, downsample, whiten, temperature, with_gc, with_unary, planes):
    """The official ``_NonLocalNd_bn.forward`` (detection and segmentation repos), written out on
    an official-layout state dict; whitening types as named there."""
    dims = x.dim() - 2
    conv = CONV[dims]
    if downsample:
        pool = {
            1: lambda t: F.max_pool1d(t, 2),
            2: lambda t: F.max_pool2d(t, 2),
            3: lambda t: F.max_pool3d(t, (1, 2, 2)),
        }
        input_x = pool[dims](x)
    else:
        input_x = x
    n = x.shape[0]
    query = conv(x, sd["conv_query.weight"], sd["conv_query.bias"]).view(n, planes, -1)
    key = conv(input_x, sd["conv_key.weight"], sd["conv_key.bias"]).view(n, planes, -1)
    value = conv(input_x, sd["conv_value.weight"], sd.get("conv_value.bias")).view(
        n, sd["conv_value.weight"].shape[0], -1
    )
    query_mean = None
    if whiten == "channel":
        query_mean = query.mean(2).unsqueeze(2)
        key, query = key - key.mean(2).unsqueeze(2), query - query_mean
    elif whiten == "spatial":
        key, query = key - key.mean(1).unsqueeze(1), query - query.mean(1).unsqueeze(1)
    elif whiten == "ln_nostd":
        key = key - key.mean(1).mean(1).view(n, 1, 1)
        query = query - query.mean(1).mean(1).view(n, 1, 1)
    sim = torch.bmm(query.transpose(1, 2), key) / math.sqrt(planes) / temperature
    sim = sim.softmax(2)
    out = torch.bmm(sim, value.transpose(1, 2)).transpose(1, 2)
    out = out.reshape(n, out.shape[1], *x.shape[2:]) * sd["gamma"]
    if with_unary:
        unary = torch.bmm(query_mean.transpose(1, 2), key).softmax(2)
        out = out + torch.bmm(value, unary.permute(0, 2, 1)).view(n, -1, *([1] * dims))
    if with_gc:
        mask = conv(input_x, sd["conv_mask.weight"], sd["conv_mask.bias"]).view(n, 1, -1).softmax(2)
        out = out + torch.bmm(value, mask.permute(0, 2, 1)).view(n, -1, *([1] * dims))
    if "conv_out.weight" in sd:
        out = conv(out, sd["conv_out.weight"])
    if "out_bn.weight" in sd:
        out = F.batch_norm(
            out, sd["out_bn.running_mean"], sd["out_bn.running_var"], sd["out_bn.weight"], sd["out_bn.bias"], False
        )
    return out + x


def official_state_dict(ours: DisentangledNonLocal, dims: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sd = globalctx.convert.to_official_dnl(ours, spatial_dims=dims)
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g, dtype=torch.float64).to(v.dtype) + 0.5
        else:
            sd[k] = torch.randn(v.shape, generator=g, dtype=torch.float64).to(v.dtype) * 0.3
    return sd


CONFIGS = {
    "det": dict(),  # detection config: ratio 1/4, channel whitening, conv_mask unary, value C->C
    "det_sub": dict(subsample=True),
    "seg_unary": dict(unary="mean_query", use_out=True, subsample=True, rd_channels=8),
    "out_bn": dict(use_out=True, out_norm=True),
    "spatial": dict(whiten="spatial"),
    "global": dict(whiten="global", temperature=1.0),
    "nowhiten_pair_only": dict(whiten=None, unary=None),
    "unary_only": dict(pairwise_term=False),
}
OFFICIAL_WHITEN = {"channel": "channel", "spatial": "spatial", "global": "ln_nostd", None: None}


def official_kwargs(m: DisentangledNonLocal):
    return dict(
        downsample=m.subsample,
        whiten=OFFICIAL_WHITEN[m.whiten],
        temperature=m.temperature,
        with_gc=m.unary_type == "mask",
        with_unary=m.unary_type == "mean_query",
        planes=m.rd_channels,
    )


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("cfg", list(CONFIGS))
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_matches_official_forward(cfg, dims, dtype, tol):
    ours = DisentangledNonLocal(16, **CONFIGS[cfg]).to(dtype).eval()
    sd = official_state_dict(ours, dims)
    if not ours.pairwise_term:
        sd = {k: v for k, v in sd.items() if k != "gamma"}
    globalctx.convert.from_official_dnl(ours, sd)
    x = torch.randn(SHAPES[dims], dtype=dtype)
    if not ours.pairwise_term:  # the official block always has the pairwise term: silence it with gamma = 0
        sd = dict(sd, **{"conv_query.weight": torch.zeros(8, 16, *[1] * dims, dtype=dtype)})
        sd["conv_query.bias"] = torch.zeros(8, dtype=dtype)
        sd["conv_key.weight"], sd["conv_key.bias"] = sd["conv_query.weight"], sd["conv_query.bias"]
        sd["gamma"] = torch.zeros(1, dtype=dtype)
        kw = dict(official_kwargs(ours), planes=8)
    else:
        kw = official_kwargs(ours)
    with torch.no_grad():
        y = ours(x)
        y_ref = official_dnl(sd, x, **kw)
    assert (y - x).abs().max() > 1e-2
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", ["chunked", "reference"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_backends_match_sdpa(backend, dims):
    m = DisentangledNonLocal(16, subsample=dims > 1).double().eval()
    globalctx.convert.from_official_dnl(m, official_state_dict(m, dims))
    other = DisentangledNonLocal(16, subsample=dims > 1, backend=backend, chunk_size=5).double().eval()
    other.load_state_dict(m.state_dict())
    x = torch.randn(SHAPES[dims], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(other(x), m(x), rtol=1e-10, atol=1e-10)


def test_parameter_count_detection_config():
    m = globalctx.create_block("dnl", 1024)
    assert sum(p.numel() for p in m.parameters()) == 1_574_402


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_identity_at_init(cfg):
    m = DisentangledNonLocal(16, **CONFIGS[cfg])
    x = torch.randn(SHAPES[2]) * 3
    with torch.no_grad():
        assert torch.equal(m(x), x)
        assert torch.equal(m.eval()(x), x)
    m.train()
    m(x).square().sum().backward()
    assert sum(p.grad.abs().sum() for p in m.parameters() if p.grad is not None) > 0


def test_official_init_is_not_identity():
    """Documented deviation: the official unary term is not gated, so its init is no identity."""
    m = DisentangledNonLocal(16, zero_init_last=False)
    x = torch.randn(SHAPES[2])
    with torch.no_grad():
        assert (m(x) - x).abs().max() > 0
    assert torch.count_nonzero(m.gamma) == 0


@pytest.mark.parametrize("cfg", ["det", "seg_unary", "unary_only"])
def test_gradcheck(cfg):
    m = DisentangledNonLocal(8, **dict(CONFIGS[cfg], rd_channels=4)).double()
    globalctx.convert.from_official_dnl(m, official_state_dict(m, 2))
    x = torch.randn(1, 8, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["sdpa", "chunked"])
def test_autocast_large_activations_finite(backend, amp_dtype):
    m = DisentangledNonLocal(16, backend=backend, zero_init_last=False, unary="mean_query").eval()
    with torch.no_grad():
        m.gamma.fill_(1.0)
    x = torch.randn(2, 16, 6, 6) * 1e3
    with torch.no_grad(), torch.autocast("cpu", dtype=amp_dtype):
        y = m(x)
    assert torch.isfinite(y).all()


def test_fused_sdpa_kernel_is_used():
    from torch.profiler import profile

    m = DisentangledNonLocal(16).eval()  # C_r = 4, C_v = 16: widths differ, q/k are padded
    with torch.no_grad(), profile() as prof:
        m(torch.randn(1, 16, 8, 8))
    names = {e.name for e in prof.events()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_scaled_dot_product_attention_math" not in names


def test_attention_rows_and_unary():
    m = DisentangledNonLocal(16, subsample=True, zero_init_last=False).double()
    globalctx.convert.from_official_dnl(m, official_state_dict(m, 2))
    x = torch.randn(2, 16, 6, 8, dtype=torch.float64)
    rows = m.attention_rows(x, torch.tensor([0, 5, 47]))
    assert rows.shape == (2, 3, 12) and m.key_shape(x) == (3, 4)
    torch.testing.assert_close(rows.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    # whitened pairwise rows from the formula
    xk = F.max_pool2d(x, 2)
    q = torch.einsum("oc,ncl->nlo", m.theta.weight, x.flatten(2)) + m.theta.bias
    k = torch.einsum("oc,ncl->nlo", m.phi.weight, xk.flatten(2)) + m.phi.bias
    q, k = q - q.mean(1, keepdim=True), k - k.mean(1, keepdim=True)
    full = (q @ k.transpose(1, 2) / (math.sqrt(4) * 0.05)).softmax(-1)
    torch.testing.assert_close(rows, full[:, [0, 5, 47]])
    u = m.unary_attention(x)
    ref_u = (torch.einsum("c,ncl->nl", m.unary.conv_mask.weight[0], xk.flatten(2)) + m.unary.conv_mask.bias).softmax(-1)
    torch.testing.assert_close(u, ref_u)
    # the block output is x + g(gamma * rows @ xk + u @ xk) per query (value shared by both terms)
    with torch.no_grad():
        m.gamma.fill_(0.7)
        y = m(x).flatten(2)
    w = 0.7 * full + u[:, None, :]  # [N, L, L_k]
    v = torch.einsum("oc,nck->nko", m.g.weight, xk.flatten(2))
    torch.testing.assert_close(y, x.flatten(2) + (w @ v).transpose(1, 2))


def test_registry_errors_and_shapes():
    assert "dnl" in globalctx.list_blocks()
    m = globalctx.create_block("dnl", 32, temperature=0.1, subsample=True)
    for shape in [(2, 32, 10), (2, 32, 6, 8), (1, 32, 2, 4, 6)]:
        assert m(torch.randn(shape)).shape == shape
    with pytest.raises(ValueError, match="whiten"):
        DisentangledNonLocal(16, whiten="bn")
    with pytest.raises(ValueError, match="unary"):
        DisentangledNonLocal(16, unary="gc")
    with pytest.raises(ValueError, match="temperature"):
        DisentangledNonLocal(16, temperature=0)
    with pytest.raises(ValueError, match="no term"):
        DisentangledNonLocal(16, pairwise_term=False, unary=None)
    with pytest.raises(ValueError, match="mean_query"):
        DisentangledNonLocal(16, unary="mean_query", whiten=None)
    with pytest.raises(ValueError, match="cannot compute"):
        DisentangledNonLocal(16, backend="linear")
    with pytest.raises(TypeError):
        globalctx.create_block("dnl", 16, temprature=0.1)
    with pytest.raises(ValueError, match="16 channels"):
        m16 = DisentangledNonLocal(16)
        m16(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match="unary"):
        DisentangledNonLocal(16, unary=None).unary_attention(torch.randn(1, 16, 4, 4))
    with pytest.raises(ValueError, match="missing"):
        globalctx.convert.from_official_dnl(DisentangledNonLocal(16), {"gamma": torch.zeros(1)})


def test_torch_compile_matches_eager():
    m = DisentangledNonLocal(16, zero_init_last=False).eval()
    with torch.no_grad():
        m.gamma.fill_(0.5)
    x = torch.randn(SHAPES[2])
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(m, backend="aot_eager", fullgraph=True)(x), m(x))


def test_double_backward_default_backend_names_the_fix():
    m = DisentangledNonLocal(8, zero_init_last=False).double()
    with torch.no_grad():
        m.gamma.fill_(0.5)
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"create_graph=True.*backend='chunked'"):
        (g,) = torch.autograd.grad(m(x).square().sum(), x, create_graph=True)
        g.square().sum().backward()


def test_double_backward_chunked():
    m = DisentangledNonLocal(8, zero_init_last=False, backend="chunked", chunk_size=5).double()
    with torch.no_grad():
        m.gamma.fill_(0.5)
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(m, (x,), fast_mode=True)
