"""globalctx.bench: counts against hand formulas, the added FLOP formulas, latency/memory/floor code
paths (no speed assertions), profile() and the ``globalctx bench`` CLI on tiny shapes."""

import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import globalctx
from globalctx.bench import count_flops, count_params, profile
from globalctx.bench.counting import Gemm
from globalctx.bench.floors import gemm_floor_fn, memory_floor_fn, sliced_gemm
from globalctx.bench.latency import set_threads, time_cases
from globalctx.bench.memory import alloc_peak, rss_peak
from globalctx.bench.report import COLUMNS

aten = torch.ops.aten


def _macs(module, shape):
    return count_flops(module.eval(), torch.randn(shape)).macs


# ---------------------------------------------------------------------------------------------
# counts of the framework blocks: hand formulas (MACs of matrix products only)


@pytest.mark.parametrize("shape", [(2, 64, 5, 7), (3, 32, 11), (1, 16, 3, 4, 5)])
def test_gc_se_snl_macs_match_hand_formula(shape):
    n, c, l = shape[0], shape[1], math.prod(shape[2:])
    cr = c // 16
    # GC: logits W_k x (N L C) + context sum_j a_j x_j (N C L) + two FCs (2 N C C_r)
    assert _macs(globalctx.create_block("gc", c), shape) == 2 * n * l * c + 2 * n * c * cr
    # SE: only the two FCs; the average pool is not a product
    assert _macs(globalctx.create_block("se", c), shape) == 2 * n * c * cr
    # SNL: logits + context + W_v (N C C)
    assert _macs(globalctx.create_block("snl", c), shape) == 2 * n * l * c + n * c * c
    # GC with both fusions: two bottlenecks
    assert _macs(globalctx.create_block("gc", c, fusion=("add", "mul")), shape) == 2 * n * l * c + 4 * n * c * cr


def test_block_params_match_reference_table():
    # research tables §16 (official module definitions)
    assert count_params(globalctx.create_block("gc", 256))["params"] == 8753
    assert count_params(globalctx.create_block("gc", 1024))["params"] == 133313
    assert count_params(globalctx.create_block("se", 256))["params"] == 8464
    assert count_params(globalctx.create_block("snl", 1024))["params"] == 1049601
    assert count_params(globalctx.create_block("snl", 1024, bias=True))["params"] == 1050625


def test_count_params_splits_trainable_and_buffers():
    m = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    m[0].weight.requires_grad_(False)
    p = count_params(m)
    assert p == {"params": 12 + 4 + 8, "trainable": 4 + 8, "buffers": 4 + 4 + 1}


def _nl_hand_macs(pairwise, n, c, l, lk=None, padded=True, sorted_concat=True):
    cr, lk = c // 2, lk or l
    proj_q = n * l * c * cr  # theta
    proj_kv = n * lk * c * cr  # phi or g on the key positions
    out = n * l * cr * c  # W_z
    if pairwise == "embedded_gaussian":
        return proj_q + 2 * proj_kv + n * l * lk * cr * 2 + out  # theta, phi, g, QK^T, PV, W_z
    if pairwise == "gaussian":
        # the fused CPU kernel needs d == d_v: g(x) is zero-padded from C_r to C for PV
        dv = c if padded else cr
        return proj_kv + n * l * lk * c + n * l * lk * dv + out  # g, x^T x, PV, W_z
    if pairwise == "dot_product":
        return proj_q + 2 * proj_kv + 2 * n * lk * cr * cr * l // lk + out  # theta (phi^T g) / L_k
    if pairwise == "concatenation":
        # a_i = w_1^T theta_i, b_j = w_2^T phi_j (GEMVs), then sum_j relu(a_i + b_j) g_j: by default
        # from suffix sums over keys sorted by b (sort, cumsum, gather: no product); the chunked
        # path multiplies the [L, L_k] weights with g
        pair = 0 if sorted_concat else n * l * lk * cr
        return proj_q + 2 * proj_kv + n * l * cr + n * lk * cr + pair + out
    raise AssertionError(pairwise)


