"""``enc`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import torch
import torch.nn.functional as F
from torch import nn

from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- EncNet (official Encoding + EncModule)
class RefEncoding(nn.Module):
    def __init__(self, d, k):
        super().__init__()
        self.codewords = nn.Parameter(torch.empty(k, d))
        self.scale = nn.Parameter(torch.empty(k))

    def forward(self, x):
        b, d = x.shape[:2]
        x = x.view(b, d, -1).transpose(1, 2)  # [B, N, D]
        diff = x.unsqueeze(2) - self.codewords[None, None]  # [B, N, K, D]
        sl2 = self.scale.view(1, 1, -1) * diff.pow(2).sum(3)
        a = F.softmax(sl2, dim=2)
        return (a.unsqueeze(3) * diff).sum(1)  # [B, K, D]


class RefEncModule(nn.Module):
    def __init__(self, c, ncls, k=32):
        super().__init__()
        self.encoding = nn.Sequential(
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),
            RefEncoding(c, k),
            nn.BatchNorm1d(k),
            nn.ReLU(),
        )
        self.fc = nn.Sequential(nn.Linear(c, c), nn.Sigmoid())
        self.selayer = nn.Linear(c, ncls)

    def forward(self, x):
        en = self.encoding(x).mean(1)
        b, c = x.shape[:2]
        gamma = self.fc(en).view(b, c, 1, 1)
        return F.relu(x + x * gamma), self.selayer(en)


def test_enc_matches_reference():
    c, k, ncls = 16, 4, 5
    blk = create_block("enc", c, num_codes=k, num_classes=ncls).to(DT)
    ref = RefEncModule(c, ncls, k).to(DT)
    ctx = blk.context
    with torch.no_grad():
        ref.encoding[0].weight.copy_(ctx.proj.weight.view(c, c, 1, 1))
        ref.encoding[1].load_state_dict(ctx.bn.state_dict())
        ref.encoding[3].codewords.copy_(ctx.encoding.codewords)
        ref.encoding[3].scale.copy_(ctx.encoding.scale)
        ref.encoding[4].load_state_dict(ctx.code_bn.state_dict())
        ref.fc[0].load_state_dict(blk.transform.fc.state_dict())
        ref.selayer.load_state_dict(blk.se_head.state_dict())
    x = torch.randn(3, c, 5, 4, dtype=DT)
    y, logits = blk.forward_se(x)
    ry, rl = ref(x)
    # distances via |x|^2 - 2 x.d + |d|^2 (one GEMM) cancel a little against the direct difference
    close(y, ry, 1e-7)
    close(logits, rl, 1e-7)
    close(blk(x), ry, 1e-7)


def test_encoding_float64_stays_float64():
    # the soft assignment is computed in float64 for float64 input (an fp32 cast gave ~1e-7)
    from globalctx.layers.blocks.enc import Encoding

    enc = Encoding(16, 4).to(DT)
    ref = RefEncoding(16, 4).to(DT)
    ref.load_state_dict(enc.state_dict())
    x = torch.randn(3, 16, 5, 4, dtype=DT) * 3
    with torch.no_grad():
        out, expected = enc(x), ref(x)
    assert out.dtype == DT
    assert ((out - expected).abs().max() / expected.abs().max()).item() < 1e-14

