"""Searching an arch to a target: the supernet, the methods, constraints and the verify loop."""

from nasctl.search.engine import SearchConfig
from nasctl.search.run import Job, search as run_search

__all__ = ["Job", "SearchConfig", "run_search"]
