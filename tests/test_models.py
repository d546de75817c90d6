"""Backbones: registry, parameter counts (research tables §16), forward/backward, init hook."""

import copy

import pytest
import torch
from torch import nn

import globalctx
from globalctx.models import Placement, ResNet3d, init_blocks


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_list_and_create_unknown():
    names = globalctx.list_models()
    assert "resnet50" in names and "resnet18_small" in names and names == sorted(names)
    assert globalctx.list_models("gc_*") == [n for n in names if n.startswith("gc_")]
    with pytest.raises(ValueError, match="unknown model 'resnet51'"):
        globalctx.create_model("resnet51")


def test_resnext_too_narrow_raises():
    with pytest.raises(ValueError, match="bottleneck width"):
        globalctx.create_model("resnext50_32x4d", base_width=8)


def test_misspelled_option_raises_typeerror():
    with pytest.raises(TypeError):
        globalctx.create_model("resnet18_small", base_widht=16)


def test_small_variant_trainer_contract():
    m = globalctx.create_model("resnet18_small", num_classes=10, in_chans=1, attn="gc", base_width=16)
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, nn.Identity)
    assert m.conv1.in_channels == 1 and m.layer1[0].conv1.in_channels == 16 and m.fc.out_features == 10
    # GC in every block of stages 2-4 (paper default), none in stage 1
    assert isinstance(m.layer1[0].attn_conv2, nn.Identity)
    assert type(m.layer2[0].attn_conv2).__name__ == "GlobalContextBlock"
    x = torch.randn(2, 1, 28, 28)
    y = m(x)
    assert y.shape == (2, 10)
    y.logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in m.parameters())


# research tables §16 (exact integers from the official module definitions)
PAPER_COUNTS = [
    ("resnet50", None, 25_557_032),
    ("resnet101", None, 44_549_160),
    ("gc_resnet50", "gc", 28_078_773),
    ("gc_resnet50_c2c5", "gc", 28_105_032),
    ("gc_resnet50_r4", "gc", 35_557_941),
    ("se_resnet50", "se", 28_088_024),
    ("se_resnet101", "se", 49_326_872),
    ("eca_resnet50", "eca", 25_557_112),
    ("eca_resnet101", "eca", 44_549_317),
    ("fca_resnet50", "fca", 28_071_976),
    ("srm_resnet50", "srm", 25_617_448),
    ("srm_resnet101", "srm", 44_679_208),
    ("gct_resnet50", "gct", 25_624_625),
    ("gsop_resnet50", "gsop", 28_285_224),  # §8 [C]: +2,728,192 for the official structure
    # NL: ResNet-50 + per-block counts of §16 (C = 512 / 1024)
    ("nl_resnet50", "nl", 25_557_032 + 2 * 526_592 + 3 * 2_101_760),
    ("nl_resnet50_1", "nl", 25_557_032 + 2_101_760),
]


def _need(block):
    if block is not None and block not in globalctx.list_blocks():
        pytest.skip(f"block {block!r} is not registered in this build, so its paper model is not either")


@pytest.mark.parametrize("name,block,count", PAPER_COUNTS, ids=[c[0] for c in PAPER_COUNTS])
def test_param_counts(name, block, count):
    _need(block)
    assert n_params(globalctx.create_model(name)) == count


def test_se_no_bias_equals_fcanet_count():
    assert n_params(globalctx.create_model("resnet50", attn=Placement("se", bias=False))) == 28_071_976


def test_dnl_block_count_in_res4():
    _need("dnl")
    m = globalctx.create_model("dnl_resnet50")
    assert n_params(m.layer3[4].attn_pre_relu) == 1_574_402  # §16: DNL detection config, C = 1024
    assert isinstance(m.layer3[5].attn_pre_relu, nn.Identity) and not isinstance(m.layer4[1].attn_pre_relu, nn.Identity)


