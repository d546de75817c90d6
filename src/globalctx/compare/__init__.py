"""The block comparison: train the same network with each global-context block under every seed
(a paired design), measure each model's cost, summarise with intervals and verdicts, analyse the
attention, and write one report.

It calls the trainer (:func:`globalctx.train.loop.fit`), the cost measurement
(:func:`globalctx.bench.profile`) and the analysis (:func:`globalctx.analysis.compare_section`)
directly. ``globalctx compare`` is its command; docs/compare.md describes it.
"""

from .report import build_report_sections, results_table, write_report
from .run import (
    DEFAULT_SEEDS,
    DEFAULT_SETTINGS,
    DEFAULT_VARIANTS,
    FULL_SETTINGS,
    PRESET_BUDGETS,
    CompareContext,
    CompareInterrupted,
    auto_threads,
    default_config,
    measure_cost,
    parse_seeds,
    parse_variant_list,
    resolve_variants,
    run_compare,
)

__all__ = [
    "DEFAULT_SEEDS",
    "DEFAULT_SETTINGS",
    "DEFAULT_VARIANTS",
    "FULL_SETTINGS",
    "PRESET_BUDGETS",
    "CompareContext",
    "CompareInterrupted",
    "auto_threads",
    "build_report_sections",
    "default_config",
    "measure_cost",
    "parse_seeds",
    "parse_variant_list",
    "resolve_variants",
    "results_table",
    "run_compare",
    "write_report",
]
