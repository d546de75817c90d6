"""Bilinear attention with attention-in-attention (Fang et al., ICCV 2019, "Bilinear Attention
Networks for Person Retrieval", https://openaccess.thecvf.com/content_ICCV_2019/html/Fang_Bilinear_Attention_Networks_for_Person_Retrieval_ICCV_2019_paper.html).

Shape legend: ``N`` batch, ``C`` channels, ``m`` reduced channels, ``P = m (m + 1) / 2`` bilinear
features, ``*S`` 1..3 spatial dims, ``L = prod(S)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..helpers import autocast_device, check_input, rd_width, zero_layer
from ..parts.base import check_init
from ..registry import register_block

__all__ = ["BilinearAttention", "BilinearFeatures", "PointwiseConvBNReLU", "ban_block", "utri_pairs"]


def utri_pairs(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs ``(a, b)``, ``a >= b``, in the official order: diagonal offsets 0, -1, ..., -(m-1).

    ``Vec(Utri(v v^T))`` of the reference code is ``torch.cat([diagonal(vv^T, -i) for i])``;
    entry ``j`` of it is ``v[a_j] * v[b_j]``.
    """
    rows, cols = [], []
    for i in range(m):
        rows += list(range(i, m))
        cols += list(range(0, m - i))
    return torch.tensor(rows), torch.tensor(cols)


