"""Datasets by spec string: `digits` (ships in scikit-learn), `cifar10:PATH`, `imagefolder:PATH`."""

from nasctl.data.datasets import Data, load_data

__all__ = ["Data", "load_data"]
