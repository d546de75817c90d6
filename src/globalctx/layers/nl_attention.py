"""Attention kernels of the Non-local family, none of which builds the ``L x L_k`` matrix by default,
and the helpers NL and DNL share (positions-major view, key sub-sampling, embedding init).

Shape legend: ``N`` batch, ``L`` query positions, ``L_k`` key positions (``L`` or ``L`` after
sub-sampling), ``d`` query/key width, ``d_v`` value width, ``Q`` selected query rows.

Every kernel takes ``q [N, L, d]``, ``k [N, L_k, d]``, ``v [N, L_k, d_v]`` (positions-major, the
layout SDPA wants) and returns ``y [N, L, d_v]``:

=================  ==========================================  ==========================================
form               ``y_i``                                     backends (``auto`` picks the first)
=================  ==========================================  ==========================================
``softmax``        ``sum_j softmax_j(s q_i.k_j) v_j``          ``sdpa``, ``chunked``, ``reference``
``dot_product``    ``sum_j (q_i.k_j / L_k) v_j``               ``linear``, ``chunked``, ``reference``
``concatenation``  ``sum_j ReLU(a_i + b_j) / L_k v_j``         ``linear``, ``chunked``, ``reference``
=================  ==========================================  ==========================================

- ``sdpa``: :func:`torch.nn.functional.scaled_dot_product_attention` on ``[N, 1, L, d]`` views with
  last-dim stride 1, the only layout for which the CPU build dispatches its fused flash kernel
  (``aten::_scaled_dot_product_flash_attention_for_cpu``: O(L) memory, fp32 softmax statistics
  for fp16/bf16 inputs). The CPU flash kernel also needs ``d == d_v``: the narrower side is
  zero-padded (zero columns of ``q``/``k`` leave the logits unchanged; zero columns of ``v`` are
  cut off the output). The fused kernels have no double backward: a backward with
  ``create_graph=True`` through this backend raises one line naming ``backend='chunked'``
  (which, like ``reference``, supports higher-order gradients).
- ``linear``: dot product by associativity, ``q @ (k^T v) / L_k``: O(L d d_v) time and
  O(d d_v) extra memory. Concatenation by sorting: ``ReLU(a_i + b_j)`` is ``a_i + b_j`` for
  ``b_j > -a_i`` and 0 otherwise, so with the keys sorted by ``b``,
  ``y_i = (a_i S_v(-a_i) + S_bv(-a_i)) / L_k`` where ``S_v(t)`` / ``S_bv(t)`` are suffix sums of
  ``v_j`` / ``b_j v_j`` over ``b_j > t`` (one ``searchsorted`` per query): exact,
  O((L + L_k) log L_k + (L + L_k) d_v) time and O(L_k d_v) extra memory.
- ``chunked``: query chunks of ``chunk_size`` rows, each building a ``[N, chunk, L_k]`` block in
  fp32. The default chunk size keeps one block at :data:`CHUNK_ELEMENTS` elements (16 MiB in
  fp32). Without autograd one such buffer is reused for every chunk and transformed in place,
  so the peak extra memory is one block, whatever ``L``. With autograd on, each chunk is
  recomputed in the backward pass (activation checkpointing), so training memory is bounded by
  a few blocks as well.
- ``reference``: the plain formula with the full ``[N, L, L_k]`` matrix in fp32; for tests and
  small maps only.

Under fp16/bf16 (autocast or half inputs) the ``linear``, ``chunked`` and ``reference`` paths
compute logits, sums and the softmax in fp32 with autocast disabled. The softmax forms return
the value dtype (a convex combination of values cannot overflow it); the dot-product and
concatenation forms return fp32, since their un-normalised sums can exceed the fp16 range.
``sdpa`` relies on the fused kernels' fp32 accumulation.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "BACKENDS",
    "SDPA_DOUBLE_BACKWARD",
    "CHUNK_ELEMENTS",
    "FORMS",
    "resolve_backend",
    "default_chunk_size",
    "softmax_attention",
    "dot_product_attention",
    "concat_attention",
    "attention",
    "fp32",
    "init_embeddings",
    "key_shape",
    "positions",
    "softmax_rows",
    "dot_product_rows",
    "concat_rows",
    "subsample_pool",
]

BACKENDS = ("auto", "sdpa", "linear", "chunked", "reference")
FORMS = ("softmax", "dot_product", "concatenation")
_VALID = {
    "softmax": ("sdpa", "chunked", "reference"),
    "dot_product": ("linear", "chunked", "reference"),
    "concatenation": ("linear", "chunked", "reference"),
}
#: elements of one ``[N, chunk, L_k]`` block in the chunked kernels (2**22 = 16 MiB in fp32)
CHUNK_ELEMENTS = 2**22


def resolve_backend(form: str, backend: str) -> str:
    """The concrete backend for ``form``; ``'auto'`` gives the fastest exact one.

    Raises ``ValueError`` naming the valid choices for an unknown backend or one that cannot
    compute ``form`` (e.g. ``'sdpa'`` for the un-normalised dot product).
    """
    if form not in _VALID:
        raise ValueError(f"unknown attention form {form!r}; valid forms: {FORMS}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid backends: {BACKENDS}")
    if backend == "auto":
        return _VALID[form][0]
    if backend not in _VALID[form]:
        raise ValueError(f"backend {backend!r} cannot compute the {form} form; valid: {('auto',) + _VALID[form]}")
    return backend


def default_chunk_size(n: int, lk: int) -> int:
    """Query rows per chunk so that one ``[n, chunk, lk]`` block has at most CHUNK_ELEMENTS."""
    return max(1, CHUNK_ELEMENTS // max(1, n * lk))


def fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 when it is fp16/bf16, else unchanged (fp32 / fp64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _no_autocast(t: torch.Tensor):
    return torch.autocast(device_type=t.device.type, enabled=False)


def _chunked(kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, chunk_size: int | None):
    """Query-chunked ``kind`` attention (``'softmax'``, ``'dot_product'``, ``'concatenation'``).

    With autograd on, each chunk is the functional block form under activation checkpointing.
    Without it, one fp32 ``[N, chunk, L_k]`` buffer is reused for every chunk and transformed in
    place (no fresh large temporaries, so no page-fault churn and a flat peak).
    """
    n, length, lk = q.shape[0], q.shape[1], k.shape[1]
    cs = min(length, chunk_size or default_chunk_size(n, lk))
    fn = _BLOCK_FNS[kind]
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        if cs >= length:
            return fn(q, k, v, scale)
        outs = [checkpoint(fn, q[:, s : s + cs], k, v, scale, use_reentrant=False) for s in range(0, length, cs)]
        return torch.cat(outs, dim=1)  # [N, L, d_v]
    with _no_autocast(q):
        k32, v32 = fp32(k), fp32(v)
        buf = torch.empty(n * cs * lk, dtype=v32.dtype, device=v.device)
        outs = []
        for s in range(0, length, cs):
            qc = fp32(q[:, s : s + cs])
            w = buf[: n * qc.shape[1] * lk].view(n, qc.shape[1], lk)  # [N, chunk, L_k], reused
            if kind == "concatenation":
                torch.add(qc.unsqueeze(-1), k32.unsqueeze(1), out=w).relu_()
            else:
                torch.matmul(qc, k32.transpose(1, 2), out=w)
            if kind == "softmax":
                w.mul_(scale)
                w.sub_(w.amax(-1, keepdim=True)).exp_()
                w.div_(w.sum(-1, keepdim=True))
            o = torch.matmul(w, v32)  # [N, chunk, d_v]
            outs.append(o if kind == "softmax" else o.div_(lk))
        return torch.cat(outs, dim=1)  # [N, L, d_v]


# ---------------------------------------------------------------------------------------------
# softmax form (Gaussian, embedded Gaussian, DNL pairwise term)


def softmax_rows(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """``softmax_j(scale * q_i . k_j)`` in fp32: ``[N, Q, d] x [N, L_k, d] -> [N, Q, L_k]``."""
    with _no_autocast(q):
        logits = torch.matmul(fp32(q), fp32(k).transpose(1, 2)) * scale  # [N, Q, L_k]
        return logits.softmax(dim=-1)


def _softmax_chunk(qc: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    with _no_autocast(qc):
        return torch.matmul(softmax_rows(qc, k, scale), fp32(v))  # [N, Q, L_k] @ [N, L_k, d_v]


def _pad_last(t: torch.Tensor, width: int) -> torch.Tensor:
    return t if t.shape[-1] == width else F.pad(t, (0, width - t.shape[-1]))


#: the one-line refusal of a double backward through the fused kernel
SDPA_DOUBLE_BACKWARD = (
    "backend 'sdpa' (the fused attention kernel, the default) has no higher-order gradients "
    "(backward with create_graph=True); build the block with backend='chunked' to differentiate twice"
)


class _FirstOrderOnly(torch.autograd.Function):
    """Identity on the fused kernel's output whose backward refuses ``create_graph=True``.

    The fused SDPA kernels have no double backward; without this the error comes later, from
    inside the kernel's derivative, without naming a fix.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # create_graph=True: higher-order gradients requested
            raise RuntimeError(SDPA_DOUBLE_BACKWARD)
        return grad


