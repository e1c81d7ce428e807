import pandas as pd
import pytest

from nasctl.errors import UserError
from nasctl.space import builtin_spaces, load_space, parse_op


def test_builtin_spaces_ship():
    assert {"proxyless", "proxyless-se", "fbnet", "darts"} <= set(builtin_spaces())


def test_a_space_extends_a_builtin_one_with_only_what_it_changes(tmp_path):
    se, base = load_space("proxyless-se"), load_space("proxyless")
    shape = [(l.in_ch, l.out_ch, l.stride, l.in_hw, "skip" in l.ops) for l in base.layers]
    assert [(l.in_ch, l.out_ch, l.stride, l.in_hw, "skip" in l.ops) for l in se.layers] == shape  # the macro comes from proxyless
    assert len(se.ops) == 19 and se.definition_hash != base.definition_hash
    f = tmp_path / "bad.toml"
    f.write_text('extends = "nope"\nname = "x"\n')
    with pytest.raises(UserError, match="extends 'nope', which is not a built-in space"):
        load_space(f)


def test_proxyless_matches_lightnas_space():
    s = load_space("proxyless")
    assert s.num_layers == 21
    assert s.ops == ("k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6", "skip")
    assert [f.op for f in s.fixed] == ["k3_e1"] and s.fixed[0].out_ch == 16
    assert s.stem_channels == 32 and s.stem_stride == 2 and s.head_channels == 1280
    widths = [l.out_ch for l in s.layers]
    assert widths == [24] * 4 + [40] * 4 + [80] * 4 + [96] * 4 + [192] * 4 + [320]
    # Skip is never allowed where stride or width changes: first layer of every stage.
    first_of_stage = [0, 4, 8, 12, 16, 20]
    for l in s.layers:
        assert ("skip" in l.ops) == (l.index not in first_of_stage)
    assert s.describe()["size"] == 6**6 * 7**15
    assert [l.in_hw for l in s.layers][:5] == [112, 56, 56, 56, 56]


def test_fbnet_reads_help_csv_as_is(help_csv):
    s = load_space("fbnet")
    assert s.num_layers == 22 and len(s.ops) == 9 and s.params.resolution == 32
    df = pd.read_csv(help_csv)
    archs = [s.parse(a) for a in df["arch"]]
    assert len({a.id for a in archs}) == len(df) == 5000
    assert archs[0].string == df["arch"][0]


def test_parse_errors_name_layer_and_token():
    s = load_space("proxyless")
    good = ["k3_e3"] * 21
    with pytest.raises(UserError, match=r"layer 3: unknown op 'k9_e3'"):
        s.parse("-".join(good[:3] + ["k9_e3"] + good[4:]))
    with pytest.raises(UserError, match=r"layer 4: op 'skip' not allowed"):
        s.parse("-".join(good[:4] + ["skip"] + good[5:]))
    with pytest.raises(UserError, match=r"20 layers, space 'proxyless' has 21"):
        s.parse("-".join(good[:20]))


def test_arch_encodings():
    s = load_space("proxyless")
    a = s.parse("-".join(["k5_e6"] * 2 + ["skip"] * 2 + ["k7_e3"] * 17))
    oh = a.onehot()
    assert oh.shape == (21, 7) and (oh.sum(1) == 1).all()
    assert oh[0, s.ops.index("k5_e6")] == 1 and oh[2, s.ops.index("skip")] == 1
    assert s.from_indices(a.indices) == a
    # The id depends on the space's structure and the string, not on params or object identity.
    assert a.id == load_space("proxyless", resolution=160).parse(a.string).id
    assert len(a.id) == 16
    fb = load_space("fbnet")
    assert fb.parse("-".join(["k3_e3"] * 22)).id != s.parse("-".join(["k3_e3"] * 21)).id


def test_params_and_macros():
    s = load_space("proxyless", width_mult=0.5, resolution=160, num_classes=10, macro="cifar")
    assert s.params.resolution == 160 and s.params.num_classes == 10
    assert s.layers[0].out_ch == 16  # make_divisible(24 * 0.5)
    assert s.definition_hash != load_space("proxyless").definition_hash
    assert s.structure_hash == load_space("proxyless").structure_hash
    with pytest.raises(UserError, match="unknown macro"):
        load_space("proxyless", macro="nope")


@pytest.mark.parametrize("space", ["proxyless", "proxyless-se", "fbnet"])
def test_an_arch_valid_at_one_width_and_macro_is_valid_at_all(space):
    """At width 0.25, 80 and 96 channels both round to 24: skip must still be ruled out there."""
    full = load_space(space).allowed
    for macro in load_space(space).macros:
        for w in (0.25, 0.35, 0.5, 1.4):
            assert (load_space(space, macro=macro, width_mult=w).allowed == full).all(), (macro, w)


