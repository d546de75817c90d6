"""Named presets of the channel-attention family: ``eca``, ``fca``, ``srm``, ``gct``, ``gsop``,
``soca``, ``enc``, ``rcan``, ``dia``, ``ban``.

Each preset configures context / transform / fusion parts as the paper's official code and is
assembled by :class:`~globalctx.layers.GlobalContextBlock` (``ban`` has a per-position gate and
is its own module). What each block computes at init is stated in its docstring and in the
channel-attention docs.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims (FcaNet: 2 only).
"""

from __future__ import annotations

from torch import nn

from .bilinear import BilinearAttention
from .channel_block import ChannelContextBlock
from .context import AvgPool
from .context_extra import DCTPool, NormEmbed, StylePool
from .covariance import CovSqrtPool, GSoPPool
from .dia import DIACell, DIAStage  # noqa: F401  (DIAStage re-exported by globalctx.layers)
from .encoding import EncModule, EncodingPool
from .fusion import ScaleFusion
from .fusion_extra import MulFusion, ResidualGateFusion, TanhGateFusion
from .helpers import rd_width
from .registry import register_block
from .transform import Bottleneck, LinearTransform
from .transform_extra import ChannelConv1d, GCTTransform, RowConvTransform, StyleIntegration, eca_kernel_size

__all__ = [
    "eca_block",
    "fca_block",
    "srm_block",
    "gct_block",
    "gsop_block",
    "soca_block",
    "enc_block",
    "rcan_block",
    "dia_block",
    "ban_block",
]


@register_block("eca")
def eca_block(
    channels: int,
    *,
    kernel_size: int | None = None,
    gamma: float = 2.0,
    beta: float = 1.0,
    zero_init_last: bool = False,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> ChannelContextBlock:
    """Efficient Channel Attention (Wang et al., CVPR 2020, arXiv 1910.03151).

    ``y = x * sigmoid(conv1d_k(GAP(x)))``, a 1D conv across channels without bias (``k``
    parameters). ``kernel_size=None`` uses the paper's rule ``k = |log2(C)/gamma + beta/gamma|_odd``
    (:func:`~globalctx.layers.transform_extra.eca_kernel_size`); the released ECA-Net50 instead
    used ``k = 3, 5, 5, 7`` for its four stages (pass ``kernel_size`` to reproduce it).

    At init (official: default conv init) the gate is ``sigmoid`` of a random local average,
    about 0.5: not an identity. ``zero_init_last=True, identity_init=True`` gives exactly ``x``.
    """
    k = eca_kernel_size(channels, gamma, beta) if kernel_size is None else kernel_size
    return ChannelContextBlock(
        channels,
        context=AvgPool(),
        transform=ChannelConv1d(channels, k, zero_init_last=zero_init_last, device=device, dtype=dtype),
        fusion=ScaleFusion(identity_init=identity_init),
    )


@register_block("fca")
def fca_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    freq_sel: str = "top16",
    dct_size: int | tuple[int, int] = 7,
    zero_init_last: bool = False,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> ChannelContextBlock:
    """FcaNet multi-spectral channel attention (Qin et al., ICCV 2021, arXiv 2012.11879).

    ``y = x * sigmoid(W_2 ReLU(W_1 DCT(x)))``: :class:`~globalctx.layers.context_extra.DCTPool`
    (channels split into equal groups, one 2D-DCT frequency each, official frequency tables) and
    an SE bottleneck without biases (8,192 parameters at C=256, r16; the DCT filters are buffers).
    2D inputs only. Any input size: see ``DCTPool``'s size rule (official result, computed
    without ``adaptive_avg_pool2d``).

    At init: gate about 0.5 (official init); ``zero_init_last=True, identity_init=True`` gives
    exactly ``x``.
    """
    cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="fca")
    dd = {"device": device, "dtype": dtype}
    return ChannelContextBlock(
        channels,
        context=DCTPool(channels, freq_sel=freq_sel, dct_size=dct_size, **dd),
        transform=Bottleneck(channels, cr, bias=False, zero_init_last=zero_init_last, **dd),
        fusion=ScaleFusion(identity_init=identity_init),
    )


