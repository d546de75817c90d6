"""NonLocal's optional embed_gain init: the default stays official, the option changes only theta/phi."""

import math

import pytest
import torch

from globalctx.layers import NonLocal


def test_default_is_official_std():
    nl = NonLocal(256)
    assert nl.embed_gain is None
    for m in (nl.theta, nl.phi, nl.g, nl.out):
        assert abs(m.weight.std().item() - 0.01) < 1e-3


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_gain_sets_theta_phi_std_only(gain):
    torch.manual_seed(0)
    nl = NonLocal(256, embed_gain=gain)
    for m in (nl.theta, nl.phi):
        assert abs(m.weight.std().item() - gain / math.sqrt(256)) < 0.05 * gain / math.sqrt(256)
    assert abs(nl.g.weight.std().item() - 0.01) < 1e-3
    assert float(nl.norm.weight.detach().abs().sum()) == 0.0  # still an identity at insertion
    x = torch.randn(2, 256, 6, 6)
    assert torch.equal(nl(x), x)
    assert sum(p.numel() for p in nl.parameters()) == sum(p.numel() for p in NonLocal(256).parameters())


def test_gain_makes_maps_less_flat():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 8, 8)
    ent = {}
    for gain in (None, 2.0):
        torch.manual_seed(1)
        rows = NonLocal(64, embed_gain=gain).attention_rows(x, torch.arange(64)).detach()  # [N, Q, L]
        ent[gain] = float(-(rows * rows.clamp_min(1e-30).log()).sum(-1).mean() / math.log(64))
    assert ent[None] > 0.999 and ent[2.0] < 0.95


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_bad_gain_raises(bad):
    with pytest.raises(ValueError, match="embed_gain"):
        NonLocal(8, embed_gain=bad)
