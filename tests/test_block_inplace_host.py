"""Every block inside a host that works in place (torchvision/timm bottlenecks: ``out += identity``
and a shared ``ReLU(inplace=True)``) still backpropagates: no block returns a tensor that
autograd saved for its own backward."""

import pytest
import torch
from torch import nn

import globalctx
from globalctx.layers import list_blocks

POSITIONS = ["after_conv1", "after_conv2", "after_conv3", "before_add", "after_add", "before_conv"]


class InPlaceBottleneck(nn.Module):
    """torchvision's ``Bottleneck.forward``: in-place ReLU after each BN, ``out += identity``."""

    def __init__(self, inplanes, planes):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class Host(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 64, 3, padding=1)
        self.layer1 = nn.Sequential(InPlaceBottleneck(64, 16), InPlaceBottleneck(64, 16))

    def forward(self, x):
        return self.layer1(self.stem(x))


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("name", list_blocks())
def test_block_backprops_inside_an_in_place_host(name, position):
    torch.manual_seed(0)
    net = Host().train()
    globalctx.plug(net, name, where="layer1.*", position=position)
    x = torch.randn(2, 3, 8, 8)
    net(x).square().mean().backward()  # raised "modified by an inplace operation" for a saved output
    grads = [p.grad for p in net.stem.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
