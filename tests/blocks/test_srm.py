"""``srm`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import pytest
import torch
from torch import nn

from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- SRM (official SRMLayer)
class RefSRM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(c, 2))
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        b, c = x.shape[:2]
        mean = x.view(b, c, -1).mean(-1).unsqueeze(-1)
        std = (x.view(b, c, -1).var(-1) + 1e-5).sqrt().unsqueeze(-1)
        t = torch.cat((mean, std), -1)
        z = (t * self.cfc[None]).sum(2)[:, :, None, None]
        return x * torch.sigmoid(self.bn(z))


@pytest.mark.parametrize("train", [True, False])
def test_srm_matches_reference(train):
    blk = create_block("srm", 16).to(DT)
    ref = RefSRM(16).to(DT)
    with torch.no_grad():
        for p in (blk.transform.cfc, blk.transform.bn.weight, blk.transform.bn.bias):
            p.normal_()
        blk.transform.bn.running_mean.normal_()
        blk.transform.bn.running_var.uniform_(0.5, 2)
    ref.cfc.data.copy_(blk.transform.cfc.data)
    ref.bn.load_state_dict(blk.transform.bn.state_dict())
    blk.train(train)
    ref.train(train)
    x = torch.randn(4, 16, 5, 6, dtype=DT)
    close(blk(x), ref(x))
    close(blk.transform.bn.running_mean, ref.bn.running_mean)


def _std_only_srm(seed=0):
    """An ``srm`` block whose CFC reads the standard deviation only (``w_0 = 0``), and its float64 copy."""
    torch.manual_seed(seed)
    blk = create_block("srm", 16)
    with torch.no_grad():
        blk.transform.cfc.normal_()
        blk.transform.cfc[:, 0] = 0
    ref = create_block("srm", 16).to(DT)
    ref.load_state_dict(blk.state_dict())
    return blk, ref


def test_srm_large_mean_train_mode_matches_float64():
    # mean 1000, std 1e-3: a one-pass sum x^2 - L mu^2 in fp32 lost every digit of the variance
    # (gate error 0.35 vs float64); the two-pass variance keeps fp32 accuracy
    blk, ref = _std_only_srm()
    blk.train(), ref.train()
    x = 1000 + 1e-3 * torch.randn(4, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        gate, gate64 = blk(x) / x, ref(x.to(DT)) / x.to(DT)
    assert (gate.to(DT) - gate64).abs().max().item() < 1e-5
    std, std64 = blk.context(x)[..., 1].to(DT), ref.context(x.to(DT))[..., 1]
    assert ((std - std64).abs() / std64).max().item() < 1e-5


def test_srm_stride_zero_input_equals_contiguous():
    # every position of a channel the same value, stored once (stride 0 along L)
    blk, _ = _std_only_srm()
    blk.train()
    x = (1000 + 1e-3 * torch.randn(4, 16, 1, generator=torch.Generator().manual_seed(2))).expand(4, 16, 64)
    assert x.stride(-1) == 0
    with torch.no_grad():
        torch.testing.assert_close(blk.context(x), blk.context(x.contiguous()), rtol=1e-6, atol=0)
        torch.testing.assert_close(blk(x), blk(x.contiguous()), rtol=1e-6, atol=1e-6)
        # zero variance: sigma = sqrt(eps), as the official sqrt(var + eps)
        torch.testing.assert_close(blk.context(x)[..., 1], torch.full((4, 16), 1e-5**0.5), rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["srm", "gct"])
@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan"), float("inf")])
def test_non_positive_eps_refused(name, eps):
    with pytest.raises(ValueError, match=rf"{name}: eps must be a finite number > 0.*got {eps!r}"):
        create_block(name, 16, eps=eps)
