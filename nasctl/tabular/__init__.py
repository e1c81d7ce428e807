"""Tabular benchmarks: spaces in which every net was trained to convergence (so a search's pick
can be scored against the best net that meets the budget) or timed on real devices. Their tables
ship with nasctl, each with its licence beside it, and load as ordinary rows."""

from nasctl.tabular.tables import TABLES, lookup, table, table_rows

__all__ = ["TABLES", "lookup", "table", "table_rows"]
