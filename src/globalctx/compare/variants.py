"""Variant specs: one string names the blocks of a variant, their options and where they go.

Grammar::

    variant := "none" | block ("+" block)*
    block   := NAME ["(" option ("," option)* ")"] ("@" where)*
    option  := KEY "=" VALUE
    where   := POSITION | "stem" | "stages=" STAGES | "indices=" INDICES
             | "every=" INT | "offset=" INT | "position=" POSITION | "stem=" BOOL

    NAME     a registered block (gc, nl, snl, se, ...); "none" is the baseline (no block)
    KEY      an option of the block's constructor (gc: rd_ratio, pooling, fusion, norm, ...)
    VALUE    int (3, -1) | float (0.5, 1e-3) | fraction (1/4) | true | false | none | a word (avg)
    POSITION after_conv1 | after_conv2 | after_conv3 | before_add | after_add_before_relu | after_add | before_conv
    STAGES   stages 1..4 (torchvision layer1..layer4; c3..c5 = 2..4), comma-separated, ranges
             allowed: 4 | 3,4 | 2-4 | c3-c5 | res4
    INDICES  residual-block indices inside each chosen stage, negative from the end: -1 | 0,-1;
             or per stage: 3:-2/4:0,-2,-1

    Without "@", a block goes where its paper puts it (globalctx.models.default_placement);
    each "@" setting overrides that default. Giving stages drops a per-stage indices default;
    giving indices or every replaces the other; a position other than before_conv drops stem.
    Spaces are ignored.

Examples::

    none                          the baseline
    gc                            GC r16 in every residual block of stages 2-4, before the add
    gc(rd_ratio=1/4)              GC r4
    gc(pooling=avg,fusion=mul)    average pooling, multiplicative fusion
    gc@after_add                  GC after the residual add
    gc@stages=4                   GC in stage 4 only
    nl@stages=3@indices=-1        one NL block, in the last residual block of stage 3
    nl@stages=3+gc                NL in stage 3 (every other block, its default) plus GC

:func:`parse_variant` turns a spec into a list of :class:`~globalctx.models.Placement`,
:func:`format_variant` writes the shortest spec that parses back to equal placements, and
:func:`variant_label` a readable name for tables and figure legends. An unknown block, option,
position or setting raises ``ValueError`` listing the valid ones; option *values* are checked
by the block when it is built (:func:`check_variant` builds each block once).
"""

from __future__ import annotations

import inspect
import math
import re
import typing
from collections.abc import Mapping, Sequence
from fractions import Fraction
from functools import cache

from ..layers import get_block, list_blocks
from ..models import Placement, default_placement
from ..models.placement import POSITIONS

__all__ = [
    "GRAMMAR",
    "BASELINE",
    "PLACEMENT_KEYS",
    "parse_variant",
    "format_variant",
    "variant_label",
    "same_variant",
    "block_options",
    "check_variant",
    "split_variants",
    "make_placement",
    "placement_fields",
    "parse_value",
    "format_value",
]

GRAMMAR = (
    __doc__.split("Grammar::\n\n", 1)[1].split("\n\nExamples::", 1)[0]
    if __doc__ and "Grammar::" in __doc__
    else "(the grammar is in the docstring of globalctx.compare.variants, which python -OO strips)"
)
BASELINE = "none"
PLACEMENT_KEYS = ("stages", "indices", "every", "offset", "position", "stem")
_NOT_OPTIONS = ("channels", "device", "dtype", "self")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_INT = re.compile(r"^[+-]?\d+$")
_FRACTION = re.compile(r"^([+-]?\d+)/(\d+)$")


# ---------------------------------------------------------------------------------------------
# The one place that knows Placement's keyword and attribute names


def make_placement(block: str, *, stages, position, every, offset, indices, stem, stage_options, options) -> Placement:
    """Build a :class:`Placement` from the spec fields (the only call of its constructor here)."""
    return Placement(block, stages=stages, position=position, every=every, offset=offset, blocks=indices,
                     stem=stem, stage_options=stage_options or None, **options)  # fmt: skip