@pytest.mark.parametrize("name", globalctx.list_models())
def test_every_model_forward_backward_small(name):
    small = name.endswith("_small")
    m = globalctx.create_model(name, num_classes=5, base_width=16 if ("resnext" in name or small) else 4)
    x = torch.randn(2, 3, 16 if small else 32, 16 if small else 32)
    if isinstance(m, ResNet3d):  # video models take clips [N, 3, T, H, W]
        x = torch.randn(2, 3, 4, 32, 32)
    y = m(x)
    assert y.shape == (2, 5) and torch.isfinite(y).all()
    y.square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_gc_c2_c5_count():
    m = globalctx.create_model("resnet50", attn=Placement("gc", stages=(1, 2, 3, 4)))
    assert n_params(m) == 28_105_032


def test_full_size_resnet50_gc_forward_backward():
    m = globalctx.create_model("gc_resnet50")
    y = m(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_init_hook_keeps_block_zero_init():
    m = globalctx.create_model("resnet50_small", num_classes=10, base_width=8, attn="gc")
    blocks = [mod for mod in m.modules() if type(mod).__name__ == "GlobalContextBlock"]
    assert blocks and all(b.transform.fc2.weight.abs().sum() == 0 for b in blocks)
    # a parent initialiser that blindly re-inits every Linear would break the zero-init ...
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight)
    assert any(b.transform.fc2.weight.abs().sum() > 0 for b in blocks)
    # ... the model's own initialiser restores it (block init runs last) and the hook is reusable
    m.init_weights()
    assert all(b.transform.fc2.weight.abs().sum() == 0 for b in blocks)
    assert all(b.transform.fc2.bias.abs().sum() == 0 for b in blocks)
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight)
    assert init_blocks(m) == len(blocks)
    assert all(b.transform.fc2.weight.abs().sum() == 0 for b in blocks)


def test_features_api():
    m = globalctx.create_model("gc_resnet50", num_classes=6, base_width=8).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        stages = m.forward_stages(x)
        assert [tuple(s.shape[1:]) for s in stages] == [(32, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2)]
        assert [f["num_chs"] for f in m.feature_info] == [32, 64, 128, 256]
        feats = m.forward_features(x)
        torch.testing.assert_close(feats, stages[-1])
        pre = m.forward_head(feats, pre_logits=True)
        assert pre.shape == (2, m.num_features) == (2, 256)
        torch.testing.assert_close(m.forward_head(feats), m(x))
    headless = globalctx.create_model("resnet18_small", num_classes=0, base_width=8)
    assert headless(torch.randn(2, 3, 16, 16)).shape == (2, 64)


@pytest.mark.slow
def test_torch_compile_model_with_blocks():
    m = globalctx.create_model(
        "resnet18_small", num_classes=4, base_width=16, attn=["gc", Placement("se", stages=(1,), rd_ratio=1 / 4)]
    )
    m.eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = m(x)
        out = torch.compile(m, fullgraph=True)(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "kw,err,match",
    [
        ({"num_classes": 1.5}, TypeError, "num_classes"),
        ({"num_classes": "10"}, TypeError, "num_classes"),
        ({"num_classes": True}, TypeError, "num_classes"),
        ({"num_classes": -1}, ValueError, "num_classes"),
        ({"in_chans": 0}, ValueError, "in_chans"),
        ({"in_chans": 3.0}, TypeError, "in_chans"),
    ],
)
def test_create_model_checks_num_classes_and_in_chans(kw, err, match):
    with pytest.raises(err, match=match):
        globalctx.create_model("resnet18_small", base_width=8, **kw)


