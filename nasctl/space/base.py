"""What the layered and the cell spaces share: the user's params, an architecture, hashing.

Both kinds of space import this module and neither imports the other's, so the space package
has no import cycle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from nasctl.errors import UserError
from nasctl.space import schema


@dataclass(frozen=True)
class Params:
    """What a user may change on any space without editing it; part of every device config."""

    macro: str
    resolution: int
    width_mult: float
    num_classes: int


@dataclass(frozen=True)
class Arch:
    space: Any  # a SearchSpace or a CellSpace
    ops: tuple[str, ...]

    @property
    def string(self) -> str:
        return self.space.to_string(self.ops)

    @property
    def id(self) -> str:
        return digest({"space": self.space.structure_hash, "arch": self.string})[:16]

    @property
    def indices(self) -> np.ndarray:
        return np.array([self.space.ops.index(o) for o in self.ops], dtype=np.int64)

    def onehot(self) -> np.ndarray:
        """L x K one-hot matrix over the space's op list (the predictors' input)."""
        m = np.zeros(self.space.allowed.shape, dtype=np.float32)
        m[np.arange(len(self.ops)), self.indices] = 1.0
        return m

    def __str__(self) -> str:
        return self.string


MACRO_PARAMS = ("resolution", "num_classes")


def macro_shape(macro: dict) -> dict:
    """A macro table less its param defaults: those are hashed with the params, so adding a
    default to a macro does not move the definition hash of rows measured before."""
    return {k: v for k, v in macro.items() if k not in MACRO_PARAMS}


def new_params(space, overrides: dict) -> Params | None:
    """The space's params with `overrides` (None values ignored); None when nothing changes.

    A macro carries its own input: switching to one takes its resolution and class count
    unless they are given too, so rows are never labelled imagenet at 32 px. A macro that
    declares none needs them given."""
    where = f"space {space.source or space.name}"
    kw = {k: v for k, v in overrides.items() if v is not None}
    if not kw:
        return None
    kw = schema.overrides(kw, where)
    if kw.get("macro", space.params.macro) != space.params.macro:
        macro = space.macros.get(kw["macro"])
        if macro is None:
            raise UserError(f"{where}: unknown macro {kw['macro']!r} (has: {', '.join(space.macros)})")
        for key in MACRO_PARAMS:
            if key not in kw:
                if key not in macro:
                    raise UserError(f"{where}: macro {kw['macro']!r} declares no {key}; give --{key.replace('_', '-')} with --macro")
                kw[key] = macro[key]
    return replace(space.params, **kw)


def digest(doc) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()



def check_params(space) -> str:
    """The checks every kind of space makes on its params; returns the space's name for errors."""
    where = f"space {space.source or space.name}"
    p = space.params
    if p.macro not in space.macros:
        raise UserError(f"{where}: unknown macro {p.macro!r} (has: {', '.join(space.macros)})")
    if p.resolution < 8 or p.width_mult <= 0 or p.num_classes < 1:
        raise UserError(f"{where}: resolution >= 8, width_mult > 0 and num_classes >= 1 needed")
    return where


def draw_layers(allowed: np.ndarray, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, L) op indices, each layer sampled from softmax(logits) restricted to allowed ops."""
    z = np.where(allowed[None], logits, -np.inf)
    p = np.exp(z - z.max(-1, keepdims=True))
    cdf = np.cumsum(p / p.sum(-1, keepdims=True), -1)
    u = rng.random(cdf.shape[:2] + (1,))
    return np.minimum((u > cdf).sum(-1), allowed.shape[1] - 1)


class FreeLayers:
    """For spaces whose layers take their ops independently, each from its allowed list: every
    combination is an arch, so an arch is its indices and drawing, flipping and the cost range
    go layer by layer (the layered spaces and NAS-Bench-201's; DARTS cells are not)."""

    def from_indices(self, idx) -> Arch:
        return Arch(self, tuple(self.ops[int(i)] for i in idx))

    def flips(self, idx: np.ndarray) -> np.ndarray:
        """L x K: the ops each layer may change to and stay a valid arch (any allowed op)."""
        return self.allowed

    def draw(self, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N, L) op indices of valid archs, each layer's op from softmax(logits) over its allowed ops."""
        return draw_layers(self.allowed, logits, rng)

    def cost_range(self, lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
        """The cheapest and dearest arch's cost, from each layer's cheapest and dearest op."""
        return float(lo.sum()), float(hi.sum())
