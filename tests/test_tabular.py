"""Tabular benchmarks: NAS-Bench-Macro's space builds the authors' nets, to the parameter, and its
table loads as rows."""

import json

import numpy as np
import pytest
import torch

from conftest import ROOT, nasctl
from nasctl.models import build
from nasctl.models.cost import cost_table
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