def _attr(p: Placement, new: str, old: str):
    return getattr(p, new) if hasattr(p, new) else getattr(p, old)


def placement_fields(p: Placement) -> dict:
    """The fields of ``p`` as plain data: block, stages, position, every, offset, indices, stem,
    stage_options, options."""
    block = _attr(p, "attn", "block")
    if not isinstance(block, str):
        raise ValueError(f"only placements of a registered block name have a spec, not {p.name!r}")
    return {"block": block, "stages": tuple(p.stages), "position": p.position, "every": p.every,
            "offset": p.offset, "indices": _attr(p, "indices", "blocks"), "stem": bool(p.stem),
            "stage_options": dict(p.stage_options), "options": dict(p.options)}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Blocks and their options


@cache
def block_options(name: str) -> tuple[str, ...]:
    """The option names a spec may give block ``name`` (its constructor's keywords; for a
    constructor taking ``**options``, those of the class it returns), sorted."""
    fn = get_block(name)
    params = inspect.signature(fn).parameters
    if any(q.kind is inspect.Parameter.VAR_KEYWORD for q in params.values()):
        cls = typing.get_type_hints(fn).get("return")
        if isinstance(cls, type):
            params = inspect.signature(cls.__init__).parameters
    return tuple(sorted(
        k for k, q in params.items()
        if k not in _NOT_OPTIONS and q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY)
    ))  # fmt: skip


def _block_name(name: str, spec: str) -> str:
    low = name.lower()
    if low not in list_blocks():
        raise ValueError(f"variant {spec!r}: unknown block {name!r}; blocks: {BASELINE}, {', '.join(list_blocks())}")
    return low


# ---------------------------------------------------------------------------------------------
# Values


def parse_value(text: str):
    """An option value: int, float, fraction (``1/4`` -> 0.25), ``true``/``false``, ``none``, or
    the word itself."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low == "none":
        return None
    if _INT.match(text):
        return int(text)
    m = _FRACTION.match(text)
    if m:
        if int(m.group(2)) == 0:
            raise ValueError(f"fraction {text!r} divides by zero")
        return int(m.group(1)) / int(m.group(2))
    try:
        v = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(v):
            return v
    if not _WORD.match(text):
        raise ValueError(f"value {text!r} is not a number, fraction, true/false, none or a word")
    return text


def format_value(value) -> str:
    """The spec text of an option value (the inverse of :func:`parse_value`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"option value {value!r} cannot be written in a spec")
        if not value.is_integer():
            frac = Fraction(value).limit_denominator(1000)
            if abs(frac.numerator) == 1 and frac.numerator / frac.denominator == value:
                return f"{frac.numerator}/{frac.denominator}"
        return repr(value).replace("e+", "e")
    if isinstance(value, str) and _WORD.match(value) and parse_value(value) == value:
        return value
    raise ValueError(f"option value {value!r} cannot be written in a spec (numbers, true/false, none, words)")


# ---------------------------------------------------------------------------------------------
# Placement settings


_STAGE_PREFIXES = (("layer", 0), ("res", 1), ("c", 1))


def _stage(token: str, spec: str) -> int:
    low = token.lower()
    if low.isdigit() and 1 <= int(low) <= 4:
        return int(low)
    for prefix, shift in _STAGE_PREFIXES:
        rest = low[len(prefix) :]
        if low.startswith(prefix) and rest.isdigit() and 1 <= int(rest) - shift <= 4:
            return int(rest) - shift
    raise ValueError(
        f"variant {spec!r}: unknown stage {token!r}; stages are 1..4 (layer1..layer4), c2..c5 or res2..res5, "
        f"as a list (3,4) or a range (2-4, c3-c5)"
    )


def _stages(text: str, spec: str) -> tuple[int, ...]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, _, b = part.partition("-")
            lo, hi = _stage(a, spec), _stage(b, spec)
            if lo > hi:
                raise ValueError(f"variant {spec!r}: stage range {part!r} runs backwards")
            out += range(lo, hi + 1)
        else:
            out.append(_stage(part, spec))
    return tuple(sorted(set(out)))


