"""Plain reference implementations of the framework presets, written from the papers' equations
(loops over positions, no shared code with the library)."""

from __future__ import annotations

import torch
from torch import nn


def layer_norm(v: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    return (v - mu) / torch.sqrt(var + eps) * weight + bias


def mlp(c, p, norm: bool):
    """p: dict with fc1_w, fc1_b, [ln_w, ln_b], fc2_w, fc2_b (biases may be None)."""
    h = c @ p["fc1_w"].T
    if p.get("fc1_b") is not None:
        h = h + p["fc1_b"]
    if norm:
        h = layer_norm(h, p["ln_w"], p["ln_b"])
    h = torch.relu(h)
    out = h @ p["fc2_w"].T
    if p.get("fc2_b") is not None:
        out = out + p["fc2_b"]
    return out


def attention_pool(x: torch.Tensor, wk: torch.Tensor, bk: torch.Tensor) -> torch.Tensor:
    """c = sum_j softmax_j(w_k . x_j + b_k) x_j, computed position by position."""
    n, c = x.shape[:2]
    xs = x.reshape(n, c, -1)
    out = torch.zeros(n, c, dtype=x.dtype)
    for b in range(n):
        logits = torch.stack([wk @ xs[b, :, j] + bk for j in range(xs.shape[-1])]).reshape(-1)
        w = torch.exp(logits - logits.max())
        w = w / w.sum()
        for j in range(xs.shape[-1]):
            out[b] += w[j] * xs[b, :, j]
    return out


def expand(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape + (1,) * (x.dim() - 2))


def se_ref(x, p):
    s = x.reshape(x.shape[0], x.shape[1], -1).mean(-1)
    return x * expand(torch.sigmoid(mlp(s, p, norm=False)), x)


def gc_ref(x, wk, bk, add=None, mul=None, norm=True, pooling="att"):
    if pooling == "att":
        ctx = attention_pool(x, wk, bk)
    else:
        ctx = x.reshape(x.shape[0], x.shape[1], -1).mean(-1)
    out = x
    if mul is not None:
        out = out * expand(torch.sigmoid(mlp(ctx, mul, norm)), x)
    if add is not None:
        out = out + expand(mlp(ctx, add, norm), x)
    return out


def snl_ref(x, wk, bk, wv, bv=None):
    ctx = attention_pool(x, wk, bk)
    t = ctx @ wv.T
    return x + expand(t if bv is None else t + bv, x)


SHAPES = {1: (2, 16, 9), 2: (2, 16, 5, 4), 3: (2, 16, 2, 3, 4)}


def randomize(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter non-trivial values (zero-init would hide half of the math)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * 0.5)
    return module


def bottleneck_params(b: nn.Module) -> dict:
    """The named weights of an ``Mlp`` transform (fc1, optional LayerNorm, fc2)."""
    p = {"fc1_w": b.fc1.weight, "fc1_b": b.fc1.bias, "fc2_w": b.fc2.weight, "fc2_b": b.fc2.bias}
    if isinstance(b.norm, nn.LayerNorm):
        p.update(ln_w=b.norm.weight, ln_b=b.norm.bias)
    return p

