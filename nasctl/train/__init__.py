"""Training found architectures from scratch (single process or torchrun DDP)."""

from nasctl.train.retrain import Recipe, retrain

__all__ = ["Recipe", "retrain"]
