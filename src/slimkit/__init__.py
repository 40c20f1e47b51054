"""slimkit: convert trained neural networks into deployable artifacts and make them smaller and faster,
with proof measured on the runtime they ship on."""

from slimkit.api import OptimizeResult, bench, convert, optimize
from slimkit.errors import SlimkitError
from slimkit.evaluate.measure import Evaluator, Measurement, evaluate
from slimkit.formats import load
from slimkit.inspect_model import inspect_model
from slimkit.pipeline import load_recipe
from slimkit.searching import SearchResult, search
from slimkit.settings import MeasureSettings, TrainSettings

__version__ = "0.1.0"

__all__ = [
    "Evaluator", "MeasureSettings", "Measurement", "OptimizeResult", "SearchResult", "SlimkitError", "TrainSettings",
    "bench", "convert", "evaluate", "inspect_model", "load", "load_recipe", "optimize", "search",
]
