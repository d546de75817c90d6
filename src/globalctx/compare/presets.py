"""The papers' ablations as variant lists: ``gcnet-ablation`` and ``nl-ablation``.

Each :class:`Preset` is a list of :class:`PresetRow` in groups (one group per ablation table of
the paper). A row names the paper's setting, the variant spec that reproduces it at small scale
(grammar in :mod:`globalctx.compare.variants`) and the paper's published figure for that row
(:class:`PaperFigure`: value, the same source's baseline, metric, source) or ``None`` where the
research tables have no number ("not published").

Stage mapping. The paper stages c3, c4, c5 (res3, res4, res5) are stages 2, 3, 4 of the
comparison network ``resnet18_small`` (torchvision ``layer2..layer4``); c2 / res2 is stage 1.
``resnet18_small`` has 2 residual blocks per stage (ResNet-50: 3, 4, 6, 3), so "the last block
of c4" is index -1 of stage 3, "right before the last block of res4" is index -2 of stage 3
(after the add), and the NL paper's 5 blocks (every other block of res3 and res4) are 2 blocks
here. The paper numbers come from ResNet-50 on COCO / Kinetics: read them as the *direction and
rough size* of an effect, not as targets for Fashion-MNIST accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from .variants import format_variant, parse_variant, same_variant

__all__ = [
    "NOT_PUBLISHED",
    "PaperFigure",
    "PresetRow",
    "Preset",
    "PRESETS",
    "get_preset",
    "list_presets",
]

NOT_PUBLISHED = "not published"


@dataclass(frozen=True)
class PaperFigure:
    """A published number for a preset row and the same source's baseline (``delta`` = the
    paper's gain)."""

    value: float
    baseline: float
    metric: str
    source: str

    @property
    def delta(self) -> float:
        return round(self.value - self.baseline, 6)

    def text(self) -> str:
        """``"39.4 (+2.2 vs 37.2), COCO box AP"``; ``"37.2 (baseline), COCO box AP"`` for a baseline."""
        if self.value == self.baseline:
            return f"{self.value:g} (baseline), {self.metric}"
        return f"{self.value:g} ({self.delta:+.1f} vs {self.baseline:g}), {self.metric}"

    def to_dict(self) -> dict:
        return {"value": self.value, "baseline": self.baseline, "delta": self.delta, "metric": self.metric,
                "source": self.source}  # fmt: skip


@dataclass(frozen=True)
class PresetRow:
    """One row of a paper's ablation: its name in the paper, the variant spec, the paper figure."""

    group: str
    name: str
    spec: str
    paper: PaperFigure | None = None
    note: str = ""

    @property
    def paper_text(self) -> str:
        return NOT_PUBLISHED if self.paper is None else self.paper.text()

    def to_dict(self) -> dict:
        return {"group": self.group, "name": self.name, "spec": self.spec,
                "paper": None if self.paper is None else self.paper.to_dict(), "paper_text": self.paper_text,
                "note": self.note}  # fmt: skip


@dataclass(frozen=True)
class Preset:
    """A named ablation: rows in groups and the notes a report should print with it."""

    name: str
    title: str
    rows: tuple[PresetRow, ...]
    notes: tuple[str, ...] = ()

    def groups(self) -> list[str]:
        """The group names in order."""
        return list(dict.fromkeys(r.group for r in self.rows))

    def rows_of(self, group: str) -> list[PresetRow]:
        rows = [r for r in self.rows if r.group == group]
        if not rows:
            raise ValueError(f"preset {self.name!r} has no group {group!r}; groups: {', '.join(self.groups())}")
        return rows

    def variants(self) -> list[str]:
        """The distinct variant specs to train, in first-appearance order (a spec shared by
        several groups, such as the baseline, is trained once)."""
        out: list[str] = []
        for r in self.rows:
            if not any(same_variant(r.spec, s) for s in out):
                out.append(r.spec)
        return out

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "rows": [r.to_dict() for r in self.rows],
                "variants": self.variants(), "notes": list(self.notes)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# GCNet (Cao et al., arXiv 1904.11492): the ablation structure of its COCO study

_DNL_C4 = "DNL-Object-Detection README (GCNet authors' group): Mask R-CNN R50-FPN, SyncBN, 4conv1fc, 1x; " \
          "one block after the last 1x1 conv of c4's last residual block (research tables §1c) [P]"  # fmt: skip
