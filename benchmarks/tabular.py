"""Issue-37 figures: predictor-guided search against the oracle of a tabular benchmark.

`nbm`: NAS-Bench-Macro, the accuracy of every net known (the shipped table) and its latency
measured on this CPU (issue 35: benchmarks/results/nas-bench-macro/latency.parquet, drift
corrected). Targets: the 25th, 50th and 75th percentile of measured latency. For budgets K and
seeds, each method picks one net:
- `predictor` (`nasctl.guided`, as `search --method predictor` runs it), its trainer
  `benchmarks/lookup.py top1` (a subprocess per query, each logged: the search sees no accuracy
  but through it), its latency predictor the default one fitted on 500 measured rows (seeded),
  with and without `--verify` on the table as a command device (`lookup.py latency`);
- `random`: K nets drawn uniformly from those the same predictor says meet the target with the
  same margin, the best one picked; `evolution`: regularized evolution (population K/2 capped at
  20, tournaments of 3, one-layer mutations, the same feasible set), the best one picked;
- `params`: the feasible net with the most params (no training).
Regret: the oracle's top-1 (the best table accuracy among nets whose *measured* latency meets
the target) minus the pick's, in points; violations: picks whose measured latency is over.
Writes benchmarks/results/tabular_nbm.json and tabular_nbm.png.

`rho`: the search's accuracy model against params and MACs alone, held-out Spearman rho on
NAS-Bench-Macro at 5, 10, 20 and 50 training rows (10 seeds) -> results/tabular_rho.json.

`nb201`: the latency half on NAS-Bench-201, with params as the accuracy stand-in: each HELP
column in turn is the device (a command device over its column), 10 of its rows plus the other
12 columns as priors fit its predictor, and the search (budget 20) picks under its 25/50/75th
percentile targets, with and without --verify; how often the pick is over the limit.
-> results/tabular_nb201.json.

Usage: python benchmarks/tabular.py nbm [--seeds 20] [--budgets 10,20,50,100] [--seed-from 0]
       python benchmarks/tabular.py rho | nb201 [--seeds 5]
Work files go to runs/tabular/ (resumable per search: a finished search is not run again).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from clirun import nasctl
from nasctl.guided.search import GuidedJob, Pool, run, targets
from nasctl.guided.surrogate import Surrogate
from nasctl.models.cost import cost_table
from nasctl.predict import Predictor
from nasctl.space import load_space
from nasctl.tables import read_table, to_json
from nasctl.tabular import table_rows

HERE = Path(__file__).parent
RESULTS = HERE / "results"
WORK = Path("runs/tabular")
LOOKUP = HERE / "lookup.py"
TRAINER = f"{shlex.quote(sys.executable)} {shlex.quote(str(LOOKUP.resolve()))} top1 {{table}} {{{{arch}}}}"


def _json(path: Path, table: dict) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table))
    return path


def _device(path: Path, name: str, table: Path) -> Path:
    path.write_text(f'name = "{name}"\ndescription = "a latency table, looked up"\ntransport = "command"\nruntime = "onnxruntime"\n'
                    f'command = "{sys.executable} {LOOKUP.resolve()} latency {table.resolve()} {{arch}}"\n')
    return path


def nbm_setup() -> tuple[dict, dict, Path, Path, Path]:
    acc = table_rows("nas-bench-macro")
    top1 = dict(zip(acc["arch"], acc["top1"].astype(float)))
    lat = read_table(HERE / "results/nas-bench-macro/latency.parquet")
    lat = lat[lat["status"] == "ok"].drop_duplicates("arch", keep="last")
    ms = dict(zip(lat["arch"], (lat["latency_ms"] / lat["drift"]).astype(float)))
    work = WORK / "nbm"
    t1, tm = _json(work / "top1.json", top1), _json(work / "ms.json", ms)
    pred = work / "cpu.pt"
    if not pred.exists():
        from nasctl.predict import fit_predictor, load_rows

        lat.sample(500, random_state=0).to_parquet(work / "rows500.parquet")
        p, report, _ = fit_predictor(load_rows(work / "rows500.parquet", "latency_ms", drift=None), "latency_ms")
        p.save(pred)
        (work / "cpu.json").write_text(to_json(report, indent=2))
    return top1, ms, t1, _device(work / "device.toml", "nbm-cpu-table", tm), pred


def _guided(out: Path, job: GuidedJob) -> dict:
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    log = out / "queries.log"
    out.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    os.environ["NASCTL_LOOKUP_LOG"] = str(log.resolve())
    t0 = time.perf_counter()
    doc = run(job, out)
    queries = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    res = {"arch": doc["arch"], "trained": doc["trained"], "device_measurements": doc["device_measurements"],
           "trainer_queries": sum(q["what"] == "top1" for q in queries), "latency_queries": sum(q["what"] == "latency" for q in queries),
           "wall_s": time.perf_counter() - t0}
    done.write_text(json.dumps(res))
    return res


def _baselines(space, pool: Pool, top1: dict, K: int, seed: int) -> dict:
    """random, evolution and params picks over the pool's feasible archs (no device)."""
    rng = np.random.default_rng(seed)
    cand = np.flatnonzero(pool.sure)
    strings = [space.from_indices(pool.idx[i]).string for i in range(len(pool.idx))]
    acc = np.array([top1[s] for s in strings])
    rand = rng.choice(cand, min(K, len(cand)), replace=False)
    out = {"random": strings[rand[np.argmax(acc[rand])]]}
    ok = set(cand.tolist())
    pop_n = max(2, min(20, K // 2))
    alive = list(rng.choice(cand, min(pop_n, len(cand)), replace=False))
    seen = list(alive)
    while len(seen) < min(K, len(cand)):
        parent = max(rng.choice(alive, min(3, len(alive)), replace=False), key=lambda i: acc[i])
        kids = [pool.keys[k.tobytes()] for k in pool.neighbours(pool.idx[[parent]])]
        kids = [k for k in kids if k in ok and k not in seen]
        if not kids:
            kids = [k for k in cand if k not in seen]
        child = kids[rng.integers(len(kids))]
        seen.append(child)
        alive = alive[1:] + [child]
    out["evolution"] = strings[max(seen, key=lambda i: acc[i])]
    macs, params = cost_table(space).of(pool.idx[cand])
    out["params"] = strings[cand[np.argmax(params)]]
    return out


def nbm(seeds: range, budgets: list[int]) -> None:
    top1, ms, t1, device, pred = nbm_setup()
    space = Predictor.load(pred).space()
    lat = np.array(list(ms.values()))
    pct = {q: float(np.percentile(lat, q)) for q in (25, 50, 75)}
    trainer = TRAINER.format(table=shlex.quote(str(t1.resolve())))
    results = []
    for q, T in pct.items():
        oracle = max(top1[a] for a in top1 if ms[a] <= T)
        pool = Pool(space, targets(space, GuidedJob(space="nas-bench-macro", predictors=(str(pred),), target_ms=(T,))), 0)
        for K in budgets:
            for seed in seeds:
                picks = _baselines(space, pool, top1, K, seed)
                for mode, verify in (("predictor", None), ("predictor+verify", str(device))):
                    job = GuidedJob(space="nas-bench-macro", predictors=(str(pred),), target_ms=(T,), trainer=trainer, budget=K,
                                    initial=5, verify=verify, seed=seed)
                    r = _guided(WORK / "nbm" / f"p{q}-K{K}-s{seed}-{mode}", job)
                    results.append({"method": mode, "percentile": q, "target_ms": T, "K": K, "seed": seed, **r,
                                    **_score(r["arch"], top1, ms, T, oracle)})
                for m, a in picks.items():
                    results.append({"method": m, "percentile": q, "target_ms": T, "K": K, "seed": seed, "arch": a,
                                    **_score(a, top1, ms, T, oracle)})
                print(f"p{q} K={K} seed={seed}: " + ", ".join(f"{r['method']} {r['regret']:.2f}" for r in results[-5:]), flush=True)
    df = pd.DataFrame(results)
    summary = (df.groupby(["percentile", "K", "method"])
               .agg(mean_regret=("regret", "mean"), worst_regret=("regret", "max"), violations=("violation", "sum"), n=("regret", "size"))
               .reset_index())
    extra = df[df["method"].str.startswith("predictor")].groupby(["percentile", "K", "method"])[
        ["trainer_queries", "device_measurements", "latency_queries", "wall_s"]].mean().reset_index()
    summary = summary.merge(extra, how="left", on=["percentile", "K", "method"])
    doc = {"targets_ms": pct, "seeds": len(seeds), "budgets": budgets, "latency_predictor": json.loads((WORK / "nbm" / "cpu.json").read_text())["test"]["default"],
           "summary": summary.to_dict("records"), "runs": results}
    (RESULTS / "tabular_nbm.json").write_text(to_json(doc, indent=1))
    _plot(summary, pct)
    print(summary.to_string())


def _score(arch: str | None, top1: dict, ms: dict, T: float, oracle: float) -> dict:
    if arch is None:
        return {"regret": float("nan"), "violation": False, "pick_top1": None, "pick_ms": None, "oracle_top1": oracle}
    return {"regret": 100 * (oracle - top1[arch]), "violation": bool(ms[arch] > T), "pick_top1": top1[arch], "pick_ms": ms[arch],
            "oracle_top1": oracle}


def _plot(summary: pd.DataFrame, pct: dict) -> None:
    from nasctl.figures import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(pct), figsize=(5 * len(pct), 4), squeeze=False)
    for ax, (q, T) in zip(axes[0], pct.items()):
        s = summary[summary["percentile"] == q]
        for m, g in s.groupby("method"):
            ax.plot(g["K"], g["mean_regret"], "o-", label=m)
        ax.set_xscale("log")
        ax.set_xlabel("K (nets trained)")
        ax.set_ylabel("mean regret (top-1 points)")
        ax.set_title(f"target {T:.3f} ms (p{q})", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "tabular_nbm.png", dpi=110)


def rho(seeds: int = 10) -> None:
    acc = table_rows("nas-bench-macro")
    space = load_space("nas-bench-macro")
    idx = np.stack([space.parse(a).indices for a in acc["arch"]])
    y = acc["top1"].to_numpy(float)
    macs, params = cost_table(space).of(idx)
    out = {}
    for n in (5, 10, 20, 50):
        got = {"surrogate": [], "params": [], "macs": []}
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            tr = rng.choice(len(y), n, replace=False)
            te = np.setdiff1d(np.arange(len(y)), tr)
            s = Surrogate(space, seed).fit(idx[tr], y[tr])
            got["surrogate"].append(spearmanr(s.predict(idx[te])[0], y[te]).statistic)
            got["params"].append(spearmanr(params[te], y[te]).statistic)
            got["macs"].append(spearmanr(macs[te], y[te]).statistic)
        out[n] = {k: float(np.mean(v)) for k, v in got.items()}
        print(n, out[n], flush=True)
    (RESULTS / "tabular_rho.json").write_text(to_json({"space": "nas-bench-macro", "seeds": seeds, "held_out_spearman": out}, indent=1))


def nb201(seeds: int, columns=("pixel3", "samsung_a50", "gold_6240"), budget: int = 20) -> None:
    """Each column in turn is a command device; 10 rows of it (chosen by `profile --budget 10`
    under the other 12 columns as priors) fit its predictor; the search (trainer: params as the
    accuracy stand-in, a fraction of the largest cell's) picks under its 25/50/75th percentile,
    with and without --verify on the column."""
    rows = table_rows("help-nb201")
    work = WORK / "nb201"
    work.mkdir(parents=True, exist_ok=True)
    space = load_space("nb201")
    params = cost_table(space).of(np.stack([space.parse(a).indices for a in rows["arch"]]))[1]
    stand_in = _json(work / "params.json", dict(zip(rows["arch"], (params / params.max()).astype(float))))
    trainer = TRAINER.format(table=shlex.quote(str(stand_in.resolve())))
    cols = [c for c in rows.columns if c.endswith("_ms")]
    for c in cols:
        if not (work / f"{c}.parquet").exists():
            rows.assign(latency_ms=rows[c])[["arch_id", "arch", "space", "latency_ms"]].to_parquet(work / f"{c}.parquet")
    results = []
    for col in columns:
        c = f"{col}_ms"
        table = _json(work / f"{col}.json", dict(zip(rows["arch"], rows[c].astype(float))))
        device = _device(work / f"{col}.toml", f"{col}-table", table)
        priors = [x for o in cols if o != c for x in ("--prior", work / f"{o}.parquet")]
        lat = rows.set_index("arch")[c]
        for seed in range(seeds):
            d = work / f"{col}-s{seed}"
            d.mkdir(exist_ok=True)
            if not (d / "pool.parquet").exists():
                nasctl("sample", "--space", "nb201", "--n", 1000, "--seed", seed, "-o", d / "pool.parquet")
            measured = nasctl("profile", "--device", device, "--archs", d / "pool.parquet", "--budget", 10, *priors, "-o", d / "rows.parquet",
                              ok=(0, 1))
            if not (d / "lat.pt").exists():
                nasctl("fit-predictor", d / "rows.parquet", *priors, "-o", d / "lat.pt")
            for q in (25, 50, 75):
                T = float(np.percentile(lat, q))
                for mode, verify in (("predictor", None), ("predictor+verify", str(device))):
                    job = GuidedJob(space="nb201", predictors=(str(d / "lat.pt"),), target_ms=(T,), trainer=trainer, budget=budget,
                                    verify=verify, seed=seed)
                    r = _guided(d / f"p{q}-{mode}", job)
                    ms = float(lat[r["arch"]]) if r["arch"] else float("nan")
                    results.append({"device": col, "seed": seed, "percentile": q, "target_ms": T, "method": mode,
                                    "profiled_rows": measured.get("measured", 0) + measured.get("skipped", 0), **r,
                                    "pick_ms": ms, "over": bool(ms > T), "gap": ms / T - 1})
                print(f"{col} seed {seed}: " + ", ".join(f"p{r['percentile']} {r['method']} {r['gap']:+.1%}" for r in results[-6:]), flush=True)
    df = pd.DataFrame(results)
    summary = df.groupby(["device", "method"]).agg(picks=("over", "size"), over=("over", "sum"), worst_gap=("gap", "max"),
                                                   median_gap=("gap", "median"), device_measurements=("device_measurements", "mean")).reset_index()
    (RESULTS / "tabular_nb201.json").write_text(to_json({"budget": budget, "seeds": seeds, "summary": summary.to_dict("records"),
                                                         "runs": results}, indent=1))
    print(summary.to_string())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("nbm", "rho", "nb201"))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed-from", type=int, default=0, help="nbm: seeds from this one (run parts side by side, then all)")
    ap.add_argument("--budgets", default="10,20,50,100")
    a = ap.parse_args()
    if a.what == "nbm":
        nbm(range(a.seed_from, a.seeds), [int(k) for k in a.budgets.split(",")])
    elif a.what == "rho":
        rho()
    else:
        nb201(a.seeds if a.seeds != 20 else 3)


if __name__ == "__main__":
    main()
