"""Blocks and paper-model layouts against the authors' official code, with copied weights.

The references in ``tests/references/`` are written from the official repositories (each names
the repository, commit, file and lines it follows); none is derived from ``globalctx``. Every
comparison runs in float64 with all weights and BN statistics randomised first (so a zero-init
branch cannot hide a difference) and BN in eval mode (running statistics) unless stated.

Tests marked ``xfail(strict=True)`` document a deviation of today's code from the official
module; they start passing (and so fail as XPASS) when the code follows the official structure.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import globalctx
from references import count_parameters, randomize_
from references import official_eca as eca_ref
from references import official_encoding as enc_ref
from references import official_gct as gct_ref
from references import official_gsop as gsop_ref
from references import official_nl_caffe2 as nl_ref
from references import official_snl_dnl as dnl_ref

F64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _pair(ours, ref, seed: int = 0):
    """Randomise ``ours``, cast both to float64 and put both in eval mode."""
    ours = randomize_(ours.to(F64), seed).eval()
    return ours, ref.to(F64).eval()


def _x(*shape, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _close(a: torch.Tensor, b: torch.Tensor, **tol) -> None:
    torch.testing.assert_close(a, b, **(tol or TOL))


# -- GSoP-Net1 channel attention ---------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 2])
def test_gsop_matches_official_chan_att(stride):
    c, d = 16, 8
    ours, ref = _pair(
        globalctx.create_block("gsop", c, cov_channels=d, stride=stride),
        gsop_ref.GSoPChannelAttention(c, att_dim=d, dr_stride=stride),
    )
    gsop_ref.copy_from_ours(ref, ours)
    x = _x(3, c, 6, 6)
    with torch.no_grad():
        _close(ours(x), ref(x))


def test_gsop_parameter_count_equals_official():
    for c, d in ((16, 8), (256, 128)):
        ours = globalctx.create_block("gsop", c, cov_channels=d)
        assert count_parameters(ours) == count_parameters(gsop_ref.GSoPChannelAttention(c, att_dim=d))


def test_gsop_covariance_matches_mpncov():
    # the reference's covpool against the closed form (1/M) Xc Xc^T, to pin the reference itself
    x = _x(2, 5, 3, 4)
    xc = x.flatten(2) - x.flatten(2).mean(-1, keepdim=True)
    _close(gsop_ref.covpool(x), xc @ xc.transpose(1, 2) / 12)


# -- SNL: simple ContextBlock of the DNL detection code ------------------------------------------


def test_snl_parameter_count_equals_official():
    for c in (16, 1024):
        assert count_parameters(globalctx.create_block("snl", c)) == count_parameters(dnl_ref.ContextBlockSimple(c))
    assert count_parameters(globalctx.create_block("snl", 1024)) == 1_049_601


def test_snl_bias_option_adds_c_parameters():
    assert count_parameters(globalctx.create_block("snl", 1024, bias=True)) == 1_050_625
    ours = globalctx.create_block("snl", 16, bias=True)
    with pytest.raises(ValueError, match="conv_value.bias"):  # no official slot for the bias
        dnl_ref.copy_snl_from_ours(dnl_ref.ContextBlockSimple(16), ours)


def test_snl_matches_official_simple_context_block():
    c = 16
    ours, ref = _pair(globalctx.create_block("snl", c), dnl_ref.ContextBlockSimple(c))
    dnl_ref.copy_snl_from_ours(ref, ours)  # refuses a tensor without an official slot
    x = _x(2, c, 5, 7)
    with torch.no_grad():
        _close(ours(x), ref(x))


# -- EncNet --------------------------------------------------------------------------------------


def test_enc_float64_matches_official():
    c, k = 16, 4
    ours, ref = _pair(globalctx.create_block("enc", c, num_codes=k), enc_ref.EncModule(c, k))
    enc_ref.copy_from_ours(ref, ours)
    x = _x(2, c, 5, 5) * 3
    with torch.no_grad():
        _close(ours(x), ref(x), rtol=1e-13, atol=1e-13)


def test_enc_float32_matches_official():
    # same mapping, fp32 tolerance: the structure is the official one
    c, k = 16, 4
    ours, ref = _pair(globalctx.create_block("enc", c, num_codes=k), enc_ref.EncModule(c, k))
    enc_ref.copy_from_ours(ref, ours)
    ours, ref = ours.float(), ref.float()
    x = (_x(2, c, 5, 5) * 3).float()
    with torch.no_grad():
        _close(ours(x), ref(x), rtol=1e-4, atol=1e-5)
    assert count_parameters(ours) == count_parameters(ref)


# -- DNL block -----------------------------------------------------------------------------------


@pytest.mark.parametrize("subsample", [False, True])
def test_dnl_block_matches_official(subsample):
    c = 16
    ours, ref = _pair(
        globalctx.create_block("dnl", c, subsample=subsample),
        dnl_ref.NonLocalNdGc(c, dim=2, ratio=0.25, downsample=subsample, temperature=0.05, whiten_type=["channel"]),
    )
    dnl_ref.copy_dnl_from_ours(ref, ours)
    x = _x(2, c, 6, 8)
    with torch.no_grad():
        _close(ours(x), ref(x))
    assert count_parameters(ours) == count_parameters(ref)


def test_dnl_official_init_is_not_identity():
    # the reference keeps the official init: the unary term is not gated by gamma
    ref = dnl_ref.NonLocalNdGc(16).to(F64)
    x = _x(2, 16, 4, 4)
    assert not torch.allclose(ref(x), x)
    ours = globalctx.create_block("dnl", 16, zero_init_last=False).to(F64)
    dnl_ref.copy_dnl_from_ours(ref, ours)
    _close(ours(x), ref(x))


# -- NL block: Caffe2 configuration --------------------------------------------------------------


def test_nl_block_with_maxpool_matches_caffe2():
    c = 16
    ours, ref = _pair(globalctx.create_block("nl", c, subsample=True), nl_ref.SpacetimeNonlocal(c, use_maxpool=True))
    nl_ref.copy_from_ours(ref, ours)
    x = _x(2, c, 6, 8)
    with torch.no_grad():
        # BN eps: ours 1e-5, Caffe2 1.0000001e-5 (a 1e-12 relative change)
        _close(ours(x), ref(x), rtol=1e-9, atol=1e-10)


def test_nl_block_3d_with_maxpool_matches_caffe2():
    c = 8
    ours, ref = _pair(
        globalctx.create_block("nl", c, subsample=True), nl_ref.SpacetimeNonlocal(c, dims=3, use_maxpool=True)
    )
    nl_ref.copy_from_ours(ref, ours)
    x = _x(1, c, 3, 4, 6)
    with torch.no_grad():
        _close(ours(x), ref(x), rtol=1e-9, atol=1e-10)


def _nl_modules(model):
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ == "NonLocal"]


def _stage_block(name: str) -> tuple[int, int]:
    parts = name.split(".")
    return int(parts[0].removeprefix("layer")), int(parts[1])


def test_nl_resnet50_blocks_as_caffe2():
    model = globalctx.create_model("nl_resnet50", num_classes=0, base_width=8)
    found: dict[int, list[int]] = {}
    for name, _ in _nl_modules(model):
        s, b = _stage_block(name)
        found.setdefault(s, []).append(b)
    assert found == nl_ref.nonlocal_blocks(50)


def _bottleneck_trunk(block, x):
    """``bn3(conv3(...)) + shortcut`` of a plain bottleneck from its torchvision-named parts."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = F.relu(block.bn2(block.conv2(out)))
    out = block.bn3(block.conv3(out))
    return out + (x if block.downsample is None else block.downsample(x))


