import numpy as np
import pytest
from scipy import stats

from nasctl.errors import UserError
from nasctl.models import cost_table
from nasctl.space import load_space
from nasctl.space.sample import sample


def test_seeded_distinct_and_valid():
    s = load_space("proxyless")
    a, b = sample(s, 500, seed=3), sample(s, 500, seed=3)
    assert (a == b).all()
    assert len({r.tobytes() for r in a}) == 500
    assert s.allowed[np.arange(21), a].all()
    assert not (a == sample(s, 500, seed=4)).all()


@pytest.mark.parametrize("key", ["macs", "params"])
def test_stratified_spreads_cost_evenly(key):
    s = load_space("proxyless")
    t = cost_table(s)
    def cost(idx):
        m, p = t.of(idx)
        return m if key == "macs" else p
    uni, strat = cost(sample(s, 300, seed=0)), cost(sample(s, 300, seed=0, spread=getattr(t, key)))
    tab = t.macs if key == "macs" else t.params
    lo = np.where(s.allowed, tab, np.inf).min(1).sum() + (t.fixed_macs if key == "macs" else t.fixed_params)
    hi = np.where(s.allowed, tab, -np.inf).max(1).sum() + (t.fixed_macs if key == "macs" else t.fixed_params)
    u = (strat - lo) / (hi - lo)
    # Close to uniform over the whole range, unlike plain sampling which piles up in the middle.
    assert stats.kstest(u, "uniform").pvalue > 0.01
    assert np.std(strat) > 2 * np.std(uni)
    assert len({r.tobytes() for r in sample(s, 300, seed=0, spread=getattr(t, key))}) == 300


def test_bad_requests():
    s = load_space("proxyless")
    with pytest.raises(UserError):
        sample(s, 0)