@register_block("srm")
def srm_block(
    channels: int,
    *,
    eps: float = 1e-5,
    zero_init_last: bool = True,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> ChannelContextBlock:
    """Style-based Recalibration Module (Lee et al., ICCV 2019, arXiv 1903.10829).

    ``y = x * sigmoid(BN(w_0 mu + w_1 sigma))`` with per-channel mean ``mu`` and
    ``sigma = sqrt(var_unbiased + 1e-5)``; the channel-wise FC ``w [C, 2]`` is zero-initialised
    (official). ``4 C`` parameters (1,024 at C=256); all of them are listed by
    ``no_weight_decay()`` (official: weight decay 0).

    At init: ``z = 0``, BN gives 0, gate ``sigmoid(0) = 0.5``: the official block halves its
    input. ``identity_init=True`` (gate ``2 sigmoid``) gives exactly ``x``.
    Edge cases: batch size 1 in train mode normalises with the BN running statistics (no error,
    statistics not updated); a 1-position input uses ``sigma = sqrt(eps)`` (no NaN).
    """
    return ChannelContextBlock(
        channels,
        context=StylePool(eps=eps),
        transform=StyleIntegration(channels, zero_init_last=zero_init_last, device=device, dtype=dtype),
        fusion=ScaleFusion(identity_init=identity_init),
    )


@register_block("gct")
def gct_block(
    channels: int,
    *,
    mode: str = "l2",
    eps: float = 1e-5,
    after_relu: bool = False,
    device=None,
    dtype=None,
) -> ChannelContextBlock:
    """Gated Channel Transformation (Yang et al., CVPR 2020, arXiv 1909.11519).

    ``s = ||x_c||_2`` (or L1), ``e = alpha s``, ``t = gamma e / sqrt(mean_C e^2 + eps) + beta``,
    ``y = x (1 + tanh(t))``. ``3 C`` parameters (768 at C=256). ``no_weight_decay()`` returns
    ``{'transform.beta'}`` (paper setting). An unknown ``mode`` raises ``ValueError``.

    At init (``gamma = beta = 0``): gate exactly 1, the block is the identity.
    """
    return ChannelContextBlock(
        channels,
        context=NormEmbed(mode=mode, eps=eps, after_relu=after_relu),
        transform=GCTTransform(channels, mode=mode, eps=eps, device=device, dtype=dtype),
        fusion=TanhGateFusion(),
    )


@register_block("gsop")
def gsop_block(
    channels: int,
    *,
    cov_channels: int = 128,
    stride: int = 1,
    zero_init_last: bool = False,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> ChannelContextBlock:
    """GSoP-Net1 channel attention (Gao et al., CVPR 2019, arXiv 1811.12006).

    ReLU, 1x1 conv ``C -> 128`` (bias) + BN + ReLU, covariance ``[128, 128]``, row-BN, row-wise
    conv (``4 x 128`` per row, bias), ReLU, 1x1 conv ``512 -> C`` (bias), sigmoid, ``y = x * s``.
    ``641 C + 66,688`` parameters (230,784 at C=256). Covariance in fp32.

    At init: gate ``sigmoid`` of a random projection (official init), not an identity;
    ``zero_init_last=True, identity_init=True`` gives exactly ``x``.
    """
    dd = {"device": device, "dtype": dtype}
    return ChannelContextBlock(
        channels,
        context=GSoPPool(channels, cov_channels, stride=stride, **dd),
        transform=RowConvTransform(channels, cov_channels, zero_init_last=zero_init_last, **dd),
        fusion=ScaleFusion(identity_init=identity_init),
    )


@register_block("soca")
def soca_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    iterations: int = 5,
    max_size: int | None = 1000,
    zero_init_last: bool = False,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> ChannelContextBlock:
    """Second-order channel attention (Dai et al., SAN, CVPR 2019,
    https://openaccess.thecvf.com/content_CVPR_2019/html/Dai_Second-Order_Attention_Network_for_Single_Image_Super-Resolution_CVPR_2019_paper.html).

    ``z = mean_rows(sqrt(Cov(crop(x))))`` (Newton-Schulz, 5 iterations, fp32 even under autocast),
    ``y = x * sigmoid(W_2 ReLU(W_1 z + b_1) + b_2)``; r = 16 as SAN builds it (580 parameters at
    C=64). ``max_size=1000`` is the official centre crop of long spatial dims; ``None`` disables.

    At init: gate about 0.5 (official init); ``zero_init_last=True, identity_init=True`` gives
    exactly ``x``.
    """
    cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="soca")
    dd = {"device": device, "dtype": dtype}
    return ChannelContextBlock(
        channels,
        context=CovSqrtPool(iterations=iterations, max_size=max_size),
        transform=Bottleneck(channels, cr, bias=True, zero_init_last=zero_init_last, **dd),
        fusion=ScaleFusion(identity_init=identity_init),
    )


@register_block("enc")
def enc_block(
    channels: int,
    *,
    num_codes: int = 32,
    num_classes: int | None = None,
    zero_init_last: bool = False,
    identity_init: bool = False,
    final_relu: bool = True,
    device=None,
    dtype=None,
) -> EncModule:
    """EncNet's EncModule (Zhang et al., CVPR 2018, arXiv 1803.08904).

    ``e = mean_K ReLU(BN(Encoding(ReLU(BN(W x)))))``, ``gamma = sigmoid(W_fc e + b)``,
    ``y = ReLU(x + x * gamma)``; with ``num_classes`` an SE-loss head ``Linear(C, num_classes)``
    (``EncModule.forward_se``). 572,571 parameters at C=512, K=32, 59 classes.

    At init: ``y = ReLU(x (1 + gamma))`` with ``gamma`` about 0.5: not an identity.
    ``zero_init_last=True, identity_init=True`` gives ``ReLU(x)`` (``x`` for the usual
    non-negative input); add ``final_relu=False`` for exactly ``x``.
    """
    dd = {"device": device, "dtype": dtype}
    return EncModule(
        channels,
        context=EncodingPool(channels, num_codes, **dd),
        transform=LinearTransform(channels, bias=True, zero_init_last=zero_init_last, **dd),
        fusion=ResidualGateFusion(identity_init=identity_init, final_relu=final_relu),
        num_classes=num_classes,
        **dd,
    )


@register_block("rcan")
def rcan_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    zero_init_last: bool = False,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> ChannelContextBlock:
    """RCAN channel attention (Zhang et al., ECCV 2018, arXiv 1807.02758).

    ``y = x * sigmoid(W_2 ReLU(W_1 GAP(x) + b_1) + b_2)``, r = 16, biases (580 parameters at
    C=64): the SE structure, named as in super-resolution code.

    At init: gate about 0.5; ``zero_init_last=True, identity_init=True`` gives exactly ``x``.
    """
    cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="rcan")
    return ChannelContextBlock(
        channels,
        context=AvgPool(),
        transform=Bottleneck(channels, cr, bias=True, zero_init_last=zero_init_last, device=device, dtype=dtype),
        fusion=ScaleFusion(identity_init=identity_init),
    )


