"""The DARTS cell space: a normal and a reduction cell of 4 nodes, 14 edges and 8 ops each, where a
derived cell keeps 2 inputs per node; networks are cells stacked (8 to search, 20 to evaluate).

Encoded as 28 "layers" (the normal cell's 14 edges, then the reduction cell's) of the 8 ops,
`none` marking an absent edge, so sampling, the profile store, the predictors and the exact cost
table see the same L x K one-hot as in the layered spaces.

The genotype string (canonical): each cell's nodes joined by ``-``, a node's two inputs as
``op:input`` joined by ``+`` in input order, the normal cell then ``,`` then the reduction cell.
Inputs 0 and 1 are the outputs of the two previous cells, 2-4 the cell's earlier nodes (as in
DARTS's genotypes). Example node: ``sep3:0+skip:1``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from nasctl.errors import UserError
from nasctl.space.base import Arch, check_params, digest, draw_layers, macro_shape, new_params
from nasctl.validate import shown

NONE = "none"
# The ops a cell space may name; nasctl.models.cells builds each of them.
OPS = ("sep3", "sep5", "dil3", "dil5", "max3", "avg3", "skip", NONE)
NODES = 4
EDGES = tuple((node, inp) for node in range(NODES) for inp in range(node + 2))  # 14: node takes inp


def node_edges(cell: int, node: int) -> list[int]:
    """The one-hot rows of a node's input edges (in input order), in cell 0 (normal) or 1 (reduction)."""
    return [cell * len(EDGES) + e for e, (n, _) in enumerate(EDGES) if n == node]


