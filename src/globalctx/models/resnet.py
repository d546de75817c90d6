"""ResNet / ResNeXt (torchvision layout) with global-context blocks at any stage and position.

Shape legend: ``N`` batch, ``C`` channels, ``H, W`` image size, ``*S`` spatial dims (2 for
images, 3 for clips in :mod:`globalctx.models.resnet3d`), ``K`` classes.

The layout is torchvision's (stride on the 3x3 conv, "v1.5"; keys ``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``), so torchvision/timm ResNet weights load
one-to-one (see :mod:`globalctx.convert.torchvision`); ``stride_in_1x1=True`` gives the original
"v1" layout (stride on the first 1x1 conv) with the same keys. Inserted blocks live in the slots
:data:`SLOT_NAMES` of each residual block (``nn.Identity`` when empty, not printed) and are placed
by :class:`~globalctx.models.Placement`.
"""

from __future__ import annotations

import torch
from torch import nn

from .placement import Placement, as_placements, init_blocks, is_block
from .registry import register_model

__all__ = [
    "ResNet",
    "ResBlockBase",
    "BasicBlock",
    "Bottleneck",
    "RESNET_DEPTHS",
    "SLOT_NAMES",
    "build_resnet",
    "conv_nd",
    "norm_nd",
]

# position -> slot of a residual block; "before_add" and "before_conv" depend on the block type
POSITION_SLOTS = {
    "after_conv1": "attn_conv1",
    "after_conv2": "attn_conv2",
    "after_conv3": "attn_conv3",
    "after_add_before_relu": "attn_pre_relu",
    "after_add": "attn_add",
}
# slots before each conv ("before_conv"); attn_pre_down is before the shortcut conv
PRE_CONV_SLOTS = ("attn_pre1", "attn_pre2", "attn_pre3", "attn_pre_down")
SLOT_NAMES = tuple(POSITION_SLOTS.values()) + PRE_CONV_SLOTS


def conv_nd(
    dims: int, cin: int, cout: int, k: int, *, stride: int = 1, groups: int = 1, kt: int = 1, st: int = 1, dd=None
):
    """A bias-free conv: ``k x k`` (2D) or ``kt x k x k`` with temporal stride ``st`` (3D, C2D/I3D)."""
    dd = dd or {}
    if dims == 2:
        return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False, **dd)
    if dims == 3:
        return nn.Conv3d(
            cin, cout, (kt, k, k), stride=(st, stride, stride), padding=(kt // 2, k // 2, k // 2),
            groups=groups, bias=False, **dd,
        )  # fmt: skip
    raise ValueError(f"dims must be 2 or 3, got {dims!r}")


def norm_nd(dims: int, channels: int, dd=None) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels, **(dd or {}))


def order_children(module: nn.Module, names) -> None:
    """Re-register ``module``'s children so those in ``names`` come first, in that order; the
    others follow in their registration order. Names and state-dict keys are unchanged."""
    first = [n for n in names if n in module._modules]
    rest = [n for n in module._modules if n not in first]
    children = dict(module._modules)
    module._modules.clear()
    for n in first + rest:
        module._modules[n] = children[n]


class HidesEmptySlots(nn.Module):
    """A module whose ``repr`` leaves out its ``nn.Identity`` children (empty block slots, a
    disabled max-pool or dropout): they compute nothing, and state-dict keys are unaffected."""

    def __repr__(self) -> str:
        lines = [
            f"({name}): " + repr(m).replace("\n", "\n  ")
            for name, m in self._modules.items()
            if m is not None and not isinstance(m, nn.Identity)
        ]
        extra = self.extra_repr()
        body = ([extra] if extra else []) + lines
        if not lines:
            return f"{self._get_name()}({extra})"
        return self._get_name() + "(\n  " + "\n  ".join(body) + "\n)"


