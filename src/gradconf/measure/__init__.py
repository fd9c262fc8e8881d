"""Confusion measurement: gradient sampling, pairing and statistics."""

from gradconf.measure.protocol import LayerStats, Measurement, measure_confusion
from gradconf.measure.stats import ConfusionStats, gram_statistics, pair_statistics

__all__ = [
    "ConfusionStats",
    "LayerStats",
    "Measurement",
    "gram_statistics",
    "measure_confusion",
    "pair_statistics",
]
