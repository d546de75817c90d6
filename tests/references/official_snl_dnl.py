"""SNL (simplified NL) and DNL (disentangled NL) blocks, re-implemented from the official code.

Repository: Howal/DNL-Object-Detection, commit 6ae88842d6237a465559c420c610444bcb2d9405.

SNL: ``mmdet/ops/context_block.py`` ``ContextBlock(simple=True)``, L35-38 (layers), L63-70
(init), L107-116 (forward):

- ``conv_value``: 1x1 conv ``C -> C`` **without bias** (L36);
- ``conv_mask``: 1x1 conv ``C -> 1`` with bias, softmax over positions (L37-38);
- ``out = x + bmm(conv_value(x), softmax(conv_mask(x))^T)`` (value per position, then pooled;
  equal to ``W_v`` applied to the attention-pooled context since ``W_v`` has no bias);
- init: every conv ``N(0, 0.01)``, biases zero (L64-70): not an identity at init.

DNL: ``mmdet/ops/nl_gc_block.py`` ``_NonLocalNd_bn``, L9-85 (layers), L87-94 (init),
L106-199 (forward); configuration ``configs/dnlnet/mask_rcnn_r50_r4_nlgcb_c4_fpn_syncabn_4conv1fc_1x_4nodes.py``
(``ratio=1/4, downsample=False, whiten_type=['channel'], temp=0.05, with_gc=True, use_out=False,
out_bn=False``):

- ``conv_query``/``conv_key``: 1x1 ``C -> C/4`` with bias; ``conv_value`` ``C -> C`` **without
  bias** when ``use_out=False`` (L49-56);
- ``downsample``: max-pool 2 (2x2 in 2D, 1x2x2 in 3D) of ``x`` before key, value and mask (L15-33,
  L110-119);
- whitening ``'channel'``: subtract the mean over positions from query and key (L127-131);
- ``sim = softmax(q^T k / sqrt(C/4) / temperature)`` (L145-148); ``out_sim = gamma * sim v``,
  ``gamma`` a scalar initialised to 0 (L78, L158);
- unary (``with_gc``, not ``with_2fc``): ``bmm(value, softmax(conv_mask(input_x))^T)`` added to
  ``out_sim`` **without** ``gamma`` (L182-189); optional ``conv_out``/``out_bn``; ``x + out``
  (L192-197);
- init: every conv ``N(0, 0.01)``, zero biases (L87-94).

Placement: ``mmdet/models/backbones/resnet.py`` ``Bottleneck.forward`` L248-301: the block runs
after the residual add (L280-283) and **before** the final ReLU (L285-290, L299); stride on the
3x3 conv for ``style='pytorch'`` (L145-150). The ``c4`` config above puts it in ``layer3[-2]``
(``stage_with_nlgcb=[[], [], [-2], []]``, L15);
``configs/dnlnet/mask_rcnn_r50_r4_nlgcb_c4c5_fpn_syncabn_4conv1fc_1x.py`` L15 adds ``layer4[-2, -1, 0]``
(same block options).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "ContextBlockSimple",
    "NonLocalNdGc",
    "DNLBottleneck",
    "copy_snl_from_ours",
    "copy_dnl_from_ours",
    "copy_bottleneck_from_ours",
    "find_dnl",
]


def _conv(dim: int):
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]


class ContextBlockSimple(nn.Module):
    """``ContextBlock(inplanes, ratio, simple=True)`` (context_block.py L35-38, L107-116).

    Shape:
        - Input: ``[N, C, H, W]``
        - Output: ``[N, C, H, W]``
    """

    def __init__(self, inplanes: int):
        super().__init__()
        self.conv_value = nn.Conv2d(inplanes, inplanes, kernel_size=1, bias=False)
        self.conv_mask = nn.Conv2d(inplanes, 1, kernel_size=1)
        self.softmax = nn.Softmax(dim=2)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.conv_value(x)
        value = value.view(value.size(0), value.size(1), -1)  # [N, C, L]
        mask = self.conv_mask(x)
        mask = mask.view(mask.size(0), mask.size(1), -1)  # [N, 1, L]
        mask = self.softmax(mask)
        out_gc = torch.bmm(value, mask.permute(0, 2, 1)).unsqueeze(-1)  # [N, C, 1, 1]
        return x + out_gc


class NonLocalNdGc(nn.Module):
    """``_NonLocalNd_bn`` without ``double_conv``/``with_2fc``/BN whitening (nl_gc_block.py L9-199).

    Args:
        inplanes: ``C``.
        dim: spatial dims (1, 2, 3).
        ratio, downsample, use_out, out_bn, whiten_type, temperature, with_gc: as the official
            constructor (defaults: the DNL detection configuration).

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C, *S]``
    """

    def __init__(
        self,
        inplanes: int,
        dim: int = 2,
        ratio: float = 0.25,
        downsample: bool = False,
        use_out: bool = False,
        out_bn: bool = False,
        whiten_type=("channel",),
        temperature: float = 0.05,
        with_gc: bool = True,
    ):
        super().__init__()
        conv_nd = _conv(dim)
        if downsample:
            max_pool = {1: nn.MaxPool1d(2, 2), 2: nn.MaxPool2d((2, 2), (2, 2)), 3: nn.MaxPool3d((1, 2, 2), (1, 2, 2))}[
                dim
            ]
        else:
            max_pool = None
        planes = int(inplanes * ratio)
        self.planes = planes
        self.conv_query = conv_nd(inplanes, planes, kernel_size=1)
        self.conv_key = conv_nd(inplanes, planes, kernel_size=1)
        if use_out:
            self.conv_value = conv_nd(inplanes, planes, kernel_size=1)
            self.conv_out = conv_nd(planes, inplanes, kernel_size=1, bias=False)
        else:
            self.conv_value = conv_nd(inplanes, inplanes, kernel_size=1, bias=False)
            self.conv_out = None
        self.out_bn = nn.BatchNorm2d(inplanes) if out_bn else None
        if with_gc:
            self.conv_mask = conv_nd(inplanes, 1, kernel_size=1)
        self.softmax = nn.Softmax(dim=2)
        self.downsample = max_pool
        self.gamma = nn.Parameter(torch.zeros(1))
        self.scale = math.sqrt(planes)
        self.whiten_type = list(whiten_type)
        self.temperature = temperature
        self.with_gc = with_gc
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.normal_(m.weight, 0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        input_x = self.downsample(x) if self.downsample is not None else x
        query = self.conv_query(x)
        key = self.conv_key(input_x)
        value = self.conv_value(input_x)
        query = query.view(query.size(0), query.size(1), -1)  # [N, C', L]
        key = key.view(key.size(0), key.size(1), -1)  # [N, C', L_k]
        value = value.view(value.size(0), value.size(1), -1)  # [N, C_v, L_k]
        if "channel" in self.whiten_type:
            key = key - key.mean(2).unsqueeze(2)
            query = query - query.mean(2).unsqueeze(2)
        if "spatial" in self.whiten_type:
            key = key - key.mean(1).unsqueeze(1)
            query = query - query.mean(1).unsqueeze(1)
        sim_map = torch.bmm(query.transpose(1, 2), key)  # [N, L, L_k]
        sim_map = sim_map / self.scale
        sim_map = sim_map / self.temperature
        sim_map = self.softmax(sim_map)
        out_sim = torch.bmm(sim_map, value.transpose(1, 2))  # [N, L, C_v]
        out_sim = out_sim.transpose(1, 2)  # [N, C_v, L]
        out_sim = out_sim.view(out_sim.size(0), out_sim.size(1), *x.size()[2:])  # [N, C_v, *S]
        out_sim = self.gamma * out_sim
        if self.with_gc:
            mask = self.conv_mask(input_x)
            mask = mask.view(mask.size(0), mask.size(1), -1)  # [N, 1, L_k]
            mask = self.softmax(mask)
            out_gc = torch.bmm(value, mask.permute(0, 2, 1)).unsqueeze(-1)  # [N, C_v, 1, 1]
            if x.dim() != 4:
                out_gc = out_gc.view(out_gc.shape[:2] + (1,) * (x.dim() - 2))  # [N, C_v, 1...]
            out_sim = out_sim + out_gc
        if self.conv_out is not None:
            out_sim = self.conv_out(out_sim)
        if self.out_bn is not None:
            out_sim = self.out_bn(out_sim)
        return out_sim + residual


class DNLBottleneck(nn.Module):
    """mmdet ``Bottleneck`` (``style='pytorch'``) with ``nlgcb`` (resnet.py L248-301).

    ``relu(nl_gc_block(bn3(conv3(...)) + identity))``: the block between the add and the ReLU.

    Shape:
        - Input: ``[N, inplanes, H, W]``
        - Output: ``[N, 4 planes, H / stride, W / stride]``
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, **nlgcb):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, stride=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=False)  # non_inplace=True in the DNL configs
        self.downsample = downsample
        self.nl_gc_block = NonLocalNdGc(planes * self.expansion, dim=2, **nlgcb)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out = out + identity
        out = self.nl_gc_block(out)
        return self.relu(out)


