"""Measurement: run any model kind on data, time it, compare it to a reference, score it on labels."""

from slimkit.evaluate.measure import Measurement, evaluate

__all__ = ["Measurement", "evaluate"]
