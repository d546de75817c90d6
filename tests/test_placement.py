"""Placement: stages, positions, every/blocks, several placements, errors."""

import pytest
import torch
from torch import nn

import globalctx
from globalctx.models import Placement, default_placement


def _blocks(m):
    return [(n, mod) for n, mod in m.named_modules() if getattr(mod, "_globalctx_block", False)]


def _tiny(name="resnet50_small", **kw):
    return globalctx.create_model(name, num_classes=3, base_width=8, **kw)


def test_stage_names_equivalent():
    for spec in [(2, 3, 4), ("res3", "res4", "res5"), ("c3", "c4", "c5"), ("layer2", "layer3", "layer4")]:
        assert Placement("gc", stages=spec).stages == (2, 3, 4)


def test_position_slots_and_widths():
    m = _tiny(attn=Placement("gc", stages=(4,), position="after_conv1", rd_ratio=1 / 4))
    names = [n for n, _ in _blocks(m)]
    assert names == ["layer4.0.attn_conv1", "layer4.1.attn_conv1", "layer4.2.attn_conv1"]
    assert m.layer4[0].attn_conv1.channels == 64  # bottleneck width of stage 4 at base_width 8
    m = _tiny(attn=Placement("gc", stages=(4,), position="after_add", rd_ratio=1 / 4))
    assert m.layer4[2].attn_add.channels == 256


def test_every_offset_and_explicit_blocks():
    # NL paper: 5 blocks, every other block of res3 (4 blocks) and res4 (6 blocks), idx % 2 == 1
    p = Placement("snl", stages=("res3", "res4"), position="after_add", every=2)
    assert p.select(2, 4) == [1, 3] and p.select(3, 6) == [1, 3, 5] and p.select(4, 3) == []
    assert Placement("snl", every=3, offset=0).select(1, 7) == [0, 3, 6]
    # "before the last block of res4"
    one = Placement("snl", stages=(3,), position="after_add", blocks=(-2,))
    assert one.select(3, 6) == [4]
    dnl_like = Placement("gc", stages=(3, 4), blocks={3: (-2,), 4: (0, -2, -1)})
    assert dnl_like.select(3, 6) == [4] and dnl_like.select(4, 3) == [0, 1, 2]
    m = _tiny(attn=Placement("snl", stages=(2, 3), position="after_add", every=2))
    assert len(_blocks(m)) == 5


def test_several_placements_and_same_slot_chaining():
    attn = [Placement("gc", stages=(3,), rd_ratio=1 / 4), Placement("se", stages=(3,), rd_ratio=1 / 4)]
    m = _tiny(attn=attn)
    slot = m.layer3[0].attn_conv3
    assert isinstance(slot, nn.Sequential) and [type(s).__name__ for s in slot] == ["GlobalContextBlock"] * 2
    assert len(_blocks(m)) == 12
    y = m(torch.randn(1, 3, 16, 16))
    assert y.shape == (1, 3)


def test_before_conv_with_stem_and_shortcut():
    m = _tiny("resnet18_small", attn=Placement("se", position="before_conv", stem=True, rd_ratio=1 / 2))
    names = [n for n, _ in _blocks(m)]
    assert "stem_attn" in names and "layer2.0.attn_pre_down" in names and "layer1.0.attn_pre_down" not in names
    # stem + 8 blocks x 2 convs + 3 shortcut convs
    assert len(names) == 1 + 16 + 3
    assert m.stem_attn.channels == 3 and m.layer2[0].attn_pre_down.channels == 8
    m(torch.randn(1, 3, 16, 16)).sum().backward()


def test_basicblock_positions():
    m = _tiny("resnet18_small", attn=Placement("gc", position="before_add", rd_ratio=1 / 4))
    assert [n for n, _ in _blocks(m)][:2] == ["layer1.0.attn_conv2", "layer1.1.attn_conv2"]
    with pytest.raises(ValueError, match="'after_conv3' is not valid for BasicBlock"):
        _tiny("resnet18_small", attn=Placement("gc", position="after_conv3"))


