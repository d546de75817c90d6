"""Second-order pooling primitives shared by GSoP and SoCA: covariance pooling and the
Newton-Schulz matrix square root.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims, ``L = prod(S)``.
"""

from __future__ import annotations

import torch

__all__ = ["covariance_pool", "newton_schulz_sqrt"]


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
