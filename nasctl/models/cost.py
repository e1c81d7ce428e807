"""Exact MACs and params of any arch, as a fixed part plus one table entry per (layer, op).

Layers are independent given the macro, so these costs are exactly additive. The table is made
by counting each block once (`builder.count`), never by a second hand-written formula, and then
prices thousands of archs per millisecond: stratified sampling and FLOPs/params constraints
need that.
"""

from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from nasctl import __version__
from nasctl.errors import OutputError
from nasctl.models import cells, nb201
from nasctl.models.builder import build, make_block
from nasctl.models.count import FIELDS, count, count_all
from nasctl.space.cells import CellSpace
from nasctl.space.nb201 import Nb201Space
from nasctl.space.space import Arch, SearchSpace
from nasctl.tables import atomic_write


@dataclass(frozen=True)
class CostTable:
    fixed_macs: int
    fixed_params: int
    macs: np.ndarray  # L x K, 0 where the op is not allowed
    params: np.ndarray
    dw_macs: np.ndarray  # L x K: the depthwise share of macs
    traffic: np.ndarray  # L x K: elements read and written by the convolutions
    convs: np.ndarray  # L x K: convolutions (kernel launches)

    def of(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MACs and params for archs given as an (N, L) array of op indices."""
        idx = np.atleast_2d(idx)
        rows = np.arange(idx.shape[1])
        return (
            self.fixed_macs + self.macs[rows, idx].sum(1),
            self.fixed_params + self.params[rows, idx].sum(1),
        )

    def features(self) -> np.ndarray:
        """L x K x 3 per-(layer, op) cost features: MMACs, Mparams, 1 for an op that computes.
        Latency is nearly linear in them, so they are the prior a latency table shrinks towards
        where measured rows are few."""
        return np.stack([self.macs / 1e6, self.params / 1e6, (self.macs > 0).astype(float)], -1)

    def device_features(self) -> np.ndarray:
        """L x K x 6: `features` plus the depthwise MMACs, M elements of traffic and the count of
        convolutions. A device's speed differs from another's mostly in what it pays for these
        (memory-bound boards pay for traffic, GPUs at batch 1 per launch), so a new device's table
        is fitted from them and from the tables of devices already measured (`predict.transfer`).
        On HELP's devices they lift the best table made of them from rho 0.84 to 0.92 (GTX
        1080 Ti, batch 1); the default LUT keeps the 3, as its figures were measured with."""
        return np.concatenate([self.features(), np.stack([self.dw_macs / 1e6, self.traffic / 1e6, self.convs.astype(float)], -1)], -1)


def _cache_file(space: SearchSpace) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "nasctl" / f"costs-{__version__}-{space.definition_hash[:24]}.npz"  # builder changes bump the version


@functools.cache
def cost_table(space: SearchSpace) -> CostTable:
    """Counted once per space definition, then read from the user's cache (~3 s -> ~1 ms)."""
    cache = _cache_file(space)
    try:
        with np.load(cache) as z:
            return CostTable(int(z["fixed_macs"]), int(z["fixed_params"]), *(z[k] for k in FIELDS))
    except (OSError, KeyError, ValueError):
        pass  # none yet, or written by a version with fewer tables
    table = _count_table(space)
    buf = io.BytesIO()
    np.savez(buf, fixed_macs=table.fixed_macs, fixed_params=table.fixed_params, **{k: getattr(table, k) for k in FIELDS})
    try:
        atomic_write(cache, buf.getvalue(), output=False)
    except OutputError:
        pass  # a read-only home only costs the recount next time
    return table


def _count_table(space: SearchSpace | CellSpace | Nb201Space) -> CostTable:
    if isinstance(space, CellSpace):
        tables = cells.edge_costs(space)
    elif isinstance(space, Nb201Space):
        tables = nb201.edge_costs(space)
    else:
        tables = {k: np.zeros(space.allowed.shape, np.int64) for k in FIELDS}
        for l in space.layers:
            for op in l.ops:
                with torch.device("meta"):  # build without memory; count outside the mode (10x faster)
                    block = make_block(space, l.in_ch, l.out_ch, l.stride, op)
                for k, v in count_all(block, (1, l.in_ch, l.in_hw, l.in_hw)).items():
                    tables[k][l.index, space.ops.index(op)] = v
    # The fixed part: a whole net less its searchable layers, counted on any valid arch.
    some = space.draw(np.zeros((1,) + space.allowed.shape), np.random.default_rng(0))[0]
    with torch.device("meta"):
        net = build(space.from_indices(some))
    total_macs, total_params = count(net, (1, 3, space.params.resolution, space.params.resolution))
    rows = np.arange(len(some)), some
    return CostTable(int(total_macs - tables["macs"][rows].sum()), int(total_params - tables["params"][rows].sum()),
                     *(tables[k] for k in FIELDS))


def arch_info(arch: Arch) -> dict:
    """What `nasctl info` shows: the totals, the fixed part (stem, fixed blocks, head,
    classifier) and each searchable layer's op with its exact cost, all from the one table."""
    t = cost_table(arch.space)
    macs, params = arch_cost(arch)
    layers = [{"layer": i, "op": op, "macs": int(t.macs[i, k]), "params": int(t.params[i, k])}
              for i, (op, k) in enumerate(zip(arch.ops, arch.indices))]
    key = arch.space.key(arch)
    return {"arch": arch.string, **({"key": key} if key is not None else {}), "arch_id": arch.id, "space": arch.space.source or arch.space.name,
            "space_params": arch.space.params.__dict__, "macs": macs, "params": params,
            "fixed": {"macs": t.fixed_macs, "params": t.fixed_params}, "layers": layers}


def arch_cost(arch: Arch) -> tuple[int, int]:
    """(MACs, params) of one arch."""
    m, p = cost_table(arch.space).of(arch.indices)
    return int(m[0]), int(p[0])


def archs_frame(space: SearchSpace, idx: np.ndarray) -> pd.DataFrame:
    """The arch file's rows (see `nasctl.space.archfile`) for (N, L) op indices, exact costs included."""
    macs, params = cost_table(space).of(idx)
    archs = [space.from_indices(row) for row in idx]
    p = space.params
    keys = [space.key(a) for a in archs]
    keys = {"key": keys} if any(k is not None for k in keys) else {}  # a tabular benchmark's key, beside the string
    return pd.DataFrame({
        "arch_id": [a.id for a in archs],
        "arch": [a.string for a in archs],
        **keys,
        "space": space.source,
        "macro": p.macro,
        "resolution": p.resolution,
        "width_mult": p.width_mult,
        "num_classes": p.num_classes,
        "macs": macs,
        "params": params,
    })