@pytest.mark.parametrize("pairwise", ["gaussian", "embedded_gaussian", "dot_product", "concatenation"])
def test_nl_macs_match_hand_formula(pairwise):
    n, c, h, w = 2, 32, 6, 8
    blk = globalctx.create_block("nl", c, pairwise=pairwise)
    assert _macs(blk, (n, c, h, w)) == _nl_hand_macs(pairwise, n, c, h * w)


def test_nl_concatenation_chunked_path_macs():
    n, c, h, w = 2, 32, 6, 8
    blk = globalctx.create_block("nl", c, pairwise="concatenation", backend="chunked")
    assert _macs(blk, (n, c, h, w)) == _nl_hand_macs("concatenation", n, c, h * w, sorted_concat=False)


def test_nl_gaussian_reference_path_macs():
    n, c, h, w = 2, 32, 6, 8
    blk = globalctx.create_block("nl", c, pairwise="gaussian", backend="reference")  # explicit L x L
    assert _macs(blk, (n, c, h, w)) == _nl_hand_macs("gaussian", n, c, h * w, padded=False)


def test_nl_subsampled_macs_match_hand_formula():
    n, c, h, w = 2, 32, 6, 8
    blk = globalctx.create_block("nl", c, subsample=True)  # pool_first: phi, g on L/4 positions
    assert _macs(blk, (n, c, h, w)) == _nl_hand_macs("embedded_gaussian", n, c, h * w, lk=h * w // 4)


def test_dnl_macs_match_hand_formula():
    n, c, h, w = 2, 32, 6, 8
    l, cr = h * w, c // 4  # default: C_r = C/4, value C -> C, channel whitening, conv_mask unary
    # theta, phi; value; QK^T and PV (the fused kernel needs d == d_v: q, k zero-padded to C);
    # unary: mask logits + pooled context; value of the pooled context
    hand = 2 * n * l * c * cr + n * l * c * c + 2 * n * l * l * c + 2 * n * l * c + n * c * c
    assert _macs(globalctx.create_block("dnl", c), (n, c, h, w)) == hand


def test_resnet50_gmacs_torchvision_layout():
    with torch.device("meta"):  # counting needs shapes only
        model = globalctx.create_model("resnet50").eval()
        x = torch.empty(1, 3, 224, 224)
    fc = count_flops(model, x)
    assert fc.macs == 4_089_184_256  # 4.089 GMACs (conv + fc), research tables §0
    assert round(fc.macs / 1e9, 3) == 4.089
    assert count_params(model)["params"] == 25_557_032


# ---------------------------------------------------------------------------------------------
# formulas added to FlopCounterMode, against hand counts


def test_cpu_flash_sdpa_formula():
    b, h, lq, lk, e = 2, 3, 40, 24, 16
    q, k, v = torch.randn(b, h, lq, e), torch.randn(b, h, lk, e), torch.randn(b, h, lk, e)
    hand = 2 * b * h * lq * lk * e * 2  # QK^T and PV, 2 FLOPs per multiply-add
    fc = count_flops(lambda: aten._scaled_dot_product_flash_attention_for_cpu(q, k, v))
    assert fc.flops == hand
    assert fc.by_op == {"_scaled_dot_product_flash_attention_for_cpu": hand}
    assert fc.gemms == [Gemm(b * h, lq, e, lk), Gemm(b * h, lq, lk, e)]
    # the public function reaches the same kernel, and so the same count
    assert count_flops(lambda: F.scaled_dot_product_attention(q, k, v)).flops == hand
    # the math path (non-unit last stride) decomposes to two bmm with the same count
    qt = q.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert (
        count_flops(lambda: F.scaled_dot_product_attention(qt, k, v, attn_mask=torch.ones(lq, lk).bool())).flops == hand
    )


def test_vector_product_formulas():
    a, v, u = torch.randn(5, 7), torch.randn(7), torch.randn(5)
    assert count_flops(lambda: torch.mv(a, v)).flops == 2 * 5 * 7
    assert count_flops(lambda: torch.addmv(u, a, v)).flops == 2 * 5 * 7
    assert count_flops(lambda: torch.dot(v, v)).flops == 2 * 7
    assert count_flops(lambda: torch.matmul(a, v)).flops == 2 * 5 * 7
    b1, b2 = torch.randn(3, 4, 6), torch.randn(3, 6, 2)
    assert count_flops(lambda: torch.addbmm(torch.zeros(4, 2), b1, b2)).flops == 2 * 3 * 4 * 6 * 2


def test_recorded_gemms_add_up_to_the_count():
    conv = nn.Conv2d(8, 12, 3, padding=1, groups=4)
    fc = count_flops(conv, torch.randn(2, 8, 5, 5))
    assert fc.gemms == [Gemm(4, 3, 2 * 9, 2 * 25)]
    assert sum(g.flops for g in fc.gemms) == fc.flops == 2 * 2 * 12 * 25 * 2 * 9
    blk = globalctx.create_block("gc", 32, fusion=("add", "mul"))
    fc = count_flops(blk, torch.randn(2, 32, 4, 4))
    assert sum(g.flops for g in fc.gemms) == fc.flops


# ---------------------------------------------------------------------------------------------
# latency, memory and floor code paths (no speed assertions)


def test_time_cases_interleaved_stats():
    calls = []
    rounds = []
    res = time_cases(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        runs=4,
        warmup=2,
        on_round=lambda done, total: rounds.append((done, total)),
    )
    assert rounds == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert calls[:4] == ["a", "a", "b", "b"]  # warm-up, then rotating rounds
    assert calls[4:] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    for s in res.values():
        assert s["runs"] == 4 and 0 <= s["min_ms"] <= s["median_ms"] <= s["max_ms"]
    with pytest.raises(ValueError, match="runs"):
        time_cases({"a": lambda: None}, runs=0)
    with pytest.raises(ValueError, match="threads"):
        set_threads(0)


def test_alloc_peak_counts_live_tensors():
    n = (1 << 20) // 4  # 1 MiB of fp32

    def two_live():
        a = torch.empty(n)
        b = torch.empty(n)
        return a, b

    def one_at_a_time():
        for _ in range(3):
            a = torch.empty(n)
            del a

    assert alloc_peak(two_live) == pytest.approx(2.0)
    assert alloc_peak(one_at_a_time) == pytest.approx(1.0)


def test_rss_peak_fresh_subprocess_sees_the_output():
    blk = globalctx.create_block("se", 64)
    shape = (4, 64, 64, 64)  # output 4 MiB
    r = rss_peak(blk, shape, warmup=1)
    assert set(r) == {"cold", "warm"}
    assert r["cold"] is not None and r["cold"] >= 0.9 * 4  # the first call must fault in its output
    assert r["warm"] is not None and r["warm"] >= 0


class _TestOnly(nn.Module):  # its module (this test file) is not importable in a fresh process
    def forward(self, x):
        return x


def test_rss_peak_reports_child_and_pickling_errors():
    with pytest.raises(RuntimeError, match="memory subprocess failed"):
        rss_peak(_TestOnly(), (1, 2, 3))

    class Local(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(RuntimeError, match="picklable"):
        rss_peak(Local(), (1, 2, 3))


def test_floors():
    x = torch.randn(2, 3, 4, 5)
    s, c = memory_floor_fn(x)()
    assert torch.equal(s, x.sum((2, 3))) and torch.equal(c, x) and c.data_ptr() != x.data_ptr()
    g = Gemm(2, 1000, 8, 1000)
    sub, scale = sliced_gemm(g, max_bytes=40_000, itemsize=4)
    assert sub.n == g.n and sub.k == g.k and sub.m * sub.n * 4 <= 40_000
    assert scale * sub.flops == g.flops
    fn, scale = gemm_floor_fn([g, Gemm(1, 3, 4, 5)], max_bytes=40_000)
    fn()
    assert scale > 1


def test_profile_with_baseline():
    blk, base = globalctx.create_block("gc", 32), globalctx.create_block("se", 32)
    r = profile(blk, (2, 32, 6, 6), baseline=base, runs=3, warmup=1, floors=True)
    assert r["params"] == count_params(blk)["params"]
    assert r["macs"] == 2 * 2 * 36 * 32 + 2 * 2 * 32 * 2
    assert r["flops"] == 2 * r["macs"] and r["runs"] == 3
    assert 0 < r["latency_min_ms"] <= r["latency_ms"] <= r["latency_max_ms"]
    assert r["mem_alloc_mib"] > 0 and r["x_mem_floor"] > 0 and r["x_gemm_floor"] > 0
    assert r["baseline"]["params"] == count_params(base)["params"]
    assert r["relative"]["params"] == pytest.approx(r["params"] / r["baseline"]["params"])
    assert r["relative"]["macs"] == pytest.approx(r["macs"] / r["baseline"]["macs"])
    assert r["relative"]["latency"] == pytest.approx(r["latency_ms"] / r["baseline"]["latency_ms"])
    assert globalctx.profile is profile


# ---------------------------------------------------------------------------------------------
# CLI


def _cli(*argv):
    from globalctx.cli import main

    return main(["bench", *argv])


def test_cli_blocks_writes_csv_json_plot(tmp_path, capsys):
    csv_path, json_path, png = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "r.png"
    rc = _cli(
        "blocks", "--blocks", "gc,se", "--shape", "2,32,6,6", "--runs", "2", "--warmup", "1",
        "--out", str(csv_path), "--out", str(json_path), "--table", "plain", "--no-progress",
        *(["--plot", str(png)] if _has("matplotlib") else []),
    )  # fmt: skip
    assert rc == 0
    assert "x mem floor" in capsys.readouterr().out
    with open(csv_path) as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    names = [r["name"] for r in rows]
    assert names[:1] == ["gc"] and "se" in names
    if _has("mmcv"):
        assert "mmcv:gc" in names
    gc = rows[0]
    assert (
        int(gc["params"]) == count_params(globalctx.create_block("gc", 32))["params"]
        and int(gc["macs"]) == 2 * 2 * 36 * 32 + 2 * 2 * 32 * 2
    )
    assert float(gc["latency_ms"]) > 0 and gc["error"] == "" and gc["input_shape"] == "2x32x6x6"
    data = json.loads(json_path.read_text())
    assert {"cpu", "torch", "threads"} <= set(data["machine"]) and [r["name"] for r in data["rows"]] == names
    assert set(data["rows"][0]) == set(COLUMNS)
    if _has("matplotlib"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_sizes_sweep_and_block_options(tmp_path):
    out = tmp_path / "s.json"
    rc = _cli(
        "blocks", "--blocks", "gc:fusion='mul',se", "--sizes", "4,8", "--channels", "16", "-b", "1",
        "--runs", "1", "--warmup", "0", "--memory", "none", "--no-floors", "--peers", "none",
        "--baseline", "se", "--table", "none", "--no-progress", "--out", str(out),
    )  # fmt: skip
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["name"], r["input_shape"]) for r in rows] == [
        ("gc:fusion='mul'", "1x16x4x4"), ("se", "1x16x4x4"), ("gc:fusion='mul'", "1x16x8x8"), ("se", "1x16x8x8"),
    ]  # fmt: skip
    assert all(r["mem_alloc_mib"] is None and r["x_mem_floor"] is None for r in rows)
    assert rows[1]["x_latency_vs_base"] == 1.0 and rows[0]["baseline"] == "se"


def test_cli_models(tmp_path):
    out = tmp_path / "m.csv"
    rc = _cli(
        "models", "--models", "resnet18_small,resnet18_small", "--input", "1,3,16,16", "--num-classes", "10",
        "--runs", "1", "--warmup", "0", "--table", "none", "--no-progress", "--out", str(out),
    )  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader(open(out)))
    assert rows[0]["kind"] == "model" and rows[0]["floor_mem_ms"] == ""
    assert float(rows[1]["x_params_vs_base"]) == 1.0 and int(rows[0]["macs"]) > 0


