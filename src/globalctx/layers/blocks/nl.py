"""Non-local block (Wang et al., CVPR 2018, arXiv 1711.07971), one module for 1D, 2D and 3D maps.

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` inner width (``d``), ``*S`` 1..3 spatial dims,
``L = prod(S)``, ``*S_k`` / ``L_k`` the key positions (``S`` or ``S`` after sub-sampling),
``Q`` selected query positions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import nl_attention as attn
from ..helpers import check_input, rd_width, zero_layer
from ..nl_attention import positions, subsample_pool
from ..parts.base import check_init
from ..registry import register_block

__all__ = ["NonLocal", "subsample_pool", "nl_block", "PAIRWISE"]

PAIRWISE = ("gaussian", "embedded_gaussian", "dot_product", "concatenation")
SUBSAMPLE_ORDERS = ("pool_first", "embed_first")
_FORM = {
    "gaussian": "softmax",
    "embedded_gaussian": "softmax",
    "dot_product": "dot_product",
    "concatenation": "concatenation",
}


class NonLocal(nn.Module):
    """Non-local block ``z = BN(W_z y) + x``, ``y_i = 1/C(x) sum_j f(x_i, x_j) g(x_j)`` (Wang et al. 2018).

    `Paper <https://arxiv.org/abs/1711.07971>`_. The four pairwise functions:

    - ``'gaussian'``: ``softmax_j(x_i^T x_j)`` (no embeddings; keys are ``x`` itself),
    - ``'embedded_gaussian'``: ``softmax_j(theta_i^T phi_j / sqrt(C_r))`` (the scale as in the
      official code and mmcv, ``use_scale=True``; it divides by ``sqrt(C_r)``),
    - ``'dot_product'``: ``theta_i^T phi_j / L_k``,
    - ``'concatenation'``: ``ReLU(w^T [theta_i, phi_j]) / L_k``.

    ``theta``, ``phi``, ``g`` are 1x1 embeddings ``C -> C_r`` (stored as ``nn.Linear``), ``W_z``
    (``out``) maps ``C_r -> C`` and is followed by BatchNorm whose gamma (and beta) start at zero,
    so the block is an exact identity at insertion (with ``norm=False``, ``W_z`` weight and bias
    start at zero instead). The other layers use the official init: normal, std 0.01, zero bias;
    the concatenation projection uses mmcv's (Kaiming normal, fan-out, ReLU gain).

    No path builds the ``L x L_k`` matrix unless asked to (``backend='reference'``): softmax
    forms go through fused SDPA, the dot product through ``theta (phi^T g) / L_k``,
    concatenation through keys sorted by their projection (exact, O(L log L)), with bounded
    query chunks as the alternative (see :mod:`globalctx.layers.nl_attention`).

    Args:
        channels: ``C``.
        pairwise: one of ``'gaussian'``, ``'embedded_gaussian'``, ``'dot_product'``,
            ``'concatenation'``. Default: ``'embedded_gaussian'``.
        rd_ratio, rd_channels, rd_divisor: inner width ``C_r``. Default: ``C // 2``.
        use_scale: divide logits by ``sqrt(d)`` (``d = C_r``, or ``C`` for ``'gaussian'``). Only
            for the softmax forms. Default: ``None`` = on for ``'embedded_gaussian'``, off for
            ``'gaussian'`` (as mmcv).
        subsample: max-pool keys and values (2 / 2x2 / 1x2x2), ``L_k = L / 4`` in 2D.
            Default: ``False``.
        subsample_order: ``'pool_first'`` pools ``x`` before ``phi`` and ``g`` (the official
            Caffe2 NL and DNL code; 4x fewer projection FLOPs in 2D) or ``'embed_first'`` pools
            their outputs (the paper's figure and mmcv). Default: ``'pool_first'``.
        norm: BatchNorm after ``W_z``. Default: ``True``.
        bias: bias in ``theta``, ``phi``, ``g``. Default: ``True``.
        out_bias: bias in ``W_z`` (mmcv drops it when a norm follows). Default: ``True``.
        zero_init_last: zero BN gamma/beta (or ``W_z`` when ``norm=False``); stored as
            ``zero_last``, re-applied by :meth:`zero_init_last`. Default: ``True``.
        embed_gain: ``None`` keeps the official init of ``theta`` and ``phi`` (normal, std 0.01);
            a number ``G`` draws their weights from a normal with std ``G / sqrt(C)`` (``G = 1``:
            LeCun normal, logits of order one at init) so the attention maps are not flat from
            the start. Not part of the paper. Default: ``None``.
        backend: ``'auto'``, ``'sdpa'``, ``'linear'``, ``'chunked'`` or ``'reference'``.
            Default: ``'auto'``.
        chunk_size: query rows per chunk for ``'chunked'`` (``None``: 16 MiB blocks).
        device, dtype: factory kwargs.

    Shape:
        - Input: ``[N, C, *S]`` with 1, 2 or 3 spatial dims
        - Output: same as input

    Parameters (embedded Gaussian, ``C_r = C/2``, biases, BN): 132,224 / 526,592 / 2,101,760
    for C = 256 / 512 / 1024.

    Example::

        >>> nl = NonLocal(64, pairwise="dot_product", subsample=True)
        >>> nl(torch.randn(2, 64, 16, 16)).shape
        torch.Size([2, 64, 16, 16])
    """

    def __init__(
        self,
        channels: int,
        *,
        pairwise: str = "embedded_gaussian",
        rd_ratio: float = 0.5,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        use_scale: bool | None = None,
        subsample: bool = False,
        subsample_order: str = "pool_first",
        norm: bool = True,
        bias: bool = True,
        out_bias: bool = True,
        zero_init_last: bool = True,
        embed_gain: float | None = None,
        backend: str = "auto",
        chunk_size: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if pairwise not in PAIRWISE:
            raise ValueError(f"nl: pairwise must be one of {PAIRWISE}, got {pairwise!r}")
        if subsample_order not in SUBSAMPLE_ORDERS:
            raise ValueError(f"nl: subsample_order must be one of {SUBSAMPLE_ORDERS}, got {subsample_order!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"nl: chunk_size must be >= 1 or None, got {chunk_size!r}")
        form = _FORM[pairwise]
        if use_scale is None:
            use_scale = pairwise == "embedded_gaussian"
        if use_scale and form != "softmax":
            raise ValueError(f"nl: use_scale applies to the softmax forms only, not pairwise={pairwise!r}")
        self.backend = attn.resolve_backend(form, backend)  # validates backend for this form
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.pairwise = pairwise
        self.form = form
        self.rd_channels = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="nl")
        self.use_scale = bool(use_scale)
        self.subsample = subsample
        self.subsample_order = subsample_order
        self.zero_last = zero_init_last
        if embed_gain is not None and not embed_gain > 0:
            raise ValueError(f"nl: embed_gain must be a positive number or None, got {embed_gain!r}")
        self.embed_gain = embed_gain
        self.chunk_size = chunk_size
        cr = self.rd_channels
        if pairwise == "gaussian":
            self.theta = self.phi = None
        else:
            self.theta = nn.Linear(channels, cr, bias=bias, **dd)
            self.phi = nn.Linear(channels, cr, bias=bias, **dd)
        self.g = nn.Linear(channels, cr, bias=bias, **dd)
        self.concat_project = nn.Linear(2 * cr, 1, bias=False, **dd) if pairwise == "concatenation" else None
        self.out = nn.Linear(cr, channels, bias=out_bias, **dd)
        self.norm = nn.BatchNorm1d(channels, **dd) if norm else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init (normal std 0.01, zero bias); zero BN gamma/beta or ``W_z`` when ``zero_init_last``."""
        attn.init_embeddings(self.theta, self.phi, self.g, self.out)
        if self.concat_project is not None:
            nn.init.kaiming_normal_(self.concat_project.weight, mode="fan_out", nonlinearity="relu")
        if self.embed_gain is not None:  # optional, non-official: non-flat attention at init
            for m in (self.theta, self.phi):
                if m is not None:
                    nn.init.normal_(m.weight, std=self.embed_gain / math.sqrt(m.in_features))
        if self.norm is not None:
            self.norm.reset_parameters()
        self.zero_init_last()

    def zero_init_last(self) -> None:
        """Zero BN gamma/beta (or ``W_z``) when built with ``zero_init_last=True``."""
        if self.zero_last:
            zero_layer(self.norm if self.norm is not None else self.out)

    # -- embeddings -------------------------------------------------------------------------

    @property
    def scale(self) -> float:
        """Logit scale of the softmax forms: ``1/sqrt(d)`` with ``use_scale``, else 1."""
        d = self.channels if self.pairwise == "gaussian" else self.rd_channels
        return 1.0 / math.sqrt(d) if self.use_scale else 1.0

    def _keys_input(self, x: torch.Tensor) -> torch.Tensor:
        return subsample_pool(x) if self.subsample and self.subsample_order == "pool_first" else x

    def _embed_kv(self, layer: nn.Linear, x: torch.Tensor, xk: torch.Tensor) -> torch.Tensor:
        """Key/value embedding ``[N, L_k, C_r]``, pooled before or after the projection."""
        if self.subsample and self.subsample_order == "embed_first":
            e = torch.matmul(layer.weight, x.flatten(2))  # [C_r, C] @ [N, C, L] -> [N, C_r, L]
            if layer.bias is not None:
                e = e + layer.bias.unsqueeze(-1)
            e = subsample_pool(e.view(e.shape[:2] + x.shape[2:]))  # [N, C_r, *S_k]
            return positions(e)  # [N, L_k, C_r]
        return F.linear(positions(xk), layer.weight, layer.bias)  # [N, L_k, C_r]

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys, values: ``[N, L, d]``, ``[N, L_k, d]``, ``[N, L_k, C_r]``.

        For ``'concatenation'`` the queries and keys are the projected scalars ``a [N, L]`` and
        ``b [N, L_k]`` of ``w^T [theta_i, phi_j] = a_i + b_j``.
        """
        xk = self._keys_input(x)
        v = self._embed_kv(self.g, x, xk) if self.subsample or self.pairwise == "gaussian" else None  # [N, L_k, C_r]
        if self.pairwise == "gaussian":
            q = positions(x).contiguous()  # [N, L, C], last-dim stride 1 for SDPA
            k = positions(subsample_pool(x)).contiguous() if self.subsample else q  # [N, L_k, C]
            return q, k, v
        if self.subsample:
            q = F.linear(positions(x), self.theta.weight, self.theta.bias)  # [N, L, C_r]
            k = self._embed_kv(self.phi, x, xk)  # [N, L_k, C_r]
        else:  # one GEMM for theta, phi, g; the slices keep last-dim stride 1 (what SDPA needs)
            w = torch.cat([self.theta.weight, self.phi.weight, self.g.weight])  # [3 C_r, C]
            b = None if self.g.bias is None else torch.cat([self.theta.bias, self.phi.bias, self.g.bias])
            q, k, v = F.linear(positions(x), w, b).split(self.rd_channels, dim=-1)  # [N, L, C_r] each
        if self.pairwise == "concatenation":
            w_theta, w_phi = self.concat_project.weight.split(self.rd_channels, dim=1)  # [1, C_r] each
            # the logits a_i + b_j in fp32 under fp16/bf16: w^T theta can pass fp16's range
            with torch.autocast(device_type=q.device.type, enabled=False):
                a = F.linear(attn.fp32(q), attn.fp32(w_theta)).squeeze(-1)  # [N, L]
                b = F.linear(attn.fp32(k), attn.fp32(w_phi)).squeeze(-1)  # [N, L_k]
            return a, b, v
        return q, k, v

    # -- public API -------------------------------------------------------------------------

    def key_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """Spatial shape ``S_k`` of the key positions for input ``x [N, C, *S]``."""
        return attn.key_shape(tuple(x.shape[2:]), self.subsample)

    def attention_rows(self, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Pairwise weights of the query positions ``queries`` over all key positions.

        Args:
            x: input ``[N, C, *S]``.
            queries: LongTensor ``[Q]`` of flat indices into ``L`` (row-major over ``S``).

        Returns:
            ``[N, Q, L_k]`` in fp32 (reshape the last dim to :meth:`key_shape` for a map). Rows of
            the softmax forms sum to 1; for ``'dot_product'`` and ``'concatenation'`` they are the
            raw ``f(x_i, x_j) / C(x)`` weights with ``C(x) = L_k`` (not normalised to sum 1).
            Only ``Q`` rows are computed; the ``L x L_k`` matrix is never built.
        """
        check_input(x, self.channels, "nl")
        queries = torch.as_tensor(queries, dtype=torch.long, device=x.device).reshape(-1)
        q, k, _ = self._qkv(x)
        if self.form == "softmax":
            return attn.softmax_rows(q[:, queries], k, self.scale)
        if self.form == "dot_product":
            return attn.dot_product_rows(q[:, queries], k)
        return attn.concat_rows(q[:, queries], k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "nl")
        # q, k, v are not bound here, so they are freed before the output is allocated (lower peak)
        y = attn.attention(
            self.form, *self._qkv(x), scale=self.scale, backend=self.backend, chunk_size=self.chunk_size
        )  # [N, L, C_r]
        return self._project_out(x, y)

    def _project_out(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x + BN(W_z y + b_z)`` for ``y [N, L, C_r]``.

        Without batch statistics to compute (eval mode or no norm) and outside autocast, BN is
        folded into ``W_z`` and the residual add into the GEMM: one ``baddbmm`` writes the output.
        """
        n, c = x.shape[:2]
        bn = self.norm
        if (
            (bn is None or not (bn.training or bn.running_mean is None))
            and y.dtype == x.dtype
            and not (torch.is_autocast_enabled(y.device.type))
        ):
            w, b = self.out.weight, self.out.bias
            if bn is not None:
                s = (
                    bn.weight * torch.rsqrt(bn.running_var + bn.eps)
                    if bn.affine
                    else torch.rsqrt(bn.running_var + bn.eps)
                )
                shift = -bn.running_mean * s + (bn.bias if bn.affine else 0)
                w, b = w * s.unsqueeze(-1), shift if b is None else b * s + shift
            xf = x.flatten(2)  # [N, C, L], a view of contiguous and channels-last inputs (any N, 0 too)
            if xf.stride(1) == 1 and c > 1:  # channels-last: positions-major GEMM, the output keeps it
                z = torch.baddbmm(xf.transpose(1, 2), y, w.t().expand(n, -1, -1))  # [N, L, C_r] @ [N, C_r, C]
                if b is not None:
                    z.add_(b)
                return z.transpose(1, 2).view(x.shape)  # [N, L, C] -> [N, C, *S], channels-last strides
            z = torch.baddbmm(xf, w.expand(n, -1, -1), y.transpose(1, 2))  # [N, C, L]
            if b is not None:
                z.add_(b.unsqueeze(-1))
            return z.view(x.shape)  # [N, C, *S]
        # W_z in y's dtype: fp32 for the un-normalised forms, whose y may exceed the fp16 range
        with torch.autocast(device_type=y.device.type, enabled=False):
            z = torch.matmul(self.out.weight.to(y.dtype), y.transpose(1, 2))  # [C, C_r] @ [N, C_r, L] -> [N, C, L]
            if self.out.bias is not None:
                z = z + self.out.bias.to(y.dtype).unsqueeze(-1)
        if bn is not None:
            z = bn(z)  # BatchNorm over (N, L): the same statistics as BatchNorm{1,2,3}d on [N, C, *S]
        return x + z.view(x.shape).to(x.dtype)  # [N, C, *S]

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, pairwise={self.pairwise!r}, rd_channels={self.rd_channels}, "
            f"use_scale={self.use_scale}, subsample={self.subsample}, backend={self.backend!r}"
        )


@register_block("nl")
def nl_block(channels: int, *, init: str = "paper", **options) -> NonLocal:
    """Non-local block (Wang et al. 2018); options as :class:`NonLocal` (a misspelled one raises
    ``TypeError``). Default: embedded Gaussian, ``C/2`` inner width, ``1/sqrt(C_r)`` scale,
    BN after ``W_z`` with zero gamma (exact identity at insertion).

    ``init``: ``"paper"`` and ``"identity"`` are the same (the official zero BN gamma); the
    ``NonLocal`` argument ``zero_init_last=False`` gives a random ``W_z`` path instead.

    Example::

        >>> nl = globalctx.create_block("nl", 256, pairwise="dot_product", subsample=True)
    """
    if check_init("nl", init):
        options["zero_init_last"] = True
    return NonLocal(channels, **options)
