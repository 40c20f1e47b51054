"""Search across techniques, runtimes and precisions under an accuracy floor: `slimkit.searching(...)`."""

from slimkit.searching.driver import SearchResult, search

__all__ = ["SearchResult", "search"]
