"""Every globalctx block as an mmcv plugin layer, for mmdet / mmseg / mmpretrain configs.

Importing this module registers each block of :func:`globalctx.list_blocks` in mmengine's
``MODELS`` registry under the scope ``globalctx``: ``type='globalctx.gc'``, ``'globalctx.nl'``,
... The scope keeps the names apart from mmcv's own plugins and from Python modules (a bare
``type='gc'`` would resolve to Python's ``gc`` module). The plugins follow mmcv's convention:
they are built with ``in_channels=`` (plus the block's own options) and have an ``_abbr_``
(``globalctx_gc``), which mmcv uses as the attribute name inside the host block.

In an mmdet config::

    custom_imports = dict(imports=["globalctx.integrations.mmcv"], allow_failed_imports=False)
    model = dict(backbone=dict(plugins=[
        dict(cfg=dict(type="globalctx.gc", rd_ratio=1 / 16), stages=(False, True, True, True),
             position="after_conv3"),
    ]))

Directly::

    >>> import globalctx.integrations.mmcv
    >>> from mmcv.cnn import build_plugin_layer
    >>> name, layer = build_plugin_layer(dict(type="globalctx.gc"), in_channels=256)
    >>> name
    'globalctx_gc'

A plugin class builds the globalctx block itself (``create_block(name, in_channels, **options)``),
not a wrapper, so state-dict keys are the block's own. Needs ``pip install 'globalctx[mmcv]'``.
"""

from __future__ import annotations

from torch import nn

from ..extras import require
from ..layers import create_block, list_blocks

(_mmengine_registry,) = require("mmcv", "mmengine.registry", feature="globalctx.integrations.mmcv")

__all__ = ["SCOPE", "GlobalctxPlugin", "plugin_type", "register_mmcv_plugins", "registry"]

#: The mmengine scope of the plugins: ``type=f"{SCOPE}.{block}"``.
SCOPE = "globalctx"


class GlobalctxPlugin:
    """Base of the plugin classes: calling one returns ``create_block(block, in_channels, **options)``.

    mmcv's ``build_plugin_layer`` needs a class (it reads ``_abbr_`` from it); each registered
    subclass names one block in ``block``. The object returned is the globalctx block itself
    (``__new__`` returns it, so no instance of this class is ever made).

    Args:
        in_channels: the channels at the plugin position (mmcv's host passes it).
        **options: the block's own options (``rd_ratio``, ``zero_init_last``, ...).

    Shape:
        - Input: ``[N, in_channels, *spatial]``
        - Output: same as input.
    """

    block: str = ""
    _abbr_: str = ""

    def __new__(cls, in_channels: int, **options) -> nn.Module:
        if not cls.block:
            raise TypeError("GlobalctxPlugin is a base class; build a registered plugin (type='globalctx.<block>')")
        return create_block(cls.block, in_channels, **options)


def registry():
    """The mmengine registry of scope ``globalctx`` (a child of mmengine's ``MODELS``), made once."""
    models = _mmengine_registry.MODELS
    child = models.children.get(SCOPE)
    if child is None:
        child = _mmengine_registry.Registry("model", parent=models, scope=SCOPE)
    return child


def plugin_type(block: str) -> str:
    """The config ``type`` of a block: ``plugin_type("gc") == "globalctx.gc"``."""
    return f"{SCOPE}.{block}"


def _plugin_class(block: str) -> type:
    return type(
        f"{block.capitalize()}Plugin",
        (GlobalctxPlugin,),
        {
            "block": block,
            "_abbr_": f"{SCOPE}_{block}",
            "__module__": __name__,
            "__doc__": f"mmcv plugin ``{plugin_type(block)}``: ``create_block('{block}', in_channels, **options)``.",
        },
    )


def register_mmcv_plugins() -> list[str]:
    """Register every block of :func:`globalctx.list_blocks` not yet registered; return all types.

    Runs on import; call it again after :func:`globalctx.register_block` to add new blocks.

    Returns:
        The config types of all blocks, sorted: ``['globalctx.ban', ..., 'globalctx.srm']``.
    """
    reg = registry()
    for block in list_blocks():
        if block not in reg.module_dict:
            reg.register_module(name=block, module=_plugin_class(block))
    return [plugin_type(block) for block in list_blocks()]


register_mmcv_plugins()
