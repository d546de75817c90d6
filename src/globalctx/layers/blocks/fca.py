"""FcaNet multi-spectral channel attention (Qin et al., ICCV 2021, arXiv 2012.11879): the ``fca``
preset and its 2D-DCT pooling (:class:`DCTPool`, ``[N, C, H, W] -> [N, C]``).

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels, ``L = H W``, ``F`` number of
DCT frequencies, ``G = C / F`` channels per frequency.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.fx

from ..parts.base import GlobalContextBlock, Part
from ..registry import register_block
from .se import squeeze_excitation

__all__ = [
    "DCTPool",
    "adaptive_pool_matrix",
    "dct_filters_for",
    "dct_pool",
    "fca_block",
    "fca_frequencies",
    "pool_matrix_cached",
]

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
def pool_matrix_cached(in_size: int, out_size: int) -> torch.Tensor:
    """:func:`adaptive_pool_matrix`, cached per ``(in_size, out_size)`` (do not modify the result)."""
    return adaptive_pool_matrix(in_size, out_size)


def dct_filters_for(filters: torch.Tensor, dct_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """The ``[F, H, W]`` filters for input size ``(H, W)`` from ``filters [F, dh, dw]`` on the
    ``dct_size`` grid: ``P_h^T B P_w`` (see :class:`DCTPool`'s size rule)."""
    h, w = size
    if (h, w) == dct_size:
        return filters
    dh, dw = dct_size
    ph = pool_matrix_cached(h, dh).to(filters)  # [dh, H]
    pw = pool_matrix_cached(w, dw).to(filters)  # [dw, W]
    return ph.t() @ filters @ pw  # [H, dh] @ [F, dh, dw] @ [dw, W] -> [F, H, W]


@torch.jit.script_if_tracing
def check_filter_size(x: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    """``filt``; raises when ``x [N, C, H, W]`` is not the size ``filt [F, H, W]`` was made for.

    Eager code makes the filters for each input size, so this never fires there. Under
    ``torch.jit.trace`` the filters become constants of the trace's size: the check is compiled
    into the traced graph, and a traced module called at another size says so instead of failing
    in a reshape."""
    if x.shape[-2] != filt.shape[-2] or x.shape[-1] != filt.shape[-1]:
        raise ValueError(
            "fca: this module was traced at input size "
            + str(filt.shape[-2]) + "x" + str(filt.shape[-1]) + " and got " + str(x.shape[-2]) + "x" + str(x.shape[-1])
            + "; a traced FcaNet block takes only its traced size (trace it again, or use torch.export / eager)"
        )  # fmt: skip
    return filt


def dct_pool(x: torch.Tensor, filters: torch.Tensor, dct_size: tuple[int, int]) -> torch.Tensor:
    """Multi-spectral DCT pooling ``[N, C, H, W] -> [N, C]`` with ``filters [F, dh, dw]`` (:class:`DCTPool`)."""
    if x.dim() != 4:
        raise ValueError(
            f"fca: DCT pooling needs a 2D input [N, C, H, W] (the frequency tables are 2D), got shape {list(x.shape)}"
        )
    n, c, h, w = x.shape
    f = filters.shape[0]
    filt = dct_filters_for(filters, dct_size, (h, w)).to(x.dtype)  # [F, H, W]
    filt = check_filter_size(x, filt)  # a module traced at one size refuses another, naming both
    filt = filt.reshape(1, f, 1, h * w)  # [1, F, 1, L]
    xg = x.reshape(n, f, c // f, h * w)  # [N, F, G, L]
    # multiply-and-sum streams x once; a batched GEMV with G-row matrices runs ~2x slower on CPU
    return (xg * filt).sum(-1).reshape(n, c)  # [N, F, G] -> [N, C]


torch.fx.wrap("dct_pool")  # reads the input size: one node under symbolic tracing


class DCTPool(Part):
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

    def filters_for(self, size: tuple[int, int]) -> torch.Tensor:
        """The ``[F, H, W]`` filters applied to an input of spatial size ``(H, W)`` (see size rule)."""
        return dct_filters_for(self.filters, self.dct_size, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dct_pool(x, self.filters, self.dct_size)  # [N, C]

    def extra_repr(self) -> str:
        return f"{self.channels}, freq_sel={self.freq_sel!r}, dct_size={self.dct_size}"


@register_block("fca")
def fca_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    freq_sel: str = "top16",
    dct_size: int | tuple[int, int] = 7,
    init: str = "paper",
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """FcaNet multi-spectral channel attention (Qin et al., ICCV 2021, arXiv 2012.11879).

    ``y = x * sigmoid(W_2 ReLU(W_1 DCT(x)))``: :class:`DCTPool` (channels split into equal groups,
    one 2D-DCT frequency each, official frequency tables) and an SE bottleneck without biases
    (8,192 parameters at C=256, r16; the DCT filters are buffers). 2D inputs only. Any input size:
    see ``DCTPool``'s size rule (official result, computed without ``adaptive_avg_pool2d``).

    ``init="paper"``: gate about 0.5 (official init). ``init="identity"``: ``W_2`` zeroed and gate
    ``2 * sigmoid``, exactly ``x``. ``zero_init_last`` / ``identity_init``: legacy overrides.
    """
    return squeeze_excitation(
        "fca",
        channels,
        context=DCTPool(channels, freq_sel=freq_sel, dct_size=dct_size, device=device, dtype=dtype),
        rd_ratio=rd_ratio,
        rd_channels=rd_channels,
        rd_divisor=rd_divisor,
        bias=False,
        init=init,
        zero_init_last=zero_init_last,
        identity_init=identity_init,
        device=device,
        dtype=dtype,
    )
