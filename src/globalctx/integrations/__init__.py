"""Adapters to other libraries' registries; each submodule imports its library on import.

- :mod:`globalctx.integrations.mmcv`: every block as an mmcv plugin (``type='globalctx.gc'``) in
  mmengine's ``MODELS`` registry, for mmdet / mmseg configs. Needs ``pip install 'globalctx[mmcv]'``.
- :mod:`globalctx.integrations.timm`: ``register_timm_models()`` makes every globalctx model a
  timm model (``timm.create_model('globalctx_gc_resnet50')``). Needs ``pip install timm``.

``import globalctx`` does not import this package; import the submodule you need.
"""
