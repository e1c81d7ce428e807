"""NAS-Bench-201's space: the authors' network to the parameter, their strings in and out, every
cell a member (the ones cut off from their input too), and HELP's latencies as rows that fit a
device and serve as a prior for the next."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import DATA, ROOT, nasctl
from nasctl.export.onnx import export_onnx, onnx_parity
from nasctl.models import arch_cost, build, cost_table, count
from nasctl.space import load_space
from nasctl.space.sample import sample
from nasctl.tabular import table_rows
from nasctl.tabular.tables import DATA as TABLES

ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SHARED_HELP = ROOT.parent / "shared" / "data" / "help-nb201"


@pytest.fixture(scope="module")
def help_rows():
    return table_rows("help-nb201")


def test_params_equal_the_authors_network_on_every_reference_cell():
    """tests/data/nb201_xautodl_params.csv: xautodl's TinyNetwork counted by
    benchmarks/nb201_reference.py (the 5 single-op cells, all-none and all-conv3x3 among them, and
    300 drawn ones, at CIFAR-10, CIFAR-100 and ImageNet16-120)."""
    ref = pd.read_csv(DATA / "nb201_xautodl_params.csv")
    assert len(ref) == 3 * 305 and {ALL_NONE, ALL_CONV} <= set(ref.arch)
    for macro, rows in ref.groupby("macro"):
        space = load_space("nb201", macro=macro)
        archs = [space.parse(a) for a in rows.arch]
        _, table = cost_table(space).of(np.stack([a.indices for a in archs]))
        assert (table == rows.params.to_numpy()).all(), macro
        for a, want in zip(archs[:5], rows.params[:5]):  # the built net itself, not only the table
            with torch.device("meta"):
                assert sum(p.numel() for p in build(a).parameters()) == want
    got = ref.set_index(["macro", "arch"]).params
    assert (got["cifar10", ALL_NONE], got["cifar10", ALL_CONV]) == (73_306, 1_531_546)


def test_strings_are_nas_bench_201s_own_and_every_cell_is_a_member(help_rows):
    space = load_space("nb201")
    assert space.describe()["size"] == 15_625 and len(help_rows) == 15_625 and help_rows.arch_id.is_unique
    csv = pd.read_csv(TABLES / "help-nb201" / "nb201_latency.csv")
    assert (help_rows.arch == csv.arch).all()  # parsed and written back unchanged, all 15,625
    a = space.parse(ALL_CONV)
    assert a.string == ALL_CONV and len(a.ops) == 6 and space.from_indices(a.indices).id == a.id


@pytest.mark.parametrize("text, said", [
    ("|none~0|+|none~0|none~1|", "an nb201 arch is 3 nodes joined by '+'"),
    ("|none~0|+|none~0|none~1|+|none~0|conv~1|none~2|", "node 3, edge from node 1: unknown op 'conv' (ops: none, skip_connect,"),
    ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "node 2, edge from node 1: expected op~1, got 'none~2'"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2: has 2 input edge(s) (from nodes 0-1), got 1 in '|none~0|'"),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1: edges are written between '|'"),
])
def test_a_bad_string_names_the_edge_and_the_token(tmp_path, text, said):
    p = nasctl("info", text, "--space", "nb201", check=2)
    assert p.stderr.startswith(f"nasctl: error: {said}") and p.stderr.count("\n") == 1 and not p.stdout


def test_info_gives_the_references_params_and_helps_latencies():
    doc = json.loads(nasctl("info", ALL_CONV, "--space", "nb201", "--json", check=0).stdout)
    assert (doc["params"], doc["macs"]) == (1_531_546, 220_119_680)
    assert doc["tabular"]["help-nb201"]["gold_6240_ms"] > 0 and len(doc["layers"]) == 6
    doc = json.loads(nasctl("info", ALL_NONE, "--space", "nb201", "--num-classes", 100, "--json", check=0).stdout)
    assert doc["params"] == 79_156 and "tabular" not in doc  # HELP timed the 10-class net only


def test_a_cell_cut_off_from_its_input_builds_runs_and_exports(tmp_path):
    space = load_space("nb201")
    for text in (ALL_NONE, "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|none~2|"):
        net = build(space.parse(text)).eval()
        y = net(torch.randn(2, 3, 32, 32))
        assert torch.isfinite(y).all() and torch.allclose(y[0], y[1])  # nothing of the input reaches the head
        path = export_onnx(net, (1, 3, 32, 32), tmp_path / "n.onnx")
        assert onnx_parity(net, path, (1, 3, 32, 32)) < 1e-5


@pytest.mark.parametrize("stratify", [None, "macs"])
def test_sampling_draws_distinct_cells_and_stratified_reaches_both_ends(stratify):
    space = load_space("nb201")
    table = cost_table(space)
    idx = sample(space, 40, 0, None if stratify is None else table.macs)
    assert len({r.tobytes() for r in idx}) == 40
    macs, _ = table.of(idx)
    for r in idx[:3]:
        with torch.device("meta"):
            net = build(space.from_indices(r))
        assert arch_cost(space.from_indices(r))[0] == count(net, (1, 3, 32, 32))[0]
    if stratify:  # the cheapest and dearest cells are reached, not only the middle
        assert macs.min() == table.of(np.zeros((1, 6), int))[0][0] and macs.max() == 220_119_680


def test_no_supernet_search_on_nb201(tmp_path):
    p = nasctl("search", "--space", "nb201", "--max-params", "1M", "-q", "-o", tmp_path / "s", check=2)
    assert "NAS-Bench-201's cell space" in p.stderr and not (tmp_path / "s").exists()


def test_the_shipped_latencies_are_helps_own():
    if not SHARED_HELP.exists():
        pytest.skip(f"shared HELP NB201 data not found at {SHARED_HELP} (only in the project's workspace)")
    for name in ("nb201_latency.csv", "LICENSE"):
        assert (TABLES / "help-nb201" / name).read_bytes() == (SHARED_HELP / name).read_bytes()


def test_helps_latencies_fit_a_device_and_are_a_prior_for_the_next(tmp_path):
    rows = tmp_path / "help.parquet"
    p = nasctl("tabular", "help-nb201", "-o", rows, "--json", check=0)
    assert json.loads(p.stdout)["rows"] == 15_625
    df = pd.read_parquet(rows)
    assert (df.space == "nb201").all() and {"pixel3_ms", "gold_6240_ms"} <= set(df.columns)
    df.sample(300, random_state=0).to_csv(tmp_path / "gold.csv", index=False)
    rep = json.loads(nasctl("fit-predictor", tmp_path / "gold.csv", "--metric", "gold_6240_ms", "--members", 2,
                            "-o", tmp_path / "gold.pt", "--json", check=0).stdout)
    assert rep["test"]["lut"]["spearman_rho"] > 0.5
    df.sample(10, random_state=1).to_csv(tmp_path / "few.csv", index=False)
    rep = json.loads(nasctl("fit-predictor", tmp_path / "few.csv", "--metric", "silver_4114_ms", "--prior", tmp_path / "gold.pt",
                            "-o", tmp_path / "few.pt", "--json", check=0).stdout)
    assert rep["chosen"] == "lut" and rep["rows"] == 10
    one = json.loads(nasctl("predict", tmp_path / "few.pt", "--arch", ALL_CONV, "--json", check=0).stdout)
    assert one["silver_4114_ms"] > 0


def test_nb201_cells_are_profiled_here(tmp_path):
    archs, lat = tmp_path / "a.csv", tmp_path / "l.parquet"
    cells = [ALL_NONE, ALL_CONV, "|skip_connect~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|skip_connect~1|nor_conv_3x3~2|"]
    pd.DataFrame({"arch": cells, "space": "nb201"}).to_csv(archs, index=False)
    nasctl("profile", "--device", DATA / "fast-cpu.toml", "--archs", archs, "-o", lat, "-q", check=0)
    got = pd.read_parquet(lat).set_index("arch")
    assert (got.status == "ok").all() and (got.latency_ms > 0).all() and set(got.index) == set(cells)
    assert got.latency_ms[ALL_NONE] < got.latency_ms[ALL_CONV]  # the cut-off cell is measured like any other


def test_a_cell_is_retrained_and_exported(tmp_path):
    """The cut-off cell too: it trains (to chance) and ships like any other."""
    for i, text in enumerate((ALL_NONE, "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|")):
        run = tmp_path / f"r{i}"
        nasctl("retrain", text, "--space", "nb201", "--data", "digits", "--epochs", 1, "--batch", 64,
               "--train-limit", 100, "-o", run, "-q", check=0)
        assert json.loads((run / "arch.json").read_text())["arch"] == text
        doc = json.loads(nasctl("export", run, "-o", run / "m.onnx", "--json", check=0).stdout)
        assert doc["parity_max_abs_diff"] < 1e-4
