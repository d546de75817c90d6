"""Context modeling parts: ``[N, C, *S] -> [N, C]`` (GCNet §3.2, first stage).

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims, ``L = prod(S)``.
"""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import nn

from ..helpers import autocast_device, fp32_softmax_input
from .base import Part

__all__ = ["AvgPool", "AttnPool"]

torch.fx.wrap("fp32_softmax_input")  # a dtype branch: one opaque node under symbolic tracing


class AvgPool(Part):
    """Global average pooling over all spatial positions (SE, ECA, RCAN-CA, GC ``'avg'``).

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C]``
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(-1)  # [N, C]


class AttnPool(Part):
    """Softmax attention pooling: ``c = sum_j softmax_j(W_k x_j + b) x_j`` (SNL / GC ``'att'``).

    ``W_k`` is GCNet's ``conv_mask`` (a 1x1 conv ``C -> 1`` with bias), stored as an
    ``nn.Linear(C, 1)`` so one module serves 1, 2 and 3 spatial dims. Logits and context are two
    batched GEMVs on ``[N, C, L]`` (no 4-D matmul, no 1-output conv). The softmax is an
    ``nn.Softmax`` submodule so forward hooks can read the ``[N, 1, L]`` map; under fp16/bf16 it
    runs in fp32.

    Args:
        channels: ``C``.
        device, dtype: factory kwargs.

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C]``

    Example::

        >>> pool = AttnPool(64)
        >>> pool(torch.randn(2, 64, 7, 7)).shape
        torch.Size([2, 64])
    """

    def __init__(self, channels: int, *, device=None, dtype=None):
        super().__init__()
        self.channels = channels
        self.conv_mask = nn.Linear(channels, 1, device=device, dtype=dtype)
        self.softmax = nn.Softmax(dim=-1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # mmcv/GCNet: kaiming_init(conv_mask, mode='fan_in') -> normal std sqrt(2 / fan_in), bias 0
        nn.init.normal_(self.conv_mask.weight, std=math.sqrt(2.0 / self.channels))
        nn.init.zeros_(self.conv_mask.bias)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The pooling weights ``softmax_j(W_k x_j)`` as ``[N, L]`` (sum to 1 over ``L``)."""
        return self._attention_map(x.flatten(2)).squeeze(1)  # [N, L]

    def _attention_map(self, x: torch.Tensor) -> torch.Tensor:
        # x: [N, C, L] -> [N, 1, L]
        w = self.conv_mask.weight.unsqueeze(0).expand(x.shape[0], 1, x.shape[1])  # [N, 1, C], no copy
        # batched GEMV with the bias folded in (one op, one [N, 1, L] buffer); a broadcast matmul
        # [1, C] @ [N, C, L] is ~8x slower on CPU
        logits = self._logits(w, x)  # [N, 1, L]
        logits = fp32_softmax_input(logits)  # softmax statistics in fp32: no overflow in low precision
        return self.softmax(logits).to(x.dtype)  # [N, 1, L]

    def _logits(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            dev = autocast_device(x)
            if dev != "":  # under autocast in fp32: a dot product over C can pass fp16's range
                with torch.autocast(device_type=dev, enabled=False):
                    return torch.baddbmm(self.conv_mask.bias.float().view(1, 1, 1), w.float(), x.float())
        return torch.baddbmm(self.conv_mask.bias.view(1, 1, 1), w, x)  # [N, 1, C] @ [N, C, L] + b -> [N, 1, L]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)  # [N, C, L]
        if not torch.jit.is_scripting():
            if self._fast_backward(x):
                return self._pool_fast_backward(x)  # [N, C]
        attn = self._attention_map(x)  # [N, 1, L]
        # as a row vector times x^T (a transposed view, no copy): on CPU this GEMV is 1.5-2x faster
        # than x @ attn^T, and ~5x faster than x @ attn^T with a contiguous [N, L, 1] operand
        return torch.bmm(attn, x.transpose(1, 2)).squeeze(1)  # [N, 1, L] @ [N, L, C] -> [N, C]

    @torch.jit.unused
    def _fast_backward(self, x: torch.Tensor) -> bool:
        """Whether this call records a backward (fp32/fp64, eager, no autocast): then :class:`_AttnPoolFn`
        is used."""
        if isinstance(x, torch.fx.Proxy) or torch.jit.is_tracing() or not torch.is_grad_enabled():
            return False
        if x.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled(x.device.type):
            return False
        return x.requires_grad or self.conv_mask.weight.requires_grad or self.conv_mask.bias.requires_grad

    @torch.jit.unused
    def _pool_fast_backward(self, x: torch.Tensor) -> torch.Tensor:
        return _AttnPoolFn.apply(x, self.conv_mask.weight, self.conv_mask.bias, self._attention_map)  # [N, C]

    def extra_repr(self) -> str:
        return f"{self.channels}"


class _AttnPoolFn(torch.autograd.Function):
    """Attention pooling with a backward of two GEMVs over ``x`` and one write of ``dL/dx``.

    Autograd's own backward of the forward above writes ``dL/dx`` as two rank-1 products (from the
    context and from the logits) into a transposed, strided buffer and then adds them (4-8x slower
    on CPU). Here ``dL/dx = [dc, W_k^T] @ [a; dlogits]`` is one batched product with inner size 2.
    Under ``create_graph`` the map is recomputed with autograd on, so higher derivatives are exact.

    Shape:
        - ``x [N, C, L]``, ``weight [1, C]``, ``bias [1]`` -> ``[N, C]``
    """

    @staticmethod
    def forward(ctx, x, weight, bias, attention_map):
        attn = attention_map(x)  # [N, 1, L]
        ctx.attention_map = attention_map
        ctx.save_for_backward(x, weight, bias, attn)
        return torch.bmm(attn, x.transpose(1, 2)).squeeze(1)  # [N, C]

    @staticmethod
    def backward(ctx, dc):
        x, weight, bias, attn = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the map as a function of x, weight, bias
            attn = ctx.attention_map(x)
        n, c, _ = x.shape
        d_attn = torch.bmm(dc.unsqueeze(1), x)  # [N, 1, C] @ [N, C, L] -> [N, 1, L]
        d_logits = attn * (d_attn - (attn * d_attn).sum(-1, keepdim=True))  # softmax backward, [N, 1, L]
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            lhs = torch.cat([dc.unsqueeze(2), weight.t().unsqueeze(0).expand(n, c, 1)], dim=2)  # [N, C, 2]
            dx = torch.bmm(lhs, torch.cat([attn, d_logits], dim=1))  # [N, C, 2] @ [N, 2, L] -> [N, C, L]
        if ctx.needs_input_grad[1]:
            dw = torch.bmm(d_logits, x.transpose(1, 2)).sum(0)  # [N, 1, C] summed over N -> [1, C]
        if ctx.needs_input_grad[2]:
            db = d_logits.sum().view(1)
        return dx, dw, db, None
