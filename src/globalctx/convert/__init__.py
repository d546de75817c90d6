"""State-dict converters from official / mmcv / timm layouts into globalctx modules and back.

``from_mmcv(block, state_dict)`` loads an mmcv-layout state dict (e.g. mmcv's ``ContextBlock``,
which official GCNet checkpoints use) into a globalctx block; ``to_mmcv(block)`` returns the
mmcv-layout state dict. Handlers for each block family register themselves below.
"""

from .mmcv_dispatch import from_mmcv, register_mmcv, to_mmcv

from . import mmcv_context  # noqa: E402,F401  isort: skip
from . import mmcv_nonlocal  # noqa: E402,F401  isort: skip
from .official_dnl import from_official_dnl, to_official_dnl  # noqa: E402,F401  isort: skip
from .torchvision import load_resnet, resnet_key_map, to_layout  # noqa: E402,F401  isort: skip

__all__ = ["from_mmcv", "register_mmcv", "to_mmcv"]
