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
BasicBlock) have a counterpart in those layouts. Every key of the source that is not used, every
key of ours that is not found, and every entry whose shape is not exactly the layout's (ours, or
the 1x1 conv / ``LayerNorm([P, 1, 1])`` shape the layout stores for our linear / LayerNorm
weights) is reported, never silently dropped or reshaped. Differences: timm's
``LayerNorm2d`` in GC uses ``eps=1e-6`` (ours 1e-5); timm's ``ecaresnet*`` / ``gcresnet*`` models
use deep or tiered stems (``conv1.0`` ...), which do not match ``resnet50`` and are reported as
unexpected keys.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..layers import AttnPool, ScaleFusion
from ..models.resnet import SLOT_NAMES, ResBlockBase
from .mmcv_dispatch import as_tensor, mmcv_converter

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


def _block_slots(model: nn.Module) -> dict[str, tuple[nn.Module, nn.Module]]:
    """{qualified slot prefix: (block, residual block)} for all filled slots of a globalctx ResNet."""
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, ResBlockBase):
            continue
        for slot in SLOT_NAMES:
            sub = getattr(m, slot)
            if not isinstance(sub, nn.Identity):
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
        last = f"attn_conv{parent.num_convs}"
        if layout == "torchvision" or not prefix.endswith("." + last):
            unmapped += bkeys
            continue
        base = prefix[: -len(last)] + block_name + "."
        try:
            inner = _timm_block_keys(blk) if layout == "timm" else mmcv_converter(blk)[0](blk, 2)
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
        layout: ``'torchvision'``, ``'timm'`` or ``'mmcv'``. Default: ``'torchvision'``.
        block_name: the source's attribute holding the block (``'se'`` for timm,
            ``'context_block'`` for the GCNet repo). Default: per layout.
        state_dict: the source weights (tensors or numpy arrays).
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
    slots = _block_slots(model)
    missing = list(unmapped)
    mismatched, new = [], {}
    for k, t in km.items():
        if t not in src:
            if not k.endswith("num_batches_tracked"):
                missing.append(k)
            continue
        v = as_tensor(t, src[t])
        want = _layout_shape(slots, k, ours[k], layout)
        if tuple(v.shape) != want:
            mismatched.append(f"{k} {list(ours[k].shape)} <- {t} {list(v.shape)} (expected {list(want)})")
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
            f"mismatched {mismatched} ({len(mismatched)})"
        )
    model.load_state_dict(new, strict=False)
    return report


def _layout_shape(slots: dict, key: str, tensor: torch.Tensor, layout: str) -> tuple:
    """The shape ``layout`` stores our entry ``key`` in (1x1 convs for the blocks' linear weights)."""
    found = next(((p, blk) for p, (blk, _) in slots.items() if key.startswith(p + ".")), None)
    if found is None:
        return tuple(tensor.shape)
    prefix, blk = found
    if layout == "mmcv":
        return tuple(mmcv_converter(blk)[1](blk, key[len(prefix) + 1 :], tensor, 2))
    if tensor.dim() == 2:
        return tuple(tensor.shape) + (1, 1)  # linear -> 1x1 conv (timm SE / GC)
    return tuple(tensor.shape)


def to_layout(model: nn.Module, *, layout: str = "torchvision", block_name: str | None = None) -> dict:
    """The state dict of ``model`` in ``layout`` (convs as 1x1 convs where the source has them).
    Blocks without a counterpart raise ``ValueError``."""
    km, unmapped = resnet_key_map(model, layout=layout, block_name=block_name)
    if unmapped:
        raise ValueError(f"no {layout} counterpart for {unmapped[:10]} ({len(unmapped)} keys)")
    ours = model.state_dict()
    slots = _block_slots(model)
    return {t: ours[k].detach().clone().reshape(_layout_shape(slots, k, ours[k], layout)) for k, t in km.items()}
