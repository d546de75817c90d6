"""torchvision / timm / official-GCNet (mmdet) ResNet state dicts <-> globalctx ResNets.

The backbone keys are the same in all of them (torchvision layout: ``conv1``, ``bn1``,
``layer{1-4}.{i}.conv{1-3}``, ``bn{1-3}``, ``downsample.{0,1}``, ``fc``), so the map is the
identity there. The blocks differ:

============  ==========================================  ======================================
layout        where the block sits                        block keys
============  ==========================================  ======================================
torchvision   (no blocks)                                 -
timm          ``layerX.Y.se`` (after bn3 / bn2)           SE ``fc1``/``fc2`` (1x1 convs); ECA
                                                          ``conv`` (Conv1d); GC ``conv_attn``,
                                                          ``mlp_add.{fc1,norm,fc2}``,
                                                          ``mlp_scale.*``
mmcv          ``layerX.Y.context_block`` (GCNet repo)     mmcv ``ContextBlock`` (see
                                                          :mod:`globalctx.convert.mmcv_context`)
============  ==========================================  ======================================

Only blocks in the ``before_add`` slot (``attn_conv3`` in a Bottleneck, ``attn_conv2`` in a
BasicBlock) have a counterpart in those layouts. Every key of the source that is not used and
every key of ours that is not found is reported, never silently dropped. Differences: timm's
``LayerNorm2d`` in GC uses ``eps=1e-6`` (ours 1e-5); timm's ``ecaresnet*`` / ``gcresnet*`` models
use deep or tiered stems (``conv1.0`` ...), which do not match ``resnet50`` and are reported as
unexpected keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..layers.parts.context import AttnPool
from ..layers.parts.fusion import ScaleFusion
from ._registry import _handler

__all__ = ["resnet_key_map", "load_resnet", "to_layout", "LAYOUTS"]

LAYOUTS = ("torchvision", "timm", "mmcv")
_BLOCK_NAME = {"timm": "se", "mmcv": "context_block"}


def _timm_block_keys(block: nn.Module) -> dict[str, str]:
    """{our key inside block: timm key inside its attn module}."""
    keys = list(block.state_dict())
    if isinstance(getattr(block, "context", None), AttnPool):  # timm GlobalContext
        out = {}
        mlp = "mlp_scale." if isinstance(getattr(block, "fusion", None), ScaleFusion) else "mlp_add."
        for k in keys:
            t = k.replace("context.conv_mask.", "conv_attn.")
            t = t.replace("transform.branches.0.", "mlp_scale.").replace("transform.branches.1.", "mlp_add.")
            t = t.replace("transform.", mlp)
            out[k] = t
        return out
    # SEModule (fc1/fc2) and EcaModule (conv) keep their names under `transform.`
    return {k: k[len("transform.") :] if k.startswith("transform.") else k for k in keys}


def _block_slots(model: nn.Module) -> dict[str, nn.Module]:
    """{qualified slot prefix: block} for all non-empty block slots of a globalctx ResNet."""
    out = {}
    for name, m in model.named_modules():
        for slot in ("attn_conv1", "attn_conv2", "attn_conv3", "attn_add", "attn_pre1", "attn_pre2", "attn_pre3",
                     "attn_pre_down"):  # fmt: skip
            sub = getattr(m, slot, None)
            if isinstance(sub, nn.Module) and not isinstance(sub, nn.Identity) and hasattr(m, "num_convs"):
                out[f"{name}.{slot}" if name else slot] = (sub, m)
        if name == "" and not isinstance(getattr(m, "stem_attn", nn.Identity()), nn.Identity):
            out["stem_attn"] = (m.stem_attn, m)
    return out


def resnet_key_map(
    model: nn.Module, *, layout: str = "torchvision", block_name: str | None = None
) -> tuple[dict[str, str], list[str]]:
    """``({our key: their key}, [our keys without a counterpart in layout])``."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
    block_name = block_name or _BLOCK_NAME.get(layout)
    ours = list(model.state_dict())
    slots = _block_slots(model)
    km: dict[str, str] = {}
    unmapped: list[str] = []
    done: set[str] = set()
    for prefix, (blk, parent) in slots.items():
        bkeys = [k for k in ours if k.startswith(prefix + ".")]
        done.update(bkeys)
        last = f"attn_conv{getattr(parent, 'num_convs', 0)}"
        if layout == "torchvision" or not prefix.endswith("." + last):
            unmapped += bkeys
            continue
        base = prefix[: -len(last)] + block_name + "."
        try:
            inner = _timm_block_keys(blk) if layout == "timm" else _handler(blk)[1](blk, 2)
        except ValueError:
            unmapped += bkeys
            continue
        for k, t in inner.items():
            km[f"{prefix}.{k}"] = base + t
    for k in ours:
        if k not in done:
            km[k] = k
    return km, unmapped


