"""Analysis: capture hooks, query-independence statistics (known answers), sampling error, figures."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import globalctx
from globalctx.analysis import (
    block_statistics,
    capture,
    correct_for_sampling,
    find_blocks,
    grid_queries,
    mean_cosine_distance,
    mean_jsd,
    query_independence,
    resolve_queries,
)
from globalctx.analysis.plots import upsample_map

LN2 = math.log(2.0)


class StandInNL(nn.Module):
    """Minimal embedded-Gaussian NL block implementing the analysis contract (reference path)."""

    def __init__(self, channels, *, subsample=False):
        super().__init__()
        ci = max(1, channels // 2)
        self.theta, self.phi, self.g = (nn.Linear(channels, ci) for _ in range(3))
        self.out = nn.Linear(ci, channels)
        self.subsample = subsample

    def _keys(self, x):
        if self.subsample:
            x = nn.functional.max_pool2d(x, 2)
        return x

    def key_shape(self, x):
        return tuple(self._keys(x).shape[2:])

    def _scores(self, x, queries=None):
        q = self.theta(x.flatten(2).transpose(1, 2))  # [N, L, Ci]
        if queries is not None:
            q = q[:, queries]  # [N, Q, Ci]
        k = self.phi(self._keys(x).flatten(2).transpose(1, 2))  # [N, L_k, Ci]
        return q @ k.transpose(1, 2)  # [N, Q, L_k]

    def attention_rows(self, x, queries):
        return self._scores(x, queries).softmax(-1)

    def forward(self, x):
        v = self.g(self._keys(x).flatten(2).transpose(1, 2))  # [N, L_k, Ci]
        y = self._scores(x).softmax(-1) @ v  # [N, L, Ci]
        return x + self.out(y).transpose(1, 2).reshape(x.shape)


class StandInDNL(StandInNL):
    """Adds DNL's unary map (the pairwise term stands in for the whitened one)."""

    def __init__(self, channels, *, subsample=False):
        super().__init__(channels, subsample=subsample)
        self.unary = nn.Linear(channels, 1)

    def unary_attention(self, x):
        return self.unary(self._keys(x).flatten(2).transpose(1, 2)).squeeze(-1).softmax(-1)  # [N, L_k]


def gc(channels=8, **options):
    return globalctx.create_block("gc", channels, rd_ratio=1 / 4, **options)


def tiny_net(block="nl", channels=8):
    if block == "nl":
        blk = StandInNL(channels)
    elif block == "gc":
        blk = gc(channels, zero_init_last=False)
    else:
        blk = globalctx.create_block(block, channels, zero_init_last=False)
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(), blk, nn.AdaptiveAvgPool2d(1), nn.Flatten())


# ------------------------------------------------------------------------------------ statistics
def test_identical_rows_give_zero():
    row = torch.rand(1, 1, 20).softmax(-1)
    rows = row.expand(2, 7, 20)  # every query has the same map (query-independent)
    assert mean_cosine_distance(rows).abs().max() < 1e-12
    assert mean_jsd(rows).abs().max() < 1e-12


def test_one_hot_rows_on_different_positions():
    P = 5
    rows = torch.eye(P)[None]  # [1, P, P]: query i attends only to position i
    # all ordered pairs, self-pairs included: (P^2 - P) pairs at distance d, P at 0
    expected_cos = 0.5 * (P * P - P) / (P * P)
    expected_jsd = LN2 * (P * P - P) / (P * P)
    assert mean_cosine_distance(rows).item() == pytest.approx(expected_cos, abs=1e-12)
    assert mean_jsd(rows).item() == pytest.approx(expected_jsd, abs=1e-12)
    # a pair of distinct one-hot rows: exactly 1/2 and ln 2 (the self-pairs-included mean of P=2 is half)
    pair = torch.eye(2)[None]
    assert 2 * mean_cosine_distance(pair).item() == pytest.approx(0.5, abs=1e-12)
    assert 2 * mean_jsd(pair).item() == pytest.approx(LN2, abs=1e-12)