def test_repr_hides_empty_slots_and_keeps_keys():
    m = globalctx.create_model("resnet50")
    text = repr(m)
    assert "Identity()" not in text and "(attn_" not in text
    assert len(text.splitlines()) < 200  # 307 lines when the 131 empty slots were printed
    assert "(layer4): Sequential(" in text and "(downsample): Sequential(" in text and "(fc): Linear" in text
    # the slots are still there (forward, state-dict keys and torchvision layout unchanged)
    assert isinstance(m.layer1[0].attn_conv3, nn.Identity) and "layer1.0.conv1.weight" in m.state_dict()
    gc = repr(globalctx.create_model("gc_resnet50"))
    assert gc.count("(attn_conv3): GlobalContextBlock(") == 13 and "Identity()" not in gc


def _tiny_input(m):
    if isinstance(m, ResNet3d):
        return torch.randn(1, 3, 4, 32, 32, dtype=torch.float64)  # [N, C, T, H, W]
    return torch.randn(1, 3, 32, 32, dtype=torch.float64)


@pytest.mark.parametrize("name", [n for n in globalctx.list_models() if not n.startswith(("resnet", "resnext"))])
def test_every_paper_model_in_float64(name):
    small = name.endswith("_small")
    m = globalctx.create_model(name, num_classes=3, base_width=16 if small else 4, dtype=torch.float64)
    dtypes = {t.dtype for t in m.state_dict().values() if t.is_floating_point()}
    assert dtypes == {torch.float64}
    y = m.eval()(_tiny_input(m))
    assert y.dtype == torch.float64 and torch.isfinite(y).all()