def test_op_grammar():
    assert parse_op("k5_e1_g2").groups == 2 and parse_op("k7_e6").kernel == 7
    assert parse_op("skip").is_skip
    assert parse_op("k5_e3_se25").se == 25 and parse_op("k5_e3").se == 0
    with pytest.raises(UserError, match="bad op name"):
        parse_op("conv3")


def test_user_space_from_toml(tmp_path):
    f = tmp_path / "tiny.toml"
    f.write_text(
        """
name = "tiny"
ops = ["k3_e2", "k5_e4", "skip"]
[params]
resolution = 64
num_classes = 5
[macro.small]
stem = { channels = 8, stride = 2 }
stages = [{ channels = 16, layers = 2, stride = 2 }, { channels = 16, layers = 2, stride = 1 }]
head = { channels = 64 }
"""
    )
    s = load_space(f)
    assert s.name == "tiny" and s.num_layers == 4
    assert s.allowed.tolist() == [[True, True, False]] + [[True, True, True]] * 3
    assert s.parse("k3_e2-skip-k5_e4-skip").string == "k3_e2-skip-k5_e4-skip"


@pytest.mark.parametrize(
    "body, msg",
    [
        ('name = "x"\nops = ["k3_e3"]\n[params]\n', "macro: Field required"),
        ('name = "x"\nops = ["k3"]\n[params]\n[macro.a]\nstem={channels=8,stride=1}\nstages=[{channels=8,layers=1,stride=1}]\nhead={channels=8}\n', "bad op name"),
        ("not toml [", "space file"),
    ],
)
def test_bad_space_files(tmp_path, body, msg):
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(UserError, match=msg):
        load_space(f)


def test_unknown_space():
    with pytest.raises(UserError, match="unknown space 'nope'"):
        load_space("nope")


def test_a_macro_brings_its_resolution_and_classes_unless_they_are_given():
    """Rows must never be labelled imagenet at 32 px: the macro's own input comes with it."""
    assert load_space("fbnet", macro="imagenet").params.__dict__ == {"macro": "imagenet", "resolution": 224, "width_mult": 1.0, "num_classes": 1000}
    assert (load_space("proxyless", macro="cifar").params.resolution, load_space("proxyless", macro="cifar").params.num_classes) == (32, 10)
    assert load_space("proxyless", macro="cifar", resolution=28).params.resolution == 28  # given wins
    assert load_space("darts", macro="eval").params.num_classes == 10


def test_a_macro_without_its_own_input_needs_it_given(tmp_path):
    f = tmp_path / "two.toml"
    macro = "stem = { channels = 8, stride = 2 }\nstages = [{ channels = 16, layers = 2, stride = 2 }]\nhead = { channels = 32 }\n"
    f.write_text(f'name = "two"\nops = ["k3_e3", "skip"]\n[params]\nmacro = "a"\nresolution = 64\n[macro.a]\n{macro}[macro.b]\n{macro}')
    assert load_space(f).params.resolution == 64
    with pytest.raises(UserError, match="macro 'b' declares no resolution; give --resolution with --macro"):
        load_space(f, macro="b")
    assert load_space(f, macro="b", resolution=64, num_classes=3).params.macro == "b"


def test_extends_merges_tables_so_a_variant_keeps_the_base_macros(tmp_path):
    f = tmp_path / "wide.toml"
    f.write_text('extends = "proxyless"\nname = "wide"\n[macro.imagenet]\nresolution = 224\nnum_classes = 1000\n'
                 'stem = { channels = 48, stride = 2 }\nstages = [{ channels = 64, layers = 2, stride = 2 }]\nhead = { channels = 1280 }\n')
    wide = load_space(f)
    assert set(wide.macros) == {"imagenet", "cifar"} and wide.num_layers == 2 and wide.stem_channels == 48
    assert wide.macros["cifar"] == load_space("proxyless").macros["cifar"]  # kept, not dropped
    assert wide.ops == load_space("proxyless").ops  # and so are the base's top-level keys


def test_spaces_with_other_macros_are_not_equal_and_get_their_own_cost_table(tmp_path):
    from dataclasses import replace

    from nasctl.models import arch_cost

    base = load_space("proxyless")
    wider = replace(base, macros={**base.macros, "imagenet": {**base.macros["imagenet"], "head": {"channels": 1536}}})
    assert base != wider and base == load_space("proxyless")
    a = "-".join(["k3_e6"] * 21)
    assert arch_cost(wider.parse(a))[1] - arch_cost(base.parse(a))[1] == (1536 - 1280) * (320 + 2 + 1000)  # 1x1 conv, BN, fc weights