def test_uniform_attention_gives_zero():
    rows = torch.full((3, 6, 10), 0.1)
    assert mean_cosine_distance(rows).abs().max() < 1e-12
    assert mean_jsd(rows).abs().max() < 1e-12


def test_matches_brute_force_pairs():
    rows = torch.rand(2, 6, 9).softmax(-1).double()
    cos = torch.nn.functional.cosine_similarity(rows[:, :, None], rows[:, None], dim=-1)  # [N, P, P]
    p, q = rows[:, :, None], rows[:, None]
    m = (p + q) / 2
    jsd = 0.5 * (p * (p / m).log() + q * (q / m).log()).sum(-1)  # [N, P, P]
    torch.testing.assert_close(mean_cosine_distance(rows), ((1 - cos) / 2).mean((1, 2)))
    torch.testing.assert_close(mean_jsd(rows), jsd.mean((1, 2)))
    torch.testing.assert_close(mean_jsd(rows, max_elements=9), jsd.mean((1, 2)))  # chunked path


def test_invariant_to_query_order():
    rows = torch.rand(2, 8, 12).softmax(-1)
    perm = torch.randperm(8)
    torch.testing.assert_close(mean_cosine_distance(rows), mean_cosine_distance(rows[:, perm]))
    torch.testing.assert_close(mean_jsd(rows), mean_jsd(rows[:, perm]))


def test_unnormalised_and_signed_rows():
    rows = torch.rand(1, 4, 6)
    torch.testing.assert_close(mean_jsd(rows * 7.0), mean_jsd(rows / rows.sum(-1, keepdim=True)))
    torch.testing.assert_close(mean_cosine_distance(rows * 7.0), mean_cosine_distance(rows))
    signed = rows - 0.5
    assert torch.isnan(mean_jsd(signed)).all()
    assert not torch.isnan(mean_cosine_distance(signed)).any()


def test_zero_vectors_are_left_out():
    v = torch.zeros(1, 4, 3)
    assert torch.isnan(mean_cosine_distance(v)).all()  # e.g. output of a zero-initialised block
    v[0, 0] = torch.tensor([1.0, 0, 0])
    v[0, 1] = torch.tensor([0, 1.0, 0])
    assert mean_cosine_distance(v).item() == pytest.approx(0.25)  # 2 valid vectors, orthogonal


def test_block_statistics_inputs_outputs():
    x = torch.randn(2, 4, 3, 3)
    z = x + torch.randn(1, 4, 1, 1)  # a GC-like output: the same vector added at every position
    s = block_statistics(x, z)
    assert s["output_cos"].abs().max() < 1e-9
    assert (s["input_cos"] > 0.1).all()


def test_centred_cosine_sees_small_query_dependent_deviations():
    L = 10
    rows = (torch.ones(L, L) + 0.01 * torch.eye(L))[None]  # query i: flat + a small bump at i
    rows = rows / rows.sum(-1, keepdim=True)
    s = block_statistics(torch.randn(1, 3, 2, 5), rows=rows)
    assert s["att_cos"].item() < 1e-4 and s["att_jsd"].item() < 1e-4  # alike: nearly flat
    assert s["att_entropy"].item() > 0.9999
    # centred rows e_i - 1/L: cos = -1/(L-1) between different queries -> all-pairs mean exactly 1/2
    assert s["att_cos_centred"].item() == pytest.approx(0.5, abs=1e-9)


def test_sampling_correction_is_exact_with_all_queries():
    rows = torch.rand(1, 16, 10).softmax(-1)
    full = mean_cosine_distance(rows)
    torch.testing.assert_close(correct_for_sampling(full, 16, 16), full)