def test_nl_resnet50_block_after_final_relu():
    model = globalctx.create_model("nl_resnet50", num_classes=0, base_width=8)
    model = randomize_(model.to(F64)).eval()
    block = model.layer2[1]
    ((_, nl),) = [(n, m) for n, m in _nl_modules(block)]
    c = block.bn3.num_features
    ref = nl_ref.SpacetimeNonlocal(c, use_maxpool=nl.subsample).to(F64).eval()  # position only
    nl_ref.copy_from_ours(ref, nl)
    x = _x(2, c, 8, 8)
    with torch.no_grad():
        _close(block(x), ref(F.relu(_bottleneck_trunk(block, x))), rtol=1e-9, atol=1e-10)


def test_nl_resnet50_subsamples_as_caffe2():
    model = globalctx.create_model("nl_resnet50", num_classes=0, base_width=8)
    nls = _nl_modules(model)
    assert len(nls) == 5
    for _, nl in nls:
        c = nl.channels
        ours, ref = _pair(nl, nl_ref.SpacetimeNonlocal(c, use_maxpool=True))
        nl_ref.copy_from_ours(ref, ours)
        x = _x(2, c, 6, 6)
        with torch.no_grad():
            _close(ours(x), ref(x), rtol=1e-9, atol=1e-10)


