"""Backbones with global-context blocks: ResNet/ResNeXt (2D), C2D ResNet (video), and ``plug``.

``create_model(name, *, num_classes, in_chans, attn, **kw)``, ``list_models()``, ``Placement``.
"""

from .placement import POSITIONS, Placement, default_placement, init_blocks
from .plug import Inserted, plug
from .registry import create_model, get_model, list_models, register_model
from .resnet import SLOT_NAMES, BasicBlock, Bottleneck, ResBlockBase, ResNet, build_resnet
from .resnet3d import ResNet3d, inflate_state_dict

from . import resnet3d, zoo  # noqa: E402,F401  isort: skip  (registers the paper models)

__all__ = [
    "POSITIONS",
    "SLOT_NAMES",
    "BasicBlock",
    "Bottleneck",
    "Placement",
    "ResBlockBase",
    "ResNet",
    "ResNet3d",
    "build_resnet",
    "create_model",
    "default_placement",
    "get_model",
    "Inserted",
    "inflate_state_dict",
    "init_blocks",
    "plug",
    "list_models",
    "register_model",
]