@dataclass(frozen=True)
class CellSpace:
    # LA-DARTS's latency prediction model (LPM): 256-64-1 with sigmoids. The paper feeds it the
    # normal cell (112 inputs); here the reduction cell is searched too, so it sees both (224).
    mlp: ClassVar = ((256, 64), "sigmoid")
    absent: ClassVar = NONE  # the op that marks an edge a derived cell does not keep

    name: str
    description: str
    ops: tuple[str, ...]
    macros: dict = field(hash=False)  # compared: cost tables are cached per equal space
    params: object = None  # space.Params
    source: str = ""

    # ---- structure ---------------------------------------------------------------------
    @property
    def macro(self) -> dict:
        return self.macros[self.params.macro]

    @property
    def num_layers(self) -> int:
        return 2 * len(EDGES)

    @functools.cached_property
    def allowed(self) -> np.ndarray:
        """Every op may sit on every edge; the 2-inputs-per-node rule is checked on whole cells."""
        return np.ones((self.num_layers, len(self.ops)), dtype=bool)

    @property
    def none_index(self) -> int:
        return self.ops.index(NONE)

    @functools.cached_property
    def cells(self) -> tuple[dict, ...]:
        """Per stacked cell: reduction or not, its channels C, the channels and size of its two
        inputs, whether the cell before it reduced (then input 0 is halved on the way in)."""
        m, w = self.macro, self.params.width_mult
        n, c = int(m["cells"]), max(1, round(int(m["channels"]) * w))
        stem = int(m.get("stem_multiplier", 3)) * c
        out, hw = [], self.params.resolution
        pp, p, reduce_prev = stem, stem, False
        for i in range(n):
            reduce = i in (n // 3, 2 * n // 3)
            if reduce:
                c *= 2
            out.append({"reduce": reduce, "C": c, "C_pp": pp, "C_p": p, "hw": hw, "reduce_prev": reduce_prev})
            pp, p, reduce_prev = p, NODES * c, reduce
            hw = math.ceil(hw / 2) if reduce else hw
        return tuple(out)

    @property
    def stem_channels(self) -> int:
        return self.cells[0]["C_p"]

    @property
    def out_channels(self) -> int:
        return NODES * self.cells[-1]["C"]

    @functools.cached_property
    def structure_hash(self) -> str:
        return digest({"name": self.name, "kind": "cells", "ops": self.ops, "edges": EDGES})

    @functools.cached_property
    def definition_hash(self) -> str:
        return digest({"structure": self.structure_hash, "macro": macro_shape(self.macro), "params": self.params.__dict__})

    def with_params(self, **overrides) -> CellSpace:
        params = new_params(self, overrides)
        return self if params is None else validated(replace(self, params=params))

    # ---- genotypes ---------------------------------------------------------------------
    def to_string(self, ops: tuple[str, ...]) -> str:
        cells = []
        for half in (ops[: len(EDGES)], ops[len(EDGES) :]):
            nodes = [[] for _ in range(NODES)]
            for (node, inp), op in zip(EDGES, half):
                if op != NONE:
                    nodes[node].append(f"{op}:{inp}")
            cells.append("-".join("+".join(n) for n in nodes))
        return ",".join(cells)

    def parse(self, text: str):
        text = str(text).strip()
        cells = text.split(",")
        if len(cells) != 2:
            raise UserError(f"a {self.name} genotype is a normal and a reduction cell joined by ',': {shown(text)}")
        ops = [NONE] * self.num_layers
        for c, cell in enumerate(cells):
            nodes = cell.split("-")
            if len(nodes) != NODES:
                raise UserError(f"cell {c}: {len(nodes)} nodes, a {self.name} cell has {NODES}: {shown(cell)}")
            for node, part in enumerate(nodes):
                inputs = part.split("+")
                if len(inputs) != 2:
                    raise UserError(f"cell {c} node {node}: keeps 2 inputs, got {len(inputs)} in {shown(part)}")
                seen = set()
                for tok in inputs:
                    op, _, inp = tok.partition(":")
                    if op not in self.ops or op == NONE:
                        raise UserError(f"cell {c} node {node}: unknown op {shown(op)} (ops: {', '.join(o for o in self.ops if o != NONE)})")
                    if not inp.isdigit() or not int(inp) < node + 2 or int(inp) in seen:
                        raise UserError(f"cell {c} node {node}: input {shown(inp)} must be a distinct one of 0-{node + 1}")
                    seen.add(int(inp))
                    ops[c * len(EDGES) + EDGES.index((node, int(inp)))] = op
        return Arch(self, tuple(ops))

    def key(self, arch: Arch) -> None:
        """No tabular benchmark's key form here (NAS-Bench-201's strings are the canonical ones)."""
        return None

    def from_indices(self, idx):
        ops = tuple(self.ops[int(i)] for i in idx)
        for c in range(2):
            for node in range(NODES):
                kept = sum(ops[e] != NONE for e in node_edges(c, node))
                if kept != 2:
                    raise UserError(f"cell {c} node {node}: keeps {kept} inputs, a derived cell keeps 2")
        return Arch(self, ops)

    def flips(self, idx: np.ndarray) -> np.ndarray:
        """L x K: the ops each row may take, one row at a time, and stay a genotype: a kept edge
        another op, an absent one none."""
        none = np.arange(len(self.ops)) == self.none_index
        return np.where((np.asarray(idx) != self.none_index)[:, None], ~none, none)

    def draw(self, logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(N, 28) op indices of valid genotypes: per node 2 distinct inputs uniformly, their ops
        from softmax(logits) over the ops other than none."""
        ops = draw_layers(self.allowed & (np.arange(len(self.ops)) != self.none_index), logits, rng)
        keep = np.zeros_like(ops, dtype=bool)
        n = len(ops)
        for c in range(2):
            for node in range(NODES):
                picks = rng.random((n, node + 2)).argsort(1)[:, :2]
                keep[np.arange(n)[:, None], node_edges(c, node)[0] + picks] = True
        return np.where(keep, ops, self.none_index)

    def cost_range(self, lo: np.ndarray, hi: np.ndarray) -> tuple[float, float]:
        """The cheapest and dearest genotype's cost, from each edge's cheapest and dearest op:
        per node, the 2 cheapest (dearest) of its input edges."""
        cmin = cmax = 0.0
        for c in range(2):
            for node in range(NODES):
                e = node_edges(c, node)
                cmin += np.sort(lo[e])[:2].sum()
                cmax += np.sort(hi[e])[-2:].sum()
        return float(cmin), float(cmax)

    def describe(self) -> dict:
        per_cell = math.prod(math.comb(node + 2, 2) * (len(self.ops) - 1) ** 2 for node in range(NODES))
        return {"name": self.name, "source": self.source, "layers": self.num_layers, "ops": list(self.ops),
                "params": self.params.__dict__, "size": per_cell**2, "cells": len(self.cells)}


def from_doc(doc: dict, source: str, params) -> CellSpace:
    """`params`: the file's [params], read by the space module (32x32 and 10 classes by default)."""
    space = CellSpace(name=str(doc["name"]), description=str(doc.get("description", "")), ops=tuple(doc["ops"]),
                      macros=doc["macro"], params=params, source=source)
    return validated(space)


def validated(space: CellSpace) -> CellSpace:

    where = check_params(space)
    if NONE not in space.ops or len(set(space.ops)) != len(space.ops):
        raise UserError(f"{where}: a cell space's ops include {NONE!r}, without repeats")
    unknown = [o for o in space.ops if o not in OPS]
    if unknown:
        raise UserError(f"{where}: unknown cell ops {unknown} (known: {', '.join(OPS)})")
    if int(space.macro.get("cells", 0)) < 3:
        raise UserError(f"{where}: a cell macro stacks at least 3 cells (2 of them reduce)")
    return space
