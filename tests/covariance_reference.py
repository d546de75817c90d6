"""Reference covariance pooling and Newton-Schulz square root (MPNCOV's ``CovpoolLayer`` /
``SqrtmLayer``), shared by the GSoP and SoCA reference tests."""

import torch


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
