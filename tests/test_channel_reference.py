"""Each channel-attention preset against a plain re-implementation of the official module
(2D, convs and loops as in the papers' code), with the weights copied over."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from globalctx.layers import create_block
from globalctx.layers.blocks.dia import DIAStage

DT = torch.float64


def _close(a, b, tol=1e-10):
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ---------------------------------------------------------------- ECA (official eca_layer)
class RefECA(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y)


def test_eca_matches_reference():
    blk = create_block("eca", 32, kernel_size=5).to(DT)
    ref = RefECA(5).to(DT)
    ref.conv.weight.data.copy_(blk.transform.conv.weight.data)
    x = torch.randn(3, 32, 6, 5, dtype=DT)
    _close(blk(x), ref(x))


# ---------------------------------------------------------------- FcaNet (official layer.py)
def _ref_dct_filter(h, w, mx, my, c):
    def bf(pos, freq, n):
        r = math.cos(math.pi * freq * (pos + 0.5) / n) / math.sqrt(n)
        return r if freq == 0 else r * math.sqrt(2)

    filt = torch.zeros(c, h, w, dtype=DT)
    cp = c // len(mx)
    for i, (u, v) in enumerate(zip(mx, my)):
        for tx in range(h):
            for ty in range(w):
                filt[i * cp : (i + 1) * cp, tx, ty] = bf(tx, u, h) * bf(ty, v, w)
    return filt


class RefFca(nn.Module):
    top_x = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2]
    top_y = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2]

    def __init__(self, c, dct, r=16):
        super().__init__()
        self.dct = dct
        mx = [u * (dct // 7) for u in self.top_x]
        my = [v * (dct // 7) for v in self.top_y]
        self.register_buffer("weight", _ref_dct_filter(dct, dct, mx, my, c))
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(), nn.Linear(c // r, c, bias=False))

    def forward(self, x):
        n, c, h, w = x.shape
        xp = x if (h, w) == (self.dct, self.dct) else F.adaptive_avg_pool2d(x, (self.dct, self.dct))
        y = (xp * self.weight).sum(dim=[2, 3])
        return x * torch.sigmoid(self.fc(y)).view(n, c, 1, 1)


@pytest.mark.parametrize("dct,size", [(7, (7, 7)), (14, (14, 14)), (7, (20, 17)), (14, (9, 30))])
def test_fca_matches_reference(dct, size):
    blk = create_block("fca", 32, rd_ratio=1 / 16, dct_size=dct, dtype=DT)
    ref = RefFca(32, dct).to(DT)
    ref.fc[0].weight.data.copy_(blk.transform.fc1.weight.data)
    ref.fc[2].weight.data.copy_(blk.transform.fc2.weight.data)
    x = torch.randn(2, 32, *size, dtype=DT)
    _close(blk(x), ref(x))


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
    _close(blk(x), ref(x))
    _close(blk.transform.bn.running_mean, ref.bn.running_mean)


# ---------------------------------------------------------------- GCT (official GCT.py)
class RefGCT(nn.Module):
    def __init__(self, c, mode, after_relu=False, eps=1e-5):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.mode, self.after_relu, self.eps = mode, after_relu, eps

    def forward(self, x):
        if self.mode == "l2":
            emb = (x.pow(2).sum((2, 3), keepdim=True) + self.eps).pow(0.5) * self.alpha
            norm = self.gamma / (emb.pow(2).mean(dim=1, keepdim=True) + self.eps).pow(0.5)
        else:
            _x = x if self.after_relu else torch.abs(x)
            emb = _x.sum((2, 3), keepdim=True) * self.alpha
            norm = self.gamma / (torch.abs(emb).mean(dim=1, keepdim=True) + self.eps)
        return x * (1.0 + torch.tanh(emb * norm + self.beta))


@pytest.mark.parametrize("mode", ["l2", "l1"])
def test_gct_matches_reference(mode):
    blk = create_block("gct", 16, mode=mode).to(DT)
    ref = RefGCT(16, mode).to(DT)
    with torch.no_grad():
        for name in ("alpha", "gamma", "beta"):
            p = getattr(blk.transform, name)
            p.normal_()
            getattr(ref, name).copy_(p.view(1, -1, 1, 1))
    x = torch.randn(3, 16, 5, 4, dtype=DT)
    _close(blk(x), ref(x))


# ---------------------------------------------------------------- covariance (MPNCOV)
def ref_covpool(x):
    b, d, h, w = x.shape
    m = h * w
    x = x.reshape(b, d, m)
    i_hat = (-1.0 / m / m) * torch.ones(m, m, dtype=x.dtype) + (1.0 / m) * torch.eye(m, dtype=x.dtype)
    return x.bmm(i_hat.expand(b, m, m)).bmm(x.transpose(1, 2))


def ref_sqrtm(x, iter_n):
    b, dim = x.shape[:2]
    i3 = 3.0 * torch.eye(dim, dtype=x.dtype).view(1, dim, dim).repeat(b, 1, 1)
    norm_a = (1.0 / 3.0) * x.mul(i3).sum(dim=1).sum(dim=1)
    a = x.div(norm_a.view(b, 1, 1).expand_as(x))
    ys = [None] * iter_n
    zs = [None] * iter_n
    zy = 0.5 * (i3 - a)
    ys[0] = a.bmm(zy)
    zs[0] = zy
    for i in range(1, iter_n - 1):
        zy = 0.5 * (i3 - zs[i - 1].bmm(ys[i - 1]))
        ys[i] = ys[i - 1].bmm(zy)
        zs[i] = zy.bmm(zs[i - 1])
    zy = 0.5 * ys[iter_n - 2].bmm(i3 - zs[iter_n - 2].bmm(ys[iter_n - 2]))
    return zy * torch.sqrt(norm_a).view(b, 1, 1).expand_as(x)


# ---------------------------------------------------------------- GSoP-Net1 (official chan_att)
class RefGSoP(nn.Module):
    def __init__(self, c, d):
        super().__init__()
        self.conv_for_DR = nn.Conv2d(c, d, 1, bias=True)
        self.bn_for_DR = nn.BatchNorm2d(d)
        self.row_bn = nn.BatchNorm2d(d)
        self.row_conv_group = nn.Conv2d(d, 4 * d, kernel_size=(d, 1), groups=d, bias=True)
        self.fc_adapt_channels = nn.Conv2d(4 * d, c, 1, bias=True)

    def forward(self, x):
        out = F.relu(x)
        out = F.relu(self.bn_for_DR(self.conv_for_DR(out)))
        out = ref_covpool(out)
        out = out.view(out.size(0), out.size(1), out.size(2), 1)
        out = F.relu(self.row_conv_group(self.row_bn(out)))
        return x * torch.sigmoid(self.fc_adapt_channels(out))


def test_gsop_matches_reference():
    c, d = 24, 8
    blk = create_block("gsop", c, cov_channels=d).to(DT)
    ref = RefGSoP(c, d).to(DT)
    ctx, tr = blk.context, blk.transform
    with torch.no_grad():
        for bn in (ctx.bn, tr.row_bn):
            bn.weight.normal_()
            bn.bias.normal_()
        ref.conv_for_DR.weight.copy_(ctx.reduce.weight.view(d, c, 1, 1))
        ref.conv_for_DR.bias.copy_(ctx.reduce.bias)
        ref.bn_for_DR.load_state_dict(ctx.bn.state_dict())
        ref.row_bn.load_state_dict(tr.row_bn.state_dict())
        ref.row_conv_group.weight.copy_(tr.weight.view(4 * d, 1, d, 1))
        ref.row_conv_group.bias.copy_(tr.bias)
        ref.fc_adapt_channels.weight.copy_(tr.fc.weight.view(c, 4 * d, 1, 1))
        ref.fc_adapt_channels.bias.copy_(tr.fc.bias)
    x = torch.randn(3, c, 6, 5, dtype=DT)
    _close(blk(x), ref(x), 1e-9)


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
    _close(blk(x), ref(x))


def test_newton_schulz_approximates_sqrt():
    from globalctx.layers.parts.covariance import covariance_pool, newton_schulz_sqrt

    x = torch.randn(2, 6, 40, dtype=DT)
    cov = covariance_pool(x)
    root = newton_schulz_sqrt(cov, 20)
    _close(root @ root, cov, 1e-6)
    _close(newton_schulz_sqrt(cov, 5), ref_sqrtm(cov, 5))
    _close(newton_schulz_sqrt(cov, 2), ref_sqrtm(cov, 2))


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
    _close(y, ry, 1e-7)
    _close(logits, rl, 1e-7)
    _close(blk(x), ry, 1e-7)


# ---------------------------------------------------------------- RCAN CALayer
def test_rcan_matches_reference():
    blk = create_block("rcan", 32).to(DT)
    ref = nn.Sequential(nn.Conv2d(32, 2, 1, bias=True), nn.ReLU(), nn.Conv2d(2, 32, 1, bias=True), nn.Sigmoid()).to(DT)
    with torch.no_grad():
        ref[0].weight.copy_(blk.transform.fc1.weight.view(2, 32, 1, 1))
        ref[0].bias.copy_(blk.transform.fc1.bias)
        ref[2].weight.copy_(blk.transform.fc2.weight.view(32, 2, 1, 1))
        ref[2].bias.copy_(blk.transform.fc2.bias)
    x = torch.randn(2, 32, 5, 5, dtype=DT)
    _close(blk(x), x * ref(F.adaptive_avg_pool2d(x, 1)))


# ---------------------------------------------------------------- DIANet (official LSTMCell + stage loop)
class RefSmallCell(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(i, i // 4), nn.ReLU(), nn.Linear(i // 4, 4 * h))

    def forward(self, x):
        return self.seq(x)


class RefDIACell(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.w_ih = RefSmallCell(c, c)
        self.w_hh = RefSmallCell(c, c)

    def forward(self, z, hx, cx):
        gates = self.w_ih(z) + self.w_hh(hx)
        i, f, g, o = gates.chunk(4, 1)
        ncx = torch.sigmoid(f) * cx + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.sigmoid(ncx), ncx


class _Branch(nn.Module):
    """A toy residual block: conv branch -> attention -> + identity -> ReLU."""

    def __init__(self, c, attn):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.attn = attn

    def forward(self, x):
        return F.relu(self.attn(self.conv(x)) + x)


def test_dia_stage_matches_reference():
    c = 16
    blocks = [_Branch(c, create_block("dia", c)) for _ in range(3)]
    stage = DIAStage(blocks).to(DT)
    cell = stage.cell
    assert all(b.attn.transform is cell for b in stage.blocks)
    n_params = sum(p.numel() for p in stage.parameters())
    assert n_params == 3 * (c * c * 9 + c) + sum(p.numel() for p in cell.parameters())
    ref = RefDIACell(c).to(DT)
    with torch.no_grad():
        ref.w_ih.seq.load_state_dict(cell.w_ih.state_dict())
        ref.w_hh.seq.load_state_dict(cell.w_hh.state_dict())
    x = torch.randn(2, c, 5, 5, dtype=DT)
    y = stage(x)
    # official loop
    h = torch.zeros(2, c, dtype=DT)
    cc = torch.zeros(2, c, dtype=DT)
    r = x
    for b in stage.blocks:
        out = b.conv(r)
        h, cc = ref(out.mean((2, 3)), h, cc)
        r = F.relu(out * h.view(2, c, 1, 1) + r)
    _close(y, r)
    # state is reset per forward: a second call gives the same result
    _close(stage(x), y)
    assert cell._state is None


# ---------------------------------------------------------------- BAN (official BilinearAttention)
class RefConvBlock(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.conv = nn.Conv2d(i, o, 1)
        self.bn = nn.BatchNorm2d(o)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class RefBAN(nn.Module):
    def __init__(self, c):
        super().__init__()
        m = c // 16
        self.l1 = RefConvBlock(c, m)
        self.l2 = RefConvBlock(m * (m + 1) // 2, c)
        self.l3 = RefConvBlock(m * (m + 1) // 2, c)

    def forward(self, x):
        inp = x
        x = self.l1(x)
        b, ch, rows, cols = x.shape
        x = x.permute(0, 2, 3, 1).reshape(-1, ch)
        x = torch.bmm(x.unsqueeze(2), x.unsqueeze(1))
        x = torch.cat([torch.diagonal(x, offset=-i, dim1=1, dim2=2) for i in range(ch)], dim=1)
        x = x.view(b, rows, cols, -1).permute(0, 3, 1, 2)
        m_cha = self.l3(F.avg_pool2d(x, x.shape[2:]))
        out = self.l2(x)
        return torch.sigmoid(m_cha * out) * inp


def _copy_cbr(ours, ref):
    c_out, c_in = ours.conv.weight.shape
    ref.conv.weight.data.copy_(ours.conv.weight.data.view(c_out, c_in, 1, 1))
    ref.conv.bias.data.copy_(ours.conv.bias.data)
    ref.bn.load_state_dict(ours.bn.state_dict())


def test_ban_matches_reference():
    blk = create_block("ban", 64).to(DT)
    ref = RefBAN(64).to(DT)
    _copy_cbr(blk.reduce, ref.l1)
    _copy_cbr(blk.outer, ref.l2)
    _copy_cbr(blk.inner, ref.l3)
    x = torch.randn(3, 64, 5, 4, dtype=DT)
    _close(blk(x), ref(x))
