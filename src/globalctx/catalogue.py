"""The block catalogue (``globalctx blocks``), each registered block with its parameter count and a
forward check at a typical shape."""

from __future__ import annotations

import time

import torch

from .layers import create_block, list_blocks


def catalogue(shape: tuple[int, ...] = (2, 256, 14, 14), seed: int = 0) -> list[dict]:
    """Build every registered block for ``shape[1]`` channels and run one forward (eval mode).

    Returns one row per block: name, parameters, output shape, whether the output is finite and
    whether the block is an identity at init, and the forward time in ms.
    """
    torch.manual_seed(seed)
    x = torch.randn(*shape)
    rows = []
    for name in list_blocks():
        row: dict = {"block": name}
        try:
            blk = create_block(name, shape[1]).eval()
            row["params"] = sum(p.numel() for p in blk.parameters())
            with torch.inference_mode():
                t0 = time.perf_counter()
                y = blk(x)
                row["ms"] = (time.perf_counter() - t0) * 1e3
            row["out_shape"] = "x".join(map(str, y.shape))
            row["finite"] = bool(torch.isfinite(y).all())
            row["identity_at_init"] = bool(torch.equal(y, x))
            row["ok"] = tuple(y.shape) == tuple(x.shape) and row["finite"]
        except Exception as e:  # report, keep going: this is a health check
            row.update(ok=False, error=f"{type(e).__name__}: {e}")
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    head = f"{'block':<14}{'params':>12}  {'output':<16}{'identity@init':>14}{'ms':>9}  status"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['block']:<14}{'-':>12}  {'-':<16}{'-':>14}{'-':>9}  FAIL {r['error']}")
            continue
        lines.append(
            f"{r['block']:<14}{r['params']:>12,}  {r['out_shape']:<16}{str(r['identity_at_init']):>14}"
            f"{r['ms']:>9.2f}  {'ok' if r['ok'] else 'FAIL'}"
        )
    return "\n".join(lines)
