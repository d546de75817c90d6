"""Parameter and FLOP counting, attention matmuls included.

FLOPs come from :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the matrix
products of a forward pass at the dispatcher level (so ``bmm``/``matmul`` inside attention and
``F.scaled_dot_product_attention`` are seen, unlike module-hook counters). Added here are the
formulas it lacks for ops our blocks reach:

- ``aten._scaled_dot_product_flash_attention_for_cpu`` (the fused CPU SDPA kernel) and
  ``aten._scaled_dot_product_fused_attention_overrideable``: ``QK^T`` plus ``PV``,
  ``2 * B*H * L_q * L_k * (E + E_v)`` FLOPs, the formula torch uses for the CUDA kernels;
- ``aten.mv`` / ``aten.addmv`` (``2 * m * k``), ``aten.dot`` / ``aten.vdot`` (``2 * k``) and
  ``aten.addbmm`` (``2 * b * m * k * n``).

Convention (as the papers): one multiply-add = 2 FLOPs, ``MACs = FLOPs / 2``; only matrix
products and convolutions are counted (bias adds, softmax, norms, pooling and element-wise ops
are not). Causal masks are ignored (the full ``L_q x L_k`` product is counted).

The same pass records every counted product as a GEMM ``(batch, m, k, n)`` (a convolution as its
im2col GEMM), which :mod:`globalctx.bench.floors` replays to time the "equivalent GEMMs".

Shape legend: ``N`` batch, ``C`` channels, ``*S`` spatial dims, ``L = prod(S)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["Gemm", "FlopCount", "count_params", "count_flops", "extra_flop_formulas"]

aten = torch.ops.aten


@dataclass(frozen=True)
class Gemm:
    """``batch`` independent ``[m, k] @ [k, n]`` products (``2 * batch * m * k * n`` FLOPs)."""

    batch: int
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n


@dataclass
class FlopCount:
    """Result of :func:`count_flops`.

    Attributes:
        flops: total FLOPs of one forward (2 per multiply-add).
        by_op: FLOPs per aten op name (e.g. ``{"convolution": ..., "bmm": ...}``).
        gemms: every counted product as a :class:`Gemm`, in call order.
    """

    flops: int = 0
    by_op: dict[str, int] = field(default_factory=dict)
    gemms: list[Gemm] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return self.flops // 2


def count_params(module: nn.Module) -> dict[str, int]:
    """Parameter counts of ``module``.

    Returns:
        ``{"params": all parameters, "trainable": those with requires_grad,
        "buffers": elements in buffers (BN running stats, DCT tables, ...)}``. Shared
        parameters are counted once.
    """
    params = list(module.parameters())
    return {
        "params": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "buffers": sum(b.numel() for b in module.buffers()),
    }


# ---------------------------------------------------------------------------------------------
# shapes -> GEMMs (the counted products as batch x [m, k] @ [k, n])


def _batch(shape) -> int:
    return math.prod(shape[:-2]) if len(shape) > 2 else 1


def _sdpa_gemms(q, k, v) -> list[Gemm]:
    # q [*B, L_q, E], k [*B_kv, L_k, E], v [*B_kv, L_k, E_v]; GQA broadcasts kv heads to q heads
    b, lq, e = _batch(q.shape), q.shape[-2], q.shape[-1]
    lk, ev = k.shape[-2], v.shape[-1]
    return [Gemm(b, lq, e, lk), Gemm(b, lq, lk, ev)]


def _conv_gemms(x, w, transposed: bool, groups: int, out) -> list[Gemm]:
    g = int(groups)
    if transposed:
        # each input position scatters C_out/g * prod(kernel) products over C_in/g
        c_out_g = w.shape[1]
        return [Gemm(g, c_out_g * math.prod(w.shape[2:]), w.shape[0] // g, x.shape[0] * math.prod(x.shape[2:]))]
    k = w.shape[1] * math.prod(w.shape[2:])  # C_in/g * prod(kernel)
    return [Gemm(g, w.shape[0] // g, k, out.shape[0] * math.prod(out.shape[2:]))]


def _gemms_of(packet, args, kwargs, out) -> list[Gemm]:
    a = args
    if packet in (aten.mm,):
        return [Gemm(1, a[0].shape[0], a[0].shape[1], a[1].shape[1])]
    if packet in (aten.addmm,):
        return [Gemm(1, a[1].shape[0], a[1].shape[1], a[2].shape[1])]
    if packet in (aten.bmm,):
        return [Gemm(a[0].shape[0], a[0].shape[1], a[0].shape[2], a[1].shape[2])]
    if packet in (aten.baddbmm, aten.addbmm):
        return [Gemm(a[1].shape[0], a[1].shape[1], a[1].shape[2], a[2].shape[2])]
    if packet in (aten.mv,):
        return [Gemm(1, a[0].shape[0], a[0].shape[1], 1)]
    if packet in (aten.addmv,):
        return [Gemm(1, a[1].shape[0], a[1].shape[1], 1)]
    if packet in (aten.dot, aten.vdot):
        return [Gemm(1, 1, a[0].shape[0], 1)]
    if packet in (aten.convolution, aten._convolution, aten.convolution_overrideable):
        res = out[0] if isinstance(out, (tuple, list)) else out
        return _conv_gemms(a[0], a[1], bool(a[6]), a[8], res)
    if packet in _SDPA_PACKETS:
        return _sdpa_gemms(a[0], a[1], a[2])
    return []


_SDPA_PACKETS = (
    aten._scaled_dot_product_flash_attention_for_cpu,
    aten._scaled_dot_product_fused_attention_overrideable,
    aten._scaled_dot_product_flash_attention,
    aten._scaled_dot_product_efficient_attention,
    aten._scaled_dot_product_cudnn_attention,
)


# ---------------------------------------------------------------------------------------------
# formulas FlopCounterMode lacks (shape-level: called with the shapes of the tensor arguments)


def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """``aten._scaled_dot_product_flash_attention_for_cpu`` / ``..._overrideable``: QK^T + PV."""
    b = _batch(query_shape)
    lq, e = query_shape[-2], query_shape[-1]
    lk, ev = key_shape[-2], value_shape[-1]
    if key_shape[-1] != e or value_shape[-2] != lk:
        raise ValueError(f"sdpa: incompatible shapes q={query_shape} k={key_shape} v={value_shape}")
    return 2 * b * lq * lk * e + 2 * b * lq * lk * ev


def _mv_flop(a_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


def _addmv_flop(self_shape, a_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0] * a_shape[1]


def _dot_flop(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return 2 * a_shape[0]


def _addbmm_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    b, m, k = a_shape
    return 2 * b * m * k * b_shape[2]


def extra_flop_formulas() -> dict:
    """The formulas added to FlopCounterMode's registry (op packet -> shape-level formula)."""
    return {
        aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flop,
        aten._scaled_dot_product_fused_attention_overrideable: _sdpa_cpu_flop,
        aten.mv: _mv_flop,
        aten.addmv: _addmv_flop,
        aten.dot: _dot_flop,
        aten.vdot: _dot_flop,
        aten.addbmm: _addbmm_flop,
    }


