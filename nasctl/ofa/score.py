"""Inherited subnets' accuracy: the rows the accuracy predictor learns from.

Each subnet is cut out of the supernet (`elastic.subnet`), its BN statistics re-estimated on
training batches, and scored on the supernet's held-out slice of the training data. The test
set is never used, so a net chosen by these scores can still be judged on it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from nasctl.models.cost import archs_frame
from nasctl.ofa.elastic import recalibrate, subnet
from nasctl.ofa.shrink import Trained
from nasctl.search.supernet import SuperNet
from nasctl.space.sample import sample
from nasctl.space.space import Arch
from nasctl.tables import atomic_write, to_json
from nasctl.train.loop import save
from nasctl.train.retrain import arch_doc, evaluate

BN_BATCHES = 8  # OFA re-estimates BN on a few thousand images; 8 x 256 here
CPU = torch.device("cpu")  # scoring runs where the supernet was loaded


def inherit(net: SuperNet, arch: Arch, train, bn_batches: int = BN_BATCHES) -> torch.nn.Module:
    """The arch's plain network with the supernet's weights and its own BN statistics."""
    return recalibrate(subnet(net, arch), train, bn_batches)


def inherited_init(supernet: Path) -> Callable[[Arch], dict]:
    """`retrain`'s starting weights for a fine-tune: the arch's inherited net (BN recalibrated).
    The arch must be of the supernet's definition (width, macro, resolution)."""
    from nasctl.ofa.shrink import load_supernet

    def init(arch: Arch) -> dict:
        trained = load_supernet(supernet, arch.space)
        return inherit(trained.net, arch, trained.splits()[0]).state_dict()

    return init


def score_subnets(trained: Trained, n: int, seed: int, on_row: Callable[[int], None] = lambda i: None) -> pd.DataFrame:
    """Rows (arch columns + top1, status ok) for n archs drawn uniformly from the space (the
    largest and smallest subnets always among them, so the predictor sees the ends)."""
    space, elastic = trained.elastic.space, trained.elastic
    train, held = trained.splits()
    idx = sample(space, n - 2, seed) if n > 2 else np.zeros((0, space.num_layers), int)
    idx = np.concatenate([elastic.largest()[None], elastic.smallest("expand")[None], idx])[:n]
    rows = []
    for i, row in enumerate(idx):
        t0 = time.perf_counter()
        acc = evaluate(inherit(trained.net, space.from_indices(row), train), held, CPU, 512)["top1"]
        rows.append({"top1": acc, "eval_s": time.perf_counter() - t0})
        on_row(i + 1)
    return pd.concat([archs_frame(space, idx), pd.DataFrame(rows)], axis=1).assign(status="ok", source="supernet")


def extract(trained: Trained, arch_ref: str, out: Path, splits=None, extra: dict | None = None) -> dict:
    """out/model.pt and out/arch.json of the arch's inherited net (BN recalibrated), as `nasctl
    retrain` leaves them, so `export` takes it as it is. `splits`: the (train, held out) pair, when
    the caller has it loaded; `extra`: more for arch.json (what the search chose it for)."""
    from nasctl.space.archfile import read_arch_ref

    space = trained.elastic.space
    arch = space.parse(read_arch_ref(arch_ref, space.source).string)  # a file's own params are its deployment's
    train, held = splits or trained.splits()
    model = inherit(trained.net, arch, train)
    acc = evaluate(model, held, CPU, 512)["top1"]
    out.mkdir(parents=True, exist_ok=True)
    save({"model": model.state_dict(), "arch": to_json(arch_doc(arch))}, out / "model.pt")
    inherited = {"supernet": str(trained.path), "top1_heldout": acc, "bn_batches": BN_BATCHES}
    doc = {**arch_doc(arch), "data": trained.doc["data"], "train_limit": trained.doc["train_limit"], "inherited": inherited,
           **(extra or {})}
    atomic_write(out / "arch.json", to_json(doc, indent=2).encode())
    return {"output": str(out), "arch": arch.string, "arch_id": arch.id, "top1_heldout": acc}