def _guard_first_order(y: torch.Tensor) -> torch.Tensor:
    if (
        not torch.is_grad_enabled()
        or isinstance(y, torch.fx.Proxy)
        or not y.requires_grad
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
    ):
        return y
    return _FirstOrderOnly.apply(y)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    dv = v.shape[-1]
    width = max(q.shape[-1], dv)
    # [N, 1, L, w]: 4-D, last-dim stride 1 (the CPU flash kernel's requirements), d == d_v
    q4, k4, v4 = (_pad_last(t if t.stride(-1) == 1 else t.contiguous(), width).unsqueeze(1) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q4, k4, v4, scale=scale)  # [N, 1, L, w]
    return _guard_first_order(y.squeeze(1)[..., :dv])  # [N, L, d_v]


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """``y_i = sum_j softmax_j(scale * q_i . k_j) v_j``: ``[N, L, d], [N, L_k, d], [N, L_k, d_v] -> [N, L, d_v]``."""
    backend = resolve_backend("softmax", backend)
    if backend == "sdpa":
        return _sdpa(q, k, v, scale)
    if backend == "chunked":
        return _chunked("softmax", q, k, v, scale, chunk_size).to(v.dtype)
    return _softmax_chunk(q, k, v, scale).to(v.dtype)  # reference: one chunk = the whole matrix


