"""Children are registered in the order ``forward`` runs them (ResNet and its residual blocks).

torchvision's ``IntermediateLayerGetter`` (used by its detection and segmentation backbones) runs
a model's children one after the other in registration order; a stem registered as
conv1, maxpool, bn1, relu would silently compute other features. These checks need only torch;
the torchvision check itself is in tests/test_integrations_torchvision.py.
"""

import pytest
import torch
from torch import nn

from globalctx.models import create_model


def first_use_order(module: nn.Module, x: torch.Tensor) -> list[str]:
    """Names of ``module``'s direct children in the order the forward pass first calls them."""
    seen: list[str] = []
    handles = [
        child.register_forward_pre_hook(lambda m, a, name=name: seen.append(name) if name not in seen else None)
        for name, child in module.named_children()
    ]
    try:
        module(x)
    finally:
        for h in handles:
            h.remove()
    return seen


@pytest.mark.parametrize(
    "model_name, kwargs",
    [
        ("resnet50", {"attn": "gc"}),
        ("resnet18_small", {"in_chans": 1, "num_classes": 10, "attn": "se"}),
        ("nl_c2d_resnet50", {}),
    ],
)
def test_resnet_children_follow_forward(model_name, kwargs):
    model = create_model(model_name, **kwargs).eval()
    x = torch.randn(1, 3, 4, 64, 64) if "c2d" in model_name else torch.randn(1, kwargs.get("in_chans", 3), 64, 64)
    with torch.no_grad():
        used = first_use_order(model, x)
    names = [n for n, _ in model.named_children()]
    assert used == [n for n in names if n in used]
    assert names[:5] == ["stem_attn", "conv1", "bn1", "relu", "maxpool"]


@pytest.mark.parametrize("model_name", ["resnet50", "resnet18"])
@pytest.mark.parametrize("position", ["after_conv1", "after_conv2", "before_add", "after_add", "before_conv"])
def test_residual_block_children_follow_forward(model_name, position):
    model = create_model(model_name, num_classes=0, attn={"block": "se", "position": position}).eval()
    blk = model.layer2[0]  # the one with a downsample
    x = torch.randn(1, blk.conv1.in_channels, 16, 16)
    with torch.no_grad():
        used = first_use_order(blk, x)
    names = [n for n, _ in blk.named_children()]
    assert used == [n for n in names if n in used]  # in registration order
    unused = set(names) - set(used)
    assert unused == ({"attn_pre3"} if model_name == "resnet18" else set())  # a BasicBlock has no third conv


def test_running_the_children_in_order_gives_the_stage_outputs():
    """What IntermediateLayerGetter does, with torch only."""
    model = create_model("resnet50", num_classes=0, attn="gc").eval()
    x = torch.randn(2, 3, 64, 64)
    got = {}
    with torch.no_grad():
        y = x
        for name, child in model.named_children():
            y = child(y)
            got[name] = y
            if name == "layer4":
                break
        want = model.forward_stages(x)
    for k, w in zip(("layer1", "layer2", "layer3", "layer4"), want):
        torch.testing.assert_close(got[k], w, rtol=0, atol=0)


def test_reordering_keeps_state_dict_keys():
    model = create_model("resnet50", attn="gc")
    keys = set(model.state_dict())
    assert "layer1.0.attn_conv3.0.weight" in keys or any(k.startswith("layer") and ".attn_" in k for k in keys)
    assert {"conv1.weight", "bn1.weight", "fc.weight", "layer4.2.bn3.weight"} <= keys
