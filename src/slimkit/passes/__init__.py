"""Passes: one module per technique. Each registers itself by name for recipes."""

from slimkit.passes.base import Context, Pass, PassConfig, PassResult, available_passes, get_pass, register

__all__ = ["Context", "Pass", "PassConfig", "PassResult", "available_passes", "get_pass", "register"]