@register_block("dia")
def dia_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 4,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    cell: DIACell | None = None,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> ChannelContextBlock:
    """DIANet attention (Huang et al., AAAI 2020, arXiv 1905.10671): ``y = x * h``,
    ``h = LSTMCell(GAP(x), state)``.

    Pass one ``cell`` to all blocks of a stage, or wrap the stage in
    :class:`~globalctx.layers.dia.DIAStage` (which shares the first block's cell and carries the
    state across the blocks, reset per forward). A lone block (no stage) starts from a zero state
    on every call. The residual add and ReLU stay in the host block, as in the official code.

    At init: ``h`` in ``(0, 1)``, about 0.25 (not an identity). ``identity_init=True`` zeroes the
    last layer of both small cells (``h = 0.25`` exactly, at every step) and scales by 4: ``y = x``.
    """
    if cell is None:
        cell = DIACell(
            channels,
            rd_ratio=rd_ratio,
            rd_channels=rd_channels,
            rd_divisor=rd_divisor,
            zero_init_last=identity_init,
            device=device,
            dtype=dtype,
        )
    elif cell.channels != channels:
        raise ValueError(f"dia: cell has {cell.channels} channels, block has {channels}")
    return ChannelContextBlock(
        channels, context=AvgPool(), transform=cell, fusion=MulFusion(scale=4.0 if identity_init else 1.0)
    )


@register_block("ban")
def ban_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> nn.Module:
    """Bilinear attention with attention-in-attention (Fang et al., ICCV 2019,
    https://openaccess.thecvf.com/content_ICCV_2019/html/Fang_Bilinear_Attention_Networks_for_Person_Retrieval_ICCV_2019_paper.html);
    see
    :class:`~globalctx.layers.bilinear.BilinearAttention`.

    At init: gate in ``[0.5, 1)`` per position; ``identity_init=True`` gives exactly ``x``.
    """
    return BilinearAttention(
        channels,
        rd_ratio=rd_ratio,
        rd_channels=rd_channels,
        rd_divisor=rd_divisor,
        identity_init=identity_init,
        device=device,
        dtype=dtype,
    )