def test_sampled_estimate_error_quantified():
    """The seeded-sample estimate is unbiased and its error shrinks like ~1/sqrt(Q).

    L = 100 positions with strongly query-dependent rows; exact value from all rows vs. 200
    independent samples of Q = 10 and Q = 40 queries.
    """
    torch.manual_seed(0)
    L = 100
    rows = (torch.randn(1, L, L) * 2.0).softmax(-1).double()  # [1, L, L_k]
    exact = {"cos": mean_cosine_distance(rows).item(), "jsd": mean_jsd(rows).item()}
    gen = torch.Generator().manual_seed(1)
    errs = {}
    for q in (10, 40):
        idx = torch.stack([resolve_queries(q, (10, 10), generator=gen) for _ in range(200)])  # [200, Q]
        sub = rows[0][idx]  # [200, Q, L_k]: 200 independent query samples
        est = {
            "cos": correct_for_sampling(mean_cosine_distance(sub), q, L),
            "jsd": correct_for_sampling(mean_jsd(sub), q, L),
        }
        for key, t in est.items():
            bias = (t.mean() - exact[key]).abs().item()
            sem = t.std().item() / math.sqrt(t.numel())
            assert bias < 4 * sem + 1e-12, (key, q, bias, sem)  # unbiased
            # the uncorrected mean over Q^2 pairs would be biased low by a factor (Q-1)/Q
            uncorrected_bias = exact[key] * (1 - (q / (q - 1)) ** -1 * L / (L - 1))
            assert uncorrected_bias > 4 * sem
            errs[(key, q)] = (t - exact[key]).square().mean().sqrt().item() / exact[key]
    for key in ("cos", "jsd"):
        print(key, {q: round(errs[(key, q)], 4) for q in (10, 40)})
        assert errs[(key, 40)] < errs[(key, 10)] / 1.5  # more queries, smaller error
        assert errs[(key, 10)] < 0.10  # relative RMS error below 10% already at Q = 10 here


# ------------------------------------------------------------------------------------ capture
def test_find_blocks_and_kinds():
    net = nn.Sequential(tiny_net("nl"), gc(8), globalctx.create_block("se", 8, rd_ratio=1 / 4))
    found = find_blocks(net)
    assert list(found) == ["0.2", "1"]  # SE has no attention map, GC does


