import numpy as np
import pytest
import torch

from nasctl.models import arch_cost, build, cost_table, count, make_block
from nasctl.space import load_space
from nasctl.space.sample import sample


@pytest.mark.parametrize("space", ["proxyless", "proxyless-se", "fbnet"])
def test_every_sampled_arch_builds_and_runs(space):
    s = load_space(space, resolution=64)
    for row in sample(s, 4, seed=1):
        arch = s.from_indices(row)
        net = build(arch).eval()
        # one block per layer, each with the op's own weights (a skip that keeps the shape has none)
        assert [sum(p.numel() for p in b.parameters()) for b in net.layers] == cost_table(s).params[np.arange(len(row)), row].tolist()
        assert [len(b.state_dict()) == 0 for b in net.layers] == [op == "skip" and not l.reshapes for op, l in zip(arch.ops, s.layers)]
        with torch.no_grad():
            y = net(torch.randn(2, 3, 64, 64))
        assert y.shape == (2, s.params.num_classes) and torch.isfinite(y).all()


@pytest.mark.parametrize("space", ["proxyless", "proxyless-se", "fbnet"])
def test_cost_table_is_exact(space):
    s = load_space(space)
    r = s.params.resolution
    for row in sample(s, 3, seed=2):
        a = s.from_indices(row)
        net = build(a)
        assert arch_cost(a) == count(net, (1, 3, r, r))
        assert arch_cost(a)[1] == sum(p.numel() for p in net.parameters())


def test_mbconv_macs_by_hand():
    s = load_space("proxyless")
    l = s.layers[0]  # 16 -> 24, stride 2, at 112x112
    macs, params = count(make_block(s, l.in_ch, l.out_ch, l.stride, "k3_e6"), (1, 16, 112, 112))
    mid = 16 * 6
    expect = 16 * mid * 112 * 112 + mid * 9 * 56 * 56 + mid * 24 * 56 * 56
    assert macs == expect
    assert params == 16 * mid + 2 * mid + mid * 9 + 2 * mid + mid * 24 + 2 * 24


def test_fbnet_grouped_and_skip_blocks():
    s = load_space("fbnet")
    blk = make_block(s, 16, 24, 2, "skip")  # shape changes: 1x1 conv + BN + ReLU
    assert count(blk, (1, 16, 32, 32))[0] == 16 * 24 * 16 * 16
    g2 = make_block(s, 32, 32, 1, "k3_e1_g2")
    macs, _ = count(g2, (1, 32, 8, 8))
    assert macs == 2 * (32 * 32 // 2) * 64 + 32 * 9 * 64
    x = torch.randn(1, 32, 8, 8)
    assert g2(x).shape == x.shape


def test_proxyless_macs_plausible():
    s = load_space("proxyless")
    t = cost_table(s)
    lo = t.fixed_macs + np.where(s.allowed, t.macs, np.inf).min(1).sum()
    hi = t.fixed_macs + np.where(s.allowed, t.macs, -np.inf).max(1).sum()
    # MobileNetV2-sized: ProxylessNAS-mobile is ~320M MACs, well inside the space's range.
    assert 50e6 < lo < 150e6 and 550e6 < hi < 800e6
