"""Backbones: registry, parameter counts (research tables §16), forward/backward, init hook."""

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
