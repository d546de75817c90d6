"""compare.variants (the spec grammar) and compare.presets (the papers' ablations)."""

import json
import re
from pathlib import Path

import pytest
import torch

import globalctx
from globalctx.compare import variants as V
from globalctx.compare.presets import NOT_PUBLISHED, PRESETS, _check_canonical, get_preset, list_presets
from globalctx.compare.variants import (
    block_options,
    check_variant,
    format_variant,
    parse_variant,
    placement_fields,
    same_variant,
    split_variants,
    variant_label,
)
from globalctx.models import Placement
from globalctx.models.placement import POSITIONS, is_block

ROOT = Path(__file__).resolve().parents[1]

SPECS = [
    "none", "gc", "gc(pooling=avg)", "gc(fusion=mul)", "gc(rd_ratio=1/4)", "gc@after_add", "gc@stages=4",
    "gc@stages=3,4", "gc@stages=2-4", "gc@stages=c3-c5", "gc@stages=res4", "nl@indices=-1", "nl@stages=3+gc",
    "nl@stages=3@indices=-2@after_add", "nl(pairwise=dot_product,subsample=true)@stages=1-2@every=1",
    "dnl@after_add", "dnl@stages=4", "dnl@indices=3:-1/4:0,-1", "gct@after_add", "gct@before_conv@stem=false",
    "gsop@every=1", "se(rd_ratio=0.3)@every=2@offset=0", "gc(rd_ratio=1/16,norm=false)@stages=2+snl@stages=4",
    "nl(use_scale=none)@position=after_conv1", "eca(kernel_size=5)", " gc ( rd_ratio = 1/4 ) @ stages = 3 ",
]  # fmt: skip


def fields(spec):
    return [placement_fields(p) for p in parse_variant(spec)]


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip(spec):
    ps = parse_variant(spec)
    text = format_variant(ps)
    assert same_variant(parse_variant(text), ps)
    assert format_variant(text) == text  # the written form is a fixed point
    assert len(text) <= len(re.sub(r"\s+", "", spec)) or "/" in text


@pytest.mark.parametrize("spec,written", [
    ("gc@stages=c3-c5", "gc"), ("gc@stages=2,3,4@before_add", "gc"), ("gc(rd_ratio=0.25)", "gc(rd_ratio=1/4)"),
    ("gc@stages=3-4", "gc@stages=3,4"), (" nl @ stages = 3 + gc ", "nl@stages=3+gc"), ("NONE", "none"),
    ("nl@stages=3@indices=-2@after_add", "nl@stages=3@indices=-2"), ("se(rd_ratio=0.3)", "se(rd_ratio=0.3)"),
    ("gc(norm=FALSE)", "gc(norm=false)"), ("gc@position=after_add", "gc@after_add"), ("GC", "gc"),
])  # fmt: skip
def test_written_form(spec, written):
    assert format_variant(spec) == written


def test_parsed_fields_follow_the_default_placement():
    (gc,) = fields("gc@after_add")  # GCNet's stages c3-c5, moved after the add
    assert gc["stages"] == (2, 3, 4) and gc["position"] == "after_add" and gc["indices"] is None
    (nl,) = fields("nl@stages=3")  # NL keeps every other block, after the add
    assert (nl["stages"], nl["every"], nl["offset"], nl["position"]) == ((3,), 2, 1, "after_add")
    (nl,) = fields("nl@indices=-1")
    assert nl["stages"] == (2, 3) and nl["indices"] == (-1,) and nl["every"] == 1
    (dnl,) = fields("dnl@stages=4")  # a per-stage indices default is dropped with new stages
    assert dnl["stages"] == (4,) and dnl["indices"] is None
    (dnl,) = fields("dnl@after_add")
    assert dnl["indices"] == {3: (-2,), 4: (0, -2, -1)}
    (dnl,) = fields("dnl@indices=3:-1/4:0,-1")
    assert dnl["indices"] == {3: (-1,), 4: (0, -1)}
    (gct,) = fields("gct@after_add")
    assert gct["stem"] is False and gct["position"] == "after_add"
    (gsop,) = fields("gsop@every=1")
    assert gsop["indices"] is None and (gsop["every"], gsop["offset"]) == (1, 0)
    (se,) = fields("se@every=2@offset=0")
    assert (se["every"], se["offset"]) == (2, 0)
    assert fields("none") == []


