"""Searching an arch to a target: the supernet, the methods, constraints and the verify loop.

The method lists live here, torch-free, so the CLI builds its --method choices from them without
loading torch; the rest is imported when first used."""

METHODS = ("lightnas", "fbnet", "proxyless", "singlepath", "la-darts")  # gradient methods; `baselines` adds random and evolution
ALL_METHODS = (*METHODS, "random", "evolution", "predictor")  # predictor: nasctl.guided

__all__ = ["ALL_METHODS", "METHODS", "Job", "SearchConfig", "run_search"]


def __getattr__(name: str):
    if name == "SearchConfig":
        from nasctl.search.engine import SearchConfig

        return SearchConfig
    if name in ("Job", "run_search"):
        from nasctl.search import run

        return run.Job if name == "Job" else run.search
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
