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
from torch.utils.data import DataLoader

from nasctl.data import load_data
from nasctl.models.cost import archs_frame
from nasctl.ofa.elastic import Elastic, recalibrate, subnet
from nasctl.ofa.shrink import holdout_split, read_record
from nasctl.search.supernet import SuperNet
from nasctl.space.sample import sample
from nasctl.space.space import Arch
from nasctl.tables import atomic_write, to_json
from nasctl.train.loop import save

BN_BATCHES = 8  # OFA re-estimates BN on a few thousand images; 8 x 256 here


def top1(model: torch.nn.Module, data, batch: int = 512) -> float:
    correct = n = 0
    model.eval()
    with torch.no_grad():
        for x, y in DataLoader(data, batch_size=batch):
            correct += int((model(x).argmax(1) == y).sum())
            n += len(y)
    return correct / n


def inherit(net: SuperNet, arch: Arch, train, bn_batches: int = BN_BATCHES) -> torch.nn.Module:
    """The arch's plain network with the supernet's weights and its own BN statistics."""
    return recalibrate(subnet(net, arch), train, bn_batches)


def score_subnets(path, net: SuperNet, elastic: Elastic, n: int, seed: int,
                  on_row: Callable[[int], None] = lambda i: None) -> pd.DataFrame:
    """Rows (arch columns + top1, status ok) for n archs drawn uniformly from the space (the
    largest and smallest subnets always among them, so the predictor sees the ends)."""
    space, doc, shrink = read_record(path)
    data = load_data(doc["data"], train_limit=doc["train_limit"])
    train, held = holdout_split(data, shrink)
    idx = sample(space, n - 2, seed) if n > 2 else np.zeros((0, space.num_layers), int)
    idx = np.concatenate([elastic.largest()[None], elastic.smallest("expand")[None], idx])[:n]
    rows = []
    for i, row in enumerate(idx):
        t0 = time.perf_counter()
        acc = top1(inherit(net, space.from_indices(row), train), held)
        rows.append({"top1": acc, "eval_s": time.perf_counter() - t0})
        on_row(i + 1)
    return pd.concat([archs_frame(space, idx), pd.DataFrame(rows)], axis=1).assign(status="ok", source="supernet")


def extract(path: Path, arch_ref: str, out: Path) -> dict:
    """out/model.pt and out/arch.json of the arch's inherited net (BN recalibrated), as `nasctl
    retrain` leaves them, so `export` and `retrain --from` take it as they are."""
    from nasctl.ofa.shrink import load_supernet
    from nasctl.space.archfile import read_arch_ref
    from nasctl.train.retrain import arch_doc

    net, elastic, doc = load_supernet(path)
    space = elastic.space
    arch = space.parse(read_arch_ref(arch_ref, space.source).string)  # a file's own params are its deployment's
    data = load_data(doc["data"], train_limit=doc["train_limit"])
    train, held = holdout_split(data, read_record(path)[2])
    model = inherit(net, arch, train)
    acc = top1(model, held)
    out.mkdir(parents=True, exist_ok=True)
    save({"model": model.state_dict(), "arch": to_json(arch_doc(arch))}, out / "model.pt")
    inherited = {"supernet": str(path), "top1_heldout": acc, "bn_batches": BN_BATCHES}
    atomic_write(out / "arch.json", to_json({**arch_doc(arch), "data": data.name, "inherited": inherited}, indent=2).encode())
    return {"output": str(out), "arch": arch.string, "arch_id": arch.id, "top1_heldout": acc}