def test_block_spec_parsing():
    from globalctx.cli.bench import parse_block_spec, split_names

    specs = split_names("gc:fusion=('add','mul')/rd_ratio=0.25, se ,nl:pairwise='dot_product'")
    assert specs == ["gc:fusion=('add','mul')/rd_ratio=0.25", "se", "nl:pairwise='dot_product'"]
    assert parse_block_spec(specs[0]) == (specs[0], "gc", {"fusion": ("add", "mul"), "rd_ratio": 0.25})
    assert parse_block_spec("nl:pairwise=dot_product")[2] == {"pairwise": "dot_product"}  # bare word -> str
    with pytest.raises(ValueError, match="key=value"):
        parse_block_spec("gc:oops")


def test_cli_errors(capsys):
    assert _cli("blocks", "--blocks", "nope", "--table", "none") == 2
    assert "unknown block" in capsys.readouterr().err
    assert _cli("blocks", "--shape", "1,8,4,4", "--sizes", "4", "--table", "none") == 2
    assert "not both" in capsys.readouterr().err
    assert _cli("blocks", "--blocks", "se", "--shape", "1,8,4", "--memory", "bogus", "--table", "none") == 2
    assert "bogus" in capsys.readouterr().err
    assert _cli("blocks", "--blocks", "se", "--shape", "1,32,4", "--baseline", "gc", "--table", "none") == 2
    assert "baseline 'gc'" in capsys.readouterr().err


