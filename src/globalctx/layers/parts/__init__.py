"""The GCNet framework parts (context, transform, fusion), the assembler and the part contract."""

from .base import (
    INIT_CHOICES,
    GlobalContextBlock,
    PairwiseAttentionMap,
    Part,
    SharedAttentionMap,
    check_init,
    collect_no_weight_decay,
    init_flags,
    reset_part,
)
from .context import AttnPool, AvgPool
from .covariance import covariance_pool, newton_schulz_sqrt
from .fusion import (
    AddFusion,
    MulFusion,
    ResidualGateFusion,
    ScaleAddFusion,
    ScaleFusion,
    TanhGateFusion,
    broadcast_channels,
)
from .transform import Bottleneck, LinearTransform, Mlp, StackedTransforms

__all__ = [
    "INIT_CHOICES",
    "AddFusion",
    "AttnPool",
    "AvgPool",
    "Bottleneck",
    "GlobalContextBlock",
    "LinearTransform",
    "Mlp",
    "MulFusion",
    "PairwiseAttentionMap",
    "Part",
    "ResidualGateFusion",
    "ScaleAddFusion",
    "ScaleFusion",
    "SharedAttentionMap",
    "StackedTransforms",
    "TanhGateFusion",
    "broadcast_channels",
    "check_init",
    "collect_no_weight_decay",
    "covariance_pool",
    "init_flags",
    "newton_schulz_sqrt",
    "reset_part",
]
