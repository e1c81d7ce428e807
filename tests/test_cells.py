"""The DARTS cell space: genotype strings, valid sampling, the stacked-cell network, exact costs,
and the whole sample -> profile (real onnxruntime) -> fit-predictor path with LA-DARTS's LPM."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import DATA, nasctl
from nasctl.errors import UserError
from nasctl.models import arch_cost, build, count
from nasctl.space import load_space
from nasctl.space.cells import EDGES, NONE
from nasctl.space.sample import sample

DARTS_V2 = ("sep3:0+sep3:1-sep3:0+sep3:1-skip:0+sep3:1-sep3:0+skip:1,"  # DARTS (2nd order)'s published cells
            "max3:0+max3:1-max3:1+skip:2-max3:0+skip:2-max3:1+skip:2")


def test_darts_space_has_the_papers_shape():
    sp = load_space("darts")
    assert len(EDGES) == 14 and sp.num_layers == 28 and len(sp.ops) == 8 and NONE in sp.ops
    assert [c["reduce"] for c in sp.cells] == [False, False, True, False, False, True, False, False]
    assert len(load_space("darts", macro="eval").cells) == 20
    assert sp.describe()["size"] == (1 * 3 * 6 * 10 * 7**8) ** 2


def test_genotype_strings_round_trip_and_bad_ones_say_why():
    sp = load_space("darts")
    a = sp.parse(DARTS_V2)
    assert a.string == DARTS_V2 and sp.from_indices(a.indices).ops == a.ops
    assert sum(o != NONE for o in a.ops) == 16  # 2 inputs x 4 nodes x 2 cells
    as_published = "sep3:0+sep3:1-sep3:0+sep3:1-sep3:1+skip:0-sep3:0+skip:1,max3:0+max3:1-skip:2+max3:1-max3:0+skip:2-skip:2+max3:1"
    assert sp.parse(as_published).string == DARTS_V2  # inputs in any order; the string puts them in order
    for bad, msg in [("sep3:0+sep3:1", "joined by ','"), (DARTS_V2.replace("sep3:0+sep3:1-", "sep3:0-", 1), "keeps 2 inputs"),
                     (DARTS_V2.replace("sep3:0+sep3:1", "sep3:0+sep3:0", 1), "distinct one of 0-1"),
                     (DARTS_V2.replace("max3:0", "conv9:0", 1), "unknown op 'conv9'"), (DARTS_V2.replace("skip:2", "skip:5", 1), "one of 0-2")]:
        with pytest.raises(UserError, match=msg):
            sp.parse(bad)
    idx = a.indices.copy()
    idx[0] = sp.ops.index(NONE)
    with pytest.raises(UserError, match="keeps 1 inputs"):
        sp.from_indices(idx)


@pytest.mark.parametrize("stratify", ["none", "macs"])
def test_samples_are_valid_genotypes_and_costs_are_exact(stratify):
    sp = load_space("darts")
    idx = sample(sp, 12, 0, stratify)
    assert len({r.tobytes() for r in idx}) == 12
    for row in idx[:4]:
        a = sp.from_indices(row)  # raises unless every node keeps 2 inputs
        net = build(a).eval()
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert arch_cost(a) == count(net, (1, 3, 32, 32))


def test_darts_cells_are_profiled_with_onnxruntime_and_fitted_with_the_lpm(tmp_path):
    archs, lat = tmp_path / "archs.parquet", tmp_path / "lat.parquet"
    nasctl("sample", "--space", "darts", "--n", 40, "--seed", 1, "--stratify", "macs", "-o", archs, "--resolution", 16, check=0)
    nasctl("profile", "--device", DATA / "fast-cpu.toml", "--archs", archs, "-o", lat, "-q", check=0)
    rows = pd.read_parquet(lat)
    assert (rows.status == "ok").all() and (rows.latency_ms > 0).all() and rows.input_shape.iloc[0] == "1x3x16x16"
    out = tmp_path / "p.pt"
    rep = json.loads(nasctl("fit-predictor", lat, "--members", 2, "-o", out, "--json", check=0).stdout)
    assert {"lut", "lut_ls", "mlp"} <= set(rep["test"])
    one = json.loads(nasctl("predict", out, "--arch", DARTS_V2, "--json", check=0).stdout)
    assert one["latency_ms"] > 0
    from nasctl.predict import Predictor

    meta = Predictor.load(out).meta
    assert meta["mlp"] == {"hidden": [256, 64], "activation": "sigmoid"} and meta["space"]["layers"] == 28