@pytest.mark.parametrize("what", ["blocks", "models"])
def test_cli_help_explains_every_flag(what, capsys):
    from globalctx.cli.bench import build_parser

    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["bench", what, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ["--device", "--dtype", "--compile", "--runs", "--warmup", "--threads", "--memory",
                 "--no-floors", "--baseline", "--out", "--plot", "--table", "--no-progress"]:  # fmt: skip
        assert flag in text
    sub = build_parser()._subparsers._group_actions[0].choices["bench"]._subparsers._group_actions[0]
    for action in sub.choices[what]._actions:
        assert action.help, f"{action.option_strings} has no help"


def _has(mod):
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


def test_plain_progress_lines(capsys):
    from globalctx.bench import Case, run_cases

    rows = run_cases(
        [Case("se", globalctx.create_block("se", 32), (1, 32, 3, 3))],
        runs=1,
        warmup=0,
        memory=(),
        floors=False,
        progress="plain",
    )
    assert rows[0]["latency_ms"] > 0 and rows[0]["error"] == ""
    err = capsys.readouterr().err
    assert "[0/1] 1x32x3x3: timing 1 callables" in err and "[1/1] 1x32x3x3 se" in err


def test_failing_case_is_reported_not_raised():
    from globalctx.bench import Case, run_cases

    rows = run_cases(
        [Case("bad", lambda: globalctx.create_block("se", 32), (1, 4, 3, 3)), Case("ok", nn.Identity(), (1, 4, 3, 3))],
        runs=1,
        warmup=0,
        memory=(),
        progress="none",
    )
    assert "channels" in rows[0]["error"].lower() or "expected" in rows[0]["error"].lower()
    assert rows[1]["error"] == "" and rows[1]["latency_ms"] > 0


def test_bench_without_subcommand_prints_help(capsys):
    assert _cli() == 2
    assert "blocks" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_compile(tmp_path):
    out = tmp_path / "c.json"
    rc = _cli(
        "blocks", "--blocks", "se", "--shape", "1,16,4,4", "--compile", "--runs", "2", "--warmup", "1",
        "--table", "none", "--no-progress", "--out", str(out),
    )  # fmt: skip
    assert rc == 0 and json.loads(out.read_text())["rows"][0]["latency_ms"] > 0
