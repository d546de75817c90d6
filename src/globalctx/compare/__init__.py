"""The block comparison: train the same network with each global-context block under identical
settings and seeds, measure each model's cost, analyse its attention, and write one report.

It calls the trainer (:func:`globalctx.train.loop.fit`), the cost measurement
(:func:`globalctx.bench.profile`) and the analysis (:func:`globalctx.analysis.compare_section`)
directly. ``globalctx compare`` is its command.
"""

from .report import build_report_sections, plot_curves, results_table, write_report
from .run import (
    DEFAULT_SETTINGS,
    DEFAULT_VARIANTS,
    FULL_SETTINGS,
    CompareContext,
    auto_threads,
    default_config,
    measure_cost,
    resolve_variants,
    run_compare,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "DEFAULT_VARIANTS",
    "FULL_SETTINGS",
    "CompareContext",
    "auto_threads",
    "build_report_sections",
    "default_config",
    "measure_cost",
    "plot_curves",
    "resolve_variants",
    "results_table",
    "run_compare",
    "write_report",
]
