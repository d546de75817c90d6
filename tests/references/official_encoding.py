"""EncNet's Encoding layer and EncModule, re-implemented from the official code.

Repository: zhanghang1989/PyTorch-Encoding, commit ac748410dfc8d7d70a2ce7f5add08050af2fae20.

- ``encoding/nn/encoding.py`` L78-107 ``Encoding(D, K)``: ``codewords [K, D]`` uniform
  ``+-1/sqrt(K D)``, ``scale [K]`` uniform ``[-1, 0]`` (L86-89);
  ``A = softmax(scaled_l2(X, codewords, scale), dim=2)``, ``E = aggregate(A, X, codewords)``
  (L104-106). No dtype cast anywhere: the docstring example (L73-76) runs it in float64.
- ``encoding/lib/cpu/encoding_cpu.cpp`` L25-32 ``ScaledL2_Forward_CPU``:
  ``SL = S * ((X - C)^2).sum(-1)`` by broadcasting, in the input dtype; L4-11
  ``Aggregate_Forward_CPU``: ``E = (A[..., None] * (X[:, :, None] - C)).sum(1)``.
  (The CUDA kernels dispatch on the input dtype too: ``AT_DISPATCH_FLOATING_TYPES``,
  ``encoding/lib/gpu/encoding_kernel.cu`` L175, L200.)
- ``encoding/models/sseg/encnet.py`` L44-70 ``EncModule``: ``Conv2d(C, C, 1, bias=False)``, BN,
  ReLU, ``Encoding(C, K)``, BN over the ``K`` codes, ReLU, ``Mean(dim=1)``;
  ``fc = Linear(C, C) + Sigmoid``; output ``relu(x + x * gamma)`` (SE-loss head omitted).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["scaled_l2", "aggregate", "Encoding", "EncModule", "copy_from_ours"]


def scaled_l2(x: torch.Tensor, c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``ScaledL2_Forward_CPU``: ``[B, N, D], [K, D], [K] -> [B, N, K]``."""
    return s.view(1, 1, c.size(0)) * (
        x.unsqueeze(2).expand(x.size(0), x.size(1), c.size(0), c.size(1)) - c.unsqueeze(0).unsqueeze(0)
    ).pow(2).sum(3)


def aggregate(a: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``Aggregate_Forward_CPU``: ``[B, N, K], [B, N, D], [K, D] -> [B, K, D]``."""
    return (
        a.unsqueeze(3)
        * (x.unsqueeze(2).expand(x.size(0), x.size(1), c.size(0), c.size(1)) - c.unsqueeze(0).unsqueeze(0))
    ).sum(1)


class Encoding(nn.Module):
    """Official ``Encoding`` (encoding.py L78-107), in the input dtype throughout.

    Shape:
        - Input: ``[B, D, H, W]``
        - Output: ``[B, K, D]``
    """

    def __init__(self, D: int, K: int):
        super().__init__()
        self.D, self.K = D, K
        self.codewords = nn.Parameter(torch.empty(K, D))
        self.scale = nn.Parameter(torch.empty(K))
        std1 = 1.0 / ((K * D) ** 0.5)
        nn.init.uniform_(self.codewords, -std1, std1)
        nn.init.uniform_(self.scale, -1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d = x.size(0), self.D
        x = x.view(b, d, -1).transpose(1, 2).contiguous()  # [B, N, D]
        a = F.softmax(scaled_l2(x, self.codewords, self.scale), dim=2)  # [B, N, K]
        return aggregate(a, x, self.codewords)  # [B, K, D]


class EncModule(nn.Module):
    """Official ``EncModule`` without the SE-loss head (encnet.py L44-70).

    Shape:
        - Input: ``[B, C, H, W]``
        - Output: ``[B, C, H, W]``
    """

    def __init__(self, in_channels: int, ncodes: int = 32):
        super().__init__()
        self.encoding = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 1, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            Encoding(D=in_channels, K=ncodes),
            nn.BatchNorm1d(ncodes),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Sequential(nn.Linear(in_channels, in_channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        en = self.encoding(x).mean(dim=1)  # Mean(dim=1): [B, C]
        b, c = x.shape[:2]
        y = self.fc(en).view(b, c, 1, 1)
        return F.relu(x + x * y)


def copy_from_ours(ref: EncModule, ours: nn.Module) -> None:
    """Our ``enc`` block (``context.proj/bn/encoding/code_bn``, ``transform.fc``) into ``ref``."""
    from . import copy_tensors

    s = ours.state_dict()
    t = {
        "encoding.0.weight": s["context.proj.weight"][:, :, None, None],
        "encoding.3.codewords": s["context.encoding.codewords"],
        "encoding.3.scale": s["context.encoding.scale"],
        "fc.0.weight": s["transform.fc.weight"],
        "fc.0.bias": s["transform.fc.bias"],
    }
    for ref_bn, our_bn in (("encoding.1", "context.bn"), ("encoding.4", "context.code_bn")):
        for p in ("weight", "bias", "running_mean", "running_var"):
            t[f"{ref_bn}.{p}"] = s[f"{our_bn}.{p}"]
    copy_tensors(ref, t)
