"""Style-based Recalibration Module (Lee et al., ICCV 2019, arXiv 1903.10829): the ``srm`` preset,
its style pooling (mean and std, ``[N, C, *S] -> [N, C, 2]``) and style integration.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims, ``L = prod(S)``.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..helpers import check_eps
from ..parts.base import GlobalContextBlock, Part, init_flags
from ..parts.fusion import ScaleFusion
from ..registry import register_block

__all__ = ["BatchNorm1dAnyBatch", "StyleIntegration", "StylePool", "srm_block", "style_pool"]


def style_pool(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-channel ``(mean, sqrt(var_unbiased + eps))`` of ``x [N, C, *S]`` as ``[N, C, 2]`` (:class:`StylePool`)."""
    x = x.flatten(2)  # [N, C, L]
    n = x.shape[-1]
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    # corrected two-pass algorithm (Chan, Golub & LeVeque 1983): deviations from a first mean,
    # then the first mean's own rounding error removed; stable for any |mean| / std
    m0 = x.mean(-1, keepdim=True, dtype=acc)  # [N, C, 1]
    d = x - m0  # [N, C, L] in fp32 / fp64
    s1 = d.sum(-1)  # [N, C]
    s2 = torch.linalg.vector_norm(d, 2, dim=-1).square()  # [N, C]
    mean = m0.squeeze(-1) + s1 / n
    var = (s2 - s1 * s1 / n).clamp_min(0.0) / (n - 1 if n > 1 else 1)
    std = (var + eps).sqrt()
    return torch.stack((mean, std), dim=-1).to(x.dtype)  # [N, C, 2]


torch.fx.wrap("style_pool")  # branches on the number of positions: one node under symbolic tracing


class StylePool(Part):
    """SRM's style pooling: per-channel mean and standard deviation (Lee et al., ICCV 2019).

    ``mu = mean(x)``, ``sigma = sqrt(var(x) + eps)`` with torch's unbiased variance and
    ``eps = 1e-5`` (official). With a single position (``L = 1``) the unbiased variance is
    undefined (0/0); the biased one (0) is used instead, so ``sigma = sqrt(eps)`` (no NaN).

    The variance is computed by the corrected two-pass algorithm in fp32 (fp64 for fp64 input):
    deviations ``d = x - m`` from a first mean ``m``, then ``(sum d^2 - (sum d)^2 / L) / (L - 1)``,
    which is accurate whatever ``|mu| / sigma`` (a one-pass ``sum x^2 - L mu^2`` loses every digit
    for a mean 1e6 times the standard deviation).

    Args:
        eps: added to the variance (official: ``sqrt(var + eps)``); must be ``> 0``, or a constant
            input gives a zero standard deviation and NaN gradients. Default: ``1e-5``.

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C, 2]`` (mean, std)
    """

    def __init__(self, *, eps: float = 1e-5):
        super().__init__()
        self.eps = check_eps("srm", eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return style_pool(x, self.eps)  # [N, C, 2]

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"


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


class StyleIntegration(Part):
    """SRM's style integration: channel-wise FC (CFC) then BatchNorm (Lee et al., ICCV 2019).

    ``z_c = w_c0 * mu_c + w_c1 * sigma_c``, ``t = BN(z)``. The CFC weight ``[C, 2]`` is
    zero-initialised as the official code; ``4 C`` parameters with the BN affine (1,024 at C=256).
    BatchNorm is :class:`BatchNorm1dAnyBatch`: a batch of one in train mode uses the running
    statistics instead of raising.

    Args:
        channels: ``C``.
        zero_init_last: zero the CFC weight (official; stored as ``zero_last``). Default: ``True``.

    Shape:
        - Input: ``[N, C, 2]`` (mean, std)
        - Output: ``[N, C]``
    """

    def __init__(self, channels: int, *, zero_init_last: bool = True, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.zero_last = zero_init_last
        self.cfc = nn.Parameter(torch.empty(channels, 2, **dd))
        self.bn = BatchNorm1dAnyBatch(channels, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.zero_last:
            nn.init.zeros_(self.cfc)
        else:
            nn.init.normal_(self.cfc, std=0.5)
        self.bn.reset_parameters()

    def zero_init_last(self) -> None:
        """Zero the CFC weight when built with ``zero_init_last=True``."""
        if self.zero_last:
            nn.init.zeros_(self.cfc)

    def no_weight_decay(self) -> set[str]:
        """All SRM parameters (official: weight decay 0 for CFC and BN)."""
        return {"cfc", "bn.weight", "bn.bias"}

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        z = (u * self.cfc).sum(-1)  # [N, C, 2] -> [N, C]
        return self.bn(z)

    def extra_repr(self) -> str:
        return f"{self.channels}"


@register_block("srm")
def srm_block(
    channels: int,
    *,
    eps: float = 1e-5,
    init: str = "paper",
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """Style-based Recalibration Module (Lee et al., ICCV 2019, arXiv 1903.10829).

    ``y = x * sigmoid(BN(w_0 mu + w_1 sigma))`` with per-channel mean ``mu`` and
    ``sigma = sqrt(var_unbiased + 1e-5)``; the channel-wise FC ``w [C, 2]`` is zero-initialised
    (official). ``4 C`` parameters (1,024 at C=256); all of them are listed by
    ``no_weight_decay()`` (official: weight decay 0).

    ``init="paper"``: ``z = 0``, BN gives 0, gate ``sigmoid(0) = 0.5``: the official block halves
    its input. ``init="identity"``: gate ``2 sigmoid``, exactly ``x``. ``zero_init_last`` /
    ``identity_init``: legacy overrides.
    Edge cases: batch size 1 in train mode normalises with the BN running statistics (no error,
    statistics not updated); a 1-position input uses ``sigma = sqrt(eps)`` (no NaN); ``eps <= 0``
    raises ``ValueError``.
    """
    zero_last, gate = init_flags(
        "srm", init, paper_zero_last=True, zero_init_last=zero_init_last, identity_init=identity_init
    )
    return GlobalContextBlock(
        channels,
        context=StylePool(eps=eps),
        transform=StyleIntegration(channels, zero_init_last=zero_last, device=device, dtype=dtype),
        fusion=ScaleFusion(identity_init=gate),
        name="srm",
    )
