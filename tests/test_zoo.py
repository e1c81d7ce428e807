"""The zoo of published nets: each builds to the figures of its authors' code, to the integer
where that code is public, and `nasctl info` shows them without Python."""

import json
from dataclasses import replace

import pytest

from conftest import nasctl
from nasctl.models import arch_cost, build, count
from nasctl.space import load_space
from nasctl.space.archfile import read_arch_ref
from nasctl.space.zoo import zoo_entry, zoo_names

# (params, MACs) from the authors' code: mit-han-lab/proxylessnas's released configs, torchvision's
# mobilenet_v2, quark0/darts's NetworkCIFAR (C=36, 20 cells, no auxiliary head; params only)
EXACT = {
    "proxylessnas-mobile": (4_080_512, 320_427_584),
    "proxylessnas-gpu": (7_119_848, 465_260_160),
    "proxylessnas-cpu": (4_361_648, 439_243_864),
    "mobilenetv2": (3_504_872, 300_774_272),
    "darts-v2": (3_349_342, None),
}


def test_the_zoo_has_the_nets_users_quote():
    assert set(zoo_names()) == {*EXACT, "darts-v1", "fbnet-a", "fbnet-b", "fbnet-c"}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_published_nets_match_their_authors_code_to_the_integer(name):
    params, macs = EXACT[name]
    arch = read_arch_ref(f"zoo:{name}")
    assert arch.space.params.resolution == (32 if name.startswith("darts") else 224)
    assert arch_cost(arch)[1] == params == zoo_entry(name)["published"]["params"]
    if macs is not None:
        assert arch_cost(arch)[0] == macs


def test_darts_v2_built_at_the_eval_macro_has_3349342_params():
    """Built module, not the cost table: the genotype (node 3 is skip:0+dil3:2) at 20 cells of C=36."""
    arch = load_space("darts", macro="eval").parse(zoo_entry("darts-v2")["arch"])
    assert arch.string.split(",")[0].split("-")[3] == "skip:0+dil3:2"
    with __import__("torch").device("meta"):
        net = build(arch)
    assert count(net, (1, 3, 32, 32))[1] == 3_349_342


def test_fbnet_nets_follow_their_released_definitions():
    """FBNet's e1 blocks have no expansion conv in mobile_cv (the zoo's convention); pytorchcv's
    fbnet_cb (FBNet-C) keeps one, and with expand_e1 the same string gives its count exactly."""
    c = read_arch_ref("zoo:fbnet-c")
    assert not c.space.expand_e1 and c.space.head_channels == 1984
    assert arch_cost(replace(c.space, expand_e1=True).parse(c.string))[1] == 5_572_200
    assert read_arch_ref("zoo:fbnet-a").space.head_channels == 1504
    for name in ("fbnet-a", "fbnet-b", "fbnet-c"):  # the paper's MACs are rounded to 1M
        macs, pub = arch_cost(read_arch_ref(f"zoo:{name}"))[0], zoo_entry(name)["published"]["macs"]
        assert abs(macs / pub - 1) < 0.02, name
    # the same string is a plain fbnet-space arch (HW-NAS-Bench's space), with the same id
    assert load_space("fbnet").parse(c.string).id == c.id


def test_info_counts_a_zoo_net_a_string_and_an_arch_json(tmp_path):
    d = json.loads(nasctl("info", "zoo:proxylessnas-mobile", "--json", check=0).stdout)
    assert (d["params"], d["macs"]) == EXACT["proxylessnas-mobile"] and d["published"]["params"] == d["params"]
    assert d["fixed"]["params"] + sum(l["params"] for l in d["layers"]) == d["params"]
    assert [l["op"] for l in d["layers"]] == d["arch"].split("-")
    # another space: the same string on proxyless's own imagenet macro (24 channels in stage 1)
    other = json.loads(nasctl("info", "zoo:proxylessnas-mobile", "--space", "proxyless", "--json", check=0).stdout)
    assert other["arch_id"] == d["arch_id"] and other["params"] < d["params"]
    s = json.loads(nasctl("info", d["arch"], "--macro", "cifar", "--json", check=0).stdout)
    assert s["space_params"] == {"macro": "cifar", "resolution": 32, "width_mult": 1.0, "num_classes": 10}
    (tmp_path / "arch.json").write_text(json.dumps({"arch": d["arch"], "space": "zoo:proxylessnas-mobile"}))
    assert json.loads(nasctl("info", tmp_path, "--json", check=0).stdout)["params"] == d["params"]
    listed = json.loads(nasctl("info", "--json", check=0).stdout)["zoo"]
    assert {n["name"] for n in listed} == {f"zoo:{n}" for n in zoo_names()}
    human = nasctl("info", "zoo:darts-v2", check=0).stdout
    assert "3,349,342 params" in human and "published: 3,349,342" in human


@pytest.mark.parametrize("args, msg", [
    (["zoo:nope"], "unknown zoo net 'nope' (zoo: darts-v1"),
    (["k3_e6-k3_e6"], "arch has 2 layers, space 'proxyless' has 21"),
    (["zoo:mobilenetv2", "--macro", "nope"], "unknown macro 'nope'"),
])
def test_info_bad_input_is_one_line_and_exit_2(args, msg):
    p = nasctl("info", *args, check=2)
    assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1 and not p.stdout
