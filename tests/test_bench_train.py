"""Training mode of globalctx.bench: the step callable (gradients, optimizer), training floors
(arithmetic of the backward GEMMs, the backward's passes over x), memory of a step, and the
``--mode`` / ``--clock`` flags end to end on tiny shapes (no speed assertions)."""

import json

import pytest
import torch
from torch import nn

import globalctx
from globalctx.bench import MODES, profile, step_fn
from globalctx.bench.counting import Gemm, count_flops
from globalctx.bench.floors import train_memory_floor_fn, training_gemms
from globalctx.bench.memory import alloc_peak, peak_memory, rss_peak
from globalctx.bench.runner import Case, run_cases
from globalctx.bench.training import check_mode, grad_context, is_training


def test_modes_and_grad_context():
    assert MODES == ("inference", "train", "train+step")
    assert not is_training("inference") and is_training("train") and is_training("train+step")
    with pytest.raises(ValueError, match="mode must be one of"):
        check_mode("backward")
    with grad_context("inference"):
        assert torch.is_inference_mode_enabled()
    with torch.no_grad(), grad_context("train"):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_train_step_computes_parameter_and_input_gradients():
    torch.manual_seed(0)
    blk = globalctx.create_block("gc", 64, init="identity")  # zero last FC: its grad is still nonzero
    x = torch.randn(2, 64, 5, 5)
    run = step_fn(blk, x, "train")
    assert blk.training
    y = run()
    assert y.shape == x.shape and not y.requires_grad
    grads = {n: p.grad for n, p in blk.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert grads["transform.fc2.weight"].abs().sum() > 0
    # the same fixed output gradient every call: gradients are reproduced, not accumulated
    first = {n: g.clone() for n, g in grads.items()}
    run()
    for n, p in blk.named_parameters():
        assert torch.allclose(p.grad, first[n], atol=1e-6), n
    # dL/dx is computed for blocks, not for models
    assert run.input.grad is not None and run.input.grad.shape == x.shape
    model_run = step_fn(nn.Conv2d(3, 4, 1), torch.randn(1, 3, 4, 4), "train", input_grad=False)
    model_run()
    assert model_run.input.grad is None


def test_train_step_moves_the_weights_and_inference_does_not():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    w0 = lin.weight.detach().clone()
    step_fn(lin, x, "train")()
    assert torch.equal(lin.weight, w0)  # backward only
    run = step_fn(lin, x, "train+step", lr=0.1)
    run()
    assert not torch.equal(lin.weight, w0)
    w1 = lin.weight.detach().clone()
    inf = step_fn(lin, x, "inference")
    with torch.inference_mode():
        inf()
    assert torch.equal(lin.weight, w1) and not lin.training


def test_training_gemms_arithmetic():
    g = Gemm(2, 3, 5, 7)
    fwd, da, db = training_gemms([g])
    assert fwd == g and da == Gemm(2, 3, 7, 5) and db == Gemm(2, 5, 3, 7)
    assert da.flops == db.flops == g.flops
    # NL: a training step's bare products are 3x the forward FLOPs
    nl = globalctx.create_block("nl", 16)
    fc = count_flops(nl.eval(), torch.randn(1, 16, 6, 6))
    assert sum(t.flops for t in training_gemms(fc.gemms)) == 3 * fc.flops
    assert training_gemms([]) == []


def test_train_memory_floor_passes():
    x = torch.randn(2, 3, 4, 5)
    s, c, ds, dx = train_memory_floor_fn(x)()
    assert torch.equal(s, x.sum((2, 3))) and torch.equal(c, x) and c.data_ptr() != x.data_ptr()
    assert ds.shape == (2, 3) and dx.shape == x.shape
    # dx = dy + x with the fixed dy: subtracting x gives back a tensor whose spatial sum is ds
    assert torch.allclose((dx - x).sum((2, 3)), ds, atol=1e-5)


def test_alloc_peak_of_a_training_step_sees_the_saved_activations():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 256))
    x = torch.randn(512, 256)
    inf = peak_memory(mlp, x, methods=("alloc",))["mem_alloc_mib"]
    train = peak_memory(mlp, x, methods=("alloc",), mode="train")["mem_alloc_mib"]
    # inference: one [512, 1024] hidden (2 MiB) at a time; training keeps it (and the ReLU mask /
    # output) for the backward and adds the weight gradients (2 MiB): clearly more
    assert 1.9 < inf < 4.1
    assert train > inf + 1.5
    assert alloc_peak(lambda: torch.empty(1 << 18), grad=True) == pytest.approx(1.0)


def test_rss_peak_of_a_training_step_runs_in_the_child():
    r = rss_peak(globalctx.create_block("se", 32), (2, 32, 8, 8), mode="train+step")
    assert set(r) == {"cold", "warm"} and r["cold"] is not None and r["cold"] >= 0


def test_run_cases_train_mode_rows_and_floors():
    cases = [Case("gc", lambda: globalctx.create_block("gc", 32), (2, 32, 6, 6)),
             Case("nl", lambda: globalctx.create_block("nl", 32), (2, 32, 6, 6))]
    rows = run_cases(cases, runs=2, warmup=1, mode="train", progress="none", clock="thread", threads=1)
    for r in rows:
        assert r["error"] == "" and r["mode"] == "train"
        assert r["latency_ms"] > 0 and r["floor_mem_ms"] > 0 and r["floor_gemm_ms"] > 0
        assert r["mem_alloc_mib"] > 0
    with pytest.raises(ValueError, match="clock"):
        run_cases(cases, clock="cpu")
    with pytest.raises(ValueError, match="mode"):
        run_cases(cases, mode="fit")


def test_profile_train_step():
    r = profile(globalctx.create_block("se", 16), (2, 16, 5, 5), runs=2, warmup=1, mode="train+step")
    assert r["mode"] == "train+step" and r["latency_ms"] > 0 and r["mem_alloc_mib"] > 0


def test_cli_train_mode_writes_mode_column(tmp_path):
    from globalctx.cli import main

    out = tmp_path / "t.json"
    rc = main([
        "bench", "blocks", "--blocks", "gc,se", "--shape", "2,32,6,6", "--runs", "2", "--warmup", "1",
        "--mode", "train", "--clock", "thread", "--threads", "1", "--table", "none", "--no-progress",
        "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["mode"] for r in rows} == {"train"} and all(r["latency_ms"] > 0 for r in rows)
    rc = main([
        "bench", "models", "--models", "resnet18_small", "--input", "1,3,16,16", "--num-classes", "10",
        "--runs", "1", "--warmup", "0", "--mode", "train+step", "--table", "none", "--no-progress",
        "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["mode"] == "train+step" and row["floor_mem_ms"] is None and row["latency_ms"] > 0
