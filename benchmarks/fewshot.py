"""Issue-20 figures: a new device's predictor from a few measured archs, other devices as prior.

help  (figures 1, 2, 4) On HELP's 5,000 FBNet archs (../shared/data/help-fbnet/), each column is
      the target once and the other columns are its priors (their LUTs fitted on all their
      rows). For each seed, a pool of 1,000 of the target's archs; N of them are "measured"
      (chosen by `transfer.choose`, or uniformly), and the fit is scored on all the target's
      other rows: Spearman rho, Kendall tau, MAPE, within +-10%. Beside it: the cost-prior LUT
      without priors (uniform rows; the CLI needs 30 of them, the library fits fewer), MACs
      alone, and the full-data default (`fit_predictor`, 80/20, rho on the held-out 20%). The mix
      ceiling: the best mix of the priors' tables and the device features (no per-entry
      deviations), fitted on all 5,000 rows: what a few rows can reach at most.
      Rows needed to come within 0.01 of the full-data rho, with and without transfer.
nb201 (issue 35) HELP's 13 NAS-Bench-201 device columns (shipped in nasctl.tabular), each the new
      device once with the other 12 as priors; see `nb201_figures`.
local (figure 3) This machine's CPU, through the real CLI: 300 stratified proxyless archs
      (224x224) measured on three configs (1 thread batch 1, the prior; 2 threads; batch 8);
      then, for each target config, `profile --budget 10 --prior` twice (10, then 20 fresh
      rows chosen from a separate pool of 1,000, stratified by MACs like the scoring set) and
      20 uniformly chosen fresh rows from that pool, each fitted
      by `fit-predictor --prior` and scored on the target's 300 rows, all read at the config's
      base speed where the rows carry a drift (the CLI's default), since fresh rows and scoring
      rows are measured at different hours. "paired": 10 archs of each design (free D-optimal,
      strata, uniform) measured in one shuffled session, so the designs share one drift. Resumable (the row stores and the rounds files in
      --workdir).

Prints one JSON object. Usage:
    python benchmarks/fewshot.py help [--seeds 10]
    python benchmarks/fewshot.py nb201 [--seeds 10]
    python benchmarks/fewshot.py local --workdir runs/fewshot [--configs 2t-b1,1t-b8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from clirun import nasctl
from nasctl.models.cost import cost_table
from nasctl.predict import Predictor, fit_predictor, load_rows
from nasctl.predict.fit import fit_lut
from nasctl.predict.metrics import figures
from nasctl.predict.priors import load_prior
from nasctl.predict.transfer import choose, transfer_features
from nasctl.space import load_space
from nasctl.space.archfile import archs_from_frame
from nasctl.tabular import table_rows

CSV = Path(__file__).resolve().parents[2] / "shared/data/help-fbnet/fbnet_cifar100_latency.csv"
COLUMNS = ["raspi4_ms", "pixel2_ms", "xeon_gold_6226_ms", "gtx1080ti_b1_ms", "gtx1080ti_b32_ms"]
END_TO_END = ["pixel2_ms", "xeon_gold_6226_ms", "gtx1080ti_b1_ms", "gtx1080ti_b32_ms"]
SIZES = (5, 10, 20, 50)
SCAN = (5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500)  # for the rows-needed figure
FIGS = ("spearman_rho", "kendall_tau", "mape", "within_10")
POOL = 1000


def _score(table_model, X, y) -> dict:
    with torch.no_grad():
        p = table_model(torch.as_tensor(X, dtype=torch.float32)).numpy()
    f = figures(y, p)
    return {k: f[k] for k in FIGS}


def _mean_std(runs: list[dict]) -> dict:
    return {k: [round(float(np.mean([r[k] for r in runs])), 4), round(float(np.std([r[k] for r in runs])), 4)] for k in FIGS}


def help_figures(seeds: int) -> dict:
    rows = {c: load_rows(CSV, c, "fbnet") for c in COLUMNS}
    space, X = rows[COLUMNS[0]].space, rows[COLUMNS[0]].X
    n = len(X)
    idx_all = X.argmax(-1)
    cost = cost_table(space).features()
    macs = np.einsum("nlk,lk->n", X, cost[..., 0])
    tables = {c: fit_lut(X, rows[c].y, features=cost).weight.detach().numpy().astype(float) for c in COLUMNS}
    out: dict = {}
    for target in COLUMNS:
        y = rows[target].y
        F = transfer_features(space, [tables[c] for c in COLUMNS if c != target])
        _, rep, _ = fit_predictor(rows[target], target, 0.2, 0)
        full = rep["test"]["default"]["spearman_rho"]
        R = np.concatenate([np.ones((n, 1)), np.einsum("nlk,lkf->nf", X, F)], 1)  # the mix alone, fitted on all rows
        ceiling = float(stats.spearmanr(R @ np.linalg.lstsq(R, y, rcond=None)[0], y).statistic)
        res: dict = {"full_data_default_rho": round(full, 4), "mix_ceiling_rho": round(ceiling, 4), "macs_alone": {
            "spearman_rho": round(float(stats.spearmanr(macs, y).statistic), 4),
            "kendall_tau": round(float(stats.kendalltau(macs, y).statistic), 4)}}
        curves: dict = {"transfer_chosen": {}, "lut_no_transfer": {}}
        for N in sorted(set(SIZES) | set(SCAN)):
            per: dict = {"transfer_chosen": [], "transfer_uniform": [], "lut_no_transfer": []}
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                pool = rng.choice(n, POOL, replace=False)
                picks = {"transfer_chosen": pool[choose(space, idx_all[pool], N, F)] if N <= POOL else None,
                         "uniform": rng.choice(pool, N, replace=False) if N <= POOL else rng.choice(n, N, replace=False)}
                for name, sel, feats, mix in (("transfer_chosen", picks["transfer_chosen"], F, True),
                                              ("transfer_uniform", picks["uniform"], F, True),
                                              ("lut_no_transfer", picks["uniform"], cost, False)):
                    if sel is None or (name == "transfer_uniform" and N not in SIZES):
                        continue
                    rest = np.setdiff1d(np.arange(n), sel)
                    per[name].append(_score(fit_lut(X[sel], y[sel], features=feats, shrink_mix=mix), X[rest], y[rest]))
            for name, runs in per.items():
                if runs and N in SIZES:
                    res.setdefault(f"N={N}", {})[name] = _mean_std(runs)
                if runs and name in curves:
                    curves[name][N] = float(np.mean([r["spearman_rho"] for r in runs]))
        res["rows_to_within_0.01_of_full"] = {k: next((N for N, r in sorted(v.items()) if r >= full - 0.01), None)
                                              for k, v in curves.items()}
        out[target] = res
        print(f"{target}: done", file=sys.stderr)
    rho10 = out["raspi4_ms"]["N=10"]["transfer_chosen"]["spearman_rho"][0]
    goals = {"raspi4_rho_at_10": rho10, "raspi4_goal_0.95_met": rho10 >= 0.95, "help_raspi4": 0.887}
    for c in END_TO_END:
        for N, tol in ((10, 0.03), (20, 0.01)):
            got = out[c][f"N={N}"]["transfer_chosen"]["spearman_rho"][0]
            goals[f"{c}_N{N}_gap"] = round(out[c]["full_data_default_rho"] - got, 4)
            goals[f"{c}_N{N}_within_{tol}"] = out[c]["full_data_default_rho"] - got <= tol
    return {"columns": out, "goals": goals, "seeds": seeds, "pool": POOL}


# ---- NAS-Bench-201: HELP's 13 device settings, shipped with nasctl ------------------------------
NB201_SIZES = (5, 10, 20)
HELP_NB201_RHO_AT_10 = 0.932  # HELP's own figure on this space: 10 samples, averaged over its 6 test devices


def nb201_figures(seeds: int) -> dict:
    """Each of the 13 columns is the new device once: its N rows chosen (or drawn) from a pool of
    1,000, the other 12 columns as priors (their LUTs fitted on all 15,625 cells), Spearman rho
    on all its other cells. Beside it: the priors' tables as the only features (LUT-only), the
    cost-prior LUT on N uniform rows with no other device (no prior), and the LUT on 80% of all
    rows (full data)."""
    df = table_rows("help-nb201")
    cols = [c for c in df.columns if c.endswith("_ms")]
    space = load_space("nb201")
    archs = [space.parse(a) for a in df["arch"]]
    X, idx_all = np.stack([a.onehot() for a in archs]), np.stack([a.indices for a in archs])
    n, cost = len(X), cost_table(space).features()
    ys = {c: df[c].to_numpy(float) for c in cols}
    tables = {c: fit_lut(X, ys[c], features=cost).weight.detach().numpy().astype(float) for c in cols}
    designs = ("transfer_chosen", "transfer_uniform", "lut_only_chosen", "no_prior")
    out: dict = {}
    for target in cols:
        y, others = ys[target], [tables[c] for c in cols if c != target]
        F, P = transfer_features(space, others), np.stack(others, -1)
        split = np.random.default_rng(0).permutation(n)
        te, tr = split[: n // 5], split[n // 5 :]
        res: dict = {"full_data_lut_rho": round(_score(fit_lut(X[tr], y[tr], features=cost), X[te], y[te])["spearman_rho"], 4)}
        for N in NB201_SIZES:
            per: dict = {d: [] for d in designs}
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                pool = rng.choice(n, POOL, replace=False)
                chosen, uniform = pool[choose(space, idx_all[pool], N, F)], rng.choice(pool, N, replace=False)
                for name, sel, feats, mix in (("transfer_chosen", chosen, F, True), ("transfer_uniform", uniform, F, True),
                                              ("lut_only_chosen", chosen, P, True), ("no_prior", uniform, cost, False)):
                    rest = np.setdiff1d(np.arange(n), sel)
                    per[name].append(_score(fit_lut(X[sel], y[sel], features=feats, shrink_mix=mix), X[rest], y[rest]))
            res[f"N={N}"] = {name: _mean_std(runs) for name, runs in per.items()}
        out[target] = res
        print(f"nb201 {target}: done", file=sys.stderr)
    mean = {f"N={N}": {d: round(float(np.mean([out[c][f"N={N}"][d]["spearman_rho"][0] for c in cols])), 4) for d in designs}
            for N in NB201_SIZES}
    return {"columns": out, "mean_spearman_rho_over_13": mean, "help_own_rho_at_10": HELP_NB201_RHO_AT_10,
            "seeds": seeds, "pool": POOL}


# ---- this machine's CPU ----------------------------------------------------------------------
PROFILE = Path(__file__).resolve().parents[1] / "profiles/local-cpu.toml"
CONFIGS = {"1t-b1": {}, "2t-b1": {"runtime_options": {"threads": 2}}, "1t-b8": {"model": {"batch": 8}}}


def device_file(w: Path, name: str, change: dict) -> Path:
    """local-cpu.toml with one setting changed, named for the config."""
    lines, table = PROFILE.read_text().replace('name = "local-cpu"', f'name = "local-cpu-{name}"').splitlines(), None
    for i, line in enumerate(lines):
        if line.startswith("["):
            table = line.strip()[1:-1]
        elif "=" in line and line.split("=")[0].strip() in change.get(table, {}):
            key = line.split("=")[0].strip()
            lines[i] = f"{key} = {change[table][key]}"
    path = w / f"local-cpu-{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    assert all(tomllib.loads(path.read_text())[t][k] == v for t, kv in change.items() for k, v in kv.items())
    return path


def _rho(pred: Path, eval_rows: Path, metric: str = "latency_ms") -> dict:
    p = Predictor.load(pred)
    rows = load_rows(eval_rows, metric, drift=p.meta.get("drift_correct") is not None)  # in the fit's units
    mean, _ = p.predict(rows.archs)
    f = figures(rows.y, mean)
    return {k: round(f[k], 4) for k in FIGS}


def local_figures(w: Path, configs: list[str]) -> dict:
    w.mkdir(parents=True, exist_ok=True)
    if not (w / "eval.parquet").exists():
        nasctl("sample", "--space", "proxyless", "--n", 300, "--seed", 0, "--stratify", "macs", "-o", w / "eval.parquet")
    if not (w / "pool.parquet").exists():  # stratified too: a uniform pool lacks the small and large nets
        nasctl("sample", "--space", "proxyless", "--n", POOL, "--seed", 1, "--stratify", "macs", "-o", w / "pool.parquet")
    devices = {name: device_file(w, name, change) for name, change in CONFIGS.items() if name in ["1t-b1", *configs]}
    t0 = time.time()
    for name, dev in devices.items():  # the 300 rows of each config (resumed)
        nasctl("profile", "--device", dev, "--archs", w / "eval.parquet", "-o", w / f"eval-{name}.parquet", ok=(0, 1))
        nasctl("profile", "--device", dev, "--archs", w / "eval.parquet", "-o", w / f"eval-{name}.parquet", "--retry-errors", ok=(0, 1))
    prior = w / "prior-1t-b1.pt"
    if not prior.exists():
        nasctl("fit-predictor", w / "eval-1t-b1.parquet", "-o", prior)
    out: dict = {}
    uniform = pd.read_parquet(w / "pool.parquet").sample(20, random_state=0)
    uniform.to_parquet(w / "uniform-20.parquet")
    uniform.iloc[:10].to_parquet(w / "uniform-10.parquet")
    for name in configs:
        dev, res = devices[name], {}
        store = w / f"chosen-{name}.parquet"
        _, full, _ = fit_predictor(load_rows(w / f"eval-{name}.parquet", "latency_ms", drift=None), "latency_ms", 0.2, 0)
        res["full_data_default_rho_heldout"] = round(full["test"]["default"]["spearman_rho"], 4)
        for rnd, N in ((1, 10), (2, 20)):
            while len(_ok(store)) < N:  # a round, resumed until its archs are all measured
                nasctl("profile", "--device", dev, "--archs", w / "pool.parquet", "--budget", 10, "--prior", prior, "-o", store,
                       "--retry-errors", ok=(0, 1))
            ids = [i for r in json.loads(Path(f"{store}.rounds.json").read_text())["rounds"][:rnd] for i in r["arch_ids"]]
            chosen = _ok(store)
            chosen[chosen["arch_id"].isin(ids)].to_parquet(w / f"chosen-{name}-{N}.parquet")
            nasctl("fit-predictor", w / f"chosen-{name}-{N}.parquet", "--prior", prior, "-o", w / f"fit-{name}-chosen-{N}.pt")
            res[f"N={N}"] = {"transfer_chosen": _rho(w / f"fit-{name}-chosen-{N}.pt", w / f"eval-{name}.parquet")}
            ustore = w / f"uniform-{name}.parquet"
            nasctl("profile", "--device", dev, "--archs", w / f"uniform-{N}.parquet", "-o", ustore, "--retry-errors", ok=(0, 1))
            urows = _ok(ustore)
            urows = urows[urows["arch_id"].isin(pd.read_parquet(w / f"uniform-{N}.parquet")["arch_id"])]
            urows.to_parquet(w / f"uniform-{name}-{N}.parquet")
            nasctl("fit-predictor", w / f"uniform-{name}-{N}.parquet", "--prior", prior, "-o", w / f"fit-{name}-uniform-{N}.pt")
            res[f"N={N}"]["transfer_uniform"] = _rho(w / f"fit-{name}-uniform-{N}.pt", w / f"eval-{name}.parquet")
            ev = load_rows(w / f"eval-{name}.parquet", "latency_ms", drift=None)
            few = load_rows(w / f"uniform-{name}-{N}.parquet", "latency_ms", min_rows=5, drift=None)
            res[f"N={N}"]["lut_no_transfer"] = _score(fit_lut(few.X, few.y, features=cost_table(few.space).features()), ev.X, ev.y)
        res["paired"] = _paired(w, name, dev, prior)
        res["prior_alone"] = _rho(prior, w / f"eval-{name}.parquet")
        out[name] = res
    return {"configs": out, "rows": {n: int(len(_ok(w / f"eval-{n}.parquet"))) for n in devices}, "wall_s": round(time.time() - t0)}


def _paired(w: Path, name: str, dev: Path, prior: Path, n: int = 10) -> dict:
    """10 archs of each design (free D-optimal, the default strata, uniform) from the pool,
    measured in one session in shuffled order, so that all three share the device's drift of the
    moment: their fits differ only by which archs they saw."""
    pool = pd.read_parquet(w / "pool.parquet")
    space, archs = archs_from_frame(pool, w / "pool.parquet")
    idx = np.stack([a.indices for a in archs])
    F = transfer_features(space, [load_prior(prior, space, "latency_ms").table])
    sets = {"free_d_optimal": choose(space, idx, n, F, per_stratum=n), "strata": choose(space, idx, n, F),
            "uniform": np.random.default_rng(1).choice(len(pool), n, replace=False)}
    both = pool.iloc[sorted(set().union(*map(set, sets.values())))].sample(frac=1, random_state=0)
    both.to_parquet(w / f"paired-archs-{name}.parquet")
    store = w / f"paired-{name}.parquet"
    nasctl("profile", "--device", dev, "--archs", w / f"paired-archs-{name}.parquet", "-o", store, "--retry-errors", ok=(0, 1))
    rows, out = _ok(store), {}
    for design, picks in sets.items():
        sub = rows[rows["arch_id"].isin(pool["arch_id"].iloc[picks])]
        sub.to_parquet(w / f"paired-{name}-{design}.parquet")
        nasctl("fit-predictor", w / f"paired-{name}-{design}.parquet", "--prior", prior, "-o", w / f"fit-{name}-paired-{design}.pt")
        out[design] = {"rows": len(sub), **_rho(w / f"fit-{name}-paired-{design}.pt", w / f"eval-{name}.parquet")}
    return out


def _ok(path: Path) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=["arch_id", "status"])
    df = pd.read_parquet(path)
    return df[df["status"] == "ok"].reset_index(drop=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["help", "nb201", "local"])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--workdir", type=Path, default=Path("runs/fewshot"))
    ap.add_argument("--configs", default="2t-b1,1t-b8", help="local: the target configs (1t-b1 is the prior)")
    a = ap.parse_args()
    if a.part == "local":
        out = local_figures(a.workdir, [c for c in a.configs.split(",") if c in CONFIGS and c != "1t-b1"])
    else:
        out = help_figures(a.seeds) if a.part == "help" else nb201_figures(a.seeds)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
