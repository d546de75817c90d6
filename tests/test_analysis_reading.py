"""GCNet's reading of the query-independence statistics: flat maps test nothing."""

from __future__ import annotations

import math

from globalctx.analysis.report import UNIFORM_ENTROPY, gcnet_reading
from globalctx.analysis.stats import BlockStats, QueryIndependence


def _stats(**mean) -> QueryIndependence:
    b = BlockStats("layer3.1.attn_add", "pairwise", (7, 7), (7, 7), 49, 49, 8, mean=dict(mean))
    return QueryIndependence({b.name: b})


def test_flat_maps_are_reported_as_not_tested():
    (text,) = gcnet_reading(_stats(input_cos=0.27, output_cos=1e-5, att_cos=3e-5, att_jsd=1e-5, att_entropy=1.0))
    assert "not tested" in text and "reproduces" not in text and "nearly uniform" in text


def test_learned_alike_maps_reproduce_and_query_specific_maps_do_not():
    common = {"input_cos": 0.25, "output_cos": 0.01, "att_jsd": 0.05, "att_entropy": UNIFORM_ENTROPY - 0.3}
    (alike,) = gcnet_reading(_stats(att_cos=0.02, **common))
    (specific,) = gcnet_reading(_stats(att_cos=0.24, **common))
    assert "reproduces the finding" in alike and "not tested" not in alike
    assert "does not reproduce the finding" in specific


def test_undefined_statistics_say_so():
    (text,) = gcnet_reading(_stats(input_cos=math.nan, att_cos=0.1))
    assert "undefined" in text
