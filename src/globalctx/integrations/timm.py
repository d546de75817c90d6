"""globalctx models in timm's registry, and globalctx blocks as timm's ``attn_layer``.

Models, one line::

    >>> from globalctx.integrations.timm import register_timm_models
    >>> register_timm_models()                       # doctest: +SKIP
    >>> import timm
    >>> m = timm.create_model("globalctx_gc_resnet50", num_classes=10)   # doctest: +SKIP
    >>> timm.list_models("globalctx_*")              # doctest: +SKIP

Each name of :func:`globalctx.list_models` becomes ``globalctx_<name>``. timm 1.0 names are plain
identifiers: ``/`` and ``:`` mark a Hub repo or a local folder (``'globalctx/gc_resnet50'`` is
rejected as "looks like a Hugging Face Hub repo id") and ``.`` starts a pretrained tag, so the
prefix is joined with ``_``. The entrypoints build ``globalctx.create_model(name, **kwargs)``
(``num_classes``, ``in_chans``, ``drop_rate`` and the ResNet options pass through). There are
no pretrained weights in the registry: ``pretrained=True`` raises ``ValueError``; load a
torchvision/timm state dict with :func:`globalctx.convert.load_resnet` instead.

Blocks inside timm's own ResNets (the block sits after ``bn3``, before the residual add)::

    >>> from globalctx.integrations.timm import attn_layer
    >>> net = timm.create_model("resnet50", block_args=dict(attn_layer=attn_layer("gc")))  # doctest: +SKIP

Needs ``pip install 'globalctx[timm]'`` (timm and torchvision).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn

from ..extras import require
from ..layers import create_block, list_blocks
from ..models import create_model, list_models

(_timm,) = require("timm", "timm", feature="globalctx.integrations.timm")
from timm.models import is_model, register_model  # noqa: E402  (after the one-line check above)

__all__ = ["PREFIX", "attn_layer", "register_timm_models", "timm_name"]

#: The prefix of globalctx models in timm's registry.
PREFIX = "globalctx_"


def timm_name(model: str) -> str:
    """The timm name of a globalctx model: ``timm_name("gc_resnet50") == "globalctx_gc_resnet50"``."""
    return PREFIX + model


def _entrypoint(model: str) -> Callable[..., nn.Module]:
    def entrypoint(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **kw):
        if pretrained:
            raise ValueError(
                f"{timm_name(model)} has no pretrained weights in timm's registry (pretrained=True); "
                "build it with pretrained=False and load a state dict with globalctx.convert.load_resnet"
            )
        return create_model(model, **kw)

    entrypoint.__name__ = entrypoint.__qualname__ = timm_name(model)
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"``globalctx.create_model('{model}', **kwargs)`` as a timm model entrypoint."
    return entrypoint


def register_timm_models() -> list[str]:
    """Register every model of :func:`globalctx.list_models` with timm as ``globalctx_<name>``.

    Idempotent: names already in timm's registry are left as they are. Models registered later
    with globalctx are added by calling it again.

    Returns:
        The timm names of all globalctx models, sorted.
    """
    import sys

    module = sys.modules[__name__]
    for model in list_models():
        name = timm_name(model)
        if not is_model(name):
            fn = _entrypoint(model)
            setattr(module, name, fn)  # timm lists entrypoints in their module's __all__
            register_model(fn)
    return [timm_name(model) for model in list_models()]


def attn_layer(block: str, **options) -> Callable[..., nn.Module]:
    """A globalctx block as timm's ``attn_layer``: ``attn_layer("gc", rd_ratio=1/4)``.

    timm's residual blocks call ``attn_layer(channels, device=..., dtype=...)``; this returns
    ``functools.partial(create_block, block, **options)``, which builds the block there.

    Raises:
        ValueError: ``block`` is not a registered block (the message lists them).
    """
    if not isinstance(block, str) or block.lower() not in list_blocks():  # fail here, not inside timm
        raise ValueError(f"unknown block {block!r}; known blocks: {', '.join(list_blocks())}")
    return functools.partial(create_block, block, **options)