def test_option_values():
    (p,) = fields("nl(rd_ratio=1/4,subsample=true,use_scale=none,pairwise=dot_product,rd_divisor=8,chunk_size=64)")
    assert p["options"] == {"rd_ratio": 0.25, "subsample": True, "use_scale": None, "pairwise": "dot_product",
                            "rd_divisor": 8, "chunk_size": 64}  # fmt: skip
    assert type(p["options"]["rd_divisor"]) is int
    (p,) = fields("dnl(temperature=5e-2,rd_ratio=0.5)")
    assert p["options"] == {"temperature": 0.05, "rd_ratio": 0.5}
    assert V.parse_value("-3") == -3 and V.parse_value("2.0") == 2.0 and type(V.parse_value("2.0")) is float
    assert V.format_value(2.0) == "2.0" and V.format_value(1 / 3) == "1/3" and V.format_value(1e20) == "1e20"
    assert V.parse_value(V.format_value(1e20)) == 1e20


def test_several_blocks_in_one_variant():
    ps = parse_variant("nl@stages=3+gc")
    assert [placement_fields(p)["block"] for p in ps] == ["nl", "gc"]
    assert ps[0].stages == (3,) and ps[1].stages == (2, 3, 4)


def test_placements_equal_hand_built_ones():
    assert same_variant("gc@stages=4", [Placement("gc", stages=(4,), position="before_add")])
    assert same_variant("gc(rd_ratio=1/4)@after_add", [Placement("gc", stages=(2, 3, 4), position="after_add",
                                                                 rd_ratio=0.25)])  # fmt: skip
    assert not same_variant("gc", "gc(rd_ratio=1/16)")  # explicit options are kept as given
    assert (
        format_variant([Placement("nl", stages=(3,), position="after_add", blocks=(-2,))]) == "nl@stages=3@indices=-2"
    )


@pytest.mark.parametrize("spec,message", [
    ("", "empty variant spec"),
    ("   ", "empty variant spec"),
    ("foo", "unknown block 'foo'; blocks: none, ban, dia, dnl, eca"),
    ("gc(ratio=4)", "unknown option 'ratio' of 'gc'; options: fusion, identity_init, init, norm, pooling, rd_channels, "
                    "rd_divisor, rd_ratio, zero_init_last"),
    ("nl(mode=x)", "unknown option 'mode' of 'nl'; options: backend, bias, chunk_size"),
    ("gc(device=cpu)", "unknown option 'device'"),
    ("gc@middle", "unknown setting @middle; a position (after_conv1, after_conv2, after_conv3, before_add, "
                  "after_add_before_relu, after_add, before_conv), stem, or one of stages=, indices=, "
                  "every=, offset=, position=, stem="),
    ("gc@position=middle", "unknown position 'middle'; positions: after_conv1, after_conv2, after_conv3, "
                           "before_add, after_add_before_relu, after_add, before_conv"),
    ("gc@where=4", "unknown setting 'where'; settings: stages, indices, every, offset, position, stem"),
    ("gc@stages", "@stages needs a value"),
    ("gc@stages=", "setting 'stages' has no value"),
    ("gc@stages=5", "unknown stage '5'; stages are 1..4"),
    ("gc@stages=c6", "unknown stage 'c6'"),
    ("gc@stages=4-2", "stage range '4-2' runs backwards"),
    ("gc@indices=a", "indices must be integers"),
    ("gc@indices=3:-1/x", "per-stage indices look like"),
    ("gc@every=two", "every must be an integer"),
    ("gc@stem=maybe", "stem must be true or false"),
    ("gc@stages=2@stages=3", "setting 'stages' given twice"),
    ("gc(pooling=avg,pooling=att)", "option 'pooling' given twice"),
    ("gc(pooling)", "options are key=value, got 'pooling'"),
    ("gc()", "empty '()'"),
    ("gc(pooling=a$b)", "option 'pooling': value 'a$b' is not a number"),
    ("gc(rd_ratio=1/0)", "divides by zero"),
    ("gc(pooling=avg", "'(' without ')'"),
    ("gc)", "')' without '('"),
    ("gc((pooling=avg))", "nested parentheses"),
    ("gc(pooling=avg)x", "text after ')'"),
    ("gc(pooling=avg)(norm=false)", "one '(...)' of options per block"),
    ("gc@", "empty setting after '@'"),
    ("gc@@after_add", "empty setting after '@'"),
    ("gc+", "empty block around '+'"),
    ("none+gc", "'none' is the baseline alone"),
    ("none(x=1)", "'none' is the baseline alone"),
    ("1gc", "expected a block name"),
    ("gc@every=2@offset=5", "variant 'gc@every=2@offset=5': offset must be an int in [0, every=2)"),
    ("gc@stem", "stem=True needs position='before_conv'"),
    ("dnl@stages=2@indices=3:-1", "indices given for stages [3] not in stages=(2,)"),
])  # fmt: skip
def test_errors(spec, message):
    with pytest.raises(ValueError) as e:
        parse_variant(spec)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_not_a_string():
    with pytest.raises(ValueError, match="a variant spec is a string"):
        parse_variant(["gc"])