def test_capture_pairwise_rows_match_reference():
    net = tiny_net("nl")
    x = torch.randn(2, 3, 6, 6)
    with capture(net, queries=4, seed=3) as rec:
        net(x)
    att = rec.attention("2")
    assert att.shape == (2, 4, 36)
    q = rec.queries("2")
    assert q.shape == (4,) and len(set(q.tolist())) == 4
    feats = net[1](net[0](x))
    ref = net[2]._scores(feats).softmax(-1)[:, q]  # [N, Q, L] from the full matrix
    torch.testing.assert_close(att, ref)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 4))
    torch.testing.assert_close(rec.inputs("2"), feats)
    torch.testing.assert_close(rec.outputs("2"), net[2](feats))
    assert rec.query_coords("2").tolist() == [[int(i) // 6, int(i) % 6] for i in q]


def test_capture_shared_map_gc_snl():
    for name in ("gc", "snl"):
        net = tiny_net(name)
        x = torch.randn(3, 3, 5, 5)
        with capture(net) as rec:
            net(x)
        att = rec.attention("2")
        assert att.shape == (3, 25) and rec.kind("2") == "shared"
        torch.testing.assert_close(att, net[2].context.attention(net[1](net[0](x))))
        assert rec.queries("2") is None


def test_hooks_leave_outputs_unchanged_and_are_removed():
    net = nn.Sequential(tiny_net("nl"), nn.Linear(8, 8))
    net.add_module("gc", nn.Sequential(nn.Unflatten(1, (8, 1, 1)), gc(8)))
    x = torch.randn(2, 3, 6, 6)
    before = net(x)
    counts = [len(m._forward_hooks) for m in net.modules()]
    rec = capture(net, queries="all")
    with torch.no_grad():
        during = net(x)
    assert rec.attached and sum(len(m._forward_hooks) for m in net.modules()) == 2
    rec.eject()
    assert not rec.attached
    assert [len(m._forward_hooks) for m in net.modules()] == counts
    torch.testing.assert_close(during, before, rtol=0, atol=0)
    n = rec.attention("0.2").shape[0]
    net(x)  # no longer recorded
    assert rec.attention("0.2").shape[0] == n
    with capture(net) as rec2:
        net(x)
    assert not rec2.attached and sum(len(m._forward_hooks) for m in net.modules()) == 0


def test_capture_subsampled_keys_unary_and_batches():
    net = nn.Sequential(StandInDNL(4, subsample=True))
    with capture(net, queries=grid_queries(2)) as rec:
        net(torch.randn(2, 4, 8, 8))
        net(torch.randn(3, 4, 8, 8))
    assert rec.key_shape("0") == (4, 4) and rec.spatial_shape("0") == (8, 8)
    assert rec.attention("0").shape == (5, 4, 16)
    assert rec.unary("0").shape == (5, 16)
    assert rec.query_coords("0").tolist() == [[2, 2], [2, 6], [6, 2], [6, 6]]


def test_capture_options_and_errors():
    net = tiny_net("nl")
    with pytest.raises(ValueError, match="unknown attention blocks"):
        capture(net, blocks=["nope"])
    with pytest.raises(ValueError, match="no attention blocks"):
        capture(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ValueError, match="only string form"):
        resolve_queries("grid", (4, 4))
    with pytest.raises(ValueError, match="only string form"):
        capture(net, queries="grid")  # rejected before any hook is installed
    with pytest.raises(ValueError, match="int >= 1"):
        capture(net, queries=0)
    assert sum(len(m._forward_hooks) for m in net.modules()) == 0
    with pytest.raises(ValueError, match="flat indices"):
        resolve_queries([16], (4, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        resolve_queries(torch.tensor([[1.5, 0.0]]), (4, 4))
    assert resolve_queries(100, (3, 3)).tolist() == list(range(9))  # capped at L
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert resolve_queries(3, (9, 9), generator=g1).tolist() == resolve_queries(3, (9, 9), generator=g2).tolist()
    with capture(net) as rec:
        pass
    with pytest.raises(ValueError, match="has not run"):
        rec.attention("2")
    with pytest.raises(ValueError, match="unknown block"):
        rec.attention("7")


# ------------------------------------------------------------------------------------ dataset stats
def _loader(n_batches=2, n=3, size=6):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, size, size, generator=g), torch.zeros(n)) for _ in range(n_batches)]


def test_query_independence_exact_matches_capture():
    net = tiny_net("nl")
    loader = _loader()
    res = query_independence(net, loader, max_queries=64)
    b = res["2"]
    assert b.kind == "pairwise" and b.exact and b.images == 6 and b.positions == 36
    with capture(net, queries="all") as rec:
        for xb, _ in loader:
            net(xb)
    per_image = block_statistics(rec.inputs("2"), rec.outputs("2"), rec.attention("2"))
    for key, v in per_image.items():
        assert b.mean[key] == pytest.approx(v.mean().item(), rel=1e-9)
    assert net.training  # mode restored
    again = type(res).from_dict(json.loads(json.dumps(res.to_dict())))
    assert again.to_markdown() == res.to_markdown()
    assert sum(len(m._forward_hooks) for m in net.modules()) == 0
    assert "| `2` | pairwise | 6x6 | 36 / 36 (all) | 6 |" in res.to_markdown()


def test_query_independence_sampled_close_to_exact():
    net = tiny_net("nl")
    loader = _loader(n_batches=3, size=8)
    exact = query_independence(net, loader, max_queries=64)["2"]
    sampled = query_independence(net, loader, max_queries=24, seed=1)["2"]
    assert not sampled.exact and sampled.queries == 24
    for key in ("att_cos", "att_jsd"):
        assert sampled.mean[key] == pytest.approx(exact.mean[key], rel=0.15)
    for key in ("input_cos", "output_cos"):  # always over all positions
        assert sampled.mean[key] == pytest.approx(exact.mean[key], rel=1e-9)


def test_query_independence_accepts_trainer_style_loader():
    class StepLoader:  # like globalctx.train.data.BatchLoader: iter_epoch yields (step, x, y)
        def iter_epoch(self, epoch):
            for step, (x, y) in enumerate(_loader()):
                yield step, x, y

    net = tiny_net("nl")
    a = query_independence(net, StepLoader())["2"]
    b = query_independence(net, _loader())["2"]
    assert a.images == b.images == 6 and a.mean == b.mean


def test_query_independence_gc_block():
    net = tiny_net("gc")
    b = query_independence(net, _loader())["2"]
    assert b.kind == "shared" and b.mean["att_cos"] == 0 and b.mean["att_jsd"] == 0
    assert b.mean["output_cos"] < 1e-6  # GC adds one vector to every position
    assert b.mean["input_cos"] > 1e-3
    zero = nn.Sequential(nn.Conv2d(3, 8, 1), gc(8))  # zero-init: z - x = 0
    assert math.isnan(query_independence(zero, _loader())["1"].mean["output_cos"])


# ------------------------------------------------------------------------------------ figures
def test_plots_write_pngs(tmp_path):
    pytest.importorskip("matplotlib", reason="figures need matplotlib")
    from globalctx.analysis import plot_attention, plot_statistics

    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), StandInDNL(8, subsample=True))
    net.add_module("gc", gc(8))
    x = torch.rand(2, 3, 16, 16)
    with capture(net, queries=3) as rec:
        net(x)
    fig = plot_attention(x, rec, "1", tmp_path / "nl.png")
    assert len(fig.axes) == 2 * (1 + 3 + 1)  # image, 3 queries, unary per row
    plot_attention(x[:, :1], rec, "gc", tmp_path / "gc.png")
    stats = query_independence(net, [x])
    plot_statistics({"a": stats, "b": stats}, tmp_path / "stats.png")
    for name in ("nl.png", "gc.png", "stats.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_import_globalctx_stays_light():
    import subprocess
    import sys

    code = "import sys, globalctx, globalctx.analysis; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------ real NL / DNL
@pytest.mark.parametrize(
    "name, options",
    [
        ("nl", {}),
        ("nl", {"pairwise": "dot_product", "subsample": True}),
        ("nl", {"pairwise": "concatenation"}),
        ("dnl", {}),
    ],
)
def test_real_nonlocal_blocks(name, options):
    blk = globalctx.create_block(name, 8, zero_init_last=False, **options)
    for p in blk.parameters():  # move away from the near-uniform official init
        torch.nn.init.normal_(p, std=0.5)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), blk).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        before = net(x)
        with capture(net, queries="all") as rec:
            during = net(x)
    torch.testing.assert_close(during, before, rtol=0, atol=0)
    assert rec.blocks == ["1"] and rec.kind("1") == "pairwise"
    att = rec.attention("1")
    assert att.shape == (2, 36, math.prod(rec.key_shape("1")))
    if options.get("pairwise", "embedded_gaussian") == "embedded_gaussian":
        torch.testing.assert_close(att.sum(-1), torch.ones(2, 36))
    if name == "dnl":
        assert rec.unary("1").shape == (2, 36)
    b = query_independence(net, [x])["1"]
    assert b.exact and 0 < b.mean["att_cos"] < 1 and 0 < b.mean["input_cos"] < 1
    signed = options.get("pairwise") == "dot_product"
    assert math.isnan(b.mean["att_jsd"]) == signed  # a signed row has no JSD
    if not signed:
        assert 0 < b.mean["att_jsd"] < LN2


@pytest.mark.parametrize("spatial", [(12,), (2, 4, 4)])
def test_one_and_three_spatial_dims(spatial):
    blk = globalctx.create_block("nl", 8, zero_init_last=False)
    for p in blk.parameters():
        torch.nn.init.normal_(p, std=0.5)
    net = nn.Sequential(blk).eval()
    x = torch.randn(2, 8, *spatial)
    with capture(net, queries=grid_queries(2, ndim=len(spatial))) as rec:
        net(x)
    L = math.prod(spatial)
    assert rec.attention("0").shape == (2, 2 ** len(spatial), L)
    assert rec.query_coords("0").shape == (2 ** len(spatial), len(spatial))
    b = query_independence(net, [x])["0"]
    assert b.spatial_shape == spatial and b.positions == L and 0 < b.mean["att_cos"] < 1
    with pytest.raises(ValueError, match="2-D"):
        upsample_map(rec.attention("0")[:, 0], rec.key_shape("0"), (8, 8))
