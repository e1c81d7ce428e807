"""Builders: architecture strings to torch modules, and their exact costs."""

from nasctl.models.builder import build, input_shape, make_block
from nasctl.models.cost import arch_cost, arch_info, cost_table
from nasctl.models.count import count

__all__ = ["arch_cost", "arch_info", "build", "cost_table", "count", "input_shape", "make_block"]