# -- DNL ResNet-50: block position ---------------------------------------------------------------


def test_dnl_resnet50_blocks_as_official_c4c5_config():
    model = globalctx.create_model("dnl_resnet50", num_classes=0, base_width=8)
    found: dict[int, list[int]] = {}
    for name, m in model.named_modules():
        if type(m).__name__ == "DisentangledNonLocal":
            s, b = _stage_block(name)
            found.setdefault(s, []).append(b)
    # stage_with_nlgcb=[[], [], [-2], [-2, -1, 0]] with 6 and 3 blocks
    assert {s: sorted(b) for s, b in found.items()} == {3: [4], 4: [0, 1, 2]}


@pytest.mark.parametrize("index", [4, 0])
def test_dnl_resnet50_block_between_add_and_relu(index):
    model = globalctx.create_model("dnl_resnet50", num_classes=0, base_width=8)
    block = (model.layer3 if index == 4 else model.layer4)[index]
    block = randomize_(block.to(F64)).eval()
    inplanes = block.conv1.in_channels
    planes = block.conv1.out_channels
    stride = block.conv2.stride[0]
    down = None
    if block.downsample is not None:
        down = torch.nn.Sequential(
            torch.nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), torch.nn.BatchNorm2d(planes * 4)
        )
    ref = dnl_ref.DNLBottleneck(inplanes, planes, stride, down).to(F64).eval()
    dnl_ref.copy_bottleneck_from_ours(ref, block)
    x = _x(2, inplanes, 8, 8)
    with torch.no_grad():
        _close(block(x), ref(x))


# -- GCT -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["l2", "l1"])
def test_gct_block_matches_official(mode):
    c = 16
    ours, ref = _pair(globalctx.create_block("gct", c, mode=mode), gct_ref.GCT(c, mode=mode))
    gct_ref.copy_gct_from_ours(ref, ours)
    x = _x(2, c, 5, 6)
    with torch.no_grad():
        _close(ours(x), ref(x))
    assert count_parameters(ours) == count_parameters(ref)


def _gct_first_block(model):
    block = randomize_(model.layer2[0].to(F64)).eval()
    cin, width, cout = block.conv1.in_channels, block.conv1.out_channels, block.bn3.num_features
    return block, cin, width, cout


def test_gct_resnet50_stride_on_first_1x1():
    model = globalctx.create_model("gct_resnet50", num_classes=0, base_width=8)
    block, *_ = _gct_first_block(model)
    assert tuple(block.conv1.stride) == (2, 2) and tuple(block.conv2.stride) == (1, 1)


def test_gct_resnet50_first_block_matches_official():
    model = globalctx.create_model("gct_resnet50", num_classes=0, base_width=8)
    block, cin, width, cout = _gct_first_block(model)
    ref = gct_ref.GCTBottleneck(cin, width, cout, stride=2, stride_in_1x1=True).to(F64).eval()
    gct_ref.copy_bottleneck_from_ours(ref, block)
    x = _x(2, cin, 8, 8)
    with torch.no_grad():
        _close(block(x), ref(x))


def test_gct_resnet50_first_block_matches_torchvision_layout_reference():
    # the same reference with the stride on the 3x3: today's layout, everything else official
    model = globalctx.create_model("gct_resnet50", num_classes=0, base_width=8)
    block, cin, width, cout = _gct_first_block(model)
    stride_in_1x1 = tuple(block.conv1.stride) == (2, 2)
    ref = gct_ref.GCTBottleneck(cin, width, cout, stride=2, stride_in_1x1=stride_in_1x1).to(F64).eval()
    gct_ref.copy_bottleneck_from_ours(ref, block)
    x = _x(2, cin, 8, 8)
    with torch.no_grad():
        _close(block(x), ref(x))


# -- ECA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", eca_ref.RELEASED_ECA_RESNET50_K[1:])
def test_eca_block_matches_official(k):
    c = 32
    ours, ref = _pair(globalctx.create_block("eca", c, kernel_size=k), eca_ref.EcaLayer(c, k))
    eca_ref.copy_from_ours(ref, ours)
    x = _x(2, c, 4, 5)
    with torch.no_grad():
        _close(ours(x), ref(x))


def test_eca_kernel_rule_not_attributed_to_official_code():
    from globalctx.layers.blocks.eca import eca_kernel_size

    doc = " ".join((eca_kernel_size.__doc__ or "").split()).lower()
    assert "as the official code" not in doc
