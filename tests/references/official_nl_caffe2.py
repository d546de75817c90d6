"""Non-local block of the official Caffe2 video code, re-implemented in PyTorch.

Repository: facebookresearch/video-nonlocal-net, commit c253ed5eb004fa2cae0490ed46f5018a3c3b060f.

- ``lib/core/config.py`` L197-213: ``NONLOCAL.CONV_INIT_STD = 0.01``, ``NO_BIAS = 0`` (every
  1x1 conv has a bias, initialised 0), ``USE_MAXPOOL = True``, ``USE_SOFTMAX = True``,
  ``USE_ZERO_INIT_CONV = False``, ``USE_BN = True``, ``USE_SCALE = True``, ``BN_MOMENTUM = 0.9``
  (PyTorch momentum 0.1), ``BN_EPSILON = 1.0000001e-5``, ``BN_INIT_GAMMA = 0.0``,
  ``LAYER_MOD = 2``, ``CONV3_NONLOCAL = CONV4_NONLOCAL = True``. The shipped configs do not
  override ``USE_MAXPOOL``.
- ``lib/models/nonlocal_helper.py`` L16-139 ``spacetime_nonlocal``: ``theta`` on ``x``; with
  ``USE_MAXPOOL`` a max-pool kernel = stride ``[1, 2, 2]`` (time kept) of ``x`` **before**
  ``phi`` and ``g`` (L35-65); ``softmax((theta^T phi) * dim_inner^-0.5)`` over keys (L83-91);
  ``t = g p^T`` (L105); ``out`` 1x1 conv ``dim_inner -> C`` with bias, ``N(0, 0.01)`` (L115-125);
  SpatialBN with ``gamma = 0`` at init (L127-134). L142-147 ``add_nonlocal``: ``x + block(x)``.
- ``lib/models/resnet_helper.py`` L74-99: every residual block ends with ``relu(F(x) + x)``;
  L102-133 ``res_stage_nonlocal``: after block ``idx`` with ``idx % LAYER_MOD == LAYER_MOD - 1``
  (after the block's final ReLU), ``dim_inner = C / 2``.
- ``lib/models/resnet_video.py`` L159-205: NL in res3 (``nonlocal_conv3``) and res4
  (``nonlocal_conv4``) with ``layer_mod = 2`` for ResNet-50: blocks 1, 3 of res3 and 1, 3, 5 of
  res4 (5 blocks); none in res2 / res5.

For 2D (image) inputs the pooling is the 2D analogue, kernel = stride 2x2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SpacetimeNonlocal", "nonlocal_blocks", "copy_from_ours", "BN_EPSILON"]

BN_EPSILON = 1.0000001e-5


def nonlocal_blocks(depth: int = 50, layer_mod: int = 2) -> dict[int, list[int]]:
    """``{stage: [block indices followed by an NL block]}`` (stage 1 = res2 ... 4 = res5) as
    resnet_video.py L159-205 / resnet_helper.py L128 build them (ResNet-50: res3 6? no: 4 blocks)."""
    counts = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    mod3 = layer_mod
    mod4 = layer_mod * 4 - 1 if depth == 101 else layer_mod
    if depth == 101:
        mod3 = 2
    return {
        2: [i for i in range(counts[1]) if i % mod3 == mod3 - 1],
        3: [i for i in range(counts[2]) if i % mod4 == mod4 - 1],
    }


class SpacetimeNonlocal(nn.Module):
    """``add_nonlocal``: ``x + BN(out(softmax(theta^T phi / sqrt(d)) g))`` (nonlocal_helper.py).

    Args:
        dim_in: ``C``.
        dim_inner: ``d`` (official: ``C / 2``).
        use_maxpool: pool ``x`` before ``phi`` and ``g`` (official default ``True``).
        max_pool_stride: Default: ``2``.

    Shape:
        - Input: ``[N, C, H, W]`` or ``[N, C, T, H, W]``
        - Output: same
    """

    def __init__(
        self,
        dim_in: int,
        dim_inner: int | None = None,
        *,
        dims: int = 2,
        use_maxpool: bool = True,
        max_pool_stride: int = 2,
    ):
        super().__init__()
        dim_inner = dim_in // 2 if dim_inner is None else dim_inner
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d
        self.dims = dims
        self.dim_inner = dim_inner
        self.use_maxpool = use_maxpool
        self.max_pool_stride = max_pool_stride
        self.theta = conv(dim_in, dim_inner, 1)
        self.phi = conv(dim_in, dim_inner, 1)
        self.g = conv(dim_in, dim_inner, 1)
        self.out = conv(dim_inner, dim_in, 1)
        self.bn = bn(dim_in, eps=BN_EPSILON, momentum=0.1)
        for m in (self.theta, self.phi, self.g, self.out):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        nn.init.zeros_(self.bn.weight)  # BN_INIT_GAMMA = 0
        nn.init.zeros_(self.bn.bias)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_maxpool:
            return x
        s = self.max_pool_stride
        if self.dims == 2:
            return F.max_pool2d(x, s, s)
        return F.max_pool3d(x, (1, s, s), (1, s, s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        theta = self.theta(x).reshape(n, self.dim_inner, -1)  # [N, d, L]
        pooled = self._pool(x)
        phi = self.phi(pooled).reshape(n, self.dim_inner, -1)  # [N, d, L_k]
        g = self.g(pooled).reshape(n, self.dim_inner, -1)  # [N, d, L_k]
        theta_phi = torch.bmm(theta.transpose(1, 2), phi)  # [N, L, L_k] (trans_a=1)
        p = torch.softmax(theta_phi * self.dim_inner**-0.5, dim=2)
        t = torch.bmm(g, p.transpose(1, 2))  # [N, d, L] (trans_b=1)
        t = t.reshape((n, self.dim_inner) + x.shape[2:])  # [N, d, *S]
        return x + self.bn(self.out(t))


def copy_from_ours(ref: SpacetimeNonlocal, ours: nn.Module) -> None:
    """Our ``nl`` block (``theta``, ``phi``, ``g``, ``out`` linear layers, ``norm``) into ``ref``."""
    from . import copy_tensors

    s = ours.state_dict()
    k = (1,) * ref.dims
    t = {}
    for name in ("theta", "phi", "g", "out"):
        t[f"{name}.weight"] = s[f"{name}.weight"].reshape(s[f"{name}.weight"].shape + k)
        t[f"{name}.bias"] = s[f"{name}.bias"]
    for p in ("weight", "bias", "running_mean", "running_var"):
        t[f"bn.{p}"] = s[f"norm.{p}"]
    copy_tensors(ref, t)
