"""Training cost: one step (forward + backward, optionally + optimizer step) as a callable.

``mode`` is one of :data:`MODES`:

``inference``
    ``module(x)`` in ``eval()`` under ``torch.inference_mode()`` (the default of the bench).
``train``
    ``module.train()``; each call clears the gradients, runs ``y = module(x)`` and
    ``y.backward(g)`` with a fixed random ``g`` shaped like ``y`` (no loss pass). For a block the
    input requires grad (a block sits inside a network, so ``dL/dx`` is part of its cost); for a
    model it does not (the input is the image).
``train+step``
    ``train`` followed by ``torch.optim.SGD(lr, momentum=0.9).step()`` over the trainable
    parameters (the momentum buffers exist from the first call on).

Shape legend: ``N`` batch, ``C`` channels, ``*S`` spatial dims.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["MODES", "check_mode", "grad_context", "is_training", "step_fn"]

MODES = ("inference", "train", "train+step")


def check_mode(mode: str) -> str:
    """Validate ``mode`` (one of :data:`MODES`) and return it."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def is_training(mode: str) -> bool:
    """``True`` for the modes that run a backward pass."""
    return check_mode(mode) != "inference"


def grad_context(mode: str) -> contextlib.AbstractContextManager:
    """``torch.inference_mode()`` for ``inference``, ``torch.enable_grad()`` for the training modes."""
    return torch.enable_grad() if is_training(mode) else torch.inference_mode()


def step_fn(
    module: nn.Module,
    x: torch.Tensor,
    mode: str = "inference",
    *,
    input_grad: bool = True,
    lr: float = 1e-6,
    seed: int = 0,
) -> Callable[[], object]:
    """A zero-argument callable running one inference call or one training step of ``module`` on ``x``.

    In the training modes the callable's ``input`` attribute is the leaf tensor fed to the module
    (``input.grad`` holds ``dL/dx`` after a call when ``input_grad``).

    Sets ``module.train()`` for the training modes and ``module.eval()`` for ``inference``.

    Args:
        module: the block or model.
        x: input ``[N, C, *S]``; for training a leaf copy sharing its storage is used.
        mode: one of :data:`MODES`.
        input_grad: in training modes, also compute ``dL/dx`` (blocks: ``True``; models: ``False``).
        lr: SGD learning rate of ``train+step`` (small: the weights barely move between calls).
        seed: seed of the fixed output gradient ``g``.

    Shape:
        - ``x``: ``[N, C, *S]``; ``g``: the output's shape.
    """
    check_mode(mode)
    if mode == "inference":
        module.eval()
        return lambda: module(x)
    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    xin = x.detach().requires_grad_(input_grad and x.is_floating_point())
    with torch.enable_grad():
        y = module(xin)
    gen = torch.Generator(device=y.device).manual_seed(seed)
    g = torch.randn(y.shape, generator=gen, device=y.device, dtype=y.dtype)  # fixed output gradient
    del y
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9) if mode == "train+step" and params else None

    def run():
        for p in params:
            p.grad = None
        xin.grad = None
        with torch.enable_grad():
            out = module(xin)
            out.backward(g)
        if opt is not None:
            opt.step()
        return out.detach()

    run.input = xin  # the leaf the step differentiates against (its .grad is dL/dx)
    return run
