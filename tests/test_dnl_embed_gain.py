"""DisentangledNonLocal's optional embed_gain init: the default stays official, the option changes only theta/phi."""

import math

import pytest
import torch

from globalctx.layers import create_block
from globalctx.layers.blocks.dnl import DisentangledNonLocal


def test_default_is_official_std():
    dnl = DisentangledNonLocal(256)
    assert dnl.embed_gain is None
    for m in (dnl.theta, dnl.phi, dnl.unary.conv_mask):
        assert abs(m.weight.std().item() - 0.01) < 1e-3


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_gain_sets_theta_phi_std_only(gain):
    torch.manual_seed(0)
    dnl = DisentangledNonLocal(256, embed_gain=gain)
    for m in (dnl.theta, dnl.phi):
        assert abs(m.weight.std().item() - gain / math.sqrt(256)) < 0.05 * gain / math.sqrt(256)
    assert abs(dnl.unary.conv_mask.weight.std().item() - 0.01) < 1e-3
    assert float(dnl.g.weight.detach().abs().sum()) == 0.0  # zero_init_last: still an identity
    x = torch.randn(2, 256, 6, 6)
    assert torch.equal(dnl(x), x)
    assert sum(p.numel() for p in dnl.parameters()) == sum(p.numel() for p in DisentangledNonLocal(256).parameters())


def test_gain_through_registry_and_makes_pairwise_maps_less_flat():
    x = torch.randn(2, 64, 8, 8)
    ent = {}
    for gain in (None, 2.0):
        torch.manual_seed(1)
        opts = {} if gain is None else {"embed_gain": gain}
        rows = create_block("dnl", 64, temperature=1.0, **opts).attention_rows(x, torch.arange(64))  # [N, Q, L]
        ent[gain] = float(-(rows * rows.clamp_min(1e-30).log()).sum(-1).mean() / math.log(64))
    assert ent[None] > 0.999 and ent[2.0] < 0.95


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bad_gain_raises(bad):
    with pytest.raises(ValueError, match="embed_gain"):
        DisentangledNonLocal(8, embed_gain=bad)