def test_default_placements():
    assert default_placement("gc").stages == (2, 3, 4)
    assert default_placement("se").stages == (1, 2, 3, 4) and default_placement("se").position == "before_add"
    m = globalctx.create_model("resnet50", attn="gc")
    assert sum(p.numel() for p in m.parameters()) == 28_078_773


def test_block_instance_and_callable():
    blk = globalctx.create_block("gc", 256, rd_ratio=1 / 4)
    m = _tiny(attn=Placement(blk, stages=(4,), position="after_add"))
    got = [mod for _, mod in _blocks(m)]
    assert len(got) == 3 and all(g is not blk for g in got)  # copies

    def make(channels, **kw):
        return globalctx.create_block("se", channels, rd_ratio=1 / 4)

    m = _tiny(attn=Placement(make, stages=(2,)))
    assert len(_blocks(m)) == 4


def test_placement_errors():
    with pytest.raises(ValueError, match="unknown stage 5"):
        Placement("gc", stages=(5,))
    with pytest.raises(ValueError, match="unknown stage 'res6'"):
        Placement("gc", stages=("res6",))
    with pytest.raises(ValueError, match="unknown position 'middle'"):
        Placement("gc", position="middle")
    with pytest.raises(ValueError, match="unknown block 'gcc'"):
        Placement("gcc")
    with pytest.raises(ValueError, match="every must be"):
        Placement("gc", every=0)
    with pytest.raises(ValueError, match="out of range"):
        _tiny(attn=Placement("gc", stages=(4,), blocks=(5,)))
    with pytest.raises(ValueError, match="cannot infer the channels"):
        _tiny(attn=Placement(nn.Identity(), stages=(4,)))
    with pytest.raises(ValueError, match="has channels=256 but the placement needs 512"):
        globalctx.create_model("resnet50", attn=Placement(globalctx.create_block("gc", 256), stages=(1, 2)))
    with pytest.raises(ValueError, match="stem=True needs"):
        Placement("gct" if "gct" in globalctx.list_blocks() else "se", stem=True)
    with pytest.raises(TypeError):
        _tiny(attn=Placement("gc", rd_ratoi=1 / 4))


def test_script_and_compile():
    m = _tiny("resnet18_small", attn=[Placement("gc", stages=(3, 4)), Placement("se", stages=(2,), rd_ratio=1 / 4)])
    m.eval()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = m(x)
        s = torch.jit.script(m)
        torch.testing.assert_close(s(x), ref)


def test_placement_json_round_trip():
    import json

    p = Placement(
        "gc", stages=(3, 4), blocks={3: (-2,), 4: (0, -1)}, rd_ratio=1 / 4, stage_options={4: {"rd_ratio": 1 / 8}}
    )
    d = json.loads(json.dumps(p.to_dict()))
    q = Placement(**d)
    assert q.to_dict() == p.to_dict() and q.select(3, 6) == [4] and q.stage_options == {4: {"rd_ratio": 1 / 8}}
    m = _tiny(attn=d)  # create_model accepts the dict form (run configs)
    assert [n for n, _ in _blocks(m)] == ["layer3.4.attn_conv3", "layer4.0.attn_conv3", "layer4.2.attn_conv3"]
    with pytest.raises(ValueError, match="only placements of a registered block name"):
        Placement(lambda c: nn.Identity()).to_dict()


def test_every_block_in_a_shared_slot_takes_effect():
    # mmdet's plugin bug ran only the last plugin at a position; here each one must matter
    m = _tiny(attn=[Placement("gc", stages=(4,), blocks=(0,), rd_ratio=1 / 4)] * 2).eval()
    first, second = m.layer4[0].attn_conv3
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = m(x)
        for blk in (first, second):
            saved = blk.transform.fc2.bias.clone()
            blk.transform.fc2.bias.add_(1.0)
            assert not torch.allclose(m(x), ref)
            blk.transform.fc2.bias.copy_(saved)
        torch.testing.assert_close(m(x), ref)


