"""The shipped tables, as rows keyed like a profile's (arch_id, arch in canonical form, space) plus
each table's own figures:

- accuracy tables: the benchmark's key, top1 (a fraction, the mean over the table's trainings),
  top1_std (their seed spread), trainings, and the table's own params and FLOPs;
- latency tables: one `<device>_ms` column per measured device, so `fit-predictor --metric
  <device>_ms` fits that device and its predictor is a `--prior` for the next one.
"""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from nasctl.errors import UserError
from nasctl.validate import shown

DATA = resources.files("nasctl.tabular") / "data"


@dataclass(frozen=True)
class Table:
    space: str
    file: str  # under DATA; its folder holds the LICENSE and README
    kind: str  # "accuracy" or "latency"
    what: str


TABLES = {
    "nas-bench-macro": Table("nas-bench-macro", "nas-bench-macro/nas-bench-macro_cifar10.json", "accuracy",
                             "NAS-Bench-Macro (Su et al., CVPR 2021; Apache-2.0): 6,561 nets, CIFAR-10 top-1 of 3 trainings each"),
    "help-nb201": Table("nb201", "help-nb201/nb201_latency.csv", "latency",
                        "HELP (Lee et al., NeurIPS 2021; MIT): all 15,625 NAS-Bench-201 cells timed on 13 device settings"),
}


def table(name: str) -> Table:
    if name not in TABLES:
        raise UserError(f"unknown tabular benchmark {shown(name)} (shipped: {', '.join(TABLES)})")
    return TABLES[name]


def table_rows(name: str) -> pd.DataFrame:
    """Every net of a shipped table as a row, in the table's own order."""
    from nasctl.space import load_space

    t = table(name)
    space = load_space(t.space)
    text = (DATA / t.file).read_text()
    figures = _accuracy(space, json.loads(text)) if t.kind == "accuracy" else pd.read_csv(io.StringIO(text))
    archs = [space.parse(a) for a in figures.pop("arch")]
    head = pd.DataFrame({"arch_id": [a.id for a in archs], "arch": [a.string for a in archs]})
    keys = figures.pop("key") if "key" in figures else None
    return pd.concat([head, *([keys] if keys is not None else []), pd.DataFrame({"space": [space.source] * len(archs)}), figures], axis=1)

def _accuracy(space, doc: dict) -> pd.DataFrame:
    """NAS-Bench-Macro's JSON: key -> test_acc (percent, one per training), params, flops."""
    keys = sorted(doc)
    runs = np.array([doc[k]["test_acc"] for k in keys]) / 100.0
    return pd.DataFrame({
        "arch": keys,  # parsed as keys: the rows carry the canonical string
        "key": keys,
        "top1": runs.mean(1),
        "top1_std": runs.std(1),  # population spread of the table's runs, as its own "std"
        "trainings": runs.shape[1],
        "params": [int(doc[k]["params"]) for k in keys],
        "flops": [int(doc[k]["flops"]) for k in keys],
    })


def lookup(arch) -> dict[str, dict]:
    """The shipped tables' figures for one arch, by table name: only where the arch's space is the
    table's as shipped (same network, input and classes), since a table describes that network."""
    from nasctl.space import load_space

    found = {}
    for name, t in TABLES.items():
        if arch.space.name == t.space and arch.space.definition_hash == load_space(t.space).definition_hash:
            row = _by_arch(name).get(arch.string)
            if row is not None:
                found[name] = row
    return found


@functools.cache
def _by_arch(name: str) -> dict[str, dict]:
    df = table_rows(name).drop(columns=["arch_id", "space"])
    return {r.pop("arch"): r for r in df.to_dict("records")}