def test_user_placements_follow_model_dtype():
    m = globalctx.create_model("resnet18_small", base_width=16, dtype=torch.float64, attn=["gc", "se"])
    assert {p.dtype for p in m.parameters()} == {torch.float64}
    assert m(torch.randn(1, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64


def _bottleneck_dnl_official(rb, x):
    # Howal/DNL-Object-Detection @6ae88842, mmdet/models/backbones/resnet.py, Bottleneck.forward:
    # conv1-norm1-relu, conv2-norm2-relu, conv3-norm3, out += identity (downsample(x)),
    # out = self.nl_gc_block(out), then out = self.relu(out) after _inner_forward
    out = rb.relu(rb.bn1(rb.conv1(x)))
    out = rb.relu(rb.bn2(rb.conv2(out)))
    out = rb.bn3(rb.conv3(out))
    identity = x if rb.downsample is None else rb.downsample(x)
    out = out + identity
    out = rb.attn_pre_relu(out)
    return rb.relu(out)


def test_dnl_resnet50_block_between_add_and_relu():
    _need("dnl")
    m = globalctx.create_model("dnl_resnet50", num_classes=3, base_width=8).eval()
    names = [n for n, mod in m.named_modules() if getattr(mod, "_globalctx_block", False)]
    # official config: stage_with_nlgcb=[[], [], [-2], [-2, -1, 0]]
    assert names == ["layer3.4.attn_pre_relu"] + [f"layer4.{i}.attn_pre_relu" for i in range(3)]
    rb = m.layer4[0]
    with torch.no_grad():
        for p in rb.attn_pre_relu.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # gamma != 0: the pairwise term matters
        x = torch.randn(2, 128, 4, 4)
        seen = []
        h = rb.attn_pre_relu.register_forward_hook(lambda mod, i, o: seen.append(i[0].clone()) and None)
        torch.testing.assert_close(rb(x), _bottleneck_dnl_official(rb, x), rtol=0, atol=0)
        h.remove()
        assert seen[0].min() < 0  # the block sees the sum before the ReLU
        # and the placement is not the before-add one: moving the block changes the output
        alt = copy.deepcopy(rb)
        alt.attn_conv3, alt.attn_pre_relu = alt.attn_pre_relu, nn.Identity()
        assert not torch.allclose(alt(x), rb(x))


def _nl_caffe2_reference(blk, x):
    # facebookresearch/video-nonlocal-net @c253ed5e, lib/models/nonlocal_helper.py
    # spacetime_nonlocal: theta = conv(x); with cfg.NONLOCAL.USE_MAXPOOL (lib/core/config.py: True)
    # max_pool = MaxPool(x, kernel = stride = [1, 2, 2]); phi = conv(max_pool); g = conv(max_pool);
    # theta_phi = theta^T phi * dim_inner^-0.5; softmax over the keys; t = g p^T; conv_out; BN; + x
    n, c, h, w = x.shape
    pooled = torch.nn.functional.max_pool2d(x, 2)  # [N, C, H/2, W/2]
    theta = blk.theta(x.flatten(2).transpose(1, 2))  # [N, L, C_r]
    phi = blk.phi(pooled.flatten(2).transpose(1, 2))  # [N, L/4, C_r]
    g = blk.g(pooled.flatten(2).transpose(1, 2))  # [N, L/4, C_r]
    p = torch.softmax(theta @ phi.transpose(1, 2) * theta.shape[-1] ** -0.5, dim=-1)  # [N, L, L/4]
    y = blk.out(p @ g)  # [N, L, C]
    y = blk.norm(y.transpose(1, 2)).reshape(n, c, h, w)  # [N, C, H, W]
    return x + y


def test_nl_resnet50_max_pools_before_phi_and_g():
    _need("nl")
    for name in ("nl_resnet50", "nl_resnet50_1"):
        m = globalctx.create_model(name, num_classes=3, base_width=8).eval()
        blocks = [mod for mod in m.modules() if getattr(mod, "_globalctx_block", False)]
        assert blocks and all(b.subsample and b.subsample_order == "pool_first" for b in blocks)
    blk = blocks[0].double()
    with torch.no_grad():
        nn.init.normal_(blk.norm.weight)
        nn.init.normal_(blk.norm.bias)
        blk.norm.running_mean.uniform_(-0.2, 0.2)
        x = torch.randn(2, blk.channels, 6, 6, dtype=torch.float64)
        torch.testing.assert_close(blk(x), _nl_caffe2_reference(blk, x), rtol=1e-10, atol=1e-10)


def test_gct_resnet50_stride_on_first_1x1():
    _need("gct")
    # z-x-yang/GCT @68983edd, PyTorch/resnet.py: _make_stage(..., True  # STRIDE_IN_1X1) and
    # Bottleneck: stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride);
    # conv1 = Sequential(GCT(in), Conv2d(1x1, stride=stride_1x1)), conv2 = (GCT, 3x3 stride_3x3),
    # conv3 = (GCT, 1x1); downsample = Sequential(GCT(in), Conv2d(1x1, stride), BN); += ; relu
    m = globalctx.create_model("gct_resnet50", num_classes=3, base_width=8).eval()
    for s, layer in enumerate(m.stages(), start=1):
        want = 1 if s == 1 else 2
        assert layer[0].conv1.stride == (want, want) and layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (want, want)
    rb = m.layer2[0]
    F = torch.nn.functional
    with torch.no_grad():
        for g in (rb.attn_pre1, rb.attn_pre2, rb.attn_pre3, rb.attn_pre_down):
            for p in g.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        x = torch.randn(2, 32, 8, 8)
        out = F.relu(rb.bn1(F.conv2d(rb.attn_pre1(x), rb.conv1.weight, stride=2)))
        out = F.relu(rb.bn2(F.conv2d(rb.attn_pre2(out), rb.conv2.weight, padding=1)))
        out = rb.bn3(F.conv2d(rb.attn_pre3(out), rb.conv3.weight))
        idt = rb.downsample[1](F.conv2d(rb.attn_pre_down(x), rb.downsample[0].weight, stride=2))
        torch.testing.assert_close(rb(x), F.relu(out + idt), rtol=0, atol=1e-6)
    plain = globalctx.create_model("resnet50")
    assert plain.layer2[0].conv1.stride == (1, 1) and plain.layer2[0].conv2.stride == (2, 2)  # torchvision
    with pytest.raises(ValueError, match="stride_in_1x1=True needs Bottleneck"):
        globalctx.create_model("resnet18", stride_in_1x1=True)
