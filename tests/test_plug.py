"""plug(): blocks inserted into existing models leave outputs unchanged at insertion."""

import pytest
import torch
from torch import nn

import globalctx
from globalctx.models import init_blocks


class TVBottleneck(nn.Module):
    """torchvision's Bottleneck layout (shared ReLU, stride on the 3x3, downsample Sequential)."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class TVNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(TVBottleneck(16, 8), TVBottleneck(32, 8))
        self.layer2 = nn.Sequential(TVBottleneck(32, 16, 2), TVBottleneck(64, 16))
        self.fc = nn.Linear(64, 5)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(x.mean((2, 3)))


def _randomise_bn(model):
    # non-trivial BN statistics so an identity test could fail
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    return model.eval()


IDENTITY_BLOCKS = [
    ("gc", {}),
    ("snl", {}),
    ("se", {"zero_init_last": True, "identity_init": True}),
    ("gc", {"fusion": ("add", "mul"), "identity_init": True}),
]
POSITIONS = ["after_conv1", "after_conv2", "after_conv3", "before_add", "after_add", "before_conv"]


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("block,opts", IDENTITY_BLOCKS)
def test_plug_identity_own_model(block, opts, position):
    m = _randomise_bn(globalctx.create_model("resnet50_small", num_classes=7, base_width=4))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = m(x)
        m2, added = globalctx.plug(m, block, where=r"layer3.*|layer4.*", position=position, **opts)
        out = m2(x)
    assert m2 is m and len(added) >= 9  # 6 + 3 blocks
    assert all(a.position == position for a in added)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("block,opts", IDENTITY_BLOCKS[:3])
def test_plug_identity_torchvision_layout(block, opts, position):
    net = _randomise_bn(TVNet())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
        _, added = globalctx.plug(net, block, where="layer2.*", position=position, **opts)
        out = net(x)
    per_block = {"before_conv": 3, "after_add": 1}.get(position, 1)
    assert len(added) == 2 * per_block + (1 if position == "before_conv" else 0)  # + downsample conv
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    # the blocks really run: perturbing one changes the output
    with torch.no_grad():
        for a in added:
            for p in a.block.parameters():
                p.add_(0.5)
        assert not torch.allclose(net(x), ref)


def test_plug_channels_inferred_and_recorded():
    net = TVNet()
    _, added = globalctx.plug(net, "gc", where="layer1.*|layer2.*", position="after_conv2", rd_ratio=1 / 4)
    assert [a.channels for a in added] == [8, 8, 16, 16]
    _, added = globalctx.plug(net, "gc", where="layer2.1", position="after_add")
    assert [a.channels for a in added] == [64] and added[0].name == "layer2.1.block"


def test_plug_generic_after_before():
    net = nn.Sequential(nn.Conv2d(3, 12, 3), nn.ReLU(), nn.Conv2d(12, 6, 1))
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        ref = net(x)
        _, added = globalctx.plug(net, "gc", where="0", position="after", rd_ratio=1 / 4)
        _, added2 = globalctx.plug(net, "snl", where="2", position="before")
        torch.testing.assert_close(net(x), ref, rtol=0, atol=1e-6)
    assert added[0].channels == 12 and added2[0].channels == 12


def test_plug_errors():
    net = TVNet()
    with pytest.raises(ValueError, match="matches no module"):
        globalctx.plug(net, "gc", where="layer9.*")
    with pytest.raises(ValueError, match="unknown position 'middle'"):
        globalctx.plug(net, "gc", where="layer1.*", position="middle")
    with pytest.raises(ValueError, match="no residual block"):
        globalctx.plug(net, "gc", where="fc", position="after_add")
    with pytest.raises(ValueError, match="cannot infer the channels"):
        globalctx.plug(nn.Sequential(nn.ReLU()), "gc", where="0", position="after")
    basic = globalctx.create_model("resnet18_small", base_width=8)
    with pytest.raises(ValueError, match="'after_conv3' is not valid for BasicBlock"):
        globalctx.plug(basic, "gc", where="layer1.0", position="after_conv3")


def test_plugged_blocks_survive_parent_reinit():
    net = TVNet()
    _, added = globalctx.plug(net, "gc", where="layer2.*", position="before_add")
    for m in net.modules():  # a parent's blanket init
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight)
            nn.init.normal_(m.bias)
    assert init_blocks(net) == len(added)
    assert all(a.block.transform.fc2.weight.abs().sum() == 0 for a in added)


@pytest.mark.timm
def test_plug_torchvision_resnet50_identity():
    tv = pytest.importorskip("torchvision", reason="torchvision not installed (optional)")
    net = _randomise_bn(tv.models.resnet50(num_classes=10))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        _, added = globalctx.plug(net, "gc", where="layer3.*|layer4.*", position="after_add")
        torch.testing.assert_close(net(x), ref, rtol=0, atol=1e-5)
    assert len(added) == 9


@pytest.mark.timm
def test_plug_timm_resnet50_identity():
    timm = pytest.importorskip("timm", reason="timm not installed (optional)")
    net = _randomise_bn(timm.create_model("resnet50", num_classes=10))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = net(x)
        _, added = globalctx.plug(net, "gc", where="layer3.*|layer4.*", position="after_conv1")
        torch.testing.assert_close(net(x), ref, rtol=0, atol=1e-5)
    assert len(added) == 9


ALL_IDENTITY = [
    ("nl", {}, "after_add"),
    ("dnl", {}, "before_add"),
    ("gct", {}, "before_conv"),
    ("srm", {"identity_init": True}, "before_add"),
    ("eca", {"zero_init_last": True, "identity_init": True}, "before_add"),
    ("fca", {"zero_init_last": True, "identity_init": True}, "before_add"),
    ("gsop", {"zero_init_last": True, "identity_init": True}, "before_add"),
]


@pytest.mark.parametrize("block,opts,position", ALL_IDENTITY, ids=[b[0] for b in ALL_IDENTITY])
def test_plug_identity_other_blocks(block, opts, position):
    if block not in globalctx.list_blocks():
        pytest.skip(f"block {block!r} is not registered in this build")
    m = _randomise_bn(globalctx.create_model("resnet50_small", num_classes=7, base_width=4))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = m(x)
        _, added = globalctx.plug(m, block, where=r"layer4.*", position=position, **opts)
        torch.testing.assert_close(m(x), ref, rtol=0, atol=1e-5)
    assert len(added) >= 3


def _marked(m):
    return [n for n, mod in m.named_modules() if getattr(mod, "_globalctx_block", False)]


def test_plug_honours_a_placement():
    Placement = globalctx.Placement
    m = globalctx.create_model("resnet50_small", num_classes=3, base_width=4)
    with pytest.raises(ValueError, match="selects none of the residual blocks"):
        globalctx.plug(m, Placement("gc", position="after_add", stages=(4,)), where=r"layer1\.0")
    assert not _marked(m)
    _, added = globalctx.plug(m, Placement("gc", position="after_add", stages=(4,)), where=r"layer.*")
    assert [a.name for a in added] == [f"layer4.{i}.attn_add" for i in range(3)]
    assert all(a.position == "after_add" for a in added)
    _, added = globalctx.plug(m, Placement("se", stages=(2, 3), every=2, rd_ratio=1 / 4), where=r"layer.*")
    assert [a.name for a in added] == ["layer2.1.attn_conv3", "layer2.3.attn_conv3"] + [
        f"layer3.{i}.attn_conv3" for i in (1, 3, 5)
    ]
    _, added = globalctx.plug(m, Placement("gc", indices={3: (-1,)}, stages=(3,), rd_ratio=1 / 4), where=r"layer3.*")
    assert [a.name for a in added] == ["layer3.5.attn_conv3"]
    _, added = globalctx.plug(
        m, Placement("gc", stages=(1, 2), stage_options={2: {"rd_ratio": 1 / 2}}, rd_ratio=1 / 4), where=r"layer[12]\.0"
    )
    assert [a.block.transform.fc1.out_features for a in added] == [4, 16]  # 16 * 1/4, 32 * 1/2


def test_plug_placement_on_torchvision_layout_and_refusals():
    Placement = globalctx.Placement
    net = TVNet()
    _, added = globalctx.plug(net, Placement("gc", stages=(2,), indices=(0,), rd_ratio=1 / 4), where=".*")
    assert [a.name for a in added] == ["layer2.0.bn3.block"]
    with pytest.raises(ValueError, match="contradicts"):
        globalctx.plug(net, Placement("gc", position="after_add"), where="layer1.*", position="before_add")
    with pytest.raises(ValueError, match="give block options inside the Placement"):
        globalctx.plug(net, Placement("gc"), where="layer1.*", rd_ratio=1 / 4)
    with pytest.raises(ValueError, match="cannot honour"):
        globalctx.plug(net, Placement("gc", stages=(2,)), where="fc", position="after")
    with pytest.raises(ValueError, match=r"stem=True\) cannot apply"):
        globalctx.plug(net, Placement("se", position="before_conv", stem=True), where="layer1.*")
    with pytest.raises(ValueError, match="not named like a ResNet block"):
        globalctx.plug(nn.Sequential(TVBottleneck(32, 8)), Placement("gc", stages=(1,)), where="0")
    with pytest.raises(ValueError, match="cannot be reached inside TVBottleneck"):
        globalctx.plug(net, "gc", where="layer1.*", position="after_add_before_relu")
    # a Placement whose selection is the default works like a plain name, even on other names
    _, added = globalctx.plug(nn.Sequential(TVBottleneck(32, 8)), Placement("gc", rd_ratio=1 / 4), where="0")
    assert [a.name for a in added] == ["0.bn3.block"]


def test_plug_is_atomic():
    m = globalctx.create_model("resnet50_small", num_classes=3, base_width=4)
    keys = list(m.state_dict())
    # widths 4 (layer1) fit the instance, 8 (layer2) do not: nothing may be inserted
    inst = globalctx.create_block("gc", 4, rd_ratio=1 / 4)
    with pytest.raises(ValueError, match="has channels=4 but the placement needs 8"):
        globalctx.plug(m, inst, where=r"layer[12]\.0", position="after_conv1")
    assert list(m.state_dict()) == keys and not _marked(m)
    net = TVNet()
    keys = list(net.state_dict())
    with pytest.raises(TypeError):
        globalctx.plug(net, "gc", where="layer.*", rd_ratoi=1 / 4)
    with pytest.raises(ValueError, match="has channels=8 but the placement needs 16"):
        globalctx.plug(net, globalctx.create_block("gc", 8, rd_ratio=1 / 4), where="layer.*", position="after_conv1")
    assert list(net.state_dict()) == keys and not _marked(net)


@pytest.mark.parametrize("position", ["before_add", "after_conv1", "after_add", "before_conv"])
def test_plugged_blocks_take_the_host_mode(position):
    net = _randomise_bn(TVNet())  # eval mode
    x = torch.randn(2, 3, 16, 16)
    _, added = globalctx.plug(net, "nl", where="layer2.*", position=position)
    assert added and all(not mod.training for a in added for mod in a.block.modules())
    before = {n: b.clone() for n, b in net.named_buffers()}
    with torch.no_grad():
        net(x)
    assert all(torch.equal(before[n], b) for n, b in net.named_buffers())  # no BN statistic moved
    ours = globalctx.create_model("resnet50_small", num_classes=3, base_width=4)  # train mode
    _, added = globalctx.plug(ours.eval(), "srm", where=r"layer4.*")
    assert all(not a.block.training for a in added)


@pytest.mark.parametrize("position", ["before_add", "after_conv1", "after_add", "before_conv"])
def test_plug_twice_into_torchvision_layout(position):
    net = _randomise_bn(TVNet())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
        _, first = globalctx.plug(net, "gc", where="layer2.*", position=position)
        _, second = globalctx.plug(net, "snl", where="layer2.*", position=position)
        torch.testing.assert_close(net(x), ref, rtol=0, atol=1e-6)
    assert len(first) == len(second) and [a.channels for a in first] == [a.channels for a in second]
    modules = dict(net.named_modules())
    assert all(modules[a.name] is a.block for a in second)  # the reported names are right
    kept = {id(mod) for mod in net.modules()}
    assert all(id(a.block) in kept for a in first)  # the first blocks stay (chained before the new ones)
    with torch.no_grad():  # both blocks really run, the second after the first
        for a in second:
            for p in a.block.parameters():
                p.add_(0.5)
        assert not torch.allclose(net(x), ref)


def test_plug_follows_the_model_dtype():
    net = TVNet().double()
    _, added = globalctx.plug(net, "gc", where="layer2.*", position="after_add")
    assert all(p.dtype == torch.float64 for a in added for p in a.block.parameters())
    assert net(torch.randn(1, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64
