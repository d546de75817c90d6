"""globalctx with timm: models in timm's registry, blocks as timm's ``attn_layer`` (timm's own init on)."""

import re
from pathlib import Path

import pytest
import torch

import globalctx
from reference_utils import randomise_bn

pytestmark = pytest.mark.timm

timm = pytest.importorskip("timm", reason="timm not installed (make test-interop)")
gt = pytest.importorskip("globalctx.integrations.timm")

# options under which each block is an exact identity at insertion (as in test_plug.py and
# test_channel_presets.py)
IDENTITY = {
    "gc": {},
    "snl": {},
    "nl": {},
    "dnl": {},
    "gct": {},
    "se": {"zero_init_last": True, "identity_init": True},
    "eca": {"zero_init_last": True, "identity_init": True},
    "fca": {"zero_init_last": True, "identity_init": True},
    "srm": {"identity_init": True},
    "gsop": {"zero_init_last": True, "identity_init": True},
    "soca": {"zero_init_last": True, "identity_init": True},
    "enc": {"zero_init_last": True, "identity_init": True, "final_relu": False},
    "rcan": {"zero_init_last": True, "identity_init": True},
    "dia": {"identity_init": True},
    "ban": {"identity_init": True},
}



def test_every_block_has_identity_options():
    assert sorted(IDENTITY) == globalctx.list_blocks()


def test_register_timm_models_one_liner():
    names = gt.register_timm_models()
    assert names == [f"globalctx_{m}" for m in globalctx.list_models()]
    assert sorted(timm.list_models("globalctx_*")) == names  # timm sorts naturally (resnet50 < resnet101)
    assert gt.register_timm_models() == names  # idempotent, no overwrite warning
    net = timm.create_model("globalctx_gc_resnet50", num_classes=10)
    ref = globalctx.create_model("gc_resnet50", num_classes=10)
    ref.load_state_dict(net.state_dict(), strict=True)
    randomise_bn(net)
    ref.load_state_dict(net.state_dict(), strict=True)
    ref.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), rtol=0, atol=0)
    assert net.fc.out_features == 10


def test_timm_options_pass_through_and_errors():
    gt.register_timm_models()
    net = timm.create_model("globalctx_resnet18_small", num_classes=7, in_chans=1)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("globalctx_gc_resnet50", pretrained=True)
    with pytest.raises(ValueError, match="Hub repo id"):  # why the prefix is joined with '_'
        timm.create_model("globalctx/gc_resnet50")


def test_attn_layer_rejects_unknown_block():
    with pytest.raises(ValueError, match="known blocks: .*gc"):
        gt.attn_layer("gcc")


@pytest.mark.parametrize("block", sorted(IDENTITY))
def test_block_as_timm_attn_layer_survives_timm_init(block):
    """``timm.create_model('resnet50', block_args=dict(attn_layer=...))`` builds with timm's own
    ``init_weights`` (kaiming on every conv, then ``zero_init_last()`` on every module that has
    one), and the block's identity init survives it: outputs equal the plain timm ResNet-50's."""
    torch.manual_seed(0)
    layer = gt.attn_layer(block, **IDENTITY[block])
    net = timm.create_model("resnet50", num_classes=10, block_args=dict(attn_layer=layer))
    kind = type(globalctx.create_block(block, 256, **IDENTITY[block]))
    placed = [m for m in net.modules() if type(m) is kind and m is not net]
    assert len(placed) >= 16  # one per bottleneck (3 + 4 + 6 + 3), in the `se` slot
    assert all(type(b.se) is kind for stage in (net.layer1, net.layer2, net.layer3, net.layer4) for b in stage)
    plain = timm.create_model("resnet50", num_classes=10)
    randomise_bn(net)
    missing, unexpected = plain.load_state_dict(net.state_dict(), strict=False)
    assert not missing and all(".se." in k for k in unexpected)
    plain.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), plain(x), rtol=0, atol=1e-5)


DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def _docs_snippets() -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Use with timm", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_docs_timm_snippets_run():
    registry, attn = _docs_snippets()
    ns: dict = {}
    exec(compile(registry, str(DOCS), "exec"), ns)  # our own docs
    assert ns["net"].num_classes == 10 and "globalctx_gc_resnet50" in ns["names"]
    with torch.no_grad():
        assert ns["net"].eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)
    exec(compile(attn, str(DOCS), "exec"), ns)
    net = ns["net"].eval()  # the second model of the snippet: globalctx SE in timm's `se` slot of every block
    assert all(type(b.se).__module__.startswith("globalctx.") for layer in (net.layer1, net.layer4) for b in layer)
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
