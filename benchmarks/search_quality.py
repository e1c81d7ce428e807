"""Issue-18 figures: does search find better nets than chance at the same measured latency, on
real data? The field's plot: a front of random nets, every net trained with one recipe, and
the methods' nets against it.

Device: this CPU (onnxruntime, 1 thread, 224x224, batch 1, `profiles/local-cpu.toml`).
1. rows: --rows archs sampled stratified by MACs, measured; a predictor fitted on them.
2. targets: the 25th, 50th and 75th percentile of the measured latencies.
3. front: --front archs of those rows, spread uniformly over the measured latency range.
4. searches: lightnas, singlepath, proxyless, evolution and random (the same weight-step
   budget), at each target, --seeds seeds each, on a class-balanced Fashion-MNIST subset
   (--search-limit images, split again by the search). The searches run two at a time, one
   thread each, and without --verify: a co-running search would disturb it.
5. verify: the found nets, the front and the reference nets (all k3_e6, all k7_e6) are
   measured together, in one quiet session, so that every latency in the table is from the same
   hour (the device drifts 3-16% between hours).
6. train: every distinct net with one recipe (--train-limit images, --epochs, width
   --width-mult, the `cifar` macro at 28 px), top-1 on the 10k test set, which no search sees;
   lightnas's (and its attempts') and random's nets first, then the references, the front and
   the other methods' nets.
7. --attempt NAME=ARGS: a remedy tried on lightnas (extra search args), searched at the targets,
   verified beside the front in a quiet session of its own, trained alike.

Every step keeps its output under --workdir (runs/, not committed) and is skipped when it is
there: a run can span sessions. Steps 1-5 end in WORKDIR/measured.json (targets, front, found
nets, their latencies from the one verify session). Training needs no device, so it may run on
another day or machine from that file alone (--measured): the latencies stay from one device and
one hour. Prints one JSON object and writes search_quality.png.
Usage: python benchmarks/search_quality.py [--workdir runs/search-quality] [--jobs 2] [--measured FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from clirun import nasctl

METHODS = ("lightnas", "singlepath", "proxyless", "evolution", "random")
REFERENCES = {"all k3_e6": "-".join(["k3_e6"] * 21), "all k7_e6": "-".join(["k7_e6"] * 21)}
NEAR = 0.05  # front nets within ±5% of a found net's latency are its peers
RECIPE = {"train_limit": 5000, "epochs": 3, "lr": 0.05, "width_mult": 0.25}  # every net's training (recipe_signal.py varies it)


def run(args: list, log: Path, threads: int = 1) -> subprocess.CompletedProcess:
    """nasctl in a child with `threads` torch threads; its stderr kept beside its output."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    p = subprocess.run([sys.executable, "-m", "nasctl", *map(str, args), "--json", "-q"], capture_output=True, text=True, env=env)
    log.write_text(p.stderr)
    return p


def measure(archs: pd.DataFrame, out: Path, space: str = "proxyless") -> pd.DataFrame:
    """Profile on the local CPU; error or disturbed rows are measured again, twice at most."""
    table = out.with_suffix(".archs.csv")
    archs[["arch"]].drop_duplicates().to_csv(table, index=False)
    args = ["profile", "--device", "local", "--archs", table, "--space", space, "-o", out]
    nasctl(*args, ok=(0, 1))
    for _ in range(2):
        r = nasctl(*args, "--retry-errors", ok=(0, 1))
        if r["errors"] + r["disturbed"] == 0:
            break
    rows = pd.read_parquet(out)
    return rows[rows.status == "ok"]


