"""``soca`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import torch
from torch import nn

from covariance_reference import ref_covpool, ref_sqrtm
from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- SoCA (official SOCA, crop 1000)
class RefSOCA(nn.Module):
    def __init__(self, c, r=16):
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(c, c // r, 1, bias=True), nn.ReLU(), nn.Conv2d(c // r, c, 1, bias=True), nn.Sigmoid()
        )

    def forward(self, x):
        b, c = x.shape[:2]
        cov = ref_covpool(x)
        root = ref_sqrtm(cov, 5)
        return self.conv_du(root.mean(1).view(b, c, 1, 1)) * x


def test_soca_matches_reference():
    blk = create_block("soca", 32).to(DT)
    ref = RefSOCA(32).to(DT)
    with torch.no_grad():
        ref.conv_du[0].weight.copy_(blk.transform.fc1.weight.view(2, 32, 1, 1))
        ref.conv_du[0].bias.copy_(blk.transform.fc1.bias)
        ref.conv_du[2].weight.copy_(blk.transform.fc2.weight.view(32, 2, 1, 1))
        ref.conv_du[2].bias.copy_(blk.transform.fc2.bias)
    x = torch.randn(2, 32, 7, 6, dtype=DT)
    close(blk(x), ref(x))


def test_newton_schulz_approximates_sqrt():
    from globalctx.layers.parts.covariance import covariance_pool, newton_schulz_sqrt

    x = torch.randn(2, 6, 40, dtype=DT)
    cov = covariance_pool(x)
    root = newton_schulz_sqrt(cov, 20)
    close(root @ root, cov, 1e-6)
    close(newton_schulz_sqrt(cov, 5), ref_sqrtm(cov, 5))
    close(newton_schulz_sqrt(cov, 2), ref_sqrtm(cov, 2))