def _ints(text: str, what: str, spec: str) -> tuple[int, ...]:
    parts = text.split(",")
    if not all(_INT.match(p) for p in parts):
        raise ValueError(f"variant {spec!r}: {what} must be integers like -1 or 0,-1, got {text!r}")
    return tuple(int(p) for p in parts)


def _indices(text: str, spec: str):
    if ":" not in text:
        return _ints(text, "indices", spec)
    out = {}
    for group in text.split("/"):
        stage, sep, idx = group.partition(":")
        if not sep:
            raise ValueError(f"variant {spec!r}: per-stage indices look like 3:-2/4:0,-1, got {text!r}")
        out[_stage(stage, spec)] = _ints(idx, "indices", spec)
    return out


def _int(text: str, key: str, spec: str) -> int:
    if not _INT.match(text):
        raise ValueError(f"variant {spec!r}: {key} must be an integer, got {text!r}")
    return int(text)


def _position(text: str, spec: str) -> str:
    if text not in POSITIONS:
        raise ValueError(f"variant {spec!r}: unknown position {text!r}; positions: {', '.join(POSITIONS)}")
    return text


def _where(items: Sequence[str], spec: str) -> dict:
    """``["stages=3", "after_add"]`` -> ``{"stages": (3,), "position": "after_add"}``."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            if item == "stem":
                key, value = "stem", "true"
            elif item in POSITIONS:
                key, value = "position", item
            elif item in PLACEMENT_KEYS:
                raise ValueError(f"variant {spec!r}: @{item} needs a value (@{item}=...)")
            else:
                raise ValueError(
                    f"variant {spec!r}: unknown setting @{item}; a position ({', '.join(POSITIONS)}), "
                    f"stem, or one of {', '.join(k + '=' for k in PLACEMENT_KEYS)}"
                )
        if key not in PLACEMENT_KEYS:
            raise ValueError(f"variant {spec!r}: unknown setting {key!r}; settings: {', '.join(PLACEMENT_KEYS)}")
        if key in out:
            raise ValueError(f"variant {spec!r}: setting {key!r} given twice")
        if not value:
            raise ValueError(f"variant {spec!r}: setting {key!r} has no value")
        if key == "stages":
            out[key] = _stages(value, spec)
        elif key == "indices":
            out[key] = _indices(value, spec)
        elif key in ("every", "offset"):
            out[key] = _int(value, key, spec)
        elif key == "position":
            out[key] = _position(value, spec)
        else:
            flag = parse_value(value)
            if not isinstance(flag, bool):
                raise ValueError(f"variant {spec!r}: stem must be true or false, got {value!r}")
            out[key] = flag
    return out


def _resolve(block: str, where: Mapping, options: Mapping, spec: str) -> Placement:
    """The block's default placement with the ``where`` settings applied (rules in the grammar)."""
    f = placement_fields(default_placement(block))
    if "stages" in where:
        f["stages"] = where["stages"]
        if isinstance(f["indices"], Mapping) and "indices" not in where:
            f["indices"] = None
    if "indices" in where:
        f["indices"] = where["indices"]
        if "every" not in where:
            f["every"], f["offset"] = 1, 0
    if "every" in where:
        f["every"], f["offset"] = where["every"], None
        if "indices" not in where:
            f["indices"] = None
    if "offset" in where:
        f["offset"] = where["offset"]
    if "position" in where:
        f["position"] = where["position"]
        if where["position"] != "before_conv" and "stem" not in where:
            f["stem"] = False
    if "stem" in where:
        f["stem"] = where["stem"]
    try:
        return make_placement(block, stages=f["stages"], position=f["position"], every=f["every"],
                              offset=f["offset"], indices=f["indices"], stem=f["stem"],
                              stage_options=f["stage_options"], options=dict(options))  # fmt: skip
    except ValueError as e:
        raise ValueError(f"variant {spec!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Parsing


def _split_top(text: str, sep: str, spec: str) -> list[str]:
    """Split at ``sep`` outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
            if depth > 1:
                raise ValueError(f"variant {spec!r}: nested parentheses")
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"variant {spec!r}: ')' without '('")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError(f"variant {spec!r}: '(' without ')'")
    parts.append(text[start:])
    return parts


def _parse_block(part: str, spec: str) -> Placement:
    head, _, rest = part.partition("@")
    where_items = rest.split("@") if rest else []
    if rest == "" and part.endswith("@") or any(not w for w in where_items):
        raise ValueError(f"variant {spec!r}: empty setting after '@'")
    name, paren, opts_text = head.partition("(")
    if paren and not opts_text.endswith(")"):
        raise ValueError(f"variant {spec!r}: text after ')' in {head!r}; settings go after '@'")
    if not _NAME.match(name):
        raise ValueError(f"variant {spec!r}: expected a block name, got {name!r}")
    if name.lower() == BASELINE:
        raise ValueError(f"variant {spec!r}: {BASELINE!r} is the baseline alone; it takes no options or '+'")
    block = _block_name(name, spec)
    options: dict = {}
    if paren:
        inner = opts_text[:-1]
        if "(" in inner or ")" in inner:
            raise ValueError(f"variant {spec!r}: one '(...)' of options per block, got {head!r}")
        if not inner:
            raise ValueError(f"variant {spec!r}: empty '()' after {name!r}; drop it or give key=value")
        valid = block_options(block)
        for item in inner.split(","):
            key, sep, value = item.partition("=")
            if not sep or not key or not value:
                raise ValueError(f"variant {spec!r}: options are key=value, got {item!r}")
            if key not in valid:
                raise ValueError(f"variant {spec!r}: unknown option {key!r} of {block!r}; options: {', '.join(valid)}")
            if key in options:
                raise ValueError(f"variant {spec!r}: option {key!r} given twice")
            try:
                options[key] = parse_value(value)
            except ValueError as e:
                raise ValueError(f"variant {spec!r}: option {key!r}: {e}") from None
    return _resolve(block, _where(where_items, spec), options, spec)


def parse_variant(spec: str) -> list[Placement]:
    """The placements of a variant spec (``[]`` for ``"none"``); grammar in :data:`GRAMMAR`.

    Example::

        >>> [p.to_dict()["stages"] for p in parse_variant("nl@stages=3+gc")]
        [[3], [2, 3, 4]]
    """
    if not isinstance(spec, str):
        raise ValueError(f"a variant spec is a string, got {spec!r}")
    text = re.sub(r"\s+", "", spec)
    if not text:
        raise ValueError("empty variant spec; give 'none' for the baseline or a block such as 'gc'")
    if text.lower() == BASELINE:
        return []
    parts = _split_top(text, "+", spec)
    if any(not p for p in parts):
        raise ValueError(f"variant {spec!r}: empty block around '+'")
    return [_parse_block(p, spec) for p in parts]


def split_variants(text: str) -> list[str]:
    """Split a list of specs separated by spaces or ``;`` (commas belong to the specs)."""
    return [s for s in re.split(r"[;\s]+", text) if s]


# ---------------------------------------------------------------------------------------------
# Formatting, equality, labels


def _as_placements(variant) -> list[Placement]:
    if isinstance(variant, str):
        return parse_variant(variant)
    if isinstance(variant, Placement):
        return [variant]
    return list(variant)


def same_variant(a, b) -> bool:
    """Whether two variants (specs or placement lists) have equal placements, in order."""
    fa = [placement_fields(p) for p in _as_placements(a)]
    fb = [placement_fields(p) for p in _as_placements(b)]
    return fa == fb


def _where_items(f: Mapping) -> list[str]:
    """Every setting of ``f`` as spec items (the full, unminimised set)."""
    items = ["stages=" + ",".join(str(s) for s in f["stages"])]
    idx = f["indices"]
    if isinstance(idx, Mapping):
        items.append("indices=" + "/".join(f"{s}:{','.join(map(str, v))}" for s, v in sorted(idx.items())))
    elif idx is not None:
        items.append("indices=" + ",".join(map(str, idx)))
    else:
        items.append(f"every={f['every']}")
    items.append(f"offset={f['offset']}")
    items.append(f["position"])
    items.append("stem" if f["stem"] else "stem=false")
    return items


def _format_one(p: Placement) -> str:
    f = placement_fields(p)
    block = f["block"]
    head = block
    if f["options"]:
        head += "(" + ",".join(f"{k}={format_value(v)}" for k, v in f["options"].items()) + ")"

    def builds(items: list[str]) -> bool:
        try:
            got = placement_fields(_resolve(block, _where(items, head), f["options"], head))
        except ValueError:
            return False
        return got == f

    items = _where_items(f)
    if not builds(items):
        raise ValueError(f"placement {p!r} cannot be written as a spec (per-stage options differ from the default?)")
    for item in list(items):
        trial = [i for i in items if i != item]
        if builds(trial):
            items = trial
    return head + "".join("@" + i for i in items)


def format_variant(variant) -> str:
    """The shortest spec of a variant (placements or a spec) that parses back to equal placements.

    Example::

        >>> format_variant(parse_variant("gc( rd_ratio = 0.25 )@stages=c3-c5"))
        'gc(rd_ratio=1/4)'
    """
    ps = _as_placements(variant)
    if not ps:
        return BASELINE
    return "+".join(_format_one(p) for p in ps)


_POSITION_WORDS = {
    "before_add": "before the add",
    "after_add_before_relu": "after the add, before the ReLU",
    "after_add": "after the add",
    "before_conv": "before every conv",
    "after_conv1": "after conv1",
    "after_conv2": "after conv2",
    "after_conv3": "after conv3",
}


def _stage_words(stages: Sequence[int]) -> str:
    s = list(stages)
    if len(s) == 1:
        return f"stage {s[0]}"
    if len(s) > 2 and s == list(range(s[0], s[-1] + 1)):
        return f"stages {s[0]}-{s[-1]}"
    return "stages " + ",".join(map(str, s))


def _label_one(p: Placement) -> str:
    f = placement_fields(p)
    d = placement_fields(default_placement(f["block"]))
    text = f["block"].upper()
    if f["options"]:
        text += " (" + ", ".join(f"{k}={format_value(v)}" for k, v in f["options"].items()) + ")"
    where = []
    if f["stages"] != d["stages"]:
        where.append(_stage_words(f["stages"]))
    idx = f["indices"]
    if idx != d["indices"] and idx is not None:
        if isinstance(idx, Mapping):
            where.append("indices " + "; ".join(f"{s}: {','.join(map(str, v))}" for s, v in sorted(idx.items())))
        else:
            where.append(("index " if len(idx) == 1 else "indices ") + ",".join(map(str, idx)))
    if idx is None and (d["indices"] is not None or (f["every"], f["offset"]) != (d["every"], d["offset"])):
        where.append("every block" if f["every"] == 1 else f"every {f['every']} blocks from index {f['offset']}")
    if f["position"] != d["position"]:
        where.append(_POSITION_WORDS.get(f["position"], f["position"]))
    if f["stem"] != d["stem"]:
        where.append("with stem" if f["stem"] else "no stem")
    return ", ".join([text, *where])


def variant_label(variant) -> str:
    """A readable name for tables and legends: ``"baseline"``, ``"GC (rd_ratio=1/4), after the
    add"``, ``"NL, stage 3 + GC"`` (only what differs from the paper-default placement)."""
    ps = _as_placements(variant)
    if not ps:
        return "baseline"
    return " + ".join(_label_one(p) for p in ps)


def check_variant(variant, channels: int = 64) -> list[Placement]:
    """Build every block of ``variant`` once at ``channels`` channels so a bad option *value*
    fails before training (``ValueError`` naming the variant); returns the placements."""
    ps = _as_placements(variant)
    for p in ps:
        try:
            p.build(channels)
        except (TypeError, ValueError) as e:
            raise ValueError(f"variant {format_variant(ps)!r}: {e}") from None
    return ps
