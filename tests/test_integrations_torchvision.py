"""torchvision's fx feature extraction (the input of detection / segmentation necks) on globalctx
models and on torchvision models after ``plug()``."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import globalctx
from reference_utils import randomise_bn

pytestmark = pytest.mark.timm

tv = pytest.importorskip("torchvision", reason="torchvision not installed (make test-interop)")
from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402

NODES = {"layer2": "c3", "layer3": "c4", "layer4": "c5"}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "models.md"



def _perturb_blocks(added) -> None:
    """Make the plugged blocks non-identities, so that extracting around them would show."""
    with torch.no_grad():
        for ins in added:
            for p in ins.block.parameters():
                p.add_(0.1 * torch.randn_like(p))


def _hooked(net: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference: the stage outputs of an ordinary forward, caught by forward hooks."""
    out = {}
    handles = [
        net.get_submodule(name).register_forward_hook(lambda m, i, o, key=key: out.__setitem__(key, o))
        for name, key in NODES.items()
    ]
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return out


def test_feature_extractor_on_a_globalctx_model():
    net = randomise_bn(globalctx.create_model("gc_resnet50", num_classes=0))
    body = create_feature_extractor(net, return_nodes=NODES)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = body(x)
        c2, c3, c4, c5 = net.forward_stages(x)
    assert list(feats) == ["c3", "c4", "c5"]
    for got, want in zip(feats.values(), (c3, c4, c5)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert feats["c5"].shape == (1, 2048, 2, 2)


def test_feature_extractor_on_a_plugged_torchvision_resnet50():
    net = randomise_bn(tv.models.resnet50())
    net, added = globalctx.plug(net, "gc", where=r"layer3.*|layer4.*", position="after_add")
    _perturb_blocks(added)
    x = torch.randn(1, 3, 64, 64)
    ref = _hooked(net, x)
    body = create_feature_extractor(net, return_nodes=NODES)
    with torch.no_grad():
        feats = body(x)
    for key in ("c3", "c4", "c5"):
        torch.testing.assert_close(feats[key], ref[key], rtol=0, atol=0)
    # the blocks are in the traced graph: the plain network's c4 differs
    plain = randomise_bn(tv.models.resnet50())
    assert not torch.allclose(_hooked(plain, x)["c4"], ref["c4"])


def test_docs_feature_extraction_snippet_runs():
    ns: dict = {}
    exec(compile(_docs_snippets()[0], str(DOCS), "exec"), ns)  # our own docs
    assert ns["feats"]["c5"].shape == (1, 2048, 7, 7)
    assert ns["tv_feats"]["c5"].shape == (1, 2048, 7, 7)


def _docs_snippets() -> list[str]:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Use with torchvision detection / feature extraction", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_docs_detection_snippet_runs():
    ns: dict = {}
    exec(compile(_docs_snippets()[1], str(DOCS), "exec"), ns)  # our own docs
    fpn, det = ns["fpn"], ns["detections"]
    assert [tuple(v.shape) for v in fpn.values()] == [(1, 256, s, s) for s in (32, 16, 8, 4, 2)]
    assert len(det) == 1 and set(det[0]) == {"boxes", "labels", "scores"}


def test_intermediate_layer_getter_gives_the_stage_outputs():
    """IntermediateLayerGetter runs the children in registration order: they must be forward's order."""
    from torchvision.models._utils import IntermediateLayerGetter

    net = randomise_bn(globalctx.create_model("gc_resnet50", num_classes=0))
    with torch.no_grad():  # the GC blocks start as identities: move them, so that skipping one would show
        for name, p in net.named_parameters():
            if ".attn_" in name:
                p.add_(0.1 * torch.randn_like(p))
        net.bn1.weight.uniform_(-1.5, 1.5)  # max-pool and a BN with positive scales commute: make them not
    body = IntermediateLayerGetter(net, return_layers={"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = body(x)
        want = net.forward_stages(x)
    for got, w in zip(feats.values(), want):
        torch.testing.assert_close(got, w, rtol=0, atol=0)


def test_intermediate_layer_getter_on_a_video_model():
    from torchvision.models._utils import IntermediateLayerGetter

    net = globalctx.create_model("nl_c2d_resnet50", num_classes=0).eval()
    body = IntermediateLayerGetter(net, return_layers={"layer2": "c3", "layer4": "c5"})
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        feats = body(x)
        c2, c3, c4, c5 = net.forward_stages(x)
    torch.testing.assert_close(feats["c3"], c3, rtol=0, atol=0)
    torch.testing.assert_close(feats["c5"], c5, rtol=0, atol=0)
