"""Reports people look at: one HTML page per run folder."""

from nasctl.report.html import build_report

__all__ = ["build_report"]
