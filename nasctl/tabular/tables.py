"""The shipped tables, as rows keyed like a profile's: arch_id, arch (canonical), the
benchmark's key, top1 (a fraction, the mean over the table's trainings), top1_std (their seed
spread), and the table's own params and FLOPs."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pandas as pd

from nasctl.errors import UserError

DATA = resources.files("nasctl.tabular") / "data"
# name -> (space, file): NAS-Bench-Macro (Su et al., CVPR 2021; Apache-2.0), CIFAR-10, 3 trainings a net
TABLES = {"nas-bench-macro": ("nas-bench-macro", "nas-bench-macro/nas-bench-macro_cifar10.json")}


def table_rows(name: str) -> pd.DataFrame:
    """Every net of a shipped table as a row (one per key, in the table's key order)."""
    from nasctl.space import load_space

    if name not in TABLES:
        raise UserError(f"unknown tabular benchmark {name!r} (shipped: {', '.join(TABLES)})")
    space_name, file = TABLES[name]
    space = load_space(space_name)
    doc = json.loads((DATA / file).read_text())
    keys = sorted(doc)
    archs = [space.parse(k) for k in keys]
    runs = np.array([doc[k]["test_acc"] for k in keys]) / 100.0
    return pd.DataFrame({
        "arch_id": [a.id for a in archs],
        "arch": [a.string for a in archs],
        "key": keys,
        "space": space.source,
        "top1": runs.mean(1),
        "top1_std": runs.std(1),  # population spread of the table's runs, as its own "std"
        "trainings": runs.shape[1],
        "params": [int(doc[k]["params"]) for k in keys],
        "flops": [int(doc[k]["flops"]) for k in keys],
    })
