"""Non-local forward time and peak memory: ours vs our reference path vs mmcv's NonLocal2d vs a GEMM floor.

Cases (C=256, C_r=128, batch 1, square maps, fp32, eval, ``torch.inference_mode``):

- ``ours_eg``: ``create_block("nl", 256)``, embedded Gaussian through fused SDPA.
- ``ours_ref``: the same block with ``backend="reference"`` (full ``L x L`` matrix).
- ``mmcv_eg``: mmcv-lite ``NonLocal2d(256, mode="embedded_gaussian")`` with the same weights.
- ``gemm_floor``: not a block; only the four GEMMs of the embedded-Gaussian block (qkv
  projection, ``Q K^T``, ``P V``, output projection) into preallocated buffers, no softmax.
- ``ours_dot`` / ``mmcv_dot``: dot-product NL (``theta (phi^T g) / L`` vs the ``L x L`` matrix).
- ``ours_concat`` / ``ours_concat_chunked``: concatenation NL, by sorting (``linear``, the default)
  and by bounded query chunks; mmcv's concatenation repeats ``theta``/``phi`` to ``L^2 C_r``
  floats (43 GB at 96x96) and is not run.

The blocks are not zero-initialised (so they contribute); ours and mmcv share weights and their
outputs are compared. Timing: warm-up, then ``--rounds`` rounds in which every case runs once in
a rotating order (drift on a shared machine hits all cases alike); medians. Peak memory: each
(case, size) runs in a fresh subprocess that warms up on an 8x8 map, resets the resident-set
high-water mark (``/proc/self/clear_refs``) and reports its growth over one forward (MiB; MKL /
oneDNN scratch included, unlike allocator counters).

    python benchmarks/nl_bench.py [--sizes 16 32 64 96 128] [--rounds 9] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

import torch

import globalctx

C = 256
CASES = ("ours_eg", "ours_ref", "mmcv_eg", "gemm_floor", "ours_dot", "mmcv_dot", "ours_concat", "ours_concat_chunked")
# sizes above which a case is not run (the L x L paths at 128x128 need 2 GiB and seconds per call)
MAX_SIZE = {"ours_ref": 96, "mmcv_eg": 96, "gemm_floor": 96, "mmcv_dot": 96}


def _randomize(m: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m.eval()


def _mmcv(mode: str):
    try:
        from mmcv.cnn.bricks import NonLocal2d
    except ImportError:
        return None
    return _randomize(NonLocal2d(C, reduction=2, use_scale=True, mode=mode))


def _ours_from_mmcv(ref, pairwise: str, backend: str = "auto"):
    ours = globalctx.create_block("nl", C, pairwise=pairwise, norm=False, backend=backend).eval()
    if ref is not None:
        globalctx.convert.from_mmcv(ours, ref.state_dict())
    else:
        _randomize(ours)
    return ours


class GemmFloor:
    """The four GEMMs of embedded-Gaussian NL into preallocated buffers (no softmax, no adds)."""

    def __init__(self, side: int):
        length, d = side * side, C // 2
        self.x = torch.randn(length, C)
        self.w_qkv = torch.randn(C, 3 * d) * 0.05
        self.w_out = torch.randn(d, C) * 0.05
        self.qkv = torch.empty(length, 3 * d)
        self.s = torch.empty(length, length)
        self.y = torch.empty(length, d)
        self.z = torch.empty(length, C)
        self.d = d

    def __call__(self, _x=None):
        d = self.d
        torch.mm(self.x, self.w_qkv, out=self.qkv)
        q, k, v = self.qkv[:, :d], self.qkv[:, d : 2 * d], self.qkv[:, 2 * d :]
        torch.mm(q, k.t(), out=self.s)
        torch.mm(self.s, v, out=self.y)
        torch.mm(self.y, self.w_out, out=self.z)
        return self.z


def build(case: str, side: int):
    """(callable, input) for ``case`` at ``side x side``; ``None`` if unavailable."""
    x = torch.randn(1, C, side, side)
    if case == "gemm_floor":
        return GemmFloor(side), x
    if case in ("mmcv_eg", "mmcv_dot"):
        m = _mmcv("embedded_gaussian" if case == "mmcv_eg" else "dot_product")
        return (m, x) if m is not None else None
    if case == "ours_eg":
        return _ours_from_mmcv(_mmcv("embedded_gaussian"), "embedded_gaussian"), x
    if case == "ours_ref":
        return _ours_from_mmcv(_mmcv("embedded_gaussian"), "embedded_gaussian", "reference"), x
    if case == "ours_dot":
        return _ours_from_mmcv(_mmcv("dot_product"), "dot_product"), x
    if case in ("ours_concat", "ours_concat_chunked"):
        backend = "chunked" if case == "ours_concat_chunked" else "auto"
        return _randomize(globalctx.create_block("nl", C, pairwise="concatenation", norm=False, backend=backend)), x
    raise ValueError(f"unknown case {case!r}; cases: {CASES}")


def _runs(case: str, side: int) -> bool:
    return side <= MAX_SIZE.get(case, 10**9)


def time_cases(sizes, rounds: int) -> dict:
    """Median ms per (case, size), interleaved rounds; plus max |ours - mmcv| per size."""
    out: dict = {"ms": {}, "max_abs_diff": {}}
    for side in sizes:
        built = {c: build(c, side) for c in CASES if _runs(c, side)}
        built = {c: b for c, b in built.items() if b is not None}
        with torch.inference_mode():
            for fn, x in built.values():  # warm-up
                fn(x)
            if "mmcv_eg" in built:
                x = built["ours_eg"][1]
                out["max_abs_diff"][side] = {
                    "eg": (built["ours_eg"][0](x) - built["mmcv_eg"][0](x)).abs().max().item(),
                    "dot": (built["ours_dot"][0](x) - built["mmcv_dot"][0](x)).abs().max().item(),
                }
        calls = {c: (lambda fn=fn, x=x: fn(x)) for c, (fn, x) in built.items()}
        res = globalctx.bench.time_cases(calls, runs=rounds, warmup=0)  # warmed up above
        out["ms"][side] = {c: r["median_ms"] for c, r in res.items()}
        print(f"  {side}x{side}: " + ", ".join(f"{c} {v:.2f}" for c, v in out["ms"][side].items()), flush=True)
        del built
    return out


_MEM_PROBE = """
import json, sys
import torch
torch.set_num_threads({threads})
sys.path.insert(0, {here!r})
import nl_bench

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024

