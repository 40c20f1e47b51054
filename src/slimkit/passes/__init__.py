"""Passes: one module per technique. Each registers itself by name for recipes; other packages add passes
through the entry point group `slimkit.passes` (see `base.discover_passes`)."""

from slimkit.passes.base import (
    Context,
    Pass,
    PassConfig,
    PassResult,
    available_passes,
    discover_passes,
    get_pass,
    register,
)
from slimkit.passes.outcome import Outcome, Status

__all__ = ["Context", "Outcome", "Pass", "PassConfig", "PassResult", "Status", "available_passes",
           "discover_passes", "get_pass", "register"]
