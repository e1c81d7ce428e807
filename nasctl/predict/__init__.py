"""Latency/energy predictors that the search can differentiate through, and their fitting."""

from nasctl.predict.fit import FitConfig
from nasctl.predict.predictor import Predictor, exact_cost, fit_predictor, load_rows

__all__ = ["FitConfig", "Predictor", "exact_cost", "fit_predictor", "load_rows"]