def _recording(formula: Callable, packet, gemms: list[Gemm]) -> Callable:
    """Wrap a tensor-level formula so each call also records its GEMMs."""

    def raw(*args, out_val=None, **kwargs):
        gemms.extend(_gemms_of(packet, args, kwargs, out_val))
        return formula(*args, out_val=out_val, **kwargs)

    raw._get_raw = True  # FlopCounterMode passes tensors, not shapes
    return raw


def count_flops(fn: Callable[[], object] | nn.Module, *inputs) -> FlopCount:
    """Count the FLOPs of one call.

    Args:
        fn: a module (called as ``fn(*inputs)``) or a zero-argument callable.
        *inputs: the inputs, when ``fn`` is a module.

    Returns:
        :class:`FlopCount` with the total, the split per op and the recorded GEMMs.

    Runs under ``torch.inference_mode()``; fused ops are decomposed where FlopCounterMode has no
    formula for them (SDPA then runs its math path in this pass, which counts the same products).

    Example::

        >>> import globalctx
        >>> from globalctx.bench import count_flops
        >>> count_flops(globalctx.create_block("se", 256), torch.randn(1, 256, 14, 14)).macs
        8192
    """
    from torch.utils import flop_counter

    gemms: list[Gemm] = []
    base = dict(flop_counter.flop_registry)
    shape_level = {k: flop_counter.shape_wrapper(v) for k, v in extra_flop_formulas().items()}
    mapping = {}
    for packet, formula in {**base, **shape_level}.items():
        if packet in base and packet not in shape_level and not _gemms_of_supported(packet):
            continue  # keep torch's own formula untouched (backward ops, flex attention, ...)
        mapping[packet] = _recording(formula, packet, gemms)
    call = (lambda: fn(*inputs)) if isinstance(fn, nn.Module) else fn
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter:
        call()
    by_op = {str(k).split(".")[-1]: int(v) for k, v in counter.get_flop_counts().get("Global", {}).items()}
    return FlopCount(flops=int(counter.get_total_flops()), by_op=by_op, gemms=gemms)


def _gemms_of_supported(packet) -> bool:
    return packet in (
        aten.mm,
        aten.addmm,
        aten.bmm,
        aten.baddbmm,
        aten.addbmm,
        aten.mv,
        aten.addmv,
        aten.dot,
        aten.vdot,
        aten.convolution,
        aten._convolution,
        aten.convolution_overrideable,
        *_SDPA_PACKETS,
    )