class PointwiseConvBNReLU(nn.Module):
    """1x1 conv (bias) -> BN -> ReLU on ``[N, C_in, L]`` (the reference code's ``ConvBlock(k=1)``).

    Args:
        zero_init_last: zero the BN affine so the output is exactly 0 (stored as ``zero_last``).
            Default: ``False``.

    Shape:
        - Input: ``[N, C_in, L]``
        - Output: ``[N, C_out, L]``
    """

    def __init__(self, in_channels: int, out_channels: int, *, zero_init_last: bool = False, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.zero_last = zero_init_last
        self.conv = nn.Linear(in_channels, out_channels, **dd)
        self.bn = nn.BatchNorm1d(out_channels, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        self.bn.reset_parameters()
        self.zero_init_last()

    def zero_init_last(self) -> None:
        """Zero the BN affine when built with ``zero_init_last=True``."""
        if self.zero_last:
            zero_layer(self.bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight.expand(x.shape[0], -1, -1)  # [N, C_out, C_in] (stride-0 batch, no copy)
        y = torch.baddbmm(self.conv.bias.view(1, -1, 1), w, x)  # [N, C_out, L], stays contiguous
        return torch.relu(self.bn(y))


class BilinearFeatures(nn.Module):
    """Per-position second-order features ``Vec(Utri(v v^T))`` of ``v [N, m, L]``.

    Shape:
        - Input: ``[N, m, L]``
        - Output: ``[N, P, L]``
    """

    def __init__(self, m: int):
        super().__init__()
        rows, cols = utri_pairs(m)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v[:, self.rows] * v[:, self.cols]  # [N, P, L]

    def pooled(self, v: torch.Tensor) -> torch.Tensor:
        """``GAP`` of the features without building them: ``Utri(v v^T / L)`` from one GEMM, ``[N, P]``."""
        g = torch.bmm(v, v.transpose(1, 2)) / v.shape[-1]  # [N, m, L] @ [N, L, m] -> [N, m, m]
        return g[:, self.rows, self.cols]  # [N, P]


class BilinearAttention(nn.Module):
    """Bilinear attention block with attention-in-attention (AiA).

    ``v = phi(x)`` (1x1 conv ``C -> m`` + BN + ReLU, ``m = C * rd_ratio``, official ``C // 16``);
    ``b = Vec(Utri(v v^T))`` at every position (``P = m(m+1)/2`` features);
    inner attention ``w = omega(GAP(b))`` and outer map ``o = varphi(b)`` (each a 1x1 conv
    ``P -> C`` + BN + ReLU); ``y = x * sigmoid(w * o)``: a per-position, per-channel gate.

    Reference followed: the authors' ``BilinearAttention`` in
    ``PengfeiFANGanu/Attention-in-Attention-Networks`` (``models/bilinear_baseline_AIA.py``), with
    its feature order (diagonal-major lower triangle), layers and "no residual" output. Unlike the
    context -> transform -> fusion blocks its gate varies over positions, so it is its own module;
    its pieces (:class:`PointwiseConvBNReLU`, :class:`BilinearFeatures`) are reusable.
    ``GAP(b)`` is computed as ``Utri(v v^T) / L`` with one GEMM (same value, no extra pass).
    Under autocast everything after ``phi`` (the bilinear products, both maps, the gate) runs in
    fp32: the products are quadratic in the activations and overflow fp16.

    At init the gate is ``sigmoid(>= 0)``, in ``[0.5, 1)``: not an identity.
    ``identity_init=True`` zero-initialises the outer map's BN and uses the gate ``2 sigmoid``, so
    the block is exactly the identity at insertion.

    Args:
        channels: ``C``.
        rd_ratio, rd_channels, rd_divisor: ``m``. Default ratio ``1/16`` (official).
        identity_init: Default: ``False``.

    Shape:
        - Input: ``[N, C, *S]`` (1..3 spatial dims)
        - Output: same

    Example::

        >>> ban = BilinearAttention(256)
        >>> ban(torch.randn(2, 256, 8, 8)).shape
        torch.Size([2, 256, 8, 8])
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        identity_init: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        m = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="ban")
        p = m * (m + 1) // 2
        self.channels = channels
        self.rd_channels = m
        self.identity_init = identity_init
        self.reduce = PointwiseConvBNReLU(channels, m, **dd)
        self.bilinear = BilinearFeatures(m)
        self.inner = PointwiseConvBNReLU(p, channels, **dd)
        self.outer = PointwiseConvBNReLU(p, channels, zero_init_last=identity_init, **dd)

    def reset_parameters(self) -> None:
        for m in (self.reduce, self.inner, self.outer):
            m.reset_parameters()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map ``sigmoid(w * o)`` as ``[N, C, L]`` (fp32 under autocast)."""
        v = self.reduce(x.flatten(2))  # [N, m, L]
        if not torch.jit.is_scripting():
            dev = autocast_device(v)
            if dev != "":
                # products v_a v_b are quadratic in the activations (1e3 -> 1e6, past fp16's
                # range): the bilinear features, both maps and the gate run in fp32
                with torch.autocast(device_type=dev, enabled=False):
                    return self._second_order_gate(v.float())
        return self._second_order_gate(v)

    def _second_order_gate(self, v: torch.Tensor) -> torch.Tensor:
        w = self.inner(self.bilinear.pooled(v).unsqueeze(-1))  # [N, P, 1] -> [N, C, 1]
        o = self.outer(self.bilinear(v))  # [N, P, L] -> [N, C, L]
        g = torch.sigmoid(w * o)
        return 2.0 * g if self.identity_init else g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "ban")
        return x * self.gate(x).reshape(x.shape).to(x.dtype)  # [N, C, L] -> [N, C, *S]

    def extra_repr(self) -> str:
        return f"{self.channels}, rd_channels={self.rd_channels}, identity_init={self.identity_init}"


@register_block("ban")
def ban_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    init: str = "paper",
    identity_init: bool | None = None,
    device=None,
    dtype=None,
) -> BilinearAttention:
    """Bilinear attention with attention-in-attention (Fang et al., ICCV 2019,
    https://openaccess.thecvf.com/content_ICCV_2019/html/Fang_Bilinear_Attention_Networks_for_Person_Retrieval_ICCV_2019_paper.html);
    see :class:`BilinearAttention`.

    ``init="paper"``: gate in ``[0.5, 1)`` per position. ``init="identity"``: the outer map's BN
    zeroed and the gate ``2 sigmoid``, exactly ``x``. ``identity_init``: legacy spelling of
    ``init="identity"`` (``True``) / ``"paper"``.
    """
    identity = check_init("ban", init) if identity_init is None else bool(identity_init)
    return BilinearAttention(
        channels,
        rd_ratio=rd_ratio,
        rd_channels=rd_channels,
        rd_divisor=rd_divisor,
        identity_init=identity,
        device=device,
        dtype=dtype,
    )
