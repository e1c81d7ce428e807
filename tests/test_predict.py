"""fit-predictor / predict on real measured rows (HELP's FBNet data, and rows profiled here)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import DATA, nasctl
from nasctl.errors import UserError
from nasctl.models import arch_cost
from nasctl.predict import Predictor, exact_cost, fit_predictor, load_rows
from nasctl.predict.fit import FitConfig
from nasctl.space import load_space

FAST = FitConfig(members=2, weight_decays=(1e-4,), max_epochs=60, patience=10)


@pytest.fixture
def help_rows():
    """600 of HELP's 5,000 FBNet-space archs, all five devices (committed, MIT licence beside it,
    so these tests run on a clean clone): HELP's csv .sample(600, random_state=0)."""
    return DATA / "help-fbnet-600.csv"


def test_the_committed_rows_are_helps_own(help_csv):
    """The fixture is the shared data's sample, not a copy that drifted from it."""
    pd.testing.assert_frame_equal(pd.read_csv(help_csv).sample(600, random_state=0).reset_index(drop=True),
                                  pd.read_csv(DATA / "help-fbnet-600.csv"))


def test_additive_device_gets_the_lut_and_exact_figures(help_rows):
    """HW-NAS-Bench's Pi column is a sum of per-block times: the LUT must win and be exact."""
    rows = load_rows(help_rows, "raspi4_ms", "fbnet")
    pred, report, (y, preds) = fit_predictor(rows, "raspi4_ms", cfg=FAST)
    assert report["chosen"] == "lut" and pred.meta["kind"] == "lut"
    f = report["test"]["default"]
    assert f["mape"] < 1e-4 and f["kendall_tau"] > 0.999 and f["within_5"] == 1.0
    assert report["train_rows"] == 480 and report["test_rows"] == 120


def test_cli_writes_model_report_and_plot_and_predicts(tmp_path, help_rows):
    out = tmp_path / "p.pt"
    p = nasctl("fit-predictor", help_rows, "--space", "fbnet", "--metric", "pixel2_ms", "-o", out, "--members", 2, "--json", check=0)
    report = json.loads(p.stdout)
    assert {"default", "lut", "mlp", "residual"} <= set(report["test"])
    for name in ("default", "lut"):
        assert set(report["test"][name]) >= {"rmse", "mape", "kendall_tau", "within_5", "within_10"}
    assert report["test"]["default"]["kendall_tau"] > 0.4  # pixel2 is noisy (whole ms)
    assert json.loads(out.with_suffix(".json").read_text())["chosen"] == report["chosen"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    pred = Predictor.load(out)
    assert pred.meta["space"]["name"] == "fbnet" and pred.meta["unit"] == "ms"
    archs = tmp_path / "archs.csv"
    pd.read_csv(help_rows)[["arch"]].head(50).to_csv(archs, index=False)
    # The arch file has no 'space' column: predict takes the space from the predictor.
    p = nasctl("predict", out, archs, "-o", tmp_path / "pred.parquet", "--json", check=0)
    df = pd.read_parquet(tmp_path / "pred.parquet")
    assert len(df) == 50 and (df["pred_pixel2_ms"] > 0).all() and (df["pred_pixel2_ms_std"] >= 0).all()
    space = load_space("fbnet")
    mean, _ = pred.predict([space.parse(a) for a in df["arch"]])
    np.testing.assert_allclose(mean, df["pred_pixel2_ms"], rtol=1e-6)
    one = json.loads(nasctl("predict", out, "--arch", df["arch"][0], "--json", check=0).stdout)
    assert one["pixel2_ms"] == pytest.approx(mean[0], rel=1e-5)


def test_predictor_is_differentiable_in_the_soft_one_hot(help_rows):
    rows = load_rows(help_rows, "gtx1080ti_b1_ms", "fbnet")
    pred, *_ = fit_predictor(rows, "gtx1080ti_b1_ms", cfg=FAST)
    alpha = torch.zeros(1, 22, 9, requires_grad=True)
    lat = pred(torch.softmax(alpha, -1))
    lat.sum().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0


def test_a_learned_model_must_beat_the_lut_beyond_noise():
    from nasctl.predict.fit import significant_gain

    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 1000) ** 2
    assert not significant_gain(base, base)
    assert not significant_gain(base, base * rng.uniform(0.9, 1.1, 1000))  # a coin flip, not a gain
    assert significant_gain(base, base * 0.7)
    assert not significant_gain(base, base * 0.999)  # consistent but negligible
    assert not significant_gain(base[:20], base[:20] * 0.5)  # too few rows to tell
    assert not significant_gain(np.zeros(100), rng.uniform(0, 1, 100))  # an exact LUT is kept


def test_exact_cost_predictors_match_the_builder():
    s = load_space("proxyless")
    macs, params = exact_cost(s, "mmacs"), exact_cost(s, "mparams")
    a = s.from_indices(s.allowed.argmax(1))
    m, p = arch_cost(a)
    x = torch.as_tensor(a.onehot())[None]
    assert macs(x).item() == pytest.approx(m / 1e6, rel=1e-6)
    assert params(x).item() == pytest.approx(p / 1e6, rel=1e-6)


