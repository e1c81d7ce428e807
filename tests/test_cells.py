"""The DARTS cell space: genotype strings, valid sampling, the stacked-cell network, exact costs,
and the whole sample -> profile (real onnxruntime) -> fit-predictor path with LA-DARTS's LPM."""

import json

import pandas as pd
import pytest
import torch

from conftest import DATA, nasctl
from nasctl.errors import UserError
from nasctl.models import arch_cost, build, cost_table, count
from nasctl.space import load_space
from nasctl.space.cells import EDGES, NONE
from nasctl.space.sample import sample
from nasctl.space.zoo import zoo_entry

DARTS_V2 = zoo_entry("darts-v2")["arch"]  # DARTS (2nd order)'s published cells; test_zoo checks its 3,349,342 params


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
    # genotypes.py's pair order: normal (sep3,0) (sep3,1) | (sep3,0) (sep3,1) | (sep3,1) (skip,0) | (skip,0) (dil3,2)
    as_published = "sep3:0+sep3:1-sep3:0+sep3:1-sep3:1+skip:0-skip:0+dil3:2,max3:0+max3:1-skip:2+max3:1-max3:0+skip:2-skip:2+max3:1"
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
    idx = sample(sp, 12, 0, None if stratify == "none" else cost_table(sp).macs)
    assert len({r.tobytes() for r in idx}) == 12
    for row in idx[:4]:
        a = sp.from_indices(row)  # raises unless every node keeps 2 inputs
        net = build(a).eval()
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert arch_cost(a) == count(net, (1, 3, 32, 32))


@pytest.fixture(scope="module")
def darts_rows(tmp_path_factory):
    """32 darts genotypes (8 cells at 16x16) timed here with onnxruntime, and a fitted predictor."""
    d = tmp_path_factory.mktemp("darts")
    archs, lat = d / "archs.parquet", d / "lat.parquet"
    nasctl("sample", "--space", "darts", "--n", 32, "--seed", 1, "--stratify", "macs", "-o", archs, "--resolution", 16, check=0)
    nasctl("profile", "--device", DATA / "fast-cpu.toml", "--archs", archs, "-o", lat, "-q", check=0)
    rep = json.loads(nasctl("fit-predictor", lat, "--members", 2, "-o", d / "p.pt", "--json", check=0).stdout)
    return lat, d / "p.pt", rep


def test_darts_cells_are_profiled_with_onnxruntime_and_fitted_with_the_lpm(darts_rows):
    lat, pred, rep = darts_rows
    rows = pd.read_parquet(lat)
    assert (rows.status == "ok").all() and (rows.latency_ms > 0).all() and rows.input_shape.iloc[0] == "1x3x16x16"
    assert {"lut", "lut_ls", "mlp"} <= set(rep["test"])
    one = json.loads(nasctl("predict", pred, "--arch", DARTS_V2, "--json", check=0).stdout)
    assert one["latency_ms"] > 0
    from nasctl.predict import Predictor

    meta = Predictor.load(pred).meta
    assert meta["mlp"] == {"hidden": [256, 64], "activation": "sigmoid"} and meta["space"]["layers"] == 28


# 300 of the digits' 1,437 training images: these tests check the search's plumbing and verdicts, not what it learns
SEARCH = ["--space", "darts", "--resolution", "16", "--width-mult", "0.25", "--epochs", "2", "--warmup-epochs", "1", "--batch", "96",
          "--train-limit", "300", "-q"]