def load_resnet(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    layout: str = "torchvision",
    block_name: str | None = None,
    strict: bool = True,
) -> dict[str, list[str]]:
    """Load a torchvision / timm / GCNet-mmdet ResNet ``state_dict`` into a globalctx ResNet.

    Args:
        model: a :class:`~globalctx.models.ResNet` whose architecture matches the source.
        state_dict: the source weights.
        layout: ``'torchvision'``, ``'timm'`` or ``'mmcv'``. Default: ``'torchvision'``.
        block_name: the source's attribute holding the block (``'se'`` for timm,
            ``'context_block'`` for the GCNet repo). Default: per layout.
        strict: raise ``ValueError`` listing every missing / unexpected / mis-shaped key.
            With ``False`` the matching keys are loaded and the rest is returned. Default: ``True``.

    Returns:
        ``{'loaded': [...], 'missing': [...], 'unexpected': [...], 'mismatched': [...]}`` (our
        keys for loaded/missing/mismatched, their keys for unexpected). A missing
        ``num_batches_tracked`` is not reported (old checkpoints lack it).

    Example::

        >>> m = globalctx.create_model("resnet50")
        >>> report = globalctx.convert.load_resnet(m, torchvision.models.resnet50(weights="DEFAULT").state_dict())
    """
    km, unmapped = resnet_key_map(model, layout=layout, block_name=block_name)
    ours = model.state_dict()
    src = dict(state_dict)
    missing = list(unmapped)
    mismatched, new = [], {}
    for k, t in km.items():
        if t not in src:
            if not k.endswith("num_batches_tracked"):
                missing.append(k)
            continue
        v = src[t]
        if v.numel() != ours[k].numel():
            mismatched.append(f"{k} {list(ours[k].shape)} <- {t} {list(v.shape)}")
            continue
        new[k] = v.detach().reshape(ours[k].shape).to(ours[k].dtype)
    used = {km[k] for k in new} | {km[k] for k in km if k.endswith("num_batches_tracked")}
    mismatched_src = {m.split(" <- ")[1].split(" ")[0] for m in mismatched}
    unexpected = sorted(set(src) - used - mismatched_src)
    report = {"loaded": sorted(new), "missing": missing, "unexpected": unexpected, "mismatched": mismatched}
    if strict and (missing or unexpected or mismatched):
        raise ValueError(
            f"state dict ({layout} layout) does not match {type(model).__name__}: "
            f"missing {missing[:10]}{' ...' if len(missing) > 10 else ''} ({len(missing)}), "
            f"unexpected {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''} ({len(unexpected)}), "
            f"mismatched {mismatched[:5]} ({len(mismatched)})"
        )
    model.load_state_dict(new, strict=False)
    return report


def to_layout(model: nn.Module, *, layout: str = "torchvision", block_name: str | None = None) -> dict:
    """The state dict of ``model`` in ``layout`` (convs as 1x1 convs where the source has them).
    Blocks without a counterpart raise ``ValueError``."""
    km, unmapped = resnet_key_map(model, layout=layout, block_name=block_name)
    if unmapped:
        raise ValueError(f"no {layout} counterpart for {unmapped[:10]} ({len(unmapped)} keys)")
    ours = model.state_dict()
    out = {}
    slots = _block_slots(model)
    for k, t in km.items():
        v = ours[k].detach().clone()
        in_block = any(k.startswith(p + ".") for p in slots)
        if in_block and layout == "mmcv":
            blk = next(b for p, (b, _) in slots.items() if k.startswith(p + "."))
            inner = k.split(".attn_conv", 1)[1].split(".", 1)[1]
            v = v.reshape(_handler(blk)[2](blk, inner, v, 2))
        elif in_block and v.dim() == 2:
            v = v.reshape(tuple(v.shape) + (1, 1))  # linear -> 1x1 conv (timm SE / GC)
        out[t] = v
    return out