def test_format_errors():
    with pytest.raises(ValueError, match="cannot be written in a spec"):
        format_variant([Placement("gc", pooling="a b")])
    with pytest.raises(ValueError, match="cannot be written in a spec"):
        format_variant([Placement("gc", pooling="true")])  # would read back as a bool
    with pytest.raises(ValueError, match="only placements of a registered block name"):
        format_variant([Placement(globalctx.layers.get_block("gc"))])
    with pytest.raises(ValueError, match="cannot be written as a spec"):
        format_variant([Placement("fca", stage_options={2: {"dct_size": 7}})])


def test_check_variant_reports_bad_values():
    assert len(check_variant("gc(pooling=avg)+nl@stages=3")) == 2
    with pytest.raises(ValueError, match=r"variant 'gc\(pooling=max\)': gc: pooling must be one of"):
        check_variant("gc(pooling=max)")
    with pytest.raises(ValueError, match="variant 'nl\\(pairwise=cosine\\)'"):
        check_variant("nl(pairwise=cosine)")


@pytest.mark.parametrize("spec,label", [
    ("none", "baseline"), ("gc", "GC"), ("gc(rd_ratio=1/4)", "GC (rd_ratio=1/4)"),
    ("gc@after_add", "GC, after the add"),
    ("gc@stages=4", "GC, stage 4"), ("gc@stages=1-4", "GC, stages 1-4"), ("gc@stages=3,4", "GC, stages 3,4"),
    ("nl@stages=3+gc", "NL, stage 3 + GC"), ("nl@stages=3@indices=-2", "NL, stage 3, index -2"),
    ("gsop@every=1", "GSOP, every block"), ("gct@after_add", "GCT, after the add, no stem"),
    ("gc(pooling=avg,fusion=mul)", "GC (pooling=avg, fusion=mul)"), ("dnl@stages=4", "DNL, stage 4, every block"),
    ("se@every=2", "SE, every 2 blocks from index 1"),
])  # fmt: skip
def test_labels(spec, label):
    assert variant_label(spec) == label


def test_labels_are_distinct_for_distinct_variants():
    written = {format_variant(s) for s in SPECS}
    assert len({variant_label(s) for s in written}) == len(written)


def test_block_options_follow_the_constructors():
    assert {"pooling", "fusion", "rd_ratio", "norm"} <= set(block_options("gc"))
    assert {"pairwise", "subsample", "rd_ratio", "use_scale"} <= set(block_options("nl"))  # nl_block(**options)
    assert {"temperature", "whiten", "unary"} <= set(block_options("dnl"))
    for name in globalctx.list_blocks():
        assert not {"channels", "device", "dtype", "self"} & set(block_options(name))


def test_grammar_is_in_the_docstring():
    assert V.GRAMMAR in V.__doc__
    assert all(p in V.GRAMMAR for p in POSITIONS)
    assert all(k in V.GRAMMAR for k in V.PLACEMENT_KEYS)


def test_split_variants():
    assert split_variants("none gc(rd_ratio=1/4)  nl@stages=3,4;gc@after_add") == [
        "none",
        "gc(rd_ratio=1/4)",
        "nl@stages=3,4",
        "gc@after_add",
    ]
    assert split_variants("dnl@indices=3:-1/4:0 gc") == ["dnl@indices=3:-1/4:0", "gc"]


# ---------------------------------------------------------------------------------------------
# presets