@pytest.mark.parametrize("lam", [None, "0.5"])
def test_la_darts_searches_cells_to_a_verified_genotype(tmp_path, darts_rows, lam):
    """Learned λ (one search to the target) and the paper's fixed λ; the result is a valid
    genotype, measured on the device; how close it lands is a benchmark figure."""
    lat, pred, _ = darts_rows
    y = pd.read_parquet(lat).latency_ms
    target = round(float(y.median()), 3)
    out = tmp_path / "s"
    p = nasctl("search", "--method", "la-darts", "--predictor", pred, "--target-ms", target, *SEARCH, *(["--lambda", lam] if lam else []),
               "--verify", DATA / "fast-cpu.toml", "--tolerance", "0.5", "--no-calibrate", "-o", out, "--json")
    doc = json.loads((out / "arch.json").read_text())
    (v,) = doc["verify"]
    gap = v["measured"]["latency_ms"] / target - 1  # from the measurement itself, not the run's own verdict
    assert v["gap"]["latency_ms"] == pytest.approx(gap) and v["met"] == (abs(gap) <= 0.5)
    assert p.returncode == (0 if abs(gap) <= 0.5 else 1), p.stderr[-2000:]
    sp = load_space("darts")
    a = sp.parse(doc["arch"])  # a valid genotype: 2 inputs per node
    assert doc["method"] == "la-darts" and len(doc["alpha"]) == 28 and v["measured"]["latency_ms"] > 0
    t = doc["targets"][0]
    rows = pd.read_csv(out / "search.csv")
    trail = rows["lambda_latency_ms"].dropna()
    assert t["lambda"] == pytest.approx(trail.iloc[-1])  # the λ reported is the one the search ended with
    if lam:
        assert (trail == 0.5).all()  # fixed: never moved
    else:
        assert trail.nunique() > 1  # learned by ascent: it moves with every measured LAT/T
    assert rows["latency_ms"].notna().sum() > 0 and rows["argmax_latency_ms"].notna().sum() == 2  # one per epoch
    assert arch_cost(a)[0] > 0


def test_each_method_searches_the_spaces_it_is_made_for(tmp_path, darts_rows):
    _, pred, _ = darts_rows
    p = nasctl("search", "--method", "lightnas", "--predictor", pred, "--target-ms", 1, *SEARCH, "-o", tmp_path / "a", check=2)
    assert "search it with --method la-darts" in p.stderr and not (tmp_path / "a").exists()
    p = nasctl("search", "--method", "la-darts", "--max-params", "3M", "-q", "-o", tmp_path / "b", check=2)
    assert "searches a cell space" in p.stderr and not (tmp_path / "b").exists()


def test_search_budget_reads_the_lookup_graph_back_monotonically():
    from nasctl.search.budget import search_budget

    g = {"search_budget": [0.6, 0.8, 1.0, 1.25, 1.5], "derived": [0.9, 1.1, 1.05, 1.4, 1.6]}
    assert search_budget(g, 1.1) == pytest.approx(1.0)  # the dip is flattened: the largest K' whose net fits
    assert search_budget(g, 1.25) == pytest.approx(1.0 + 0.25 * (1.25 - 1.1) / (1.4 - 1.1))
    assert search_budget(g, 0.45) == pytest.approx(0.3) and search_budget(g, 3.2) == pytest.approx(3.0)


def test_dca_budget_is_calibrated_by_short_searches_stored_and_reused(tmp_path):
    env = {**__import__("os").environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    # params do not depend on the input size: the digits' own 8x8 keeps 8 short searches cheap
    args = ["search", "--method", "la-darts", *SEARCH[:-1], "--resolution", "8", "--batch", "128", "--calibrate-budget", "--json"]
    s = json.loads(nasctl(*args, "--max-params", "0.12M", "-o", tmp_path / "a", env=env, check=0).stdout)
    (graph,) = (tmp_path / "data" / "nasctl" / "lookup").glob("darts-params-*.json")
    g = json.loads(graph.read_text())
    assert len(g["derived"]) == 6 and all(d > 0 for d in g["derived"]) and min(g["search_budget"]) >= 0.1  # none below the space
    t = s["targets"][0]
    assert t["budget"] == pytest.approx(0.12) and t["target"] != t["budget"]
    assert t["derived_over_budget"] == pytest.approx(s["params"] / 1e6 / 0.12, rel=1e-3) and s["params"] <= 0.12e6  # a budget is hard
    p = nasctl(*args, "--max-params", "0.2M", "-o", tmp_path / "b", env=env, check=0)  # another budget, the stored graph
    assert "budget lookup graph:" in p.stderr and "short searches" not in p.stderr
    assert json.loads(p.stdout)["params"] <= 0.2e6


def test_the_report_draws_a_genotype_as_a_strip_of_edges():
    import base64

    from nasctl.report.html import layer_strip

    png = base64.b64decode(layer_strip([("darts v2", load_space("darts").parse(DARTS_V2).ops)]))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_op_a_cell_space_may_name_is_built():
    from nasctl.models.cells import BUILDERS
    from nasctl.space.cells import OPS

    assert set(BUILDERS) == set(OPS)
