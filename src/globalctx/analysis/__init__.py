"""Analysis: what global-context blocks learn.

- :func:`capture`: forward hooks recording attention maps (NL/DNL rows of chosen query positions,
  GC/SNL's shared map), block inputs and outputs, without building ``L x L``.
- :func:`query_independence`: GCNet's Table 1 statistics (cosine distance of inputs, outputs and
  attention maps; JSD of attention maps) per block over a dataset.
- :func:`plot_attention`, :func:`plot_statistics`: GCNet Figure 1 style figures and a bar chart
  (matplotlib, imported only when called).
- :func:`report_section`: the markdown analysis section of one model (``globalctx analyze``);
  :func:`compare_section`: the analysis section of a block-comparison report
  (:mod:`globalctx.compare` calls it).
"""

from .capture import Recording, block_kind, capture, find_blocks, grid_queries, resolve_queries
from .plots import plot_attention, plot_statistics
from .report import compare_section, report_section
from .stats import (
    BlockStats,
    QueryIndependence,
    block_statistics,
    correct_for_sampling,
    mean_cosine_distance,
    mean_jsd,
    query_independence,
)

__all__ = [
    "BlockStats",
    "QueryIndependence",
    "Recording",
    "block_kind",
    "block_statistics",
    "capture",
    "compare_section",
    "correct_for_sampling",
    "find_blocks",
    "grid_queries",
    "mean_cosine_distance",
    "mean_jsd",
    "plot_attention",
    "plot_statistics",
    "query_independence",
    "report_section",
    "resolve_queries",
]
