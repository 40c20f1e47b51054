"""Pruning that changes layer shapes (structured), so the pruned model really runs faster."""

from slimkit.pruning.structured import (
    ActivationImportance,
    collect_activation_stats,
    count_macs,
    prune_structured,
)

__all__ = ["ActivationImportance", "collect_activation_stats", "count_macs", "prune_structured"]
