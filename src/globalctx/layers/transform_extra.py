"""Extra transform parts for the channel-attention family.

Each maps the pooled context to one value per channel: ``[N, C] -> [N, C]`` (ECA, GCT),
``[N, C, 2] -> [N, C]`` (SRM's style vector) or ``[N, d, d] -> [N, C]`` (GSoP's covariance).

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels, ``d`` covariance width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BatchNorm1dAnyBatch",
    "ChannelConv1d",
    "StyleIntegration",
    "GCTTransform",
    "RowConvTransform",
    "eca_kernel_size",
]


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """ECA-Net's adaptive kernel size ``k = |log2(C) / gamma + beta / gamma|_odd``.

    Written as the official code: ``t = int(abs((log2(C) + beta) / gamma))``, then ``t + 1`` if
    ``t`` is even. ``C = 64, 128, 256, 512, 1024, 2048`` give ``3, 5, 5, 5, 5, 7``. Note that the
    released ECA-Net50 used ``k = [3, 5, 5, 7]`` per stage (not this rule).
    """
    if channels < 1:
        raise ValueError(f"eca: channels must be >= 1, got {channels}")
    if not gamma > 0:
        raise ValueError(f"eca: gamma must be > 0, got {gamma!r}")
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """``BatchNorm1d`` that does not fail on a single sample in train mode.

    With batch size 1 (and no other dims to average over) the batch variance is undefined and
    PyTorch raises "Expected more than 1 value per channel". Here that case normalises with the
    running statistics (as in eval mode) and leaves them un-updated; every other case is plain
    ``BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * (x[0, 0].numel() if x.dim() > 2 else 1) == 1:
            if self.running_mean is None:
                # no running stats to fall back on: centre-only is undefined too, pass affine only
                y = x
                if self.weight is not None:
                    shape = (1, -1) + (1,) * (x.dim() - 2)
                    y = y * self.weight.view(shape) + self.bias.view(shape)
                return y
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ChannelConv1d(nn.Module):
    """ECA's transform: one 1D conv of kernel ``k`` across the channel axis, no bias.

    ``t = conv1d(z)`` with ``z [N, C]`` seen as a 1-channel sequence of length ``C`` and zero
    padding ``(k - 1) // 2``: each channel interacts with its ``k`` neighbours. ``k`` parameters.

    Args:
        channels: ``C`` (only recorded).
        kernel_size: odd ``k``.
        zero_init_last: zero the kernel so ``t = 0`` at init. Default: ``False`` (official:
            PyTorch's default conv init).

    Shape:
        - Input: ``[N, C]``
        - Output: ``[N, C]``
    """

    def __init__(self, channels: int, kernel_size: int, *, zero_init_last: bool = False, device=None, dtype=None):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"eca: kernel_size must be a positive odd integer, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.zero_init_last = zero_init_last
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.zero_init_last:
            nn.init.zeros_(self.conv.weight)
        else:
            self.conv.reset_parameters()

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.conv(t.unsqueeze(1)).squeeze(1)  # [N, 1, C] -> [N, C]

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


