"""Independent re-implementations of the authors' official modules, for comparison tests.

One file per official module. Each is written from the official repository's code, layer by
layer (every activation, bias, stride and placement), with the repository, commit, file and
line range named in its docstring. None of them imports :mod:`globalctx`; the weight-copy
functions (ours -> reference) read our modules only through their ``state_dict`` keys.

Shared helpers:

- :func:`count_parameters`: number of trainable scalars, as the papers count them.
- :func:`randomize_`: fill every floating parameter and buffer with random values (BN running
  variances positive) so that a comparison also covers weights that are zero at init.
- :func:`copy_tensors`: copy ``{dst_key: src_tensor}`` into a module, checking exact shapes.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_parameters", "randomize_", "copy_tensors"]


def count_parameters(module: nn.Module) -> int:
    """Trainable scalars of ``module`` (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Fill every floating parameter/buffer with ``N(0, scale^2)``; ``running_var`` with
    ``U(0.5, 1.5)``. Returns ``module``."""
    gen = torch.Generator().manual_seed(seed)
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if not t.is_floating_point():
            continue
        if name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=gen, dtype=torch.float64) + 0.5)
        else:
            t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64) * scale)
    return module


@torch.no_grad()
def copy_tensors(dst: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (reference key -> tensor already in the reference's shape) into ``dst``.

    Every floating entry of ``dst.state_dict()`` must be given, with the exact shape; a missing
    or extra key or a shape mismatch raises ``ValueError`` naming it.
    """
    target = {k: v for k, v in dst.state_dict().items() if v.is_floating_point()}
    missing = sorted(set(target) - set(tensors))
    extra = sorted(set(tensors) - set(target))
    if missing or extra:
        raise ValueError(f"weight copy: missing reference keys {missing}, keys without a reference slot {extra}")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(target[k].shape):
            raise ValueError(f"weight copy: {k} has shape {tuple(v.shape)}, reference expects {tuple(target[k].shape)}")
        target[k].copy_(v)