def _pointwise(w: torch.Tensor, dim: int) -> torch.Tensor:
    return w.reshape(w.shape[:2] + (1,) * dim)  # [out, in] -> [out, in, 1...]


def copy_snl_from_ours(ref: ContextBlockSimple, ours: nn.Module) -> None:
    """Our ``snl`` (``context.conv_mask``, ``transform.fc``) into ``ref``. Our ``W_v`` bias
    (``transform.fc.bias``) has no official counterpart: it is passed on so that
    :func:`~tests.references.copy_tensors` names it."""
    from . import copy_tensors

    s = ours.state_dict()
    t = {
        "conv_mask.weight": _pointwise(s["context.conv_mask.weight"], 2),
        "conv_mask.bias": s["context.conv_mask.bias"],
        "conv_value.weight": _pointwise(s["transform.fc.weight"], 2),
    }
    if "transform.fc.bias" in s:
        t["conv_value.bias"] = s["transform.fc.bias"]
    copy_tensors(ref, t)


def copy_dnl_from_ours(ref: NonLocalNdGc, ours: nn.Module, dim: int = 2) -> None:
    """Our ``dnl`` (``theta``, ``phi``, ``g``, ``out``, ``norm``, ``unary.conv_mask``, ``gamma``)
    into ``ref``."""
    from . import copy_tensors

    s = ours.state_dict()
    names = {
        "theta": "conv_query",
        "phi": "conv_key",
        "g": "conv_value",
        "out": "conv_out",
        "unary.conv_mask": "conv_mask",
    }
    t = {}
    for our, off in names.items():
        if f"{our}.weight" in s:
            t[f"{off}.weight"] = _pointwise(s[f"{our}.weight"], dim)
        if f"{our}.bias" in s:
            t[f"{off}.bias"] = s[f"{our}.bias"]
    t["gamma"] = s["gamma"]
    for p in ("weight", "bias", "running_mean", "running_var"):
        if f"norm.{p}" in s:
            t[f"out_bn.{p}"] = s[f"norm.{p}"]
    copy_tensors(ref, t)


def find_dnl(module: nn.Module) -> tuple[str, nn.Module]:
    """``(name, submodule)`` of the one DNL block inside ``module`` (found by its parameters)."""
    found = [
        (n, m)
        for n, m in module.named_modules()
        if hasattr(m, "unary") and hasattr(m, "theta") and hasattr(m, "gamma") and hasattr(m, "g")
    ]
    if len(found) != 1:
        raise ValueError(f"expected one DNL block, found {[n for n, _ in found]}")
    return found[0]


def copy_bottleneck_from_ours(ref: DNLBottleneck, ours: nn.Module) -> None:
    """Our ResNet ``Bottleneck`` (conv1..3, bn1..3, downsample, one DNL block in any slot) into
    ``ref``: the DNL block into ``ref.nl_gc_block``, every other tensor by its own name."""
    from . import copy_tensors

    name, dnl = find_dnl(ours)
    copy_dnl_from_ours(ref.nl_gc_block, dnl)
    t = {k: v for k, v in ours.state_dict().items() if v.is_floating_point() and not k.startswith(name + ".")}
    t.update({f"nl_gc_block.{k}": v for k, v in ref.nl_gc_block.state_dict().items() if v.is_floating_point()})
    copy_tensors(ref, t)
