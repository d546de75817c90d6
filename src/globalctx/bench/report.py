"""Output of benchmark rows: terminal table (rich when installed, else plain), CSV, JSON, PNG plots."""

from __future__ import annotations

import csv
import json
import os
import platform
from collections.abc import Sequence

import torch

__all__ = ["COLUMNS", "format_table", "print_table", "write_rows", "plot_rows", "machine_info"]

# CSV/JSON columns, in order (flops_by_op is JSON-encoded in CSV)
COLUMNS = [
    "group",
    "name",
    "kind",
    "input_shape",
    "device",
    "dtype",
    "threads",
    "memory_format",
    "amp",
    "mode",
    "params",
    "trainable",
    "buffers",
    "macs",
    "flops",
    "latency_ms",
    "latency_min_ms",
    "latency_max_ms",
    "runs",
    "floor_mem_ms",
    "floor_gemm_ms",
    "x_mem_floor",
    "x_gemm_floor",
    "x_floor",
    "mem_alloc_mib",
    "mem_cuda_mib",
    "mem_rss_cold_mib",
    "mem_rss_warm_mib",
    "baseline",
    "x_latency_vs_base",
    "x_params_vs_base",
    "x_macs_vs_base",
    "x_mem_vs_base",
    "flops_by_op",
    "torch",
    "error",
]

# terminal table: (header, key, format)
_VIEW = [
    ("case", "name", "{}"),
    ("input", "input_shape", "{}"),
    ("params", "params", "{:,}"),
    ("MACs", "macs", None),
    ("ms (median)", "latency_ms", "{:.3f}"),
    ("min-max", None, None),
    ("x mem floor", "x_mem_floor", "{:.2f}"),
    ("x GEMM floor", "x_gemm_floor", "{:.2f}"),
    ("alloc MiB", "mem_alloc_mib", "{:.2f}"),
    ("cuda MiB", "mem_cuda_mib", "{:.2f}"),
    ("RSS cold/warm MiB", None, None),
    ("x base ms", "x_latency_vs_base", "{:.2f}"),
    ("x base MACs", "x_macs_vs_base", "{:.3f}"),
]


def machine_info() -> dict[str, str]:
    """CPU model, core count, torch version and device name, for writing next to figures."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _si(v: float) -> str:
    """4,089,184,256 -> '4.089G'; 8,753 -> '8.753k'; 5 -> '5'."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.4g}{suffix}"
    return f"{v:g}"


def _cell(row: dict, key, fmt) -> str:
    if key is None:
        return ""
    v = row.get(key)
    if v is None or v == "":
        return "-"
    if key in ("macs", "params"):
        return _si(v)
    return fmt.format(v)


def _cells(row: dict, columns) -> list[str]:
    out = []
    for head, key, fmt in columns:
        if head == "min-max":
            lo, hi = row.get("latency_min_ms"), row.get("latency_max_ms")
            out.append(f"{lo:.3f}-{hi:.3f}" if lo is not None else "-")
        elif head.startswith("RSS"):
            c, w = row.get("mem_rss_cold_mib"), row.get("mem_rss_warm_mib")
            out.append("-" if c is None else f"{c:.1f}/{w:.1f}" if w is not None else f"{c:.1f}/-")
        elif key == "x_gemm_floor" and (row.get("floor_gemm_ms") or 0) < (row.get("floor_mem_ms") or 0):
            out.append("-")  # the GEMM floor is not the binding one: its ratio says nothing
        else:
            out.append(_cell(row, key, fmt))
    if row.get("error"):
        out[0] += f" [error: {row['error'][:60]}]"
    return out


