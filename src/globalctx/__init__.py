"""globalctx: global-context blocks for ConvNets.

Non-local networks, Simplified NL and the Global Context block (GCNet), Disentangled NL,
Squeeze-and-Excitation and its channel-attention family, behind one API::

    import globalctx
    gc = globalctx.create_block("gc", 256)
    globalctx.list_blocks()
"""

from . import analysis, convert, layers
from .bench import profile
from .layers import create_block, list_blocks, register_block
from .models import Placement, create_model, list_models, plug

__version__ = "0.1.0"

__all__ = [
    "Placement",
    "__version__",
    "analysis",
    "convert",
    "create_block",
    "create_model",
    "layers",
    "list_blocks",
    "list_models",
    "plug",
    "profile",
    "register_block",
]
