"""Video ResNets: C2D equals the 2D ResNet per frame, NL in spacetime, I3D inflation, small clips."""

import pytest
import torch
from torch import nn

import globalctx
from globalctx.models import Bottleneck, ResNet3d, inflate_state_dict


def _bn_eval(m):
    for mod in m.modules():
        if isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm3d)):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_c2d_param_count_equals_resnet50():
    # 1x7x7 / 1x1x1 / 1x3x3 kernels: C2D has exactly the 2D ResNet-50's parameters
    assert sum(p.numel() for p in globalctx.create_model("c2d_resnet50").parameters()) == 25_557_032


def test_c2d_is_2d_resnet_per_frame():
    r2d = _bn_eval(globalctx.create_model("resnet50", num_classes=4, base_width=8))
    c2d = globalctx.create_model("c2d_resnet50", num_classes=4, base_width=8, temporal_strides=(1, 1, 1))
    c2d.load_state_dict(inflate_state_dict(r2d.state_dict(), c2d))
    c2d.eval()
    x = torch.randn(2, 3, 3, 64, 64)  # [N, C, T, H, W]
    with torch.no_grad():
        feats = c2d.forward_features(x)  # [N, 256, T, 2, 2]
        per_frame = torch.stack([r2d.forward_features(x[:, :, t]) for t in range(3)], dim=2)
    torch.testing.assert_close(feats, per_frame, rtol=1e-4, atol=1e-4)


def test_nl_c2d_shapes_placement_and_identity_at_init():
    nl = globalctx.create_model("nl_c2d_resnet50", num_classes=5, base_width=8)
    names = [n for n, m in nl.named_modules() if getattr(m, "_globalctx_block", False)]
    assert names == [f"layer2.{i}.attn_add" for i in (1, 3)] + [f"layer3.{i}.attn_add" for i in (1, 3, 5)]
    c2d = _bn_eval(globalctx.create_model("c2d_resnet50", num_classes=5, base_width=8))
    missing, unexpected = nl.load_state_dict(c2d.state_dict(), strict=False)
    assert not unexpected and all(".attn_add." in k for k in missing)
    nl.eval()
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(nl(x), c2d(x), rtol=0, atol=1e-5)
        # temporal pooling: 8 frames -> conv1 /2 -> pool1 /2 -> pool2 /2
        assert [tuple(f.shape[2:]) for f in nl.forward_stages(x)] == [(2, 16, 16), (1, 8, 8), (1, 4, 4), (1, 2, 2)]


def test_nl_c2d_forward_backward_small_clip():
    m = globalctx.create_model("nl_c2d_resnet50", num_classes=3, base_width=8, temporal_strides=(1, 1, 2))
    x = torch.randn(2, 3, 4, 32, 32)
    y = m(x)
    assert y.shape == (2, 3)
    y.square().sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    blk = m.layer3[1].attn_add
    seen = {}
    def hook(mod, inputs, output):
        seen["shape"] = tuple(inputs[0].shape)

    h = blk.register_forward_hook(hook)
    with torch.no_grad():
        m(x)
    h.remove()
    assert len(seen["shape"]) == 5 and seen["shape"][2] == 2  # [N, C, T=2, H, W]


def test_i3d_inflation_and_count():
    m = globalctx.create_model("i3d_resnet50", num_classes=3, base_width=8)
    assert m.conv1.kernel_size == (5, 7, 7)
    assert m.layer1[0].conv1.kernel_size == (3, 1, 1) and m.layer1[1].conv1.kernel_size == (1, 1, 1)
    y = m(torch.randn(2, 3, 8, 32, 32))
    assert y.shape == (2, 3)


def test_video_errors():
    with pytest.raises(ValueError, match="inflate must be"):
        ResNet3d(Bottleneck, (1, 1, 1, 1), inflate="x3d")
    with pytest.raises(ValueError, match="temporal_strides"):
        globalctx.create_model("c2d_resnet50", temporal_strides=(1, 2))
    with pytest.raises(ValueError, match="'imagenet' stem"):
        globalctx.create_model("c2d_resnet50", stem="small")
    m = globalctx.create_model("c2d_resnet50", num_classes=3, base_width=8)
    with pytest.raises(ValueError, match="keys not in ResNet3d"):
        inflate_state_dict({"foo.weight": torch.zeros(1)}, m)
    assert isinstance(m, ResNet3d)
