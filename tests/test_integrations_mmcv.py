"""globalctx blocks as mmcv plugins: built through ``mmcv.cnn.build_plugin_layer`` as mmdet does."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import globalctx
from reference_utils import perturb_parameters

mmcv_cnn = pytest.importorskip("mmcv.cnn", reason="mmcv not installed (pip install 'globalctx[mmcv]')")
gm = pytest.importorskip("globalctx.integrations.mmcv")

BLOCKS = globalctx.list_blocks()
# small but valid options per block at C = 32 (as in test_channel_presets.py)
SMALL = {"gsop": {"cov_channels": 4}, "enc": {"num_codes": 4}, "ban": {"rd_ratio": 1 / 8}, "fca": {"freq_sel": "top4"}}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"



def test_every_block_is_registered_under_the_scope():
    types = gm.register_mmcv_plugins()
    assert types == [f"globalctx.{b}" for b in BLOCKS]
    assert sorted(gm.registry().module_dict) == BLOCKS
    assert gm.registry().scope == "globalctx"


@pytest.mark.parametrize("block", BLOCKS)
def test_build_plugin_layer_equals_create_block(block):
    opts = SMALL.get(block, {})
    name, layer = mmcv_cnn.build_plugin_layer(dict(type=f"globalctx.{block}", **opts), in_channels=32, postfix=2)
    assert name == f"globalctx_{block}2"
    ref = globalctx.create_block(block, 32, **opts)
    assert type(layer) is type(ref)
    perturb_parameters(layer)
    ref.load_state_dict(layer.state_dict(), strict=True)  # the same keys: no wrapper
    layer.eval()
    ref.eval()
    x = torch.randn(2, 32, 7, 7)
    with torch.no_grad():
        y = layer(x)
        torch.testing.assert_close(y, ref(x), rtol=0, atol=0)
    assert y.shape == x.shape


def test_options_reach_the_block():
    _, layer = mmcv_cnn.build_plugin_layer(dict(type="globalctx.gc", rd_ratio=1 / 4), in_channels=64)
    n = sum(p.numel() for p in layer.parameters())
    assert n == sum(p.numel() for p in globalctx.create_block("gc", 64, rd_ratio=1 / 4).parameters())
    assert n != sum(p.numel() for p in globalctx.create_block("gc", 64).parameters())
    with pytest.raises(TypeError):
        mmcv_cnn.build_plugin_layer(dict(type="globalctx.gc", rd_ratoi=1 / 4), in_channels=64)


def test_scoped_name_is_ours_and_bare_name_is_not():
    with gm.registry().switch_scope_and_registry(None) as reg:
        assert reg.get("globalctx.gc").block == "gc"
    # mmengine falls back to importing a bare name: 'gc' is Python's gc module, not a plugin
    with pytest.raises(TypeError, match="class_type must be a type"):
        mmcv_cnn.build_plugin_layer(dict(type="gc"), in_channels=64)


def test_abbreviations_are_distinct_and_not_mmcv_ones():
    abbrs = [mmcv_cnn.bricks.plugin.infer_abbr(gm.registry().get(b)) for b in BLOCKS]
    assert len(set(abbrs)) == len(abbrs)
    assert not {"context_block", "nonlocal_block", "gen_attention_block"} & set(abbrs)


def test_register_again_adds_new_blocks_only():
    reg = gm.registry()
    before = dict(reg.module_dict)
    assert gm.register_mmcv_plugins() == [f"globalctx.{b}" for b in BLOCKS]  # idempotent
    assert reg.module_dict == before
    with pytest.raises(TypeError, match="base class"):
        gm.GlobalctxPlugin(16)


def test_found_from_a_downstream_scope():
    """A library registry (mmdet's ``MODELS`` is a child of mmengine's, scope ``mmdet``) as default
    scope: ``globalctx.gc`` is still found, through the root registry."""
    from mmengine.registry import MODELS, DefaultScope, Registry

    scope = "downstream_lib"
    if scope not in MODELS.children:
        Registry("model", parent=MODELS, scope=scope)
    with DefaultScope.overwrite_default_scope(scope):
        with MODELS.switch_scope_and_registry(None) as reg:
            assert reg.scope == scope
        name, layer = mmcv_cnn.build_plugin_layer(dict(type="globalctx.se"), in_channels=32)
    assert name == "globalctx_se"
    assert type(layer) is type(globalctx.create_block("se", 32))


class MMDetStyleBottleneck(nn.Module):
    """The plugin wiring of mmdet's Bottleneck (open-mmlab/mmdetection @ 00e97308fa85d98e9049a312cee5f9a451a3f44b,
    mmdet/models/backbones/resnet.py): plugins of each position built by ``make_block_plugins``
    with ``build_plugin_layer(plugin, in_channels=..., postfix=plugin.pop('postfix', ''))``, added as
    attributes under the returned name (duplicates rejected), applied in ``forward_plugin``;
    ``after_conv3`` plugins get ``planes * expansion`` channels and run after norm3, before the add."""

    expansion = 4

    def __init__(self, planes: int, plugins: list[dict]):
        super().__init__()
        width = planes * self.expansion
        self.conv1 = nn.Conv2d(width, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        cfgs = {pos: [p["cfg"] for p in plugins if p["position"] == pos] for pos in ("after_conv1", "after_conv2")}
        cfgs["after_conv3"] = [p["cfg"] for p in plugins if p["position"] == "after_conv3"]
        self.after_conv1_plugin_names = self._make_block_plugins(planes, cfgs["after_conv1"])
        self.after_conv2_plugin_names = self._make_block_plugins(planes, cfgs["after_conv2"])
        self.after_conv3_plugin_names = self._make_block_plugins(width, cfgs["after_conv3"])

    def _make_block_plugins(self, in_channels, plugins):
        names = []
        for plugin in plugins:
            plugin = plugin.copy()
            postfix = plugin.pop("postfix", "")
            name, layer = mmcv_cnn.build_plugin_layer(plugin, in_channels=in_channels, postfix=postfix)
            assert not hasattr(self, name), f"duplicate plugin {name}"
            self.add_module(name, layer)
            names.append(name)
        return names

    def _forward_plugin(self, x, names):
        out = x
        for name in names:
            out = getattr(self, name)(x)
        return out

    def forward(self, x):
        identity = x
        out = self._forward_plugin(self.relu(self.bn1(self.conv1(x))), self.after_conv1_plugin_names)
        out = self._forward_plugin(self.relu(self.bn2(self.conv2(out))), self.after_conv2_plugin_names)
        out = self._forward_plugin(self.bn3(self.conv3(out)), self.after_conv3_plugin_names)
        out += identity
        return self.relu(out)


def _stage_plugins(plugins, stage_idx):
    """mmdet's ``ResNet.make_stage_plugins``: a plugin without ``stages`` goes into every stage."""
    out = []
    for plugin in plugins:
        plugin = plugin.copy()
        stages = plugin.pop("stages", None)
        if stages is None or stages[stage_idx]:
            out.append(plugin)
    return out


