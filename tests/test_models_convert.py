"""torchvision / timm / GCNet-mmdet ResNet state dicts -> globalctx ResNets."""

import pytest
import torch
from torch import nn

import globalctx
from globalctx.convert import load_resnet, resnet_key_map, to_layout


def _perturb(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _same_outputs(a, b, size=32):
    # float64: the perturbed networks amplify fp32 rounding (activations reach ~1e4 in stage 4 and
    # the SE gates are sensitive), so fp32 outputs of two correct implementations can differ by 1e-2
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(a.double().eval()(x), b.double().eval()(x), rtol=1e-9, atol=1e-9)


def test_backbone_keys_are_torchvision_keys():
    m = globalctx.create_model("resnet50")
    km, unmapped = resnet_key_map(m)
    assert not unmapped and all(k == v for k, v in km.items())
    for k in ("conv1.weight", "layer1.0.downsample.0.weight", "layer4.2.bn3.running_var", "fc.bias"):
        assert k in km


@pytest.mark.parametrize("name", ["se_resnet50", "eca_resnet50", "gc_resnet50"])
def test_timm_layout_round_trip(name):
    src = _perturb(globalctx.create_model(name, num_classes=4, base_width=16))
    sd = to_layout(src, layout="timm")
    assert any(".se." in k for k in sd)
    if name == "se_resnet50":
        assert sd["layer1.0.se.fc1.weight"].shape == (4, 64, 1, 1)  # 1x1 conv as timm's SEModule
    if name == "gc_resnet50":
        assert sd["layer2.0.se.conv_attn.weight"].shape == (1, 128, 1, 1) and "layer2.0.se.mlp_add.norm.weight" in sd
    dst = globalctx.create_model(name, num_classes=4, base_width=16)
    report = load_resnet(dst, sd, layout="timm")
    assert not report["missing"] and not report["unexpected"] and not report["mismatched"]
    _same_outputs(src, dst)


def test_mmcv_gcnet_layout_matches_mmcv_context_block():
    bricks = pytest.importorskip("mmcv.cnn.bricks", reason="mmcv not installed (optional)")
    src = _perturb(globalctx.create_model("gc_resnet50", num_classes=4, base_width=16))
    sd = to_layout(src, layout="mmcv")
    # the block keys are those of mmcv's ContextBlock under `context_block`
    ref = bricks.ContextBlock(128, ratio=1 / 16)
    prefix = "layer2.0.context_block."
    got = {k[len(prefix) :]: v.shape for k, v in sd.items() if k.startswith(prefix)}
    assert got == {k: v.shape for k, v in ref.state_dict().items()}
    # and the block computes what mmcv's does with those weights
    ref.load_state_dict({k: sd[prefix + k] for k in got})
    x = torch.randn(2, 128, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(src.layer2[0].attn_conv3(x), ref(x), rtol=1e-5, atol=1e-5)
    dst = globalctx.create_model("gc_resnet50", num_classes=4, base_width=16)
    load_resnet(dst, sd, layout="mmcv")
    _same_outputs(src, dst)


def test_unmatched_keys_reported_never_dropped():
    src = globalctx.create_model("se_resnet50", num_classes=4, base_width=16)
    sd = to_layout(src, layout="timm")
    plain = globalctx.create_model("resnet50", num_classes=4, base_width=16)
    with pytest.raises(ValueError, match=r"unexpected \['layer1.0.se.fc1.bias'"):
        load_resnet(plain, sd, layout="timm")
    report = load_resnet(plain, sd, layout="timm", strict=False)
    assert len(report["unexpected"]) == 16 * 4 and not report["missing"]
    # a deep-stem checkpoint (timm resnet50d / ecaresnet50d) does not fit: reported
    deep = dict(sd)
    deep["conv1.0.weight"] = deep.pop("conv1.weight")
    report = load_resnet(globalctx.create_model("se_resnet50", num_classes=4, base_width=16), deep, layout="timm",
                         strict=False)  # fmt: skip
    assert report["missing"] == ["conv1.weight"] and report["unexpected"] == ["conv1.0.weight"]
    bad = dict(sd)
    bad["fc.weight"] = torch.zeros(3, 512)
    with pytest.raises(ValueError, match="mismatched"):
        load_resnet(globalctx.create_model("se_resnet50", num_classes=4, base_width=16), bad, layout="timm")
    with pytest.raises(ValueError, match="unknown layout"):
        load_resnet(plain, sd, layout="caffe")
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        to_layout(src, layout="torchvision")


@pytest.mark.timm
def test_torchvision_resnet50_weights_load():
    tv = pytest.importorskip("torchvision", reason="torchvision not installed (optional)")
    ref = _perturb(tv.models.resnet50())
    m = globalctx.create_model("resnet50")
    load_resnet(m, ref.state_dict())
    _same_outputs(m, ref, size=64)


@pytest.mark.timm
def test_timm_seresnet50_weights_load():
    timm = pytest.importorskip("timm", reason="timm not installed (optional)")
    ref = _perturb(timm.create_model("seresnet50"))
    m = globalctx.create_model("se_resnet50")
    load_resnet(m, ref.state_dict(), layout="timm")
    _same_outputs(m, ref, size=64)


def _transposed(t):
    return t.transpose(0, 1).contiguous()  # [C_r, C, 1, 1] -> [C, C_r, 1, 1]: same numel, wrong shape


def test_load_resnet_checks_exact_shapes_and_reports_every_mismatch():
    src = globalctx.create_model("se_resnet50", num_classes=4, base_width=16)
    sd = to_layout(src, layout="timm")
    bad = dict(sd)
    bad["layer1.0.se.fc1.weight"] = _transposed(sd["layer1.0.se.fc1.weight"])  # [64, 4, 1, 1]
    bad["layer2.0.conv1.weight"] = sd["layer2.0.conv1.weight"].reshape(64, -1, 1, 1)  # numel kept
    bad["layer3.1.se.fc2.weight"] = sd["layer3.1.se.fc2.weight"].flatten(1)  # a linear weight, not the 1x1 conv
    with pytest.raises(ValueError, match=r"mismatched .* \(3\)") as err:
        load_resnet(globalctx.create_model("se_resnet50", num_classes=4, base_width=16), bad, layout="timm")
    for key in ("layer1.0.se.fc1.weight [64, 4, 1, 1] (expected [4, 64, 1, 1])",
                "layer2.0.conv1.weight [64, 32, 1, 1] (expected [32, 64, 1, 1])",
                "layer3.1.se.fc2.weight [256, 16] (expected [256, 16, 1, 1])"):  # fmt: skip
        assert key in str(err.value)
    report = load_resnet(globalctx.create_model("se_resnet50", num_classes=4, base_width=16), bad, layout="timm",
                         strict=False)  # fmt: skip
    assert len(report["mismatched"]) == 3 and "layer1.0.attn_conv3.transform.fc1.weight" not in report["loaded"]


def test_load_resnet_accepts_numpy_and_refuses_other_values():
    src = _perturb(globalctx.create_model("gc_resnet50", num_classes=4, base_width=16))
    as_numpy = {k: v.numpy() for k, v in to_layout(src, layout="timm").items()}
    dst = globalctx.create_model("gc_resnet50", num_classes=4, base_width=16)
    load_resnet(dst, as_numpy, layout="timm")
    _same_outputs(src, dst)
    as_numpy["fc.bias"] = [0.0] * 4
    with pytest.raises(ValueError, match="fc.bias: expected a torch.Tensor or numpy array, got list"):
        load_resnet(dst, as_numpy, layout="timm")


def test_block_converters_check_exact_shapes():
    convert = globalctx.convert
    gc = globalctx.create_block("gc", 64, rd_ratio=1 / 4)
    sd = convert.to_mmcv(gc)
    bad = dict(sd, **{"channel_add_conv.0.weight": _transposed(sd["channel_add_conv.0.weight"]),
                      "channel_add_conv.3.weight": _transposed(sd["channel_add_conv.3.weight"])})  # fmt: skip
    with pytest.raises(ValueError, match=r"channel_add_conv\.0\.weight \[64, 16, 1, 1\] \(expected \[16, 64, 1, 1\]"
                                         r".*channel_add_conv\.3\.weight"):  # fmt: skip
        convert.from_mmcv(globalctx.create_block("gc", 64, rd_ratio=1 / 4), bad)
    convert.from_mmcv(gc, {k: v.numpy() for k, v in sd.items()})  # numpy accepted
    nl = globalctx.create_block("nl", 32)
    sd = convert.to_mmcv(nl)
    with pytest.raises(ValueError, match=r"theta\.conv\.weight \[32, 16, 1, 1\]"):
        convert.from_mmcv(nl, dict(sd, **{"theta.conv.weight": _transposed(sd["theta.conv.weight"])}))
    with pytest.raises(ValueError, match=r"theta\.conv\.weight \[16, 32, 1\] \(expected \[16, 32, 1, 1\]"):
        convert.from_mmcv(nl, dict(sd, **{"theta.conv.weight": sd["theta.conv.weight"][..., 0]}))
    if "dnl" in globalctx.list_blocks():
        dnl = globalctx.create_block("dnl", 32)
        sd = convert.to_official_dnl(dnl)
        with pytest.raises(ValueError, match=r"conv_key\.weight \[32, 8, 1, 1\] \(expected \[8, 32, 1, 1\]"):
            convert.from_official_dnl(dnl, dict(sd, **{"conv_key.weight": _transposed(sd["conv_key.weight"])}))
        convert.from_official_dnl(dnl, convert.to_official_dnl(dnl, spatial_dims=3))  # 3D checkpoints
