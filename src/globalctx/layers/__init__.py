"""Layers: the GCNet framework parts, the assembler, one module per registered block, the NL
attention kernels and the block registry.

- :mod:`~globalctx.layers.parts`: ``GlobalContextBlock``, the part contract, context / transform /
  fusion parts shared by several blocks.
- :mod:`~globalctx.layers.blocks`: ``blocks/<name>.py`` per registered block (preset + its parts).
- :mod:`~globalctx.layers.nl_attention`: the NL / DNL attention kernels and shared helpers.
"""

from .helpers import make_divisible, rd_width
from .parts import (
    AddFusion,
    AttnPool,
    AvgPool,
    Bottleneck,
    GlobalContextBlock,
    LinearTransform,
    Mlp,
    PairwiseAttentionMap,
    Part,
    ScaleAddFusion,
    ScaleFusion,
    SharedAttentionMap,
    StackedTransforms,
    collect_no_weight_decay,
)
from .registry import create_block, get_block, list_blocks, register_block

# the block modules register their blocks on import
from . import blocks  # noqa: E402,F401  isort: skip
from .blocks.ban import BilinearAttention  # noqa: E402  isort: skip
from .blocks.dia import DIACell, DIAStage  # noqa: E402  isort: skip
from .blocks.dnl import DisentangledNonLocal  # noqa: E402  isort: skip
from .blocks.enc import EncModule  # noqa: E402  isort: skip
from .blocks.fca import DCTPool  # noqa: E402  isort: skip
from .blocks.nl import NonLocal  # noqa: E402  isort: skip

#: the name this class had when it alone reported ``no_weight_decay`` (now every block does)
ChannelContextBlock = GlobalContextBlock

__all__ = [
    "AddFusion",
    "AttnPool",
    "AvgPool",
    "BilinearAttention",
    "Bottleneck",
    "ChannelContextBlock",
    "DCTPool",
    "DIACell",
    "DIAStage",
    "DisentangledNonLocal",
    "EncModule",
    "GlobalContextBlock",
    "LinearTransform",
    "Mlp",
    "NonLocal",
    "PairwiseAttentionMap",
    "Part",
    "ScaleAddFusion",
    "ScaleFusion",
    "SharedAttentionMap",
    "StackedTransforms",
    "collect_no_weight_decay",
    "create_block",
    "get_block",
    "list_blocks",
    "make_divisible",
    "rd_width",
    "register_block",
]
