"""Layers: the GCNet framework parts, the assembler, presets and the block registry."""

from .context import AttnPool, AvgPool
from .framework import GlobalContextBlock
from .fusion import AddFusion, ScaleAddFusion, ScaleFusion
from .helpers import make_divisible, rd_width
from .registry import create_block, get_block, list_blocks, register_block
from .transform import Bottleneck, LinearTransform, StackedTransforms

# preset modules register their blocks on import
from . import presets  # noqa: E402,F401  isort: skip
from . import presets_channel  # noqa: E402,F401  isort: skip
from .presets_channel import BilinearAttention, ChannelContextBlock, DCTPool, DIACell, DIAStage, EncModule  # noqa: E402,F401,E501  isort: skip
from .nonlocal_ import NonLocal  # noqa: E402,F401  isort: skip
from .disentangled import DisentangledNonLocal  # noqa: E402,F401  isort: skip
from .channel_block import collect_no_weight_decay  # noqa: E402,F401  isort: skip

__all__ = [
    "AddFusion",
    "AttnPool",
    "AvgPool",
    "Bottleneck",
    "GlobalContextBlock",
    "LinearTransform",
    "ScaleAddFusion",
    "ScaleFusion",
    "StackedTransforms",
    "collect_no_weight_decay",
    "create_block",
    "get_block",
    "list_blocks",
    "make_divisible",
    "rd_width",
    "register_block",
]
