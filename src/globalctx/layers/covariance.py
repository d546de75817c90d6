"""Second-order context parts: covariance pooling and its matrix square root (GSoP, SoCA).

Shape legend: ``N`` batch, ``C`` channels, ``d`` reduced channels, ``*S`` 1..3 spatial dims,
``L = prod(S)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["covariance_pool", "newton_schulz_sqrt", "CovSqrtPool", "GSoPPool", "center_crop"]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def covariance_pool(x: torch.Tensor) -> torch.Tensor:
    """Biased covariance over positions, ``S = (1/L) X_c X_c^T`` with ``X_c`` centred per channel.

    Equal to MPNCOV's ``CovpoolLayer`` (``X I_hat X^T``, ``I_hat = (I - 11^T / L) / L``), computed
    as one centring pass and one batched GEMM, in fp32 (fp64 for fp64 input) and with autocast off,
    whatever the input dtype.

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C, C]`` (fp32, or fp64 for fp64 input)
    """
    dt = _compute_dtype(x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.flatten(2).to(dt)  # [N, C, L]
        xc = x - x.mean(-1, keepdim=True)
        return torch.bmm(xc, xc.transpose(1, 2)) / x.shape[-1]  # [N, C, L] @ [N, L, C] -> [N, C, C]


def newton_schulz_sqrt(a: torch.Tensor, iterations: int = 5, eps: float = 1e-12) -> torch.Tensor:
    """Matrix square root of SPD ``a [N, C, C]`` by coupled Newton-Schulz iterations (MPNCOV).

    Pre-normalise by the trace, ``A = a / tr(a)``; ``Y_0 = A``, ``Z_0 = I``;
    ``T_k = (3 I - Z_k Y_k) / 2``, ``Y_{k+1} = Y_k T_k``, ``Z_{k+1} = T_k Z_k``; the last step only
    updates ``Y``; post-compensate ``sqrt(a) ~ Y sqrt(tr(a))``. ``iterations`` counts all steps
    (the official ``SqrtmLayer(x, iterN)``, 5 in SoCA, 3 in GSoP-Net2/iSQRT-COV).

    Always runs in fp32 (fp64 for fp64 input) with autocast disabled: under fp16/bf16 autocast
    the GEMMs would otherwise drop to half precision and the iteration loses its accuracy. The
    trace is clamped at ``eps`` so an all-constant input gives 0, not NaN.

    Shape:
        - Input: ``[N, C, C]``
        - Output: ``[N, C, C]`` (fp32, or fp64)
    """
    if iterations < 1:
        raise ValueError(f"newton_schulz_sqrt: iterations must be >= 1, got {iterations}")
    dt = _compute_dtype(a)
    with torch.autocast(device_type=a.device.type, enabled=False):
        a = a.to(dt)
        c = a.shape[-1]
        eye3 = 3.0 * torch.eye(c, dtype=dt, device=a.device)  # [C, C]
        tr = torch.diagonal(a, dim1=-2, dim2=-1).sum(-1).clamp_min(eps).view(-1, 1, 1)  # [N, 1, 1]
        y = a / tr
        if iterations == 1:
            # one step from Y_0 = A, Z_0 = I: Y_1 = A (3I - A) / 2
            y = 0.5 * torch.matmul(y, eye3 - y)
        else:
            zy = 0.5 * (eye3 - y)
            y = torch.matmul(y, zy)
            z = zy
            for _ in range(iterations - 2):
                zy = 0.5 * (eye3 - torch.matmul(z, y))
                y, z = torch.matmul(y, zy), torch.matmul(zy, z)
            y = 0.5 * torch.matmul(y, eye3 - torch.matmul(z, y))
        return y * tr.sqrt()


def center_crop(x: torch.Tensor, max_size: int | None) -> torch.Tensor:
    """Centre-crop every spatial dim longer than ``max_size`` to ``max_size`` (SoCA's rule).

    The official SAN code crops ``H`` and ``W`` above 1000 to ``[(s - 1000) // 2, +1000)``; here
    the same rule applies to each of the 1..3 spatial dims. ``None`` disables the crop.
    """
    if max_size is None:
        return x
    idx = [slice(None), slice(None)]
    for s in x.shape[2:]:
        start = (s - max_size) // 2 if s > max_size else 0
        idx.append(slice(start, start + min(s, max_size)))
    return x[tuple(idx)]


class CovSqrtPool(nn.Module):
    """SoCA's context: covariance pooling, Newton-Schulz square root, then a per-channel mean.

    ``z_c = (1/C) sum_i sqrt(Sigma)_{i c}`` with ``Sigma = covariance_pool(crop(x))`` (Dai et al.,
    SAN, CVPR 2019). Covariance and square root run in fp32 even under autocast (see
    :func:`newton_schulz_sqrt`); the output is cast back to the input dtype.

    Args:
        iterations: Newton-Schulz steps. Default: ``5`` (official).
        max_size: centre-crop spatial dims longer than this before pooling (official: 1000);
            ``None`` disables. Default: ``1000``.

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C]``
    """

    def __init__(self, channels: int | None = None, *, iterations: int = 5, max_size: int | None = 1000):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"soca: iterations must be >= 1, got {iterations}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"soca: max_size must be >= 1 or None, got {max_size}")
        self.iterations = iterations
        self.max_size = max_size

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cov = covariance_pool(center_crop(x, self.max_size))  # [N, C, C]
        root = newton_schulz_sqrt(cov, self.iterations)  # [N, C, C]
        return root.mean(1).to(x.dtype)  # [N, C]

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}, max_size={self.max_size}"


class GSoPPool(nn.Module):
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
        - Output: ``[N, d, d]`` (computed in fp32 / fp64, returned in the dtype of the BN output)
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
            x = x[(slice(None), slice(None)) + (slice(None, None, self.stride),) * (x.dim() - 2)]
        x = torch.relu(x).flatten(2)  # [N, C, L]
        w = self.reduce.weight.expand(x.shape[0], -1, -1)  # [N, d, C] (stride-0 batch, no copy)
        r = torch.baddbmm(self.reduce.bias.view(1, -1, 1), w, x)  # [N, d, C] @ [N, C, L] -> [N, d, L]
        r = self.act(self.bn(r))  # [N, d, L]
        return covariance_pool(r).to(r.dtype)  # [N, d, d]

    def extra_repr(self) -> str:
        return f"{self.channels}, cov_channels={self.cov_channels}, stride={self.stride}"