def test_loading_checks_the_space(tmp_path, help_rows):
    rows = load_rows(help_rows, "raspi4_ms", "fbnet")
    pred, *_ = fit_predictor(rows, "raspi4_ms", cfg=FAST)
    pred.save(tmp_path / "p.pt")
    loaded = Predictor.load(tmp_path / "p.pt")
    loaded.check_space(load_space("fbnet", resolution=224, macro="imagenet"))  # same strings: fine
    with pytest.raises(UserError, match="fitted on space 'fbnet'"):
        loaded.check_space(load_space("proxyless"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a nasctl predictor"):
        Predictor.load(tmp_path / "junk.pt")


@pytest.mark.parametrize(
    "edit, args, msg",
    [
        (None, ["--metric", "nope_ms"], "no column 'nope_ms'"),
        (None, ["--space", "proxyless"], "has 21"),
        (lambda d: d.head(20), [], "20 usable rows (status ok), need at least 30"),
        (lambda d: d.assign(pixel2_ms=d.pixel2_ms.where(d.index % 7 != 0)), [], "missing, non-numeric or non-positive pixel2_ms"),
        (lambda d: d.assign(config_id=np.where(d.index % 2, "a", "b")), [], "several device configs"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, help_rows, edit, args, msg):
    df = pd.read_csv(help_rows)
    f = tmp_path / "rows.csv"
    (edit(df) if edit else df).to_csv(f, index=False)
    out = tmp_path / "p.pt"
    base = ["--space", "fbnet", "--metric", "pixel2_ms"]
    p = nasctl("fit-predictor", f, *base, *args, "-o", out, check=2)
    assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_error_rows_are_skipped_with_a_count(tmp_path, help_rows):
    df = pd.read_csv(help_rows).assign(status="ok")
    df.loc[:9, "status"] = "error"
    df.loc[:9, "pixel2_ms"] = np.nan
    f = tmp_path / "rows.csv"
    df.to_csv(f, index=False)
    rows = load_rows(f, "pixel2_ms", "fbnet")
    assert rows.skipped_errors == 10 and len(rows.y) == 590


def test_a_real_layer_interaction_is_learned_and_chosen_over_the_lut():
    from nasctl.predict.fit import FitConfig, fit_candidates

    rng = np.random.default_rng(0)
    n, L, K = 800, 6, 4
    idx = rng.integers(0, K, (n, L))
    X = np.eye(K, dtype=np.float32)[idx]
    fused = (idx[:, 0] == idx[:, 1]).astype(float)  # not a sum over layers: two layers together
    y = 10 + X.reshape(n, -1) @ rng.uniform(0, 1, L * K) + 2.0 * fused + rng.normal(0, 0.05, n)
    c = fit_candidates(X, y, FitConfig(members=2))
    assert c.chosen in ("residual", "mlp") and c.val_mae[c.chosen] < 0.5 * c.val_mae["lut"]


def test_with_fewer_rows_than_table_entries_the_cost_prior_carries_the_lut(help_csv):
    """48 measured rows for a 22 x 9 table: least squares is underdetermined and guesses at every
    entry it never saw; the LUT shrunk towards its MACs/params prior predicts the other rows."""
    from nasctl.models.cost import cost_table
    from nasctl.predict.fit import fit_lut
    from nasctl.predict.metrics import figures

    rows = load_rows(help_csv, "xeon_gold_6226_ms", "fbnet")
    tr, te = np.split(np.random.default_rng(0).permutation(len(rows.y)), [48])
    X = torch.as_tensor(rows.X[te], dtype=torch.float32)
    with torch.no_grad():
        prior = figures(rows.y[te], fit_lut(rows.X[tr], rows.y[tr], features=cost_table(rows.space).features())(X).numpy())
        ls = figures(rows.y[te], fit_lut(rows.X[tr], rows.y[tr], shrink=False)(X).numpy())
    assert prior["mape"] < 0.5 * ls["mape"] and prior["kendall_tau"] > ls["kendall_tau"] + 0.2


def test_the_lut_shrinkage_is_the_exact_leave_one_out_choice(help_rows):
    """RidgeCV's efficient LOO picks the strength that n refits, one per held-out row, pick."""
    from nasctl.models.cost import cost_table
    from nasctl.predict.fit import LOO_GRID, _loo_alpha, _ridge

    rows = load_rows(help_rows, "xeon_gold_6226_ms", "fbnet")
    X, y = rows.X[:40], rows.y[:40]
    B = X.reshape(len(X), -1)
    F = np.concatenate([np.ones((len(X), 1)), np.einsum("nlk,lkf->nf", X, cost_table(rows.space).features())], 1)
    r = y - F @ np.linalg.lstsq(F, y, rcond=None)[0]
    grid = np.linalg.norm(B, 2) ** 2 * LOO_GRID

    def press(alpha):
        return sum((r[i] - B[i] @ _ridge(np.delete(B, i, 0), np.delete(r, i), alpha)) ** 2 for i in range(len(r)))

    errors = [press(a) for a in grid]
    assert _loo_alpha(B, r) == pytest.approx(grid[np.argmin(errors)])
    assert min(errors) < 0.9 * errors[0]  # the choice matters: near-zero shrinkage is worse here
