"""Second-order channel attention (Dai et al., SAN, CVPR 2019): the ``soca`` preset and its
covariance square-root context.

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels, ``*S`` 1..3 spatial dims,
``L = prod(S)``.
"""

from __future__ import annotations

import torch
import torch.fx

from ..parts.base import GlobalContextBlock, Part
from ..parts.covariance import covariance_pool, newton_schulz_sqrt
from ..registry import register_block
from .se import squeeze_excitation

__all__ = ["CovSqrtPool", "center_crop", "soca_block"]


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


# shape- and autocast-dependent helpers: one node each under symbolic tracing
torch.fx.wrap("center_crop")
torch.fx.wrap("covariance_pool")
torch.fx.wrap("newton_schulz_sqrt")


class CovSqrtPool(Part):
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

    def __init__(self, *, iterations: int = 5, max_size: int | None = 1000):
        super().__init__()
        if iterations < 1:
            raise ValueError(f"soca: iterations must be >= 1, got {iterations}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"soca: max_size must be >= 1 or None, got {max_size}")
        self.iterations = iterations
        self.max_size = max_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cov = covariance_pool(center_crop(x, self.max_size))  # [N, C, C]
        root = newton_schulz_sqrt(cov, self.iterations)  # [N, C, C]
        return root.mean(1).to(x.dtype)  # [N, C]

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}, max_size={self.max_size}"


@register_block("soca")
def soca_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    iterations: int = 5,
    max_size: int | None = 1000,
    init: str = "paper",
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """Second-order channel attention (Dai et al., SAN, CVPR 2019,
    https://openaccess.thecvf.com/content_CVPR_2019/html/Dai_Second-Order_Attention_Network_for_Single_Image_Super-Resolution_CVPR_2019_paper.html).

    ``z = mean_rows(sqrt(Cov(crop(x))))`` (Newton-Schulz, 5 iterations, fp32 even under autocast),
    ``y = x * sigmoid(W_2 ReLU(W_1 z + b_1) + b_2)``; r = 16 as SAN builds it (580 parameters at
    C=64). ``max_size=1000`` is the official centre crop of long spatial dims; ``None`` disables.

    ``init="paper"``: gate about 0.5 (official init). ``init="identity"``: ``W_2`` zeroed and gate
    ``2 * sigmoid``, exactly ``x``. ``zero_init_last`` / ``identity_init``: legacy overrides.
    """
    return squeeze_excitation(
        "soca",
        channels,
        context=CovSqrtPool(iterations=iterations, max_size=max_size),
        rd_ratio=rd_ratio,
        rd_channels=rd_channels,
        rd_divisor=rd_divisor,
        bias=True,
        init=init,
        zero_init_last=zero_init_last,
        identity_init=identity_init,
        device=device,
        dtype=dtype,
    )