def spread(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """n rows whose latencies lie nearest to n evenly spaced points of the measured range."""
    lo, hi = rows.latency_ms.min(), rows.latency_ms.max()
    left, chosen = rows.copy(), []
    for c in lo + (np.arange(n) + 0.5) * (hi - lo) / n:
        i = (left.latency_ms - c).abs().idxmin()
        chosen.append(left.loc[i])
        left = left.drop(i)
    return pd.DataFrame(chosen)


def search_cell(a, method: str, target: float, seed: int, pred: Path, attempt: tuple[str, list] | None = None) -> dict:
    """One (method, target, seed) search, kept in its folder; an attempt is lightnas with extra args."""
    root = a.workdir / "attempts" / attempt[0] / "search" if attempt else a.workdir / "search"
    out = root / f"{method}-{target:g}ms-seed{seed}"
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    extra = {"random": ["--candidates", a.candidates], "evolution": ["--population", 16, "--generations", 6]}.get(method, [])
    extra = extra + (attempt[1] if attempt else [])
    t0 = time.perf_counter()
    p = run(["search", "--method", method, "--predictor", pred, "--target-ms", target, "--data", "fashion-mnist",
             "--train-limit", a.search_limit, "--width-mult", a.width_mult, "--epochs", a.search_epochs,
             "--warmup-epochs", 1, "--seed", seed, *extra, "-o", out], root / f"{out.name}.log")
    if p.returncode not in (0, 1):
        sys.exit(f"search {out.name} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    s = json.loads(p.stdout)
    res = {"method": f"{method}+{attempt[0]}" if attempt else method, "target_ms": target, "extra_args": " ".join(map(str, extra)), "seed": seed, "arch": s["arch"], "predicted_ms": s["targets"][0]["predicted"],
           "search_wall_s": s["wall_s"], "process_wall_s": time.perf_counter() - t0}
    done.write_text(json.dumps(res))
    return res


def train_cell(a, arch: str, seed: int = 0, epochs: int | None = None) -> dict:
    """One net trained with the recipe (--epochs, seed 0), or with another seed or length
    (recipe_signal.py), kept in its folder."""
    from nasctl.space.space import load_space

    epochs = epochs or a.epochs
    base = (seed, epochs) == (0, a.epochs)
    name = load_space("proxyless").parse(arch).id + ("" if base else f"-e{epochs}-seed{seed}")
    out = a.workdir / "train" / name
    done = out / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    if base and arch in a.trained_before:  # trained with this recipe in an earlier session (--trained)
        return a.trained_before[arch]
    t0 = time.perf_counter()
    p = run(["retrain", arch, "--data", "fashion-mnist", "--train-limit", a.train_limit, "--width-mult", a.width_mult,
             "--epochs", epochs, "--eval-every", epochs, "--lr", a.lr, "--batch", 64, "--seed", seed, "-o", out],
            a.workdir / "train" / f"{name}.log")
    if p.returncode != 0:
        sys.exit(f"retrain {arch} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    s = json.loads(p.stdout)
    res = {"arch": arch, "top1": s["top1"], "data": s["data"], "seed": seed, "epochs": epochs, "process_wall_s": time.perf_counter() - t0}
    done.write_text(json.dumps(res))
    return res


def plot(front: pd.DataFrame, found: pd.DataFrame, refs: pd.DataFrame, targets: list[float], path: Path) -> None:
    from nasctl.figures import png, pyplot

    fig, ax = pyplot().subplots(figsize=(8, 5))
    ax.scatter(front.latency_ms, 100 * front.top1, c="0.6", s=18, label="random front (trained alike)")
    for k, (method, g) in enumerate(found.groupby("method", sort=False)):
        cells = g.groupby("target_ms").agg(lat=("latency_ms", "mean"), lat_sd=("latency_ms", "std"), acc=("top1", "mean"), acc_sd=("top1", "std"))
        ax.errorbar(cells.lat, 100 * cells.acc, xerr=cells.lat_sd, yerr=100 * cells.acc_sd, fmt="os^Dv"[k % 5], ms=6, capsize=3,
                    label=method, color=f"C{k}")
    for _, r in refs.iterrows():
        ax.scatter(r.latency_ms, 100 * r.top1, marker="*", s=90, c="k")
        ax.annotate(r["name"], (r.latency_ms, 100 * r.top1), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for t in targets:
        ax.axvline(t, ls="--", c="0.3", lw=0.8)
    ax.set_xlabel("measured latency on this CPU (ms; onnxruntime, 1 thread, 224x224, batch 1)")
    ax.set_ylabel("Fashion-MNIST top-1 (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.write_bytes(png(fig, dpi=120))


def measure_phase(a, w: Path) -> dict:
    """Steps 1-5, all on this device: rows, predictor, targets, front, searches, one verify."""
    if not (w / "archs.parquet").exists():
        nasctl("sample", "--space", "proxyless", "--n", a.rows, "--seed", 0, "--stratify", "macs", "-o", w / "archs.parquet")
    rows = measure(pd.read_parquet(w / "archs.parquet"), w / "latency.parquet")
    pred = w / "predictor.pt"
    fit = json.loads((w / "fit.json").read_text()) if (w / "fit.json").exists() else None
    if fit is None:
        fit = nasctl("fit-predictor", w / "latency.parquet", "--metric", "latency_ms", "-o", pred)
        (w / "fit.json").write_text(json.dumps(fit))
    targets = [round(float(q), 2) for q in np.percentile(rows.latency_ms, [25, 50, 75])]
    front = spread(rows, a.front)

    cells = [(m, t, s) for t in targets for m in METHODS for s in range(a.seeds)]
    with ThreadPoolExecutor(a.jobs) as pool:
        found = pd.DataFrame(pool.map(lambda c: search_cell(a, *c, pred), cells))

    # one quiet session: the found nets, the front and the references, measured side by side
    together = pd.concat([found[["arch"]], front[["arch"]], pd.DataFrame({"arch": list(REFERENCES.values())})])
    verify = measure(together, w / "verify.parquet").set_index("arch").latency_ms
    missing = set(together.arch) - set(verify.index)
    if missing:
        sys.exit(f"{len(missing)} nets stayed disturbed or failed in verify: rerun later ({w / 'verify.parquet'})")
    # the front was measured in step 1 too: its re-measurement shows how far the device moved since
    again = verify[front.arch].to_numpy() / front.latency_ms.to_numpy()
    return {"device": f"{rows.cpu_model.iloc[0]}, onnxruntime {rows.runtime_version.iloc[0]}, 1 thread, 224x224, batch 1",
            "rows": len(rows), "fit": {"chosen": fit["chosen"], "test": fit["test"]["default"]}, "targets_ms": targets,
            "front": front[["arch"]].to_dict("records"), "found": found.to_dict("records"), "verify_ms": verify.to_dict(),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows_measured_at": f"{rows.started_at.min()} to {rows.finished_at.max()}",
            "front_verify_over_rows": {"median": round(float(np.median(again)), 4), "min": round(float(again.min()), 4), "max": round(float(again.max()), 4)},
            "search": {"data": f"fashion-mnist (train-limit {a.search_limit}), split in w/α halves", "epochs": a.search_epochs,
                       "width_mult": a.width_mult, "jobs": a.jobs, "verify": "separately, all nets in one quiet session"}}


def attempt_phase(a, w: Path, d: dict, name: str, extra: list) -> dict:
    """A remedy tried on lightnas (issue 18, goal 2): its searches at the targets, then one quiet
    verify of its nets beside the front, whose re-measurement against the main session's says how
    far the device moved in between (the table uses this session's figures for these nets)."""
    rec = w / "attempts" / name / "measured.json"
    if rec.exists():
        return json.loads(rec.read_text())
    targets = a.attempt_targets or d["targets_ms"]
    cells = [(t, s) for t in targets for s in range(a.seeds)]
    with ThreadPoolExecutor(a.jobs) as pool:
        found = pd.DataFrame(pool.map(lambda c: search_cell(a, "lightnas", c[0], c[1], w / "predictor.pt", (name, extra)), cells))
    front = pd.DataFrame(d["front"])
    verify = measure(pd.concat([found[["arch"]], front[["arch"]]]), w / "attempts" / name / "verify.parquet").set_index("arch").latency_ms
    missing = set(found.arch) - set(verify.index)
    if missing:
        sys.exit(f"attempt {name}: {len(missing)} nets stayed disturbed in verify: rerun later")
    moved = verify.reindex(front.arch).to_numpy() / pd.Series(d["verify_ms"]).reindex(front.arch).to_numpy()
    doc = {"name": name, "extra_args": " ".join(map(str, extra)), "found": found.to_dict("records"),
           "verify_ms": verify[list(found.arch)].to_dict(), "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "front_over_main_verify": {"median": round(float(np.nanmedian(moved)), 4), "min": round(float(np.nanmin(moved)), 4),
                                      "max": round(float(np.nanmax(moved)), 4)}}
    rec.write_text(json.dumps(doc, indent=1))
    return doc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/search-quality"))
    ap.add_argument("--rows", type=int, default=540, help="archs measured for the predictor (>= 500 ok rows wanted)")
    ap.add_argument("--front", type=int, default=24)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2, help="searches/trainings at a time, one thread each")
    ap.add_argument("--search-limit", type=int, default=4000, help="training images a search sees (it splits them again)")
    ap.add_argument("--search-epochs", type=int, default=5)
    ap.add_argument("--candidates", type=int, default=5, help="random: archs trained within the weight-step budget")
    ap.add_argument("--train-limit", type=int, default=RECIPE["train_limit"])
    ap.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    ap.add_argument("--lr", type=float, default=RECIPE["lr"])
    ap.add_argument("--width-mult", type=float, default=RECIPE["width_mult"], help="supernet and trained-net width (latency is measured at 1.0)")
    ap.add_argument("--measured", type=Path, help="the device part of a run (default WORKDIR/measured.json): given, only training is left")
    ap.add_argument("--attempt", action="append", default=[], metavar="NAME=ARGS",
                    help="a remedy tried on lightnas, as extra search args (e.g. 'alpha-lr-0.5=--alpha-lr 0.5'); "
                         "its nets are searched, verified and trained alike and reported as lightnas+NAME")
    ap.add_argument("--attempt-targets", type=float, nargs="+", help="the attempts' targets (default: all three)")
    ap.add_argument("--trained", type=Path, help="nets trained with this recipe before (a list of training results, as "
                                                 "WORKDIR/trained.json is written): not trained again")
    a = ap.parse_args()
    a.trained_before = {r["arch"]: r for r in json.loads(a.trained.read_text())} if a.trained else {}
    w = a.workdir
    for sub in ("search", "train"):
        (w / sub).mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    record = a.measured or w / "measured.json"
    if not record.exists():  # the device's part; the rest is device-free and may run on another day
        record.write_text(json.dumps(measure_phase(a, w), indent=1))
    d = json.loads(record.read_text())
    targets, fit, verify = d["targets_ms"], d["fit"], pd.Series(d["verify_ms"])
    front, found = pd.DataFrame(d["front"]), pd.DataFrame(d["found"])
    attempts = []
    for spec in a.attempt:
        name, _, args = spec.partition("=")
        attempts.append(attempt_phase(a, w, d, name, args.split()))
    if attempts:  # their nets carry the latency of their own verify session
        found = pd.concat([found, *[pd.DataFrame(t["found"]) for t in attempts]], ignore_index=True)
        verify = pd.concat([verify, *[pd.Series(t["verify_ms"]) for t in attempts]])
        verify = verify[~verify.index.duplicated()]

    # the goal's nets first (lightnas, its attempts, random), so a run cut short still answers it
    goal_nets = found[found.method.str.startswith("lightnas") | (found.method == "random")].arch
    nets = list(dict.fromkeys([*goal_nets, *REFERENCES.values(), *front.arch, *found.arch]))
    with ThreadPoolExecutor(a.jobs) as pool:
        top1 = {r["arch"]: r for r in pool.map(lambda x: train_cell(a, x), nets)}
    (w / "trained.json").write_text(json.dumps(list(top1.values()), indent=1))  # the record --trained reads

    front = front.assign(latency_ms=front.arch.map(verify), top1=front.arch.map(lambda x: top1[x]["top1"]))
    found = found.assign(latency_ms=found.arch.map(verify), top1=found.arch.map(lambda x: top1[x]["top1"]))
    found["gap"] = found.latency_ms / found.target_ms - 1
    refs = pd.DataFrame([{"name": k, "arch": v, "latency_ms": verify[v], "top1": top1[v]["top1"]} for k, v in REFERENCES.items()])

    table = []
    for (t, m), g in found.groupby(["target_ms", "method"], sort=False):
        peers = [front[(front.latency_ms - lat).abs() <= NEAR * lat].top1 for lat in g.latency_ms]
        beat = [float(acc - p.max()) if len(p) else None for acc, p in zip(g.top1, peers)]
        table.append({"target_ms": t, "method": m, "latency_ms": round(g.latency_ms.mean(), 3), "gap_mean": round(g.gap.mean(), 4),
                      "gap_max_abs": round(g.gap.abs().max(), 4), "top1_mean": round(g.top1.mean(), 4), "top1_std": round(g.top1.std(), 4),
                      "seeds": len(g), "distinct_nets": g.arch.nunique(), "search_wall_s": round(g.search_wall_s.mean(), 1),
                      "device_measurements": f"{d['rows']} shared rows + 1 verify per net",
                      "front_peers_within_5pct": [int(len(p)) for p in peers],
                      "over_best_front_peer": [None if b is None else round(b, 4) for b in beat]})
    table = pd.DataFrame(table)
    goal = {}
    for t, g in table.groupby("target_ms"):
        if "random" not in set(g.method):  # a partial run (--measured from a cut-short one)
            continue
        rand = g[g.method == "random"].iloc[0]
        for _, light in g[g.method.str.startswith("lightnas")].iterrows():  # lightnas and its attempts
            beat = [b for b in light.over_best_front_peer if b is not None]
            goal[f"{t:g}ms {light.method}"] = {"over_random_points": round(100 * (light.top1_mean - rand.top1_mean), 2),
                                               "above_every_front_peer": bool(beat) and all(b > 0 for b in beat)}
    plot(front, found, refs, targets, w / "search_quality.png")
    print(json.dumps({
        "device": d["device"], "measured_at": d["measured_at"], "rows": d["rows"], "predictor": fit,
        "front_verify_over_rows": d.get("front_verify_over_rows"),
        "attempts": [{k: t[k] for k in ("name", "extra_args", "measured_at", "front_over_main_verify")} for t in attempts],
        "targets_ms": targets, "recipe": {"data": top1[nets[0]]["data"], "epochs": a.epochs, "lr": a.lr, "batch": 64,
                                          "width_mult": a.width_mult, "macro": "cifar", "resolution": 28, "eval": "the 10k test set"},
        "search": d["search"], "front": front[["latency_ms", "top1"]].round(4).to_dict("records"), "references": refs.round(4).to_dict("records"),
        "table": table.to_dict("records"), "goal": goal, "wall_s_this_run": round(time.perf_counter() - t_start, 1),
        "png": str(w / "search_quality.png")}, indent=2, default=str))


if __name__ == "__main__":
    main()