# ---------------------------------------------------------------------------------------------
# dot-product form (C(x) = L_k)


def dot_product_rows(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``q_i . k_j / L_k`` in fp32: ``[N, Q, d] x [N, L_k, d] -> [N, Q, L_k]`` (rows do not sum to 1)."""
    with _no_autocast(q):
        return torch.matmul(fp32(q), fp32(k).transpose(1, 2)) / k.shape[1]


def _dot_chunk(qc: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    with _no_autocast(qc):
        return torch.matmul(dot_product_rows(qc, k), fp32(v))  # [N, Q, d_v]


def dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, backend: str = "auto", chunk_size: int | None = None
) -> torch.Tensor:
    """``y_i = sum_j (q_i . k_j / L_k) v_j``: ``[N, L, d], [N, L_k, d], [N, L_k, d_v] -> [N, L, d_v]``."""
    backend = resolve_backend("dot_product", backend)
    if backend == "linear":
        with _no_autocast(q):
            kv = torch.matmul(fp32(k).transpose(1, 2), fp32(v)) / k.shape[1]  # [N, d, d_v]
            return torch.matmul(fp32(q), kv)  # [N, L, d_v]
    if backend == "chunked":
        return _chunked("dot_product", q, k, v, 1.0, chunk_size)
    return _dot_chunk(q, k, v)


# ---------------------------------------------------------------------------------------------
# concatenation form: ReLU(w^T [theta_i, phi_j]) = ReLU(a_i + b_j), C(x) = L_k


def concat_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``ReLU(a_i + b_j) / L_k`` in fp32: ``[N, Q], [N, L_k] -> [N, Q, L_k]`` (rows do not sum to 1)."""
    with _no_autocast(a):
        return torch.relu(fp32(a).unsqueeze(-1) + fp32(b).unsqueeze(1)) / b.shape[1]  # [N, Q, L_k]


def _concat_chunk(ac: torch.Tensor, b: torch.Tensor, v: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    with _no_autocast(ac):
        return torch.matmul(concat_rows(ac, b), fp32(v))  # [N, Q, d_v]


def _concat_sorted(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exact ``sum_j ReLU(a_i + b_j) v_j / L_k`` from suffix sums over keys sorted by ``b``."""
    n, lk, dv = v.shape
    with _no_autocast(a):
        a32, b32, v32 = fp32(a), fp32(b), fp32(v)
        bs, order = b32.sort(dim=1)  # [N, L_k] ascending
        vs = v32.gather(1, order.unsqueeze(-1).expand(-1, -1, dv))  # [N, L_k, d_v] in sorted order
        zero = vs.new_zeros(n, 1, dv)
        # suffix sums S[t] = sum_{s >= t} (sorted positions), S[L_k] = 0: [N, L_k + 1, d_v]
        s_v = torch.cat([vs.flip(1).cumsum(1).flip(1), zero], dim=1)
        s_bv = torch.cat([(bs.unsqueeze(-1) * vs).flip(1).cumsum(1).flip(1), zero], dim=1)
        first = torch.searchsorted(bs, -a32.detach(), right=True)  # [N, L]: first sorted key with b > -a_i
        idx = first.unsqueeze(-1).expand(-1, -1, dv)  # [N, L, d_v]
        return (a32.unsqueeze(-1) * s_v.gather(1, idx) + s_bv.gather(1, idx)) / lk  # [N, L, d_v]


def concat_attention(
    a: torch.Tensor, b: torch.Tensor, v: torch.Tensor, *, backend: str = "auto", chunk_size: int | None = None
) -> torch.Tensor:
    """``y_i = sum_j ReLU(a_i + b_j) / L_k v_j``: ``[N, L], [N, L_k], [N, L_k, d_v] -> [N, L, d_v]``.

    ``a_i = w_theta . theta_i`` and ``b_j = w_phi . phi_j`` are the two halves of the concatenation
    projection ``w^T [theta_i, phi_j]``.
    """
    backend = resolve_backend("concatenation", backend)
    if backend == "linear":
        return _concat_sorted(a, b, v)
    if backend == "chunked":
        return _chunked("concatenation", a, b, v, 1.0, chunk_size)
    return _concat_chunk(a, b, v)


_BLOCK_FNS = {"softmax": _softmax_chunk, "dot_product": _dot_chunk, "concatenation": _concat_chunk}


def attention(
    form: str,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float = 1.0,
    backend: str = "auto",
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Dispatch on ``form`` (``'softmax'``, ``'dot_product'``, ``'concatenation'``; for the last one
    ``q = a [N, L]`` and ``k = b [N, L_k]``)."""
    if form == "softmax":
        return softmax_attention(q, k, v, scale=scale, backend=backend, chunk_size=chunk_size)
    if form == "dot_product":
        return dot_product_attention(q, k, v, backend=backend, chunk_size=chunk_size)
    if form == "concatenation":
        return concat_attention(q, k, v, backend=backend, chunk_size=chunk_size)
    raise ValueError(f"unknown attention form {form!r}; valid forms: {FORMS}")


# ---------------------------------------------------------------------------------------------
# helpers shared by the NL and DNL blocks


def positions(t: torch.Tensor) -> torch.Tensor:
    """The positions-major view ``[N, C, *S] -> [N, L, C]`` (no copy)."""
    return t.flatten(2).transpose(1, 2)  # [N, C, *S] -> [N, L, C] (view)


def subsample_pool(x: torch.Tensor) -> torch.Tensor:
    """The NL sub-sampling max-pool: 2 in 1D, 2x2 in 2D, 1x2x2 in 3D (time kept).

    ``[N, C, *S] -> [N, C, *S_k]`` with each pooled dim halved (floor). Pooled dims must be >= 2.
    """
    nd = x.dim() - 2
    pooled = x.shape[2:] if nd < 3 else x.shape[3:]
    if any(s < 2 for s in pooled):
        raise ValueError(f"sub-sampling needs pooled spatial dims >= 2, got input shape {list(x.shape)}")
    if nd == 1:
        return F.max_pool1d(x, 2)
    if nd == 2:
        return F.max_pool2d(x, 2)
    return F.max_pool3d(x, (1, 2, 2))


def key_shape(spatial: tuple[int, ...], subsample: bool) -> tuple[int, ...]:
    """Spatial shape ``S_k`` of the key positions for spatial shape ``S`` (see :func:`subsample_pool`)."""
    s = tuple(spatial)
    if not subsample:
        return s
    return (s[0], s[1] // 2, s[2] // 2) if len(s) == 3 else tuple(d // 2 for d in s)


def init_embeddings(*layers: nn.Linear | None) -> None:
    """The official NL / DNL init of 1x1 embeddings: weight normal std 0.01, bias 0 (``None`` skipped)."""
    for m in layers:
        if m is not None:
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
