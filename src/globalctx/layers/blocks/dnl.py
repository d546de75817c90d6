"""Disentangled Non-local block (Yin et al., ECCV 2020, arXiv 2006.06668), 1D/2D/3D in one module.

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` query/key width (``d``), ``C_v`` value width
(``C``, or ``C_r`` with an output projection), ``*S`` 1..3 spatial dims, ``L = prod(S)``,
``L_k`` key positions (``L`` or ``L`` after sub-sampling), ``Q`` selected query positions.

Which official code is followed (the two official repositories disagree):

- Structure, defaults and parameter count follow the detection code (Howal/DNL-Object-Detection,
  ``mmdet/ops/nl_gc_block.py``, config ``mask_rcnn_r50_r4_nlgcb_c4c5``): ``ratio=1/4``, whitening
  ``'channel'`` (subtract the mean over positions from query and key), ``temperature=0.05``
  (logits / sqrt(C_r) / 0.05, a correct ``1/sqrt(d)`` scale), unary term ``softmax_j(W_m x_j)``
  with ``W_m`` the 1x1 ``conv_mask`` (``with_gc=True``), value ``C -> C`` without bias and no
  output conv (``use_out=False``), ``out = x + gamma * pairwise + unary`` with a scalar ``gamma``
  initialised to 0. 1,574,402 parameters at C=1024.
- The segmentation code (yinmh17/DNL-Semantic-Segmentation) adds the ``with_unary`` variant whose
  unary logits are ``mu_q^T k_j`` (no extra weights): ``unary='mean_query'`` here. Its other
  whitening types ``'spatial'`` and ``'ln_nostd'`` are offered as ``whiten='spatial'`` /
  ``'global'``. Its BN whitening types are not.
- Not followed: ``NonLocal2D`` of the detection repo (``mmdet/models/plugins/non_local.py``), which
  carries the ``/= d**-0.5`` scale bug behind ``fixbug=False`` and whitens ``theta`` over
  channels but ``phi`` over positions.
- Deviation for identity at insertion: the official unary term is not gated by ``gamma``, so the
  official block is not an identity at init. With a unary term, ``zero_init_last=True``
  (default) zeroes the last layer of the value path (``out_norm`` gamma, else the output
  projection, else the value projection) so ``z = x`` exactly; without one, ``gamma = 0`` already
  gives the identity and nothing else is zeroed (zeroing both would leave no gradient).
  ``zero_init_last=False`` gives the official init.
- The unary term pools ``x`` first and then applies the value projection,
  ``g(sum_j m_j x_j) = sum_j m_j g(x_j)`` (the weights sum to 1, so a bias passes through):
  the same result as the official ``value @ mask`` for O(L C) instead of O(L C C_v).
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
from ..parts.context import AttnPool
from ..registry import register_block

__all__ = ["DisentangledNonLocal", "dnl_block"]

WHITEN = ("channel", "spatial", "global", None)
UNARY = ("mask", "mean_query", None)


class DisentangledNonLocal(nn.Module):
    """Disentangled Non-local block: whitened pairwise term plus a unary term (Yin et al. 2020).

    `Paper <https://arxiv.org/abs/2006.06668>`_.
    ``z_i = x_i + W_out( gamma * sum_j softmax_j((q_i - mu_q)^T (k_j - mu_k) / (sqrt(C_r) tau)) v_j
    + sum_j softmax_j(W_m x_j) v_j )`` with ``q = theta(x)``, ``k = phi(x)``, ``v = g(x)`` and the
    value shared by both terms (official code). See the module docstring for which official
    implementation each option follows.

    Args:
        channels: ``C``.
        rd_ratio, rd_channels, rd_divisor: query/key width ``C_r``. Default: ``C // 4``.
        temperature: ``tau``. Default: ``0.05``.
        whiten: ``'channel'`` (subtract the per-channel mean over positions, the paper),
            ``'spatial'`` (per-position mean over channels), ``'global'`` (both) or ``None``.
            Default: ``'channel'``.
        pairwise_term: include the pairwise term. Default: ``True``.
        unary: ``'mask'`` (``softmax_j(W_m x_j)``, detection code and paper), ``'mean_query'``
            (``softmax_j(mu_q^T k_j)``, segmentation code; needs ``whiten='channel'``) or ``None``.
            Default: ``'mask'``.
        use_out: value ``C -> C_r`` with bias followed by an output projection ``C_r -> C``
            without bias (segmentation default); otherwise value ``C -> C`` without bias.
            Default: ``False``.
        out_norm: BatchNorm on the block output before the residual. Default: ``False``.
        subsample: max-pool (2 / 2x2 / 1x2x2) ``x`` before keys, values and unary term.
            Default: ``False``.
        zero_init_last: with a unary term, zero the last value-path layer so the block is an
            identity at init (``gamma = 0`` does it alone otherwise).
            Default: ``True``.
        embed_gain: ``None`` keeps the official init of the query/key embeddings ``theta`` and
            ``phi`` (normal, std 0.01); a number ``G`` draws their weights from a normal with std
            ``G / sqrt(C)`` (as :class:`~globalctx.layers.NonLocal`'s option) so the pairwise maps
            are not flat from the start. Not part of the paper. Default: ``None``.
        backend: ``'auto'``, ``'sdpa'``, ``'chunked'``, ``'reference'``. Default: ``'auto'``.
        chunk_size: query rows per chunk for ``'chunked'``.
        device, dtype: factory kwargs.

    Shape:
        - Input: ``[N, C, *S]`` with 1, 2 or 3 spatial dims
        - Output: same as input

    Example::

        >>> dnl = DisentangledNonLocal(64, temperature=0.05)
        >>> dnl(torch.randn(2, 64, 12, 12)).shape
        torch.Size([2, 64, 12, 12])
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 0.25,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        temperature: float = 0.05,
        whiten: str | None = "channel",
        pairwise_term: bool = True,
        unary: str | None = "mask",
        use_out: bool = False,
        out_norm: bool = False,
        subsample: bool = False,
        zero_init_last: bool = True,
        embed_gain: float | None = None,
        backend: str = "auto",
        chunk_size: int | None = None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if whiten not in WHITEN:
            raise ValueError(f"dnl: whiten must be one of {WHITEN}, got {whiten!r}")
        if unary not in UNARY:
            raise ValueError(f"dnl: unary must be one of {UNARY}, got {unary!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"dnl: temperature must be a positive number, got {temperature!r}")
        if not pairwise_term and unary is None:
            raise ValueError("dnl: pairwise_term=False and unary=None leave no term; enable at least one")
        if unary == "mean_query" and whiten != "channel":
            raise ValueError(f"dnl: unary='mean_query' needs whiten='channel', got whiten={whiten!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"dnl: chunk_size must be >= 1 or None, got {chunk_size!r}")
        if embed_gain is not None and not embed_gain > 0:
            raise ValueError(f"dnl: embed_gain must be a positive number or None, got {embed_gain!r}")
        self.embed_gain = embed_gain
        self.backend = attn.resolve_backend("softmax", backend)
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.rd_channels = cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="dnl")
        self.temperature = float(temperature)
        self.whiten = whiten
        self.pairwise_term = pairwise_term
        self.unary_type = unary
        self.subsample = subsample
        self.zero_last = zero_init_last
        self.chunk_size = chunk_size
        need_qk = pairwise_term or unary == "mean_query"
        self.theta = nn.Linear(channels, cr, **dd) if need_qk else None  # conv_query
        self.phi = nn.Linear(channels, cr, **dd) if need_qk else None  # conv_key
        if use_out:
            self.g = nn.Linear(channels, cr, **dd)  # conv_value
            self.out = nn.Linear(cr, channels, bias=False, **dd)  # conv_out
        else:
            self.g = nn.Linear(channels, channels, bias=False, **dd)
            self.out = None
        self.norm = nn.BatchNorm1d(channels, **dd) if out_norm else None  # out_bn
        self.gamma = nn.Parameter(torch.zeros(1, **dd)) if pairwise_term else None
        self.unary = AttnPool(channels, **dd) if unary == "mask" else None  # conv_mask
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init (every 1x1 conv normal std 0.01, zero bias; ``gamma = 0``), ``theta`` /
        ``phi`` re-drawn when ``embed_gain`` is set, then the identity-at-insertion zeroing of
        ``zero_init_last``."""
        mask = None if self.unary is None else self.unary.conv_mask
        attn.init_embeddings(self.theta, self.phi, self.g, self.out, mask)
        if self.embed_gain is not None and self.theta is not None:  # optional, non-official
            for m in (self.theta, self.phi):
                nn.init.normal_(m.weight, std=self.embed_gain / math.sqrt(m.in_features))
        if self.gamma is not None:
            nn.init.zeros_(self.gamma)
        if self.norm is not None:
            self.norm.reset_parameters()
        self.zero_init_last()

    def zero_init_last(self) -> None:
        """With a unary term and ``zero_init_last=True``, zero the last value-path layer."""
        if self.zero_last and self.unary_type is not None:
            # gamma = 0 already silences the pairwise term; only an (ungated) unary term needs this
            zero_layer(self.norm if self.norm is not None else (self.out if self.out is not None else self.g))

    @property
    def scale(self) -> float:
        """Pairwise logit scale ``1 / (sqrt(C_r) * temperature)``."""
        return 1.0 / (math.sqrt(self.rd_channels) * self.temperature)

    def _whiten(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Whitened ``t [N, L, C_r]`` and the per-channel mean ``[N, C_r]`` (``'channel'`` only)."""
        if self.whiten == "channel":
            mu = t.mean(1)  # [N, C_r]
            return t - mu.unsqueeze(1), mu
        if self.whiten == "spatial":
            return t - t.mean(2, keepdim=True), None
        if self.whiten == "global":
            return t - t.mean((1, 2), keepdim=True), None
        return t, None

    def _qk(self, x: torch.Tensor, xk: torch.Tensor):
        q, mu_q = self._whiten(F.linear(positions(x), self.theta.weight, self.theta.bias))  # [N, L, C_r]
        k, _ = self._whiten(F.linear(positions(xk), self.phi.weight, self.phi.bias))  # [N, L_k, C_r]
        return q, k, mu_q

    def key_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """Spatial shape ``S_k`` of the key positions for input ``x [N, C, *S]``."""
        return attn.key_shape(tuple(x.shape[2:]), self.subsample)

    def attention_rows(self, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Whitened pairwise weights ``[N, Q, L_k]`` (fp32, rows sum to 1) of the flat query
        positions ``queries [Q]``; the ``L x L_k`` matrix is never built. The block's total
        weight on ``v_j`` is ``gamma * rows + unary_attention(x)``."""
        check_input(x, self.channels, "dnl")
        if self.theta is None:
            raise ValueError("dnl: attention_rows needs the pairwise term (pairwise_term=False here)")
        queries = torch.as_tensor(queries, dtype=torch.long, device=x.device).reshape(-1)
        xk = subsample_pool(x) if self.subsample else x
        q, k, _ = self._qk(x, xk)
        return attn.softmax_rows(q[:, queries], k, self.scale)

    def _unary_weights(self, xk: torch.Tensor, k: torch.Tensor | None, mu_q: torch.Tensor | None) -> torch.Tensor:
        if self.unary_type == "mask":
            return attn.fp32(self.unary.attention(xk))  # [N, L_k]
        with torch.autocast(device_type=k.device.type, enabled=False):
            logits = torch.matmul(attn.fp32(k), attn.fp32(mu_q).unsqueeze(-1)).squeeze(-1)  # [N, L_k]
            return logits.softmax(-1)

    def unary_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The unary (query-independent) weights ``[N, L_k]`` (fp32, or fp64 for fp64 input; sum to 1)."""
        check_input(x, self.channels, "dnl")
        if self.unary_type is None:
            raise ValueError("dnl: unary_attention needs a unary term (unary=None here)")
        xk = subsample_pool(x) if self.subsample else x
        k = mu_q = None
        if self.unary_type == "mean_query":
            _, k, mu_q = self._qk(x, xk)
        return self._unary_weights(xk, k, mu_q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "dnl")
        xk = subsample_pool(x) if self.subsample else x
        xk_pos = positions(xk)  # [N, L_k, C]
        out = None
        k = mu_q = None
        if self.theta is not None:
            q, k, mu_q = self._qk(x, xk)
        if self.pairwise_term:
            v = F.linear(xk_pos, self.g.weight, self.g.bias)  # [N, L_k, C_v]
            y = attn.softmax_attention(q, k, v, scale=self.scale, backend=self.backend, chunk_size=self.chunk_size)
            out = self.gamma.to(y.dtype) * y  # [N, L, C_v]
        if self.unary_type is not None:
            w = self._unary_weights(xk, k, mu_q)  # [N, L_k]
            ctx = torch.bmm(w.unsqueeze(1).to(xk.dtype), xk_pos)  # [N, 1, L_k] @ [N, L_k, C] -> [N, 1, C]
            u = F.linear(ctx, self.g.weight, self.g.bias)  # [N, 1, C_v]
            out = u if out is None else out + u.to(out.dtype)  # [N, L or 1, C_v]
        out = out.transpose(1, 2)  # [N, C_v, L or 1]
        if self.out is not None:
            out = torch.matmul(self.out.weight, out)  # [C, C_r] @ [N, C_r, L] -> [N, C, L]
        if out.shape[-1] == 1:  # unary only: broadcast the context over positions
            out = out.expand(-1, -1, x.shape[2:].numel())  # [N, C, L]
        if self.norm is not None:
            out = self.norm(out)
        return x + out.reshape(x.shape).to(x.dtype)  # [N, C, *S]

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, rd_channels={self.rd_channels}, temperature={self.temperature}, "
            f"whiten={self.whiten!r}, pairwise_term={self.pairwise_term}, unary={self.unary_type!r}"
        )


@register_block("dnl")
def dnl_block(channels: int, *, init: str = "identity", **options) -> DisentangledNonLocal:
    """Disentangled Non-local block (Yin et al. 2020); options as :class:`DisentangledNonLocal`.
    Default: the official detection configuration (``C_r = C/4``, channel whitening,
    ``temperature=0.05``, ``conv_mask`` unary term, value ``C -> C``), identity at insertion.

    ``init``: ``"identity"`` (default, as before: the last value-path layer is zeroed so the
    ungated unary term starts at 0) or ``"paper"`` (the official init, not an identity). The
    default is ``"identity"`` here, unlike the other blocks, because the official DNL is not an
    identity at insertion and the library's default has always been.

    Example::

        >>> dnl = globalctx.create_block("dnl", 512, temperature=0.05)
    """
    options.setdefault("zero_init_last", check_init("dnl", init))
    if init == "identity":
        options["zero_init_last"] = True
    return DisentangledNonLocal(channels, **options)