def test_resnext_widths_inferred():
    m = globalctx.create_model(
        "resnext50_32x4d", num_classes=3, base_width=16, attn=Placement("gc", position="after_conv2")
    )
    # ResNeXt bottleneck width = int(planes * 4 / 64) * 32
    assert m.layer1[0].attn_conv2.channels == 32 and m.layer4[0].attn_conv2.channels == 256
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_attn_and_indices_names_with_old_aliases():
    new = Placement(attn="gc", stages=(3, 4), indices={3: (-2,), 4: (0, -1)})
    old = Placement(block="gc", stages=(3, 4), blocks={3: (-2,), 4: (0, -1)})
    assert new.to_dict() == old.to_dict() and new.attn == old.block == "gc"
    assert new.indices == old.blocks == {3: (-2,), 4: (0, -1)}
    assert new.to_dict()["attn"] == "gc" and new.to_dict()["indices"] == {"3": [-2], "4": [0, -1]}
    # a run config written with the old keys still builds the same model
    legacy = {"block": "gc", "stages": [3], "position": "before_add", "blocks": [-2], "stem": False}
    assert [n for n, _ in _blocks(_tiny(attn=legacy))] == ["layer3.4.attn_conv3"]
    with pytest.raises(ValueError, match="not both"):
        Placement("gc", block="se")
    with pytest.raises(ValueError, match="not both"):
        Placement("gc", indices=(0,), blocks=(1,))
    with pytest.raises(ValueError, match="needs a block"):
        Placement(stages=(2,))


def test_attn_normalised_once(monkeypatch):
    import globalctx.models.resnet as resnet

    calls = []
    real = resnet.as_placements

    def counting(attn):
        calls.append(attn)
        return real(attn)

    monkeypatch.setattr(resnet, "as_placements", counting)
    m = globalctx.create_model("gc_resnet50", num_classes=3, base_width=8, attn=["se", Placement("snl", stages=(4,))])
    assert len(calls) == 1
    assert [p.name for p in m.placements] == ["gc", "se", "snl"]


def test_add_placement_takes_every_placement_of_a_list():
    m = _tiny()
    added = m.add_placement([Placement("gc", stages=(4,)), Placement("se", stages=(4,), rd_ratio=1 / 4)])
    assert len(added) == 6 and [p.name for p in m.placements] == ["gc", "se"]
    assert [type(b).__name__ for b in m.layer4[0].attn_conv3] == ["GlobalContextBlock"] * 2


def test_add_placement_fails_without_changing_the_model():
    m = _tiny()
    keys = list(m.state_dict())
    with pytest.raises(ValueError, match="out of range"):
        m.add_placement([Placement("gc", stages=(4,)), Placement("se", stages=(4,), indices=(7,))])
    with pytest.raises(ValueError, match="has channels=8 but the placement needs 16"):  # stage 1 fits, stage 2 not
        m.add_placement(Placement(globalctx.create_block("gc", 8, rd_ratio=1 / 4), position="after_conv1"))
    assert list(m.state_dict()) == keys and not _blocks(m) and m.placements == []


def test_after_add_before_relu_slot():
    m = _tiny(attn=Placement("gc", stages=(4,), position="after_add_before_relu", rd_ratio=1 / 4))
    assert [n for n, _ in _blocks(m)] == [f"layer4.{i}.attn_pre_relu" for i in range(3)]
    assert m.layer4[0].attn_pre_relu.channels == 256
    basic = _tiny("resnet18_small", attn=Placement("gc", stages=(1,), position="after_add_before_relu", rd_ratio=1 / 4))
    assert basic.layer1[1].attn_pre_relu.channels == 8
    basic(torch.randn(1, 3, 16, 16)).sum().backward()


def test_build_in_a_dtype():
    p = Placement("gc", rd_ratio=1 / 4)
    assert {t.dtype for t in p.build(32, dtype=torch.float64).parameters()} == {torch.float64}
    inst = Placement(globalctx.create_block("se", 32, rd_ratio=1 / 4))
    assert {t.dtype for t in inst.build(32, dtype=torch.float64).parameters()} == {torch.float64}