class ResBlockBase(HidesEmptySlots):
    """The slot machinery shared by :class:`BasicBlock` and :class:`Bottleneck`.

    Subclasses set ``num_convs``, ``conv1..conv{num_convs}``, ``bn1..bn{num_convs}``,
    ``downsample`` and ``out_channels``, call :meth:`init_slots`, and run every slot of
    :data:`SLOT_NAMES` in ``forward``.
    """

    expansion = 1
    num_convs = 2

    #: children in the order ``forward`` first runs them (``relu`` is reused later); slots and
    #: layers named here that a block lacks (``attn_pre3`` and ``conv3`` in a BasicBlock) are skipped
    EXECUTION_ORDER = (
        "attn_pre1", "conv1", "bn1", "relu", "attn_conv1",
        "attn_pre2", "conv2", "bn2", "attn_conv2",
        "attn_pre3", "conv3", "bn3", "attn_conv3",
        "attn_pre_down", "downsample", "attn_pre_relu", "attn_add",
    )  # fmt: skip

    def init_slots(self) -> None:
        """Create every slot of :data:`SLOT_NAMES` empty (``nn.Identity``), and register the
        children in :attr:`EXECUTION_ORDER`, so that ``named_children()`` (and anything that walks
        it, like ``print`` or a hook on every module) follows the forward pass."""
        for name in SLOT_NAMES:
            setattr(self, name, nn.Identity())
        order_children(self, self.EXECUTION_ORDER)

    def slot_channels(self, position: str) -> list[tuple[str, int]]:
        """``[(slot name, channels)]`` that ``position`` fills in this block; ``ValueError`` if invalid."""
        if position == "before_add":
            position = f"after_conv{self.num_convs}"
        if position == "before_conv":
            out = [(PRE_CONV_SLOTS[i], getattr(self, f"conv{i + 1}").in_channels) for i in range(self.num_convs)]
            if self.downsample is not None:
                out.append(("attn_pre_down", self.downsample[0].in_channels))
            return out
        if position in ("after_add", "after_add_before_relu"):
            return [(POSITION_SLOTS[position], self.out_channels)]
        if position in ("after_conv1", "after_conv2", "after_conv3"):
            k = int(position[-1])
            if k > self.num_convs:
                raise ValueError(
                    f"position {position!r} is not valid for {type(self).__name__} ({self.num_convs} convs); "
                    f"use 'before_add' (after the last conv and BN) or after_conv1..after_conv{self.num_convs}"
                )
            return [(POSITION_SLOTS[position], getattr(self, f"bn{k}").num_features)]
        raise ValueError(f"unknown position {position!r}")

    def insert(self, position: str, block: nn.Module, slot: str | None = None) -> str:
        """Put ``block`` at ``position`` (after anything already there); returns the slot name."""
        slots = self.slot_channels(position)
        if slot is None:
            if len(slots) != 1:
                raise ValueError(f"position {position!r} has several slots {[s for s, _ in slots]}; name one")
            slot = slots[0][0]
        cur = getattr(self, slot)
        if isinstance(cur, nn.Identity):
            setattr(self, slot, block)
        elif isinstance(cur, nn.Sequential) and not is_block(cur):
            cur.append(block)
        else:
            setattr(self, slot, nn.Sequential(cur, block))
        return slot