fn, x = nl_bench.build({case!r}, {side})
with torch.inference_mode():
    small = torch.randn(1, nl_bench.C, 8, 8)
    if {case!r} != "gemm_floor":
        fn(small)
    else:
        nl_bench.GemmFloor(8)()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS:")
    fn(x)
    print(json.dumps(status("VmHWM:") - before))
"""


def memory_cases(sizes, threads: int) -> dict:
    """Peak resident-set growth (MiB) of one forward per (case, size), each in a fresh process.

    The input and (for the floor) the preallocated buffers are created before the reset, so the
    figure is what the call itself adds: the output and every temporary.
    """
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    out: dict = {}
    for side in sizes:
        out[side] = {}
        for case in CASES:
            if not _runs(case, side) or (case.startswith("mmcv") and _mmcv("dot_product") is None):
                continue
            code = _MEM_PROBE.format(threads=threads, here=here, case=case, side=side)
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
            if res.returncode != 0:
                out[side][case] = None
                print(f"  memory {case} {side}: failed: {res.stderr[-500:]}", file=sys.stderr)
                continue
            out[side][case] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"  {side}x{side} MiB: " + ", ".join(f"{c} {v:.1f}" for c, v in out[side].items() if v is not None))
    return out


def markdown(res: dict) -> str:
    ms, mem = res["time"]["ms"], res["memory"]
    lines = [
        "| H×W | L | ours_eg ms | ours_ref ms | mmcv_eg ms | gemm_floor ms | ours/floor | mmcv/ours "
        "| ours_dot ms | mmcv_dot ms | ours_dot/mmcv_dot | ours_dot/mmcv_eg | ours_concat ms "
        "| ours_concat_chunked ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(d, k, fmt="{:.2f}"):
        v = d.get(k)
        return "–" if v is None else fmt.format(v)

    def ratio(t, a, b):
        return f"{t[a] / t[b]:.2f}" if a in t and b in t else "–"

    for side, t in ms.items():
        r = lambda a, b, t=t: ratio(t, a, b)  # noqa: E731
        lines.append(
            f"| {side}×{side} | {int(side) ** 2} | {f(t, 'ours_eg')} | {f(t, 'ours_ref')} | {f(t, 'mmcv_eg')} "
            f"| {f(t, 'gemm_floor')} | {r('ours_eg', 'gemm_floor')} | {r('mmcv_eg', 'ours_eg')} "
            f"| {f(t, 'ours_dot')} | {f(t, 'mmcv_dot')} | {r('ours_dot', 'mmcv_dot')} | {r('ours_dot', 'mmcv_eg')} "
            f"| {f(t, 'ours_concat')} | {f(t, 'ours_concat_chunked')} |"
        )
    lines += [
        "",
        "| H×W | one L×L fp32 MiB | ours_eg | ours_ref | mmcv_eg | gemm_floor | mmcv/ours | ours_dot | mmcv_dot "
        "| ours_concat | ours_concat_chunked |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for side, m in mem.items():
        mem_ratio = f"{m['mmcv_eg'] / m['ours_eg']:.1f}" if m.get("mmcv_eg") and m.get("ours_eg") else "–"
        lines.append(
            f"| {side}×{side} | {int(side) ** 4 * 4 / 2**20:.0f} | {f(m, 'ours_eg', '{:.1f}')} "
            f"| {f(m, 'ours_ref', '{:.1f}')} | {f(m, 'mmcv_eg', '{:.1f}')} | {f(m, 'gemm_floor', '{:.1f}')} "
            f"| {mem_ratio} | {f(m, 'ours_dot', '{:.1f}')} | {f(m, 'mmcv_dot', '{:.1f}')} "
            f"| {f(m, 'ours_concat', '{:.1f}')} | {f(m, 'ours_concat_chunked', '{:.1f}')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 96, 128])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", action="store_true", help="skip the subprocess memory probes")
    p.add_argument("--json", help="write the raw results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "rounds": args.rounds,
    }
    print("time (median ms):", flush=True)
    res["time"] = time_cases(args.sizes, args.rounds)
    res["memory"] = {} if args.no_memory else memory_cases(args.sizes, args.threads)
    print(markdown(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)
    return res


if __name__ == "__main__":
    main()