GCNET_VARIANTS = [
    "none", "nl@stages=3@indices=-1@before_add", "snl@stages=3@indices=-1", "gc@stages=3@indices=-1",
    "gc(rd_ratio=1/4)@stages=3@indices=-1", "gc", "gc@after_add", "gc@stages=2", "gc@stages=3", "gc@stages=4",
    "snl", "gc(norm=false)", "gc(rd_ratio=1/4)", "gc(pooling=avg)", "gc(pooling=avg,fusion=mul)", "gc(fusion=mul)",
]  # fmt: skip
NL_VARIANTS = [
    "none", "nl(pairwise=gaussian)@stages=3@indices=-2", "nl@stages=3@indices=-2",
    "nl(pairwise=dot_product)@stages=3@indices=-2", "nl(pairwise=concatenation)@stages=3@indices=-2",
    "nl@stages=1@indices=-2", "nl@stages=2@indices=-2", "nl@stages=4@indices=-2", "nl",
]  # fmt: skip


def test_presets_expand_to_the_documented_lists():
    assert list_presets() == ["gcnet-ablation", "nl-ablation"]
    assert get_preset("gcnet-ablation").variants() == GCNET_VARIANTS
    assert get_preset("nl-ablation").variants() == NL_VARIANTS
    assert get_preset("gcnet-ablation").groups() == [
        "block design (one block, last residual block of c4)", "position (GC r16, c3-c5)", "stages (GC r16)",
        "bottleneck design (c3-c5)", "pooling x fusion (GC r16, c3-c5)"]  # fmt: skip
    assert get_preset("nl-ablation").groups() == [
        "pairwise function (1 block, res4)",
        "stage of 1 block",
        "number of blocks",
    ]
    with pytest.raises(ValueError, match="unknown preset 'gc'; presets: gcnet-ablation, nl-ablation"):
        get_preset("gc")
    with pytest.raises(ValueError, match="has no group"):
        get_preset("nl-ablation").rows_of("stages")


def test_preset_specs_are_written_canonically_and_documented():
    _check_canonical()
    doc = (ROOT / "docs" / "compare.md").read_text()
    for p in PRESETS.values():
        for r in p.rows:
            assert f"`{r.spec}`" in doc, r.spec
            assert r.paper_text in doc or r.paper is None, r.paper_text
        assert json.loads(json.dumps(p.to_dict()))["variants"] == p.variants()


def test_preset_paper_figures_match_the_research_tables():
    rows = {(r.group, r.name): r for p in PRESETS.values() for r in p.rows}
    gc4 = rows[("bottleneck design (c3-c5)", "ratio 1/4 with LN (GC r4)")].paper
    assert (gc4.value, gc4.baseline, gc4.metric) == (39.9, 37.2, "COCO box AP") and gc4.delta == 2.7
    assert rows[("stages (GC r16)", "c3-c5 (stages 2-4)")].paper.value == 39.4
    assert rows[("stages (GC r16)", "c4 (stage 3)")].paper is None
    assert rows[("stages (GC r16)", "c4 (stage 3)")].paper_text == NOT_PUBLISHED
    nl = rows[("block design (one block, last residual block of c4)", "NL")].paper
    assert (nl.value, nl.baseline) == (39.6, 38.8) and "DNL-Object-Detection" in nl.source
    snl = rows[("block design (one block, last residual block of c4)", "SNL")].paper
    assert snl.value == 40.1
    dot = rows[("pairwise function (1 block, res4)", "dot product")].paper
    assert (dot.value, dot.baseline, dot.metric) == (72.9, 71.8, "Kinetics top-1 %") and "Table 2a" in dot.source
    assert rows[("stage of 1 block", "res5 (stage 4)")].paper.value == 72.3
    assert rows[("number of blocks", "5 blocks (every other block of res3-res4)")].paper.value == 73.8
    assert rows[("position (GC r16, c3-c5)", "after the add")].paper is None


@pytest.mark.parametrize("spec", sorted(set(GCNET_VARIANTS + NL_VARIANTS)))
def test_every_preset_variant_builds_and_runs(spec):
    torch.manual_seed(0)
    ps = parse_variant(spec)
    m = globalctx.create_model("resnet18_small", num_classes=10, in_chans=1, attn=ps, base_width=8).eval()
    n = sum(1 for mod in m.modules() if is_block(mod))
    expected = sum(len(p.select(s, 2)) for p in ps for s in p.stages)  # resnet18_small: 2 blocks per stage
    assert n == expected and (n > 0) == (spec != "none")
    with torch.no_grad():
        y = m(torch.randn(2, 1, 16, 16))
    assert y.shape == (2, 10) and torch.isfinite(y).all()
