"""NAS-Bench-201's cell space: one cell of 4 nodes and 6 edges, each edge one of 5 ops, stacked as
the authors' TinyNetwork (3 stages of N cells, residual reduction blocks between them).

Every one of the 5^6 = 15,625 cells is a member, the ones whose output is cut off from the input
(every path through `none`) included: `none` is an op that outputs zeros, as in the authors' code,
not an absent edge as in DARTS, so the L x K one-hot has no special row for it.

Arch strings are NAS-Bench-201's own, so files from NAS-Bench-201, NATS-Bench, HW-NAS-Bench and
HELP load as they are: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, node 1's edge from node 0, then
node 2's from nodes 0 and 1, then node 3's from nodes 0, 1 and 2.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from nasctl.errors import UserError
from nasctl.space.base import Arch, FreeLayers, check_params, digest, macro_shape, new_params
from nasctl.validate import shown

# The ops an nb201 space may name (NAS-Bench-201's own names); nasctl.models.nb201 builds them.
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 4  # node 0 is the cell's input, node 3 its output
EDGES = tuple((node, inp) for node in range(1, NODES) for inp in range(node))  # 6, in string order


@dataclass(frozen=True)
class Nb201Space(FreeLayers):
    mlp: ClassVar = ((128, 64), "relu")
    absent: ClassVar = None  # every op here, `none` included, is a real choice on its edge

    name: str
    description: str
    ops: tuple[str, ...]
    macros: dict = field(hash=False)
    params: object = None  # space.Params
    source: str = ""

    # ---- structure ---------------------------------------------------------------------
    @property
    def macro(self) -> dict:
        return self.macros[self.params.macro]

    @property
    def num_layers(self) -> int:
        return len(EDGES)

    @functools.cached_property
    def allowed(self) -> np.ndarray:
        return np.ones((self.num_layers, len(self.ops)), dtype=bool)

    @functools.cached_property
    def stages(self) -> tuple[dict, ...]:
        """Per stage: its channels C and map size, and the channels its reduction block takes in
        (None for the first stage, which follows the stem)."""
        c = max(1, round(int(self.macro["channels"]) * self.params.width_mult))
        hw, out, prev = self.params.resolution, [], None
        for i in range(3):
            if i:
                hw = math.ceil(hw / 2)
            out.append({"C": c << i, "hw": hw, "C_in": prev})
            prev = c << i
        return tuple(out)

    @property
    def cells_per_stage(self) -> int:
        return int(self.macro["cells"])

    @functools.cached_property
    def structure_hash(self) -> str:
        return digest({"name": self.name, "kind": "nb201", "ops": self.ops, "edges": EDGES})

    @functools.cached_property
    def definition_hash(self) -> str:
        return digest({"structure": self.structure_hash, "macro": macro_shape(self.macro), "params": self.params.__dict__})

    def with_params(self, **overrides) -> Nb201Space:
        params = new_params(self, overrides)
        return self if params is None else validated(replace(self, params=params))

    # ---- arch strings ------------------------------------------------------------------
    def to_string(self, ops: tuple[str, ...]) -> str:
        nodes = [[f"{op}~{inp}" for (n, inp), op in zip(EDGES, ops) if n == node] for node in range(1, NODES)]
        return "+".join("|" + "|".join(n) + "|" for n in nodes)

    def parse(self, text: str) -> Arch:
        """NAS-Bench-201's string; errors name the node, the edge and the bad token."""
        text = str(text).strip()
        nodes = text.split("+")
        if len(nodes) != NODES - 1:
            raise UserError(f"an {self.name} arch is {NODES - 1} nodes joined by '+' "
                            f"(|op~0|+|op~0|op~1|+|op~0|op~1|op~2|), got {len(nodes)}: {shown(text)}")
        ops = []
        for node, part in enumerate(nodes, 1):
            if not (part.startswith("|") and part.endswith("|")) or len(part) < 2:
                raise UserError(f"node {node}: edges are written between '|': {shown(part)}")
            edges = part[1:-1].split("|")
            if len(edges) != node:
                raise UserError(f"node {node}: has {node} input edge(s) (from nodes 0-{node - 1}), got {len(edges)} in {shown(part)}")
            for inp, tok in enumerate(edges):
                op, sep, src = tok.partition("~")
                if not sep or src != str(inp):
                    raise UserError(f"node {node}, edge from node {inp}: expected op~{inp}, got {shown(tok)}")
                if op not in self.ops:
                    raise UserError(f"node {node}, edge from node {inp}: unknown op {shown(op)} "
                                    f"(ops: {', '.join(self.ops)})")
                ops.append(op)
        return Arch(self, tuple(ops))

    def key(self, arch: Arch) -> None:
        """The canonical string is NAS-Bench-201's own key."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "layers": self.num_layers, "ops": list(self.ops),
                "params": self.params.__dict__, "size": len(self.ops) ** self.num_layers,
                "cells": 3 * self.cells_per_stage}


def from_doc(doc: dict, source: str, params) -> Nb201Space:
    space = Nb201Space(name=str(doc["name"]), description=str(doc.get("description", "")), ops=tuple(doc["ops"]),
                       macros=doc["macro"], params=params, source=source)
    return validated(space)


def validated(space: Nb201Space) -> Nb201Space:
    where = check_params(space)
    unknown = [o for o in space.ops if o not in OPS]
    if unknown or len(set(space.ops)) != len(space.ops):
        raise UserError(f"{where}: an nb201 space's ops are distinct ones of {', '.join(OPS)} (got {list(space.ops)})")
    return space