class StyleIntegration(nn.Module):
    """SRM's style integration: channel-wise FC (CFC) then BatchNorm (Lee et al., ICCV 2019).

    ``z_c = w_c0 * mu_c + w_c1 * sigma_c``, ``t = BN(z)``. The CFC weight ``[C, 2]`` is
    zero-initialised as the official code; ``4 C`` parameters with the BN affine (1,024 at C=256).
    BatchNorm is :class:`BatchNorm1dAnyBatch`: a batch of one in train mode uses the running
    statistics instead of raising.

    Args:
        channels: ``C``.
        zero_init_last: zero the CFC weight (official). Default: ``True``.

    Shape:
        - Input: ``[N, C, 2]`` (mean, std)
        - Output: ``[N, C]``
    """

    def __init__(self, channels: int, *, zero_init_last: bool = True, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.zero_init_last = zero_init_last
        self.cfc = nn.Parameter(torch.empty(channels, 2, **dd))
        self.bn = BatchNorm1dAnyBatch(channels, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.zero_init_last:
            nn.init.zeros_(self.cfc)
        else:
            nn.init.normal_(self.cfc, std=0.5)
        self.bn.reset_parameters()

    def no_weight_decay(self) -> set[str]:
        """All SRM parameters (official: weight decay 0 for CFC and BN)."""
        return {"cfc", "bn.weight", "bn.bias"}

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = (u * self.cfc).sum(-1)  # [N, C, 2] -> [N, C]
        return self.bn(z)

    def extra_repr(self) -> str:
        return f"{self.channels}"


class GCTTransform(nn.Module):
    """GCT's channel normalisation (Yang et al., CVPR 2020, arXiv 1909.11519).

    ``e = alpha * s``; ``'l2'``: ``t = gamma * e / sqrt(mean_C(e^2) + eps) + beta``;
    ``'l1'``: ``t = gamma * e / (mean_C(|e|) + eps) + beta``. ``alpha = 1``, ``gamma = beta = 0``
    at init, so ``t = 0`` and the ``1 + tanh`` gate is exactly 1. ``3 C`` parameters.

    Args:
        channels: ``C``.
        mode: ``'l2'`` or ``'l1'``. Default: ``'l2'``.
        eps: Default: ``1e-5``.

    Shape:
        - Input: ``[N, C]`` (the norm embedding ``s``)
        - Output: ``[N, C]``
    """

    _MODES = ("l2", "l1")

    def __init__(self, channels: int, *, mode: str = "l2", eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        if mode not in self._MODES:
            raise ValueError(f"gct: mode must be one of {self._MODES}, got {mode!r}")
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.mode = mode
        self.eps = eps
        self.alpha = nn.Parameter(torch.empty(channels, **dd))
        self.gamma = nn.Parameter(torch.empty(channels, **dd))
        self.beta = nn.Parameter(torch.empty(channels, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.alpha)
        nn.init.zeros_(self.gamma)
        nn.init.zeros_(self.beta)

    def no_weight_decay(self) -> set[str]:
        """``beta`` (the paper's setting: no weight decay on beta)."""
        return {"beta"}

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        e = s * self.alpha  # [N, C]
        if self.mode == "l2":
            norm = self.gamma / (e.pow(2).mean(dim=1, keepdim=True) + self.eps).sqrt()
        else:
            norm = self.gamma / (e.abs().mean(dim=1, keepdim=True) + self.eps)
        return e * norm + self.beta

    def extra_repr(self) -> str:
        return f"{self.channels}, mode={self.mode!r}, eps={self.eps:g}"


class RowConvTransform(nn.Module):
    """GSoP-Net1's transform of the covariance (Gao et al., CVPR 2019, arXiv 1811.12006).

    ``BN_rows(S) -> row-wise conv -> ReLU -> FC -> t``: the row-wise conv gives each row ``i`` of
    ``S [d, d]`` its own ``4 x d`` linear map (the official group conv, kernel ``(d, 1)``,
    ``groups = d``, ``4 d`` outputs, with bias); the FC (official 1x1 conv ``4d -> C``, bias) maps
    to the block's channels. ``weight`` keeps the official ``[4 d, d]`` layout (output ``o`` of the
    group conv reads row ``o // 4``).

    Args:
        channels: ``C`` (output).
        cov_channels: ``d``. Default: ``128``.
        zero_init_last: zero the FC weight and bias. Default: ``False`` (official init).

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
        self.zero_init_last = zero_init_last
        self.row_bn = nn.BatchNorm1d(d, **dd)
        self.weight = nn.Parameter(torch.empty(4 * d, d, **dd))
        self.bias = nn.Parameter(torch.empty(4 * d, **dd))
        self.act = nn.ReLU()
        self.fc = nn.Linear(4 * d, channels, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.row_bn.reset_parameters()
        # PyTorch's default for the group conv: fan_in = d
        bound = 1.0 / math.sqrt(self.cov_channels)
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.uniform_(self.bias, -bound, bound)
        if self.zero_init_last:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)
        else:
            self.fc.reset_parameters()

    def forward(self, cov: torch.Tensor) -> torch.Tensor:
        n, d = cov.shape[0], self.cov_channels
        cov = self.row_bn(cov)  # [N, d, d], BN over rows (channel = row index)
        w = self.weight.view(d, 4, d)  # [d (row), 4, d]
        r = torch.einsum("nik,ijk->nij", cov, w).reshape(n, 4 * d) + self.bias  # [N, 4d]
        return self.fc(self.act(r))  # [N, C]

    def extra_repr(self) -> str:
        return f"{self.channels}, cov_channels={self.cov_channels}"
