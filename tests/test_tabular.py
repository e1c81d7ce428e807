"""Tabular benchmarks: NAS-Bench-Macro's space builds the authors' nets, to the parameter, and its
table loads as rows."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, nasctl
from nasctl.models import build
from nasctl.models.cost import cost_table
from nasctl.predict import Predictor
from nasctl.space import load_space
from nasctl.tabular import table_rows
from nasctl.tabular.tables import DATA

SHARED_NBM = ROOT.parent / "shared" / "data" / "nas-bench-macro"


@pytest.fixture(scope="module")
def nbm():
    return json.loads((DATA / "nas-bench-macro" / "nas-bench-macro_cifar10.json").read_text())


def test_the_shipped_table_is_the_benchmarks_own():
    if not SHARED_NBM.exists():
        pytest.skip(f"shared NAS-Bench-Macro not found at {SHARED_NBM} (only in the project's workspace)")
    for name in ("nas-bench-macro_cifar10.json", "LICENSE"):
        assert (DATA / "nas-bench-macro" / name).read_bytes() == (SHARED_NBM / name).read_bytes()


def test_params_and_macs_equal_the_tables_params_and_flops_on_all_6561_keys(nbm):
    """The table's FLOPs count a multiply-add once, as nasctl's MACs do: the two are equal."""
    space = load_space("nas-bench-macro")
    keys = sorted(nbm)
    assert len(keys) == 6561 == 3**8
    macs, params = cost_table(space).of(np.array([[int(c) for c in k] for k in keys]))
    assert (params == [nbm[k]["params"] for k in keys]).all()
    assert (macs == [nbm[k]["flops"] for k in keys]).all()


@pytest.mark.parametrize("key", ["00000000", "22222222", "02012100", "11111221"])
def test_the_built_net_has_the_tables_params_and_a_linear_identity_where_the_shape_changes(nbm, key):
    arch = load_space("nas-bench-macro").parse(key)
    net = build(arch).eval()
    assert sum(p.numel() for p in net.parameters()) == nbm[key]["params"]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    if key[0] == "0":  # layer 0: stride 2, 32 -> 64 channels: the identity is 1x1 conv + BN, no ReLU
        first = net.layers[0]
        assert [type(m) for m in first] == [torch.nn.Conv2d, torch.nn.BatchNorm2d] and first[0].stride == (2, 2)


def test_keys_in_and_out():
    space = load_space("nas-bench-macro")
    arch = space.parse("02012100")
    assert arch.string == "skip-k5_e6-skip-k3_e3-k5_e6-k3_e3-skip-skip" and space.key(arch) == "02012100"
    assert space.parse(arch.string).id == arch.id
    p = nasctl("info", "02012100", "--space", "nas-bench-macro", "--json", check=0)
    doc = json.loads(p.stdout)
    assert (doc["key"], doc["params"], doc["macs"]) == ("02012100", 890_666, 47_327_744)


@pytest.mark.parametrize("key, said", [
    ("0201210", "nasctl: error: key '0201210' has 7 digits, space 'nas-bench-macro' has 8 layers"),
    ("02012300", "nasctl: error: layer 5: digit 3 of key 02012300 names no op in space 'nas-bench-macro' (0 skip, 1 k3_e3, 2 k5_e6)"),
])
def test_a_bad_key_is_one_line(key, said):
    p = nasctl("info", key, "--space", "nas-bench-macro", check=2)
    assert p.stderr.strip() == said


def test_the_table_loads_as_rows(nbm):
    rows = table_rows("nas-bench-macro")
    assert len(rows) == 6561 and rows["arch_id"].is_unique
    r = rows.set_index("key").loc["02012100"]
    assert r["arch"] == "skip-k5_e6-skip-k3_e3-k5_e6-k3_e3-skip-skip" and r["trainings"] == 3
    assert r["top1"] == pytest.approx(nbm["02012100"]["mean_acc"] / 100)
    assert r["top1_std"] == pytest.approx(nbm["02012100"]["std"] / 100)  # the table's std is the runs' population spread
    assert r["arch_id"] == load_space("nas-bench-macro").parse("02012100").id


@pytest.fixture(scope="module")
def nbm_rows(tmp_path_factory):
    """The table written as rows by the CLI, and 300 of them (a fit's worth) as CSV."""
    d = tmp_path_factory.mktemp("nbm")
    p = nasctl("tabular", "nas-bench-macro", "-o", d / "nbm.parquet", "--json", check=0)
    assert json.loads(p.stdout)["rows"] == 6561
    df = pd.read_parquet(d / "nbm.parquet")
    df.sample(300, random_state=0).to_csv(d / "nbm300.csv", index=False)
    return d


def test_nasctl_tabular_lists_the_shipped_tables():
    doc = json.loads(nasctl("tabular", "--json", check=0).stdout)
    assert {(t["name"], t["space"], t["kind"]) for t in doc["tables"]} == {
        ("nas-bench-macro", "nas-bench-macro", "accuracy"), ("help-nb201", "nb201", "latency")}
    for t in doc["tables"]:  # each beside its licence
        folder = DATA / {"nas-bench-macro": "nas-bench-macro", "help-nb201": "help-nb201"}[t["name"]]
        assert (folder / "LICENSE").is_file() and (folder / "README.md").is_file()


def test_the_accuracies_fit_a_top1_predictor_beside_their_seed_spread(nbm_rows):
    rep = json.loads(nasctl("fit-predictor", nbm_rows / "nbm300.csv", "--metric", "top1", "--members", 2,
                            "-o", nbm_rows / "top1.pt", "--json", check=0).stdout)
    spread = rep["seed_spread"]
    assert spread["column"] == "top1_std" and spread["rows"] == rep["test_rows"] == 60 and rep["unit"] == ""
    held = pd.read_csv(nbm_rows / "nbm300.csv").set_index("arch_id").loc[Predictor.load(nbm_rows / "top1.pt").meta["test_arch_ids"]]
    assert spread["noise_rmse"] == pytest.approx(np.sqrt(np.mean(held.top1_std**2 / 3)))  # the mean of 3 trainings
    assert 0 < spread["noise_rmse"] < rep["test"]["default"]["rmse"]


def test_a_users_own_arch_top1_table_fits_the_same_way(nbm_rows, tmp_path):
    pd.read_csv(nbm_rows / "nbm300.csv")[["arch", "top1"]].to_csv(tmp_path / "mine.csv", index=False)
    rep = json.loads(nasctl("fit-predictor", tmp_path / "mine.csv", "--space", "nas-bench-macro", "--metric", "top1",
                            "--members", 2, "-o", tmp_path / "mine.pt", "--json", check=0).stdout)
    assert rep["rows"] == 300 and "seed_spread" not in rep and rep["test"]["default"]["spearman_rho"] > 0.5


@pytest.mark.parametrize("case", ["malformed nb201", "unknown op", "key length", "no top1", "another space", "unknown table"])
def test_bad_input_is_one_line_and_writes_nothing(nbm_rows, tmp_path, case):
    out = tmp_path / "out"
    args, said = {
        "malformed nb201": (["profile", "--device", "local", "--space", "nb201", "--arch", "|none~0|+|none~0|none~1|", "-o", out / "r.parquet"],
                            "an nb201 arch is 3 nodes joined by '+'"),
        "unknown op": (["profile", "--device", "local", "--space", "nb201", "--arch", "|none~0|+|none~0|conv~1|+|none~0|none~1|none~2|",
                        "-o", out / "r.parquet"], "node 2, edge from node 1: unknown op 'conv'"),
        "key length": (["profile", "--device", "local", "--space", "nas-bench-macro", "--arch", "0201210", "-o", out / "r.parquet"],
                       "key '0201210' has 7 digits"),
        "no top1": (["fit-predictor", nbm_rows / "nbm300.csv", "--metric", "top5", "-o", out / "p.pt"], "no column 'top5'"),
        "another space": (["fit-predictor", nbm_rows / "nbm300.csv", "--space", "nb201", "--metric", "top1", "-o", out / "p.pt"],
                          "row 0: an nb201 arch is 3 nodes"),
        "unknown table": (["tabular", "nas-bench-202", "-o", out / "t.parquet"], "unknown tabular benchmark 'nas-bench-202'"),
    }[case]
    p = nasctl(*args, check=2)
    assert p.stderr.count("\n") == 1 and said in p.stderr and "Traceback" not in p.stderr and not p.stdout
    assert not out.exists()
