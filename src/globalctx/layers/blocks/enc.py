"""EncNet's EncModule (Zhang et al., CVPR 2018, arXiv 1803.08904): the ``enc`` preset and the
context encoding in pure PyTorch.

Shape legend: ``N`` batch, ``C`` channels (= the encoding's ``D``), ``K`` codewords,
``*S`` 1..3 spatial dims, ``L = prod(S)``.
"""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import nn

from ..helpers import autocast_device, check_input, wide_dtype
from ..parts.base import GlobalContextBlock, Part, init_flags
from ..parts.fusion import ResidualGateFusion
from ..parts.transform import LinearTransform
from ..registry import register_block

__all__ = ["EncModule", "Encoding", "EncodingPool", "enc_block", "encode"]


def _encode(x: torch.Tensor, codewords: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``e_k = sum_i softmax_k(s_k ||x_i - d_k||^2) (x_i - d_k)`` for ``x [N, D, L]``, all in one dtype."""
    n = x.shape[0]
    x2 = torch.linalg.vector_norm(x, 2, dim=1, keepdim=True).square()  # [N, 1, L]
    xd = torch.bmm(codewords.expand(n, -1, -1), x)  # [N, K, D] @ [N, D, L] -> [N, K, L]
    dist = x2 - 2.0 * xd + (codewords * codewords).sum(-1).view(1, -1, 1)  # [N, K, L]
    a = torch.softmax(dist * scale.view(1, -1, 1), dim=1)  # [N, K, L]
    e = torch.bmm(a, x.transpose(1, 2))  # [N, K, L] @ [N, L, D] -> [N, K, D]
    return e - a.sum(-1).unsqueeze(-1) * codewords  # [N, K, D]


def encode(x: torch.Tensor, codewords: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The residual encoding of ``x [N, D, *S]`` with ``codewords [K, D]`` and smoothing ``scale [K]``.

    Distances, soft assignments and sums run in fp32 for fp16/bf16 and in the input dtype
    otherwise (fp64 stays fp64, as the official layer, which has no cast). Without autocast the
    result has the input dtype; under autocast it stays fp32 (its sums over positions reach
    ``L |x|`` and would overflow fp16).

    Shape:
        - Input: ``[N, D, *S]``, ``[K, D]``, ``[K]``
        - Output: ``[N, K, D]``
    """
    x = x.flatten(2)  # [N, D, L]
    if not torch.jit.is_scripting():
        dev = autocast_device(x)
        if dev != "":
            with torch.autocast(device_type=dev, enabled=False):
                return _encode(x.float(), codewords.float(), scale.float())  # [N, K, D] in fp32
    dt = wide_dtype(x)
    return _encode(x.to(dt), codewords.to(dt), scale.to(dt)).to(x.dtype)  # [N, K, D]


torch.fx.wrap("encode")  # dtype / autocast branches: one node under symbolic tracing


class Encoding(Part):
    """The encoding layer: soft-assignment residual encoding with learned codewords.

    ``a_ik = softmax_k(s_k ||x_i - d_k||^2)``, ``e_k = sum_i a_ik (x_i - d_k)``. As the official
    ``encoding.nn.Encoding`` the smoothing factors are stored with their sign (``s_k`` initialised
    uniform in ``[-1, 0]``, so ``s_k = -beta_k`` of the paper) and codewords uniform in
    ``+-1/sqrt(K D)``. No CUDA extension: distances are ``|x|^2 - 2 x.d + |d|^2`` (one GEMM) and
    the aggregation ``A^T X - (sum_i A) d`` (one more), in fp32 for fp16/bf16 inputs and under
    autocast, in the input dtype otherwise (see :func:`encode`).

    Args:
        channels: ``D``.
        num_codes: ``K``. Default: ``32``.

    Shape:
        - Input: ``[N, D, *S]``
        - Output: ``[N, K, D]``
    """

    def __init__(self, channels: int, num_codes: int = 32, *, device=None, dtype=None):
        super().__init__()
        if num_codes < 1:
            raise ValueError(f"enc: num_codes must be >= 1, got {num_codes}")
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.num_codes = num_codes
        self.codewords = nn.Parameter(torch.empty(num_codes, channels, **dd))
        self.scale = nn.Parameter(torch.empty(num_codes, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = 1.0 / math.sqrt(self.num_codes * self.channels)
        nn.init.uniform_(self.codewords, -std, std)
        nn.init.uniform_(self.scale, -1.0, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channel-major [N, D, L] throughout: every GEMM reads x in place, no transposed copy
        return encode(x, self.codewords, self.scale)  # [N, K, D]

    def extra_repr(self) -> str:
        return f"{self.channels}, num_codes={self.num_codes}"


class EncodingPool(Part):
    """EncModule's context: 1x1 conv (no bias), BN, ReLU, :class:`Encoding`, BN over codes, ReLU,
    mean over codes (official ``EncModule.encoding``).

    The 1x1 conv is a channel GEMM on ``[N, C, L]`` (any 1..3 spatial dims).

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C]``
    """

    def __init__(self, channels: int, num_codes: int = 32, *, device=None, dtype=None):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.proj = nn.Linear(channels, channels, bias=False, **dd)  # official Conv2d(C, C, 1, bias=False)
        self.bn = nn.BatchNorm1d(channels, **dd)
        self.encoding = Encoding(channels, num_codes, **dd)
        self.code_bn = nn.BatchNorm1d(num_codes, **dd)
        self.act = nn.ReLU()

    def reset_parameters(self) -> None:
        for m in (self.proj, self.bn, self.encoding, self.code_bn):
            m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)  # [N, C, L]
        x = torch.bmm(self.proj.weight.expand(x.shape[0], -1, -1), x)  # [N, C, C] @ [N, C, L] -> [N, C, L]
        x = self.act(self.bn(x))
        e = self.act(self.code_bn(self.encoding(x)))  # [N, K, C]
        return e.mean(1)  # [N, C]


class EncModule(GlobalContextBlock):
    """EncNet's EncModule as a framework block, with the optional SE-loss head.

    ``e = EncodingPool(x)``, ``gamma = sigmoid(W e + b)``, ``y = ReLU(x + x * gamma)``; the SE-loss
    head is ``Linear(C, num_classes)`` on ``e`` (class-presence logits for a BCE loss).
    ``forward(x)`` returns ``y`` only (so the block plugs in anywhere); :meth:`forward_se` returns
    ``(y, se_logits)`` from one pass. 572,571 parameters for ``C=512, K=32, 59`` classes.

    Args:
        channels: ``C``.
        context, transform, fusion: the parts (see :func:`enc_block`).
        num_classes: SE-loss classes; ``None`` for no head. Default: ``None``.

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C, *S]``; ``forward_se`` also ``[N, num_classes]``
    """

    def __init__(
        self,
        channels: int,
        *,
        context,
        transform,
        fusion,
        num_classes: int | None = None,
        name: str = "enc",
        device=None,
        dtype=None,
    ):
        super().__init__(channels, context=context, transform=transform, fusion=fusion, name=name)
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"enc: num_classes must be >= 1 or None, got {num_classes}")
        self.se_head = nn.Linear(channels, num_classes, device=device, dtype=dtype) if num_classes else None

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.se_head is not None:
            self.se_head.reset_parameters()

    def _transform(self, e: torch.Tensor) -> torch.Tensor:
        """``transform(e)``; under autocast in fp32 (``e`` sums codeword residuals over positions)."""
        if not torch.jit.is_scripting():
            dev = autocast_device(e)
            if dev != "":
                with torch.autocast(device_type=dev, enabled=False):
                    return self.transform(e.float())
        return self.transform(e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, self.name)
        return self.fusion(x, self._transform(self.context(x)))

    def forward_se(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, se_logits)``; raises ``ValueError`` when built without ``num_classes``."""
        if self.se_head is None:
            raise ValueError("enc: forward_se needs a SE-loss head; build with num_classes=<int>")
        check_input(x, self.channels, self.name)
        e = self.context(x)  # [N, C]
        return self.fusion(x, self._transform(e)), self.se_head(e)


@register_block("enc")
def enc_block(
    channels: int,
    *,
    num_codes: int = 32,
    num_classes: int | None = None,
    init: str = "paper",
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
    final_relu: bool | None = None,
    device=None,
    dtype=None,
) -> EncModule:
    """EncNet's EncModule (Zhang et al., CVPR 2018, arXiv 1803.08904).

    ``e = mean_K ReLU(BN(Encoding(ReLU(BN(W x)))))``, ``gamma = sigmoid(W_fc e + b)``,
    ``y = ReLU(x + x * gamma)``; with ``num_classes`` an SE-loss head ``Linear(C, num_classes)``
    (``EncModule.forward_se``). 572,571 parameters at C=512, K=32, 59 classes.

    ``init="paper"``: ``y = ReLU(x (1 + gamma))`` with ``gamma`` about 0.5, not an identity.
    ``init="identity"``: ``W_fc`` zeroed, gate ``2 sigmoid - 1`` (0 at init) and no output ReLU
    (``final_relu`` defaults to ``False`` then): exactly ``x``. ``final_relu``: the output ReLU;
    default ``True`` for ``"paper"``. ``zero_init_last`` / ``identity_init``: legacy overrides
    (with them and the output ReLU the block gives ``ReLU(x)``).
    """
    zero_last, gate = init_flags(
        "enc", init, paper_zero_last=False, zero_init_last=zero_init_last, identity_init=identity_init
    )
    if final_relu is None:
        final_relu = init != "identity"
    dd = {"device": device, "dtype": dtype}
    return EncModule(
        channels,
        context=EncodingPool(channels, num_codes, **dd),
        transform=LinearTransform(channels, bias=True, zero_init_last=zero_last, **dd),
        fusion=ResidualGateFusion(identity_init=gate, final_relu=final_relu),
        num_classes=num_classes,
        name="enc",
        **dd,
    )