def _visible(rows: Sequence[dict]):
    """Drop columns that are empty for every row."""
    keep = []
    for col in _VIEW:
        head, key, _ = col
        keys = {"min-max": ["latency_min_ms"], "RSS cold/warm MiB": ["mem_rss_cold_mib"]}.get(head, [key])
        if head in ("case", "input") or any(r.get(k) is not None for r in rows for k in keys):
            keep.append(col)
    return keep


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table, one line per row, groups separated by a blank line."""
    cols = _visible(rows)
    body = [[h for h, _, _ in cols]] + [_cells(r, cols) for r in rows]
    widths = [max(len(line[i]) for line in body) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(body[0], widths)))]
    lines.append("  ".join("-" * w for w in widths))
    prev = None
    for r, cells in zip(rows, body[1:]):
        if prev is not None and r.get("group") != prev:
            lines.append("")
        prev = r.get("group")
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))
    return "\n".join(lines)


def format_markdown(rows: Sequence[dict]) -> str:
    """The same table as GitHub markdown (for docs and results files)."""
    cols = _visible(rows)
    out = ["| " + " | ".join(h for h, _, _ in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_cells(r, cols)) + " |")
    return "\n".join(out)


def print_table(rows: Sequence[dict], *, style: str = "auto") -> None:
    """Print the table: ``style`` ``"rich"``, ``"plain"``, ``"markdown"`` or ``"auto"`` (rich if installed)."""
    if style == "markdown":
        print(format_markdown(rows))
        return
    if style in ("auto", "rich"):
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            if style == "rich":
                raise
        else:
            cols = _visible(rows)
            table = Table(show_lines=False)
            for i, (head, _, _) in enumerate(cols):
                table.add_column(head, justify="left" if i == 0 else "right")
            prev = None
            for r in rows:
                if prev is not None and r.get("group") != prev:
                    table.add_section()
                prev = r.get("group")
                table.add_row(*_cells(r, cols))
            console = Console()
            if not console.is_terminal:
                console = Console(width=max(console.width, 200))
            console.print(table)
            return
    print(format_table(rows))


def _csv_value(v):
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return "" if v is None else v


def write_rows(rows: Sequence[dict], path: str) -> str:
    """Write rows to ``path``: ``.csv`` (columns :data:`COLUMNS`) or ``.json`` (rows plus machine info)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: _csv_value(r.get(k)) for k in COLUMNS})
    elif ext == ".json":
        with open(path, "w") as f:
            json.dump({"machine": machine_info(), "rows": [{k: r.get(k) for k in COLUMNS} for r in rows]}, f, indent=1)
    else:
        raise ValueError(f"output file must end in .csv or .json, got {path!r}")
    return path


def plot_rows(rows: Sequence[dict], path: str) -> str:
    """Latency and peak memory per case, log scale, written as a PNG (needs matplotlib).

    With several groups (a resolution sweep) each case is a line over the groups' spatial size
    (``L = prod(S)``); with one group, bars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("latency_ms") is not None]
    if not ok:
        raise ValueError("nothing to plot: no row has a latency")
    mem_key = next(
        (k for k in ("mem_cuda_mib", "mem_alloc_mib", "mem_rss_cold_mib") if any(r.get(k) for r in ok)), None
    )
    fig, axes = plt.subplots(1, 2 if mem_key else 1, figsize=(11 if mem_key else 6, 4), squeeze=False)
    groups = list(dict.fromkeys(r["group"] for r in ok))
    names = list(dict.fromkeys(r["name"] for r in ok))

    def spatial(r):
        dims = [int(s) for s in r["input_shape"].split("x")[2:]]
        n = 1
        for d in dims:
            n *= d
        return n

    mem_labels = {
        "mem_cuda_mib": "peak memory, MiB (CUDA allocator)",
        "mem_alloc_mib": "peak memory, MiB (torch allocator)",
        "mem_rss_cold_mib": "peak RSS growth, MiB (first call)",
    }
    panels = [("latency_ms", "latency, median ms")] + ([(mem_key, mem_labels[mem_key])] if mem_key else [])
    for ax, (key, label) in zip(axes[0], panels):
        if len(groups) > 1:
            for name in names:
                pts = sorted((spatial(r), r[key]) for r in ok if r["name"] == name and r.get(key))
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            ax.set_xscale("log")
            ax.set_xlabel("positions L = prod(S)")
            ax.legend(fontsize=8)
        else:
            vals = [(r["name"], r.get(key)) for r in ok if r.get(key)]
            ax.bar([v[0] for v in vals], [v[1] for v in vals])
            ax.tick_params(axis="x", rotation=45)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    info = machine_info()
    threads = ok[0].get("threads", info["threads"])
    torch_version = ok[0].get("torch") or info["torch"]
    fig.suptitle(f"{info['cpu']} ({threads} thread(s)), torch {torch_version}, {ok[0].get('device', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