def _docs_mmdet_snippet() -> str:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Use with mmdet", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_docs_mmdet_config_builds_the_documented_stages():
    ns: dict = {}
    exec(compile(_docs_mmdet_snippet(), str(DOCS), "exec"), ns)  # our own documentation
    for module in ns["custom_imports"]["imports"]:
        __import__(module)
    plugins = ns["model"]["backbone"]["plugins"]
    for stage_idx, planes in enumerate((8, 16, 32, 64)):  # base_channels * 2**i, scaled down
        blk = MMDetStyleBottleneck(planes, _stage_plugins(plugins, stage_idx))
        names = blk.after_conv3_plugin_names
        assert names == ([] if stage_idx == 0 else ["globalctx_gc"])
        x = torch.randn(2, planes * 4, 6, 6)
        if names:
            ref = globalctx.create_block("gc", planes * 4, rd_ratio=1 / 16)
            assert sum(p.numel() for p in blk.globalctx_gc.parameters()) == sum(p.numel() for p in ref.parameters())
            # GC's zero-initialised last conv: the plugged bottleneck equals the plain one at insertion
            blk.eval()
            with torch.no_grad():
                y = blk(x.clone())
                blk.after_conv3_plugin_names = []
                torch.testing.assert_close(y, blk(x.clone()), rtol=0, atol=0)