_GC_README = "GCNet official README (xvjiarui/GCNet): Mask R-CNN R50-FPN, SyncBN, 2fc, 1x; " \
             "GC in every bottleneck of c3-c5 (research tables §1c) [P]"  # fmt: skip
_BOX_AP = "COCO box AP"


def _dnl(value: float) -> PaperFigure:
    return PaperFigure(value, 38.8, _BOX_AP, _DNL_C4)


def _gcr(value: float) -> PaperFigure:
    return PaperFigure(value, 37.2, _BOX_AP, _GC_README)


_C4_LAST = "@stages=3@indices=-1"  # the last residual block of c4, before the add

_GCNET_ROWS = (
    # block design: one block at the same place, so the blocks differ only in design
    PresetRow("block design (one block, last residual block of c4)", "baseline", "none", _dnl(38.8)),
    PresetRow("block design (one block, last residual block of c4)", "NL", "nl" + _C4_LAST + "@before_add", _dnl(39.6),
              "NL's own default is after the add; here before it, as the source table"),
    PresetRow("block design (one block, last residual block of c4)", "SNL", "snl" + _C4_LAST, _dnl(40.1)),
    PresetRow("block design (one block, last residual block of c4)", "GC r16", "gc" + _C4_LAST),
    PresetRow("block design (one block, last residual block of c4)", "GC r4", "gc(rd_ratio=1/4)" + _C4_LAST,
              _dnl(40.1)),
    # position of GC r16 in every residual block of c3-c5
    PresetRow("position (GC r16, c3-c5)", "baseline", "none"),
    PresetRow("position (GC r16, c3-c5)", "before the add (after the last conv + BN)", "gc",
              note="the official code's position; the paper's position numbers were not found"),
    PresetRow("position (GC r16, c3-c5)", "after the add", "gc@after_add"),
    # stages of GC r16, every residual block
    PresetRow("stages (GC r16)", "baseline", "none", _gcr(37.2)),
    PresetRow("stages (GC r16)", "c3 (stage 2)", "gc@stages=2"),
    PresetRow("stages (GC r16)", "c4 (stage 3)", "gc@stages=3"),
    PresetRow("stages (GC r16)", "c5 (stage 4)", "gc@stages=4"),
    PresetRow("stages (GC r16)", "c3-c5 (stages 2-4)", "gc", _gcr(39.4)),
    # bottleneck design in every residual block of c3-c5
    PresetRow("bottleneck design (c3-c5)", "baseline", "none", _gcr(37.2)),
    PresetRow("bottleneck design (c3-c5)", "plain 1x1 (C -> C)", "snl",
              note="gc has no single-conv transform option; SNL is exactly attention pooling, one 1x1 C -> C, add"),
    PresetRow("bottleneck design (c3-c5)", "ratio 1/16, no LN", "gc(norm=false)",
              note="1x1 -> ReLU -> 1x1 (the ReLU stays)"),
    PresetRow("bottleneck design (c3-c5)", "ratio 1/16 with LN (GC r16)", "gc", _gcr(39.4)),
    PresetRow("bottleneck design (c3-c5)", "ratio 1/4 with LN (GC r4)", "gc(rd_ratio=1/4)", _gcr(39.9)),
    # pooling x fusion, GC r16 in every residual block of c3-c5
    PresetRow("pooling x fusion (GC r16, c3-c5)", "baseline", "none", _gcr(37.2)),
    PresetRow("pooling x fusion (GC r16, c3-c5)", "avg pooling, add", "gc(pooling=avg)"),
    PresetRow("pooling x fusion (GC r16, c3-c5)", "avg pooling, mul", "gc(pooling=avg,fusion=mul)"),
    PresetRow("pooling x fusion (GC r16, c3-c5)", "attention pooling, mul", "gc(fusion=mul)"),
    PresetRow("pooling x fusion (GC r16, c3-c5)", "attention pooling, add (GC r16)", "gc", _gcr(39.4)),
)  # fmt: skip

_STAGE_NOTE = (
    "Paper stages c3, c4, c5 are stages 2, 3, 4 of resnet18_small (layer2..layer4), which has 2 residual "
    "blocks per stage; the paper used ResNet-50 (3, 4, 6, 3 blocks)."
)

