"""GSoP-Net1 channel attention (Gao et al., CVPR 2019, arXiv 1811.12006): the ``gsop`` preset, its
covariance context and its row-wise conv transform.

Shape legend: ``N`` batch, ``C`` channels, ``d`` covariance width, ``*S`` 1..3 spatial dims,
``L = prod(S)``.
"""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import nn

from ..helpers import autocast_device, zero_layer
from ..parts.base import GlobalContextBlock, Part, init_flags
from ..parts.covariance import covariance_pool
from ..parts.fusion import ScaleFusion
from ..registry import register_block

__all__ = ["GSoPPool", "RowConvTransform", "gsop_block", "gsop_covariance", "stride_positions"]


def stride_positions(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Every ``stride``-th position per spatial dim of ``x [N, C, *S]`` (a 1x1 conv's stride)."""
    return x[(slice(None), slice(None)) + (slice(None, None, stride),) * (x.dim() - 2)]


def gsop_covariance(r: torch.Tensor) -> torch.Tensor:
    """:func:`covariance_pool` of ``r [N, d, L]``: in ``r``'s dtype, but kept in fp32 under autocast
    (a covariance is quadratic in the activations and overflows fp16)."""
    cov = covariance_pool(r)  # [N, d, d], fp32 / fp64
    return cov if autocast_device(r) != "" else cov.to(r.dtype)


# shape- and autocast-dependent helpers: one node each under symbolic tracing
torch.fx.wrap("stride_positions")
torch.fx.wrap("gsop_covariance")


class GSoPPool(Part):
    """GSoP-Net1's context: ReLU, 1x1 conv ``C -> d`` (bias), BN, ReLU, covariance ``[d, d]``.

    As the official ``chan_att`` up to the covariance (Gao et al., CVPR 2019, arXiv 1811.12006).
    The 1x1 conv is a channel GEMM on ``[N, C, L]`` (any 1..3 spatial dims); ``stride`` keeps every
    ``stride``-th position per spatial dim first (the official 1x1 conv with stride 2 in the first
    ResNet stage).

    Args:
        channels: ``C``.
        cov_channels: ``d``. Default: ``128``.
        stride: Default: ``1``.

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, d, d]`` (computed in fp32 / fp64, returned in the dtype of the BN output;
          fp32 under autocast)
    """

    def __init__(self, channels: int, cov_channels: int = 128, *, stride: int = 1, device=None, dtype=None):
        super().__init__()
        if cov_channels < 1:
            raise ValueError(f"gsop: cov_channels must be >= 1, got {cov_channels}")
        if stride < 1:
            raise ValueError(f"gsop: stride must be >= 1, got {stride}")
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.cov_channels = cov_channels
        self.stride = stride
        self.reduce = nn.Linear(channels, cov_channels, **dd)  # official Conv2d(C, d, 1, bias=True)
        self.bn = nn.BatchNorm1d(cov_channels, **dd)
        self.act = nn.ReLU()

    def reset_parameters(self) -> None:
        self.reduce.reset_parameters()
        self.bn.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = stride_positions(x, self.stride)  # [N, C, *S / stride]
        x = torch.relu(x).flatten(2)  # [N, C, L]
        w = self.reduce.weight.expand(x.shape[0], -1, -1)  # [N, d, C] (stride-0 batch, no copy)
        r = torch.baddbmm(self.reduce.bias.view(1, -1, 1), w, x)  # [N, d, C] @ [N, C, L] -> [N, d, L]
        r = self.act(self.bn(r))  # [N, d, L]
        return gsop_covariance(r)  # [N, d, d]

    def extra_repr(self) -> str:
        return f"{self.channels}, cov_channels={self.cov_channels}, stride={self.stride}"


class RowConvTransform(Part):
    """GSoP-Net1's transform of the covariance (Gao et al., CVPR 2019, arXiv 1811.12006).

    ``BN_rows(S) -> row-wise conv -> FC -> t`` (no activation between the two, as the official
    ``chan_att``): the row-wise conv gives each row ``i`` of
    ``S [d, d]`` its own ``4 x d`` linear map (the official group conv, kernel ``(d, 1)``,
    ``groups = d``, ``4 d`` outputs, with bias); the FC (official 1x1 conv ``4d -> C``, bias) maps
    to the block's channels. ``weight`` keeps the official ``[4 d, d]`` layout (output ``o`` of the
    group conv reads row ``o // 4``).

    Args:
        channels: ``C`` (output).
        cov_channels: ``d``. Default: ``128``.
        zero_init_last: zero the FC weight and bias (stored as ``zero_last``). Default: ``False``
            (official init).

    Shape:
        - Input: ``[N, d, d]``
        - Output: ``[N, C]``
    """

    def __init__(
        self, channels: int, cov_channels: int = 128, *, zero_init_last: bool = False, device=None, dtype=None
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        d = cov_channels
        self.channels = channels
        self.cov_channels = d
        self.zero_last = zero_init_last
        self.row_bn = nn.BatchNorm1d(d, **dd)
        self.weight = nn.Parameter(torch.empty(4 * d, d, **dd))
        self.bias = nn.Parameter(torch.empty(4 * d, **dd))
        self.fc = nn.Linear(4 * d, channels, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.row_bn.reset_parameters()
        # PyTorch's default for the group conv: fan_in = d
        bound = 1.0 / math.sqrt(self.cov_channels)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)
        if self.zero_last:
            zero_layer(self.fc)
        else:
            self.fc.reset_parameters()

    def zero_init_last(self) -> None:
        """Zero the FC weight and bias when built with ``zero_init_last=True``."""
        if self.zero_last:
            zero_layer(self.fc)

    def _rows(self, cov: torch.Tensor) -> torch.Tensor:
        n, d = cov.shape[0], self.cov_channels
        cov = self.row_bn(cov)  # [N, d, d], BN over rows (channel = row index)
        w = self.weight.view(d, 4, d)  # [d (row), 4, d]
        r = torch.einsum("nik,ijk->nij", cov, w).reshape(n, 4 * d) + self.bias  # [N, 4d]
        return self.fc(r)  # [N, C]

    def forward(self, cov: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            dev = autocast_device(cov)
            if dev != "":  # the covariance entries are quadratic in the activations: stay in fp32
                with torch.autocast(device_type=dev, enabled=False):
                    return self._rows(cov.float())
        return self._rows(cov)

    def extra_repr(self) -> str:
        return f"{self.channels}, cov_channels={self.cov_channels}"


@register_block("gsop")
def gsop_block(
    channels: int,
    *,
    cov_channels: int = 128,
    stride: int = 1,
    init: str = "paper",
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """GSoP-Net1 channel attention (Gao et al., CVPR 2019, arXiv 1811.12006).

    ReLU, 1x1 conv ``C -> 128`` (bias) + BN + ReLU, covariance ``[128, 128]``, row-BN, row-wise
    conv (``4 x 128`` per row, bias), 1x1 conv ``512 -> C`` (bias), sigmoid, ``y = x * s`` (no
    activation between the row-wise conv and the expanding conv, as the official ``chan_att``).
    ``641 C + 66,688`` parameters (230,784 at C=256). Covariance in fp32; under autocast the
    transform of the covariance too.

    ``init="paper"``: gate ``sigmoid`` of a random projection (official init), not an identity.
    ``init="identity"``: last FC zeroed and gate ``2 * sigmoid``, exactly ``x``.
    ``zero_init_last`` / ``identity_init``: legacy overrides.
    """
    zero_last, gate = init_flags(
        "gsop", init, paper_zero_last=False, zero_init_last=zero_init_last, identity_init=identity_init
    )
    dd = {"device": device, "dtype": dtype}
    return GlobalContextBlock(
        channels,
        context=GSoPPool(channels, cov_channels, stride=stride, **dd),
        transform=RowConvTransform(channels, cov_channels, zero_init_last=zero_last, **dd),
        fusion=ScaleFusion(identity_init=gate),
        name="gsop",
    )
