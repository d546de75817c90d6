"""Peak memory at L = 128 * 128 stays far below one L x L buffer (1 GiB in fp32), measured in a
fresh subprocess by the resident-set high-water mark; the same probe sees the reference path's
L x L matrix at 64 * 64, so it can fail."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    torch.set_num_threads(2)
    from globalctx.layers import DisentangledNonLocal, NonLocal

    def hwm_mib():
        # VmHWM after a reset of the high-water mark (Linux); ru_maxrss as a fallback
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def reset():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def rss_mib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

    def peak(block, side):
        block.eval()
        with torch.inference_mode():
            block(torch.randn(1, 16, 8, 8))  # warm-up: kernels, thread pools
            x = torch.randn(1, 16, side, side)
            ok = reset()
            before = rss_mib() if ok else hwm_mib()
            y = block(x)
            after = hwm_mib()
            del y
        return after - before

    out = {
        "embedded_gaussian": peak(NonLocal(16), 128),
        "gaussian_sub": peak(NonLocal(16, pairwise="gaussian", subsample=True), 128),
        "dot_product": peak(NonLocal(16, pairwise="dot_product"), 128),
        "concatenation": peak(NonLocal(16, pairwise="concatenation"), 128),
        "concatenation_chunked": peak(NonLocal(16, pairwise="concatenation", backend="chunked"), 128),
        "dnl": peak(DisentangledNonLocal(16), 128),
        "reference_64": peak(NonLocal(16, backend="reference"), 64),
    }
    print(json.dumps(out))
    """
)


def test_peak_memory_is_linear_not_quadratic():
    if not sys.platform.startswith("linux"):
        pytest.skip("the probe reads /proc (Linux only)")
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    mib = json.loads(res.stdout.strip().splitlines()[-1])
    # one L x L fp32 buffer at L = 128*128 is 1024 MiB; input and output are 1 MiB each;
    # the chunked concatenation kernel reuses one 16 MiB block
    for name in ("embedded_gaussian", "gaussian_sub", "dot_product", "concatenation", "dnl"):
        assert mib[name] < 48, (name, mib)
    assert mib["concatenation_chunked"] < 64, mib
    # the reference path at L = 64*64 holds a 64 MiB L x L matrix: the probe must see it
    assert mib["reference_64"] > 64, mib
