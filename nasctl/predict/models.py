"""Predictors as differentiable torch modules on a (soft) L x K one-hot: the search backprops
through them, and a straight-through one-hot gives the exact figure of its arch.

- `Additive`: the lookup table, b + sum(W * X). Fitted by least squares it is the FBNet /
  ProxylessNAS LUT; with the cost table as W it is the exact MACs or params of an arch.
- `MLP`: on the flattened one-hot, on a standardized target; LightNAS's 128-64-1 ReLU in the
  layered spaces, LA-DARTS's LPM (256-64-1, sigmoid) in the cell spaces (`space.mlp`).
- `Ensemble`: members' mean and std; the std is the predictor's own uncertainty.
- `Residual`: LUT + MLP on what the LUT misses (interactions between layers).
"""

from __future__ import annotations

import torch
from torch import nn


class Additive(nn.Module):
    def __init__(self, L: int, K: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(L, K))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias + (x * self.weight).sum((-2, -1))


ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


class MLP(nn.Module):
    """hidden-1 on the flattened one-hot; predicts y_mean + y_std * out."""

    def __init__(self, L: int, K: int, hidden=(128, 64), activation: str = "relu"):
        super().__init__()
        layers, d = [], L * K
        for h in hidden:
            layers += [nn.Linear(d, h), ACTIVATIONS[activation]()]
            d = h
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.y_mean + self.y_std * self.net(x.flatten(-2)).squeeze(-1)


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x).mean(0)

    def std(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x).std(0) if len(self.members) > 1 else torch.zeros(x.shape[0], device=x.device)


class Residual(nn.Module):
    def __init__(self, lut: Additive, mlp: nn.Module):
        super().__init__()
        self.lut, self.mlp = lut, mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lut(x) + self.mlp(x)

    def std(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp.std(x)


def uncertainty(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-arch std across ensemble members (zeros for a single deterministic model)."""
    return model.std(x) if hasattr(model, "std") else torch.zeros(x.shape[0], device=x.device)
