"""Extra context-modeling parts for the channel-attention family: ``[N, C, *S] -> [N, C, ...]``.

- :class:`DCTPool` (FcaNet): multi-spectral 2D-DCT pooling, ``[N, C, H, W] -> [N, C]``.
- :class:`StylePool` (SRM): per-channel mean and standard deviation, ``[N, C, *S] -> [N, C, 2]``.
- :class:`NormEmbed` (GCT): per-channel L2 / L1 norm, ``[N, C, *S] -> [N, C]``.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims, ``L = prod(S)``, ``F`` number
of DCT frequencies, ``G = C / F`` channels per frequency.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

__all__ = ["DCTPool", "StylePool", "NormEmbed", "fca_frequencies", "adaptive_pool_matrix"]

# FcaNet's official frequency tables (cfzd/FcaNet model/layer.py, get_freq_indices): indices on a
# 7x7 grid, x = height (u), y = width (v), best first.
_FREQ = {
    "top": (
        [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2, 4, 6, 3, 5, 5, 2, 6, 5, 5, 3, 3, 4, 2, 2, 6, 1],
        [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2, 6, 3, 3, 3, 5, 1, 1, 2, 4, 2, 1, 1, 3, 0, 5, 3],
    ),
    "low": (
        [0, 0, 1, 1, 0, 2, 2, 1, 2, 0, 3, 4, 0, 1, 3, 0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6, 1, 2, 3, 4],
        [0, 1, 0, 1, 2, 0, 1, 2, 2, 3, 0, 0, 4, 3, 1, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3, 2, 1, 0, 6, 5, 4, 3],
    ),
    "bot": (
        [6, 1, 3, 3, 2, 4, 1, 2, 4, 4, 5, 1, 4, 6, 2, 5, 6, 1, 6, 2, 2, 4, 3, 3, 5, 5, 6, 2, 5, 5, 3, 6],
        [6, 4, 4, 6, 6, 3, 1, 4, 4, 5, 6, 5, 2, 2, 5, 1, 4, 3, 5, 0, 3, 1, 1, 2, 4, 2, 1, 1, 5, 3, 3, 3],
    ),
}
_FREQ_COUNTS = (1, 2, 4, 8, 16, 32)


def fca_frequencies(method: str) -> tuple[list[int], list[int]]:
    """The official ``(u_list, v_list)`` for ``method`` in ``{top, low, bot} x {1,2,4,8,16,32}``.

    Raises ``ValueError`` naming the valid methods for anything else.
    """
    valid = [f"{k}{n}" for k in _FREQ for n in _FREQ_COUNTS]
    kind, num = method[:3], method[3:]
    if kind not in _FREQ or not num.isdigit() or int(num) not in _FREQ_COUNTS:
        raise ValueError(f"fca: freq_sel must be one of {valid}, got {method!r}")
    n = int(num)
    return list(_FREQ[kind][0][:n]), list(_FREQ[kind][1][:n])


def _dct_basis(freq: int, size: int) -> torch.Tensor:
    """Orthonormal DCT-II basis vector ``cos(pi f (p + 0.5) / P) / sqrt(P)`` (x sqrt 2 if f != 0)."""
    pos = torch.arange(size, dtype=torch.float64)
    b = torch.cos(math.pi * freq * (pos + 0.5) / size) / math.sqrt(size)
    return b * math.sqrt(2.0) if freq != 0 else b


def adaptive_pool_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """``P [out, in]`` with ``P @ v == adaptive_avg_pool1d(v, out)`` (PyTorch's bin rule).

    Bin ``o`` averages ``[floor(o * in / out), ceil((o + 1) * in / out))``.
    """
    # built from Python numbers so that tracing / ONNX export sees one constant, not index ops
    rows = []
    for o in range(out_size):
        start = (o * in_size) // out_size
        end = -((-(o + 1) * in_size) // out_size)
        rows.append([1.0 / (end - start) if start <= i < end else 0.0 for i in range(in_size)])
    return torch.tensor(rows, dtype=torch.float64)


@functools.lru_cache(maxsize=64)
def _pool_matrix_cached(in_size: int, out_size: int) -> torch.Tensor:
    return adaptive_pool_matrix(in_size, out_size)


class DCTPool(nn.Module):
    """FcaNet's multi-spectral DCT pooling (Qin et al., ICCV 2021, arXiv 2012.11879).

    Channels are split into ``F`` equal groups; group ``i`` is pooled with the 2D-DCT basis
    function of frequency ``(u_i, v_i)``: ``z_c = sum_{h,w} x_{c,h,w} B_{u_i}(h) B_{v_i}(w)``.
    Frequency ``(0, 0)`` is ``sqrt(H W)`` times global average pooling.

    The frequencies are the official tables on a 7x7 grid, scaled by ``dct_size // 7`` (official:
    "(2,2) in 14x14 equals (1,1) in 7x7"). The DCT filters are non-persistent buffers computed from
    the configuration, never parameters.

    **Size rule (any input size).** The filters live on the ``dct_size`` grid. An input of another
    size ``(H, W)`` is treated exactly as the official code does (``adaptive_avg_pool2d`` to
    ``dct_size``, then the DCT), but without a pooling op: pooling then filtering is linear, so it
    equals one weighted sum over the input with the filters mapped back by the transposed pooling
    matrices, ``B' = P_h^T B P_w`` (:func:`adaptive_pool_matrix`). This is deterministic (no
    ``adaptive_avg_pool2d`` backward, FcaNet issue #37), exports to ONNX as a constant per traced
    input size, and needs no stage-specific size table. The default ``dct_size=7`` is the
    maintainers' advice for arbitrary networks; pass 56 / 28 / 14 / 7 for the official ResNet
    stages.

    Only 2D inputs: the frequency tables are 2D (``ValueError`` for 1D / 3D).

    Args:
        channels: ``C``; must be divisible by the number of frequencies.
        freq_sel: ``'top16'`` (official), or ``top/low/bot`` x ``1,2,4,8,16,32``. Default: ``'top16'``.
        dct_size: DCT grid size, int or ``(H, W)``, each ``>= 7``. Default: ``7``.

    Shape:
        - Input: ``[N, C, H, W]`` (any ``H, W``)
        - Output: ``[N, C]``

    Example::

        >>> pool = DCTPool(64, freq_sel="top16", dct_size=14)
        >>> pool(torch.randn(2, 64, 20, 17)).shape
        torch.Size([2, 64])
    """

    def __init__(
        self, channels: int, *, freq_sel: str = "top16", dct_size: int | tuple[int, int] = 7, device=None, dtype=None
    ):
        super().__init__()
        us, vs = fca_frequencies(freq_sel)
        nf = len(us)
        if channels % nf != 0:
            raise ValueError(
                f"fca: channels={channels} must be divisible by the number of frequencies {nf} ({freq_sel!r})"
            )
        dh, dw = (dct_size, dct_size) if isinstance(dct_size, int) else tuple(dct_size)
        if dh < 7 or dw < 7:
            raise ValueError(f"fca: dct_size must be >= 7 (frequencies are defined on a 7x7 grid), got {dct_size!r}")
        self.channels = channels
        self.freq_sel = freq_sel
        self.dct_size = (dh, dw)
        self.num_freq = nf
        us = [u * (dh // 7) for u in us]
        vs = [v * (dw // 7) for v in vs]
        filt = torch.stack([torch.outer(_dct_basis(u, dh), _dct_basis(v, dw)) for u, v in zip(us, vs)])  # [F, H, W]
        self.register_buffer(
            "filters", filt.to(device=device, dtype=dtype or torch.get_default_dtype()), persistent=False
        )
        self._freq = (tuple(us), tuple(vs))

    def reset_parameters(self) -> None:
        pass

    def filters_for(self, size: tuple[int, int]) -> torch.Tensor:
        """The ``[F, H, W]`` filters applied to an input of spatial size ``(H, W)`` (see size rule)."""
        h, w = size
        if (h, w) == self.dct_size:
            return self.filters
        dh, dw = self.dct_size
        ph = _pool_matrix_cached(h, dh).to(self.filters)  # [dh, H]
        pw = _pool_matrix_cached(w, dw).to(self.filters)  # [dw, W]
        return ph.t() @ self.filters @ pw  # [H, dh] @ [F, dh, dw] @ [dw, W] -> [F, H, W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(
                f"fca: DCT pooling needs a 2D input [N, C, H, W] (the frequency tables are 2D), "
                f"got shape {list(x.shape)}"
            )
        n, c, h, w = x.shape
        f = self.num_freq
        filt = self.filters_for((h, w)).to(x.dtype).reshape(1, f, 1, h * w)  # [1, F, 1, L]
        xg = x.reshape(n, f, c // f, h * w)  # [N, F, G, L]
        # multiply-and-sum streams x once; a batched GEMV with G-row matrices runs ~2x slower on CPU
        return (xg * filt).sum(-1).reshape(n, c)  # [N, F, G] -> [N, C]

    def extra_repr(self) -> str:
        return f"{self.channels}, freq_sel={self.freq_sel!r}, dct_size={self.dct_size}"


class StylePool(nn.Module):
    """SRM's style pooling: per-channel mean and standard deviation (Lee et al., ICCV 2019).

    ``mu = mean(x)``, ``sigma = sqrt(var(x) + eps)`` with torch's unbiased variance and
    ``eps = 1e-5`` (official). With a single position (``L = 1``) the unbiased variance is
    undefined (0/0); the biased one (0) is used instead, so ``sigma = sqrt(eps)`` (no NaN).

    The variance is ``(sum x^2 - L mu^2) / (L - 1)`` from two streaming passes accumulated in
    fp32 (fp64 for fp64 input), clamped at 0. Its relative error grows like
    ``2^-24 (mu / sigma)^2``: negligible for normalised features (``|mu| <~ 10 sigma``).

    Args:
        eps: Default: ``1e-5``.

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C, 2]`` (mean, std)
    """

    def __init__(self, channels: int | None = None, *, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)  # [N, C, L]
        n = x.shape[-1]
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        # two streaming reads (sum and sum of squares, accumulated in fp32 / fp64) instead of
        # torch.var_mean, whose Welford kernel is ~6x slower than a sum on CPU
        mean = x.mean(-1, dtype=acc)  # [N, C]
        sq = torch.linalg.vector_norm(x, 2, dim=-1, dtype=acc).square()  # [N, C]
        var = (sq - n * mean.square()).clamp_min(0.0) / (n - 1 if n > 1 else 1)
        std = (var + self.eps).sqrt()
        return torch.stack((mean, std), dim=-1).to(x.dtype)  # [N, C, 2]

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"


class NormEmbed(nn.Module):
    """GCT's global embedding: the per-channel L2 or L1 norm over positions.

    ``'l2'``: ``s_c = sqrt(sum_L x^2 + eps)``; ``'l1'``: ``s_c = sum_L |x|`` (``sum_L x`` with
    ``after_relu=True``, as the official code). Sums, not means, as the official code.

    Args:
        mode: ``'l2'`` or ``'l1'``. Default: ``'l2'``.
        eps: Default: ``1e-5``.
        after_relu: input is known non-negative (skip ``abs`` in L1). Default: ``False``.

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C]``
    """

    _MODES = ("l2", "l1")

    def __init__(self, channels: int | None = None, *, mode: str = "l2", eps: float = 1e-5, after_relu: bool = False):
        super().__init__()
        if mode not in self._MODES:
            raise ValueError(f"gct: mode must be one of {self._MODES}, got {mode!r}")
        self.mode = mode
        self.eps = eps
        self.after_relu = after_relu

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)  # [N, C, L]
        # one streaming pass each (no x^2 or |x| temporary)
        if self.mode == "l2":
            return (torch.linalg.vector_norm(x, 2, dim=-1).square() + self.eps).sqrt()  # [N, C]
        if self.after_relu:
            return x.sum(-1)  # [N, C]
        return torch.linalg.vector_norm(x, 1, dim=-1)  # [N, C]

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, eps={self.eps:g}"
