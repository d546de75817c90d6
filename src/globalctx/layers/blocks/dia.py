"""DIANet: one LSTM-style cell shared by all blocks of a stage (Huang et al., AAAI 2020, arXiv 1905.10671):
the ``dia`` preset, the cell and the stage wrapper that shares it.

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..helpers import rd_width, zero_layer
from ..parts.base import GlobalContextBlock, Part, check_init
from ..parts.context import AvgPool
from ..parts.fusion import MulFusion
from ..registry import register_block

__all__ = ["DIACell", "DIAStage", "SmallCell", "dia_block", "dia_blocks"]


class SmallCell(nn.Sequential):
    """DIANet's ``small_cell``: ``Linear(C, C_r) -> ReLU -> Linear(C_r, 4 C)``."""

    def __init__(self, channels: int, rd_channels: int, *, device=None, dtype=None):
        super().__init__(
            nn.Linear(channels, rd_channels, device=device, dtype=dtype),
            nn.ReLU(),
            nn.Linear(rd_channels, 4 * channels, device=device, dtype=dtype),
        )


class DIACell(Part):
    """DIANet's modified LSTM cell, used as a transform part ``[N, C] -> [N, C]``.

    ``[i, f, g, o] = W_ih(z) + W_hh(h)`` (each ``W`` a small cell ``C -> C_r -> 4 C``);
    ``c' = sigmoid(f) c + sigmoid(i) tanh(g)``; ``h' = sigmoid(o) sigmoid(c')`` (sigmoid, not tanh,
    as the official code); returns ``h'``, a gate in ``(0, 1)``. One layer; the official dropout
    acts only between layers and so does nothing here.

    **State.** Inside :meth:`carry` (what :class:`DIAStage` uses) the ``(h, c)`` state is carried
    from one call to the next, starting from zeros; leaving the context drops it. Outside, every
    call starts from zeros, so a lone DIA block is a plain (stateless) channel gate. State lives
    on the input's device and dtype: nothing is hard-coded.

    Args:
        channels: ``C``.
        rd_ratio, rd_channels, rd_divisor: small-cell width ``C_r``. Default ratio ``1/4`` (official).
        zero_init_last: zero the last Linear (weight and bias) of both small cells; then all gate
            pre-activations are 0, ``c = 0`` and ``h = 0.25`` at every step (stored as
            ``zero_last``). Default: ``False``.

    Shape:
        - Input: ``[N, C]``
        - Output: ``[N, C]``
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1 / 4,
        rd_channels: int | None = None,
        rd_divisor: int = 1,
        zero_init_last: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="dia")
        self.channels = channels
        self.zero_last = zero_init_last
        self.w_ih = SmallCell(channels, cr, device=device, dtype=dtype)
        self.w_hh = SmallCell(channels, cr, device=device, dtype=dtype)
        self._carrying = 0
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in (*self.w_ih, *self.w_hh):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        self.zero_init_last()

    def zero_init_last(self) -> None:
        """Zero the last Linear of both small cells when built with ``zero_init_last=True``."""
        if self.zero_last:
            for last in (self.w_ih[2], self.w_hh[2]):
                zero_layer(last)

    def carry(self) -> _Carry:
        """Context manager: carry the state across calls (one forward of a stage)."""
        return _Carry(self)

    def step(self, z: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        """One functional step: ``(h', (h', c'))`` from input ``z`` and state (``None`` = zeros)."""
        gates = self.w_ih(z)  # [N, 4C]
        if state is not None:
            h, c = state
            gates = gates + self.w_hh(h)
        else:
            c = None
            gates = gates + self.w_hh(torch.zeros_like(z))
        i, f, g, o = gates.chunk(4, dim=1)  # 4 x [N, C]
        c_new = torch.sigmoid(i) * torch.tanh(g)
        if c is not None:
            c_new = c_new + torch.sigmoid(f) * c
        h_new = torch.sigmoid(o) * torch.sigmoid(c_new)
        return h_new, (h_new, c_new)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        state = self._state if self._carrying else None
        if state is not None and state[0].shape != z.shape:
            raise ValueError(
                f"dia: carried state has shape {list(state[0].shape)} but the input is {list(z.shape)}; "
                f"all blocks sharing a cell must see the same batch and width"
            )
        h, new_state = self.step(z, state)
        if self._carrying:
            self._state = new_state
        return h

    def extra_repr(self) -> str:
        return f"{self.channels}"


class _Carry:
    def __init__(self, cell: DIACell):
        self.cell = cell

    def __enter__(self):
        if self.cell._carrying == 0:
            self.cell._state = None
        self.cell._carrying += 1
        return self.cell

    def __exit__(self, *exc):
        self.cell._carrying -= 1
        if self.cell._carrying == 0:
            self.cell._state = None
        return False


def dia_blocks(module: nn.Module) -> list[GlobalContextBlock]:
    """The DIA blocks inside ``module``: :class:`GlobalContextBlock` s whose transform is a :class:`DIACell`."""
    return [m for m in module.modules() if isinstance(m, GlobalContextBlock) and isinstance(m.transform, DIACell)]


class DIAStage(nn.Module):
    """A stage of residual blocks whose DIA attention blocks share one :class:`DIACell`.

    Runs ``blocks`` in order inside ``cell.carry()``: the hidden state flows from block to block
    and is reset at every forward. At construction every DIA block found inside ``blocks`` (a
    :class:`GlobalContextBlock` whose transform is a :class:`DIACell`, e.g. from
    ``create_block("dia", C)`` placed after the last BN of each residual branch) gets its
    transform replaced by the shared cell (the first one found, or ``cell`` if given), so the
    stage has one cell's parameters, as the official DIANet.

    The shared cell appears once in ``parameters()``; ``state_dict()`` lists it under each block
    (same tensors), which ``load_state_dict`` accepts.

    Args:
        blocks: the stage's residual blocks (an iterable of modules, run in order).
        cell: the shared cell; ``None`` takes the first DIA block's. Default: ``None``.

    Shape:
        - Input: whatever the first block takes
        - Output: what the last block returns

    Example::

        >>> res = [nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), create_block("dia", 64)) for _ in range(3)]
        >>> stage = DIAStage(res)
        >>> stage(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 8, 8])
    """

    def __init__(self, blocks: Iterable[nn.Module], *, cell: DIACell | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        found = dia_blocks(self.blocks)
        if cell is None:
            if not found:
                raise ValueError("DIAStage: no DIA block (GlobalContextBlock with a DIACell) found in blocks")
            cell = found[0].transform
        for b in found:
            if b.channels != cell.channels:
                raise ValueError(f"DIAStage: DIA blocks must all have {cell.channels} channels, got {b.channels}")
            b.transform = cell
        self.cell = cell

    def reset_parameters(self) -> None:
        self.cell.reset_parameters()

    def forward(self, x):
        with self.cell.carry():
            for b in self.blocks:
                x = b(x)
        return x


@register_block("dia")
def dia_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 4,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    cell: DIACell | None = None,
    init: str = "paper",
    identity_init: bool | None = None,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """DIANet attention (Huang et al., AAAI 2020, arXiv 1905.10671): ``y = x * h``,
    ``h = LSTMCell(GAP(x), state)``.

    Pass one ``cell`` to all blocks of a stage, or wrap the stage in :class:`DIAStage` (which
    shares the first block's cell and carries the state across the blocks, reset per forward).
    A lone block (no stage) starts from a zero state on every call. The residual add and ReLU stay
    in the host block, as in the official code.

    ``init="paper"``: ``h`` in ``(0, 1)``, about 0.25 (not an identity). ``init="identity"``
    zeroes the last layer of both small cells (``h = 0.25`` exactly, at every step) and scales by
    4: ``y = x``. ``identity_init``: legacy spelling of ``init="identity"`` (``True``) / ``"paper"``.
    """
    identity = check_init("dia", init) if identity_init is None else bool(identity_init)
    if cell is None:
        cell = DIACell(
            channels,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            zero_init_last=identity,
            device=device,
            dtype=dtype,
        )
    elif cell.channels != channels:
        raise ValueError(f"dia: cell has {cell.channels} channels, block has {channels}")
    return GlobalContextBlock(
        channels, context=AvgPool(), transform=cell, fusion=MulFusion(identity_init=identity), name="dia"
    )