class BasicBlock(ResBlockBase):
    """ResNet basic block: 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, + shortcut, ReLU.

    Shape:
        - Input: ``[N, C_in, *S]``
        - Output: ``[N, planes, *S / stride]``
    """

    expansion = 1
    num_convs = 2

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        width_per_group: int = 64,
        dims: int = 2,
        kt: int = 1,
        stride_in_1x1: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if stride_in_1x1:
            raise ValueError("stride_in_1x1=True needs Bottleneck blocks; a BasicBlock has no 1x1 conv")
        if groups != 1 or width_per_group != 64:
            raise ValueError(f"BasicBlock supports only groups=1, width_per_group=64, got {groups}, {width_per_group}")
        dd = {"device": device, "dtype": dtype}
        self.conv1 = conv_nd(dims, inplanes, planes, 3, stride=stride, kt=kt, dd=dd)
        self.bn1 = norm_nd(dims, planes, dd)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv_nd(dims, planes, planes, 3, dd=dd)
        self.bn2 = norm_nd(dims, planes, dd)
        self.downsample = downsample
        self.out_channels = planes
        self.init_slots()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attn_conv1(self.relu(self.bn1(self.conv1(self.attn_pre1(x)))))
        out = self.attn_conv2(self.bn2(self.conv2(self.attn_pre2(out))))
        out = self.attn_conv3(out)  # empty in a BasicBlock: every block runs every slot
        identity = x if self.downsample is None else self.downsample(self.attn_pre_down(x))
        return self.attn_add(self.relu(self.attn_pre_relu(out + identity)))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(ResBlockBase):
    """ResNet/ResNeXt bottleneck: 1x1 -> 3x3 (stride, groups) -> 1x1 (x4), + shortcut, ReLU.

    ``width = planes * width_per_group / 64 * groups`` (torchvision). ``kt`` is the temporal
    kernel of the first 1x1 conv in 3D (I3D inflation); 1 for C2D. ``stride_in_1x1=True`` puts
    the stride on the first 1x1 conv (the original MSRA "v1" layout, used by the official GCT
    ResNet) instead of the 3x3 (torchvision "v1.5"); same parameters and keys.

    Shape:
        - Input: ``[N, C_in, *S]``
        - Output: ``[N, 4 * planes, *S / stride]``
    """

    expansion = 4
    num_convs = 3

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        width_per_group: int = 64,
        dims: int = 2,
        kt: int = 1,
        stride_in_1x1: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        width = int(planes * (width_per_group / 64.0)) * groups
        if width < 1:
            raise ValueError(
                f"bottleneck width int(planes={planes} * width_per_group={width_per_group} / 64) * groups={groups} "
                f"is 0; use a larger base_width or width_per_group"
            )
        self.conv1 = conv_nd(dims, inplanes, width, 1, stride=stride_1x1, kt=kt, dd=dd)
        self.bn1 = norm_nd(dims, width, dd)
        self.conv2 = conv_nd(dims, width, width, 3, stride=stride_3x3, groups=groups, dd=dd)
        self.bn2 = norm_nd(dims, width, dd)
        self.conv3 = conv_nd(dims, width, planes * self.expansion, 1, dd=dd)
        self.bn3 = norm_nd(dims, planes * self.expansion, dd)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.out_channels = planes * self.expansion
        self.init_slots()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attn_conv1(self.relu(self.bn1(self.conv1(self.attn_pre1(x)))))
        out = self.attn_conv2(self.relu(self.bn2(self.conv2(self.attn_pre2(out)))))
        out = self.attn_conv3(self.bn3(self.conv3(self.attn_pre3(out))))
        identity = x if self.downsample is None else self.downsample(self.attn_pre_down(x))
        return self.attn_add(self.relu(self.attn_pre_relu(out + identity)))

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class ResNet(HidesEmptySlots):
    """ResNet / ResNeXt backbone with blocks placed by :class:`~globalctx.models.Placement`.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: residual blocks per stage, e.g. ``(3, 4, 6, 3)``.
        num_classes: classifier outputs (``0``: no head, ``forward`` returns pooled features).
            Default: ``1000``.
        in_chans: input channels. Default: ``3``.
        base_width: channels of the stem and of stage 1 (stages: ``base_width * (1, 2, 4, 8)``
            planes). Default: ``64``.
        groups, width_per_group: ResNeXt cardinality and width. Default: ``1``, ``64``.
        stem: ``'imagenet'`` (7x7 stride-2 conv + 3x3 stride-2 max-pool) or ``'small'``
            (CIFAR-style 3x3 stride-1 conv, no max-pool, for 28-32 px images).
            Default: ``'imagenet'``.
        attn: blocks to insert: a block name (paper-default placement), a :class:`Placement`,
            a ``Placement.to_dict()`` dict, or a list of them (normalised once, here, into
            :attr:`placements`). Default: ``None``.
        zero_init_residual: zero the last BN of each residual block. Default: ``False``.
        drop_rate: dropout before the classifier. Default: ``0.0``.
        last_stride: stride of stage 4 (``1``: output stride 16, as GSoP-Net). Default: ``2``.
        stride_in_1x1: stride on the first 1x1 conv of each downsampling Bottleneck (the
            original "v1" layout, the official GCT ResNet) instead of the 3x3. Default: ``False``.
        device, dtype: factory kwargs for every parameter, the inserted blocks' included.

    Shape:
        - Input: ``[N, in_chans, H, W]``
        - Output: ``[N, K]`` (``[N, 8 * base_width * expansion]`` with ``num_classes=0``)

    Example::

        >>> m = ResNet(Bottleneck, (3, 4, 6, 3), attn=Placement("gc", stages=(2, 3, 4)))
        >>> m(torch.randn(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """

    dims = 2
    #: children in the order ``forward`` runs them, so that torchvision's ``IntermediateLayerGetter``
    #: (which calls the children in registration order) computes the real stage outputs
    EXECUTION_ORDER = (
        "stem_attn", "conv1", "bn1", "relu", "maxpool", "layer1", "pool2", "layer2", "layer3", "layer4",
        "global_pool", "drop", "fc",
    )  # fmt: skip

    def __init__(
        self,
        block: type[ResBlockBase],
        layers,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        base_width: int = 64,
        groups: int = 1,
        width_per_group: int = 64,
        stem: str = "imagenet",
        attn=None,
        zero_init_residual: bool = False,
        drop_rate: float = 0.0,
        last_stride: int = 2,
        stride_in_1x1: bool = False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if stem not in ("imagenet", "small"):
            raise ValueError(f"stem must be 'imagenet' or 'small', got {stem!r}")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must be 4 positive block counts, got {layers!r}")
        if base_width < 1 or in_chans < 1 or num_classes < 0:
            raise ValueError(
                f"need base_width >= 1, in_chans >= 1, num_classes >= 0; got {base_width}, {in_chans}, {num_classes}"
            )
        self.factory_kwargs = {"device": device, "dtype": dtype}
        self.block_type = block
        self.groups, self.width_per_group = groups, width_per_group
        self.stride_in_1x1 = stride_in_1x1
        self.inplanes = base_width
        self.build_stem(in_chans, base_width, stem)
        self.layer1 = self._make_layer(base_width, layers[0])
        self.build_pool2()
        self.layer2 = self._make_layer(base_width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(base_width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(base_width * 8, layers[3], stride=last_stride)
        self.num_features = base_width * 8 * block.expansion
        self.feature_info = [
            {"num_chs": base_width * (2**i) * block.expansion, "module": f"layer{i + 1}"} for i in range(4)
        ]
        self._build_head(num_classes, drop_rate)
        order_children(self, self.EXECUTION_ORDER)
        self.zero_init_residual = zero_init_residual
        self.placements = []  # the Placement objects applied, in order
        self.init_weights()
        if attn is not None:
            self.add_placement(attn)

    # -- construction -------------------------------------------------------------------------
    # -- hooks a subclass overrides (ResNet3d): stem, the pool after stage 1, per-block options --
    def build_stem(self, in_chans: int, width: int, stem: str) -> None:
        """Set ``stem_attn``, ``conv1``, ``bn1``, ``relu`` and ``maxpool``."""
        dd = self.factory_kwargs
        self.stem_attn = nn.Identity()
        if stem == "small":
            self.conv1 = nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False, **dd)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False, **dd)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width, **dd)
        self.relu = nn.ReLU(inplace=True)

    def build_pool2(self) -> None:
        """Set ``pool2``, run between stage 1 and stage 2 (identity in 2D)."""
        self.pool2 = nn.Identity()

    def _build_head(self, num_classes: int, drop_rate: float) -> None:
        self.global_pool = nn.AdaptiveAvgPool2d(1) if self.dims == 2 else nn.AdaptiveAvgPool3d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, **self.factory_kwargs) if num_classes > 0 else nn.Identity()

    def block_kwargs(self, stage: int, index: int) -> dict:
        """Extra residual-block options for block ``index`` of ``stage``."""
        return {}

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        block, dims, dd = self.block_type, self.dims, self.factory_kwargs
        stage = len([n for n in ("layer1", "layer2", "layer3") if hasattr(self, n)]) + 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv_nd(dims, self.inplanes, planes * block.expansion, 1, stride=stride, dd=dd),
                norm_nd(dims, planes * block.expansion, dd),
            )
        kw = dict(groups=self.groups, width_per_group=self.width_per_group, dims=dims, **dd)
        if self.stride_in_1x1:
            kw["stride_in_1x1"] = True
        out = [block(self.inplanes, planes, stride=stride, downsample=downsample, **kw, **self.block_kwargs(stage, 0))]
        self.inplanes = planes * block.expansion
        for i in range(1, blocks):
            out.append(block(self.inplanes, planes, **kw, **self.block_kwargs(stage, i)))
        return nn.Sequential(*out)

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def add_placement(self, attn) -> list[tuple[str, nn.Module]]:
        """Insert the blocks of ``attn`` (anything ``attn=`` takes: a name, a :class:`Placement`,
        a dict, or a list of them, applied in order); returns ``[(qualified slot name, block)]``.

        Every placement is checked (positions, indices, widths, block options) and its blocks
        built before any is inserted, so a failing call leaves the model unchanged.
        """
        plan = []
        for p in as_placements(attn):
            found = self._plan(p)
            if not found:
                raise ValueError(f"{p!r} selects no location in this model")
            plan.append((p, found))
        inserted = []
        for p, found in plan:
            for where, rb, slot, blk in found:
                if rb is None:
                    stem = self.stem_attn
                    self.stem_attn = blk if isinstance(stem, nn.Identity) else nn.Sequential(stem, blk)
                else:
                    rb.insert(p.position, blk, slot=slot)
                inserted.append((where, blk))
            self.placements.append(p)
        return inserted

    def _plan(self, p: Placement) -> list[tuple[str, ResBlockBase | None, str, nn.Module]]:
        """``[(qualified slot name, residual block or None for the stem, slot, new block)]``."""
        found = []
        if p.stem:
            found.append(("stem_attn", None, "stem_attn", p.build(self.conv1.in_channels, **self.factory_kwargs)))
        for s, layer in enumerate(self.stages(), start=1):
            for i in p.select(s, len(layer)):
                rb = layer[i]
                for slot, ch in rb.slot_channels(p.position):
                    found.append((f"layer{s}.{i}.{slot}", rb, slot, p.build(ch, stage=s, **self.factory_kwargs)))
        return found

    def init_weights(self) -> None:
        """torchvision init (kaiming-normal fan_out convs, BN 1/0), then the blocks' own init last.

        Modules inside inserted blocks are skipped by the blanket init, and :func:`init_blocks`
        runs at the end, so a block's zero-init (GC's last FC, NL's last BN) survives.
        """
        skip: set[int] = set()
        for m in self.modules():
            if is_block(m):
                skip.update(id(x) for x in m.modules())
        for m in self.modules():
            if id(m) in skip:
                continue
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                m.reset_parameters()
        if self.zero_init_residual:
            for m in self.modules():
                if isinstance(m, ResBlockBase):
                    m.zero_init_last()
        init_blocks(self)

    # -- forward ------------------------------------------------------------------------------
    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(self.stem_attn(x)))))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the four stages ``[c2, c3, c4, c5]`` (for detection / segmentation necks)."""
        x = self.forward_stem(x)
        c2 = self.layer1(x)
        c3 = self.layer2(self.pool2(c2))
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_chans, *S] -> [N, num_features, *S / 32]`` (before pooling)."""
        x = self.forward_stem(x)
        x = self.pool2(self.layer1(x))
        return self.layer4(self.layer3(self.layer2(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)  # [N, num_features]
        x = self.drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------
# plain registered models (the paper models with blocks are in globalctx.models.zoo)

# depth -> (residual block, blocks per stage)
RESNET_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
                 101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}  # fmt: skip


def build_resnet(depth: int, *, num_classes: int = 1000, in_chans: int = 3, attn=None, **kwargs) -> ResNet:
    """ResNet-``depth`` (18, 34, 50, 101, 152) with ``attn`` blocks; ``kwargs`` are :class:`ResNet` options."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"unknown ResNet depth {depth!r}; valid depths: {', '.join(map(str, RESNET_DEPTHS))}")
    block, layers = RESNET_DEPTHS[depth]
    return ResNet(block, layers, num_classes=num_classes, in_chans=in_chans, attn=attn, **kwargs)


def _register_plain(name: str, depth: int, doc: str, **fixed) -> None:
    def fn(*, num_classes: int = 1000, in_chans: int = 3, attn=None, **kw) -> ResNet:
        return build_resnet(depth, num_classes=num_classes, in_chans=in_chans, attn=attn, **fixed, **kw)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    register_model(name)(fn)


for _d in RESNET_DEPTHS:
    _register_plain(f"resnet{_d}", _d, f"ResNet-{_d} (He et al., arXiv 1512.03385), torchvision layout.")
    _register_plain(
        f"resnet{_d}_small",
        _d,
        f"ResNet-{_d} with a CIFAR-style stem (3x3 stride-1 conv, no max-pool) for 28-32 px images; "
        "``base_width`` (default 64) scales every stage.",
        stem="small",
    )
_register_plain("resnext50_32x4d", 50, "ResNeXt-50 32x4d (Xie et al., arXiv 1611.05431).", groups=32, width_per_group=4)
_register_plain(
    "resnext101_32x8d", 101, "ResNeXt-101 32x8d (Xie et al., arXiv 1611.05431).", groups=32, width_per_group=8
)