GCNET_ABLATION = Preset(
    "gcnet-ablation",
    "GCNet ablations (Cao et al. 2019): block design, position, stages, bottleneck design, pooling x fusion",
    _GCNET_ROWS,
    (
        _STAGE_NOTE,
        "The GCNet paper's own ablation tables were not available (research tables §1c: NOT FOUND); the figures "
        "shown are the closest published numbers in the same form: the official README (GC r16 / r4 in c3-c5) "
        "and the single-block table of the authors' DNL repository (NL / SNL / GC r4 in c4), each with its own "
        "baseline. Rows without a number say 'not published'.",
        "The paper's numbers are COCO box AP of Mask R-CNN; ours are Fashion-MNIST top-1. Compare the direction "
        "and rough size of each effect, not the values.",
    ),
)


# ---------------------------------------------------------------------------------------------
# Non-local networks (Wang et al., CVPR 2018): Table 2 on Kinetics

_NL_T2 = "NL paper Table 2{}, Kinetics-400, C2D ResNet-50, 32x224^2 clips (research tables §2b) [P*]"
_NL_BEFORE_LAST = "@indices=-2"  # nl's default position is after the add: right before the last block


def _nl(value: float, table: str) -> PaperFigure:
    return PaperFigure(value, 71.8, "Kinetics top-1 %", _NL_T2.format(table))


_NL_ONE = "nl@stages=3" + _NL_BEFORE_LAST  # 1 block, right before the last residual block of res4

_NL_ROWS = (
    PresetRow("pairwise function (1 block, res4)", "baseline (C2D)", "none", _nl(71.8, "a")),
    PresetRow("pairwise function (1 block, res4)", "Gaussian", "nl(pairwise=gaussian)@stages=3" + _NL_BEFORE_LAST,
              _nl(72.5, "a")),
    PresetRow("pairwise function (1 block, res4)", "embedded Gaussian", _NL_ONE, _nl(72.7, "a"),
              "nl's default pairwise function"),
    PresetRow("pairwise function (1 block, res4)", "dot product", "nl(pairwise=dot_product)@stages=3" + _NL_BEFORE_LAST,
              _nl(72.9, "a")),
    PresetRow("pairwise function (1 block, res4)", "concatenation",
              "nl(pairwise=concatenation)@stages=3" + _NL_BEFORE_LAST, _nl(72.8, "a")),
    PresetRow("stage of 1 block", "baseline (C2D)", "none", _nl(71.8, "b")),
    PresetRow("stage of 1 block", "res2 (stage 1)", "nl@stages=1" + _NL_BEFORE_LAST, _nl(72.7, "b")),
    PresetRow("stage of 1 block", "res3 (stage 2)", "nl@stages=2" + _NL_BEFORE_LAST, _nl(72.9, "b")),
    PresetRow("stage of 1 block", "res4 (stage 3)", _NL_ONE, _nl(72.7, "b")),
    PresetRow("stage of 1 block", "res5 (stage 4)", "nl@stages=4" + _NL_BEFORE_LAST, _nl(72.3, "b")),
    PresetRow("number of blocks", "baseline (C2D)", "none", _nl(71.8, "c")),
    PresetRow("number of blocks", "1 block (res4)", _NL_ONE, _nl(72.7, "c")),
    PresetRow("number of blocks", "5 blocks (every other block of res3-res4)", "nl", _nl(73.8, "c"),
              "nl's default placement; 2 blocks in resnet18_small"),
)  # fmt: skip

NL_ABLATION = Preset(
    "nl-ablation",
    "Non-local ablations (Wang et al. 2018, Table 2): pairwise function, stage of one block, 1 vs 5 blocks",
    _NL_ROWS,
    (
        "Paper stages res2..res5 are stages 1..4 of resnet18_small (layer1..layer4), 2 residual blocks each; "
        "one block goes right before the last residual block (index -2, after the add), as in the paper. The "
        "paper's 5 blocks (every other block of res3 and res4 of ResNet-50) are 2 blocks here.",
        "The paper's network is a video C2D ResNet-50 on Kinetics (top-1); ours is a 2D ResNet on Fashion-MNIST. "
        "Compare the direction and rough size of each effect, not the values.",
    ),
)

PRESETS: dict[str, Preset] = {p.name: p for p in (GCNET_ABLATION, NL_ABLATION)}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name raises ``ValueError`` listing the presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(list_presets())}") from None


def _check_canonical() -> None:
    """Every row's spec is written the way :func:`format_variant` writes it (so tables, result
    keys and resumed runs agree on one text per variant)."""
    for p in PRESETS.values():
        for r in p.rows:
            canon = format_variant(parse_variant(r.spec))
            if canon != r.spec:
                raise ValueError(f"preset {p.name!r} row {r.name!r}: spec {r.spec!r} is written {canon!r}")
