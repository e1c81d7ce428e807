"""Issue 18, goal 2: can search_quality.py's training recipe tell archs apart at all?

search_quality.py found every method level with the random front, and the front's top-1 flat in
latency. A search can only beat chance if the recipe that scores its nets gives a better arch a
higher top-1 more reliably than a new seed moves it. This measures that, for the recipe and for
longer ones ("too few epochs", one of the issue's candidate causes):
- --archs nets of search_quality's front, at evenly spaced ranks of its measured latency;
- each trained with --seeds seeds at each --epochs, otherwise search_quality's recipe exactly
  (Fashion-MNIST, train-limit 5000, lr 0.05, batch 64, width 0.25, the cifar macro at 28 px);
- with --train-limit, the same on more images ("the supernet width" and data size: a net that
  can fit more data may show its capacity);
- per recipe: the seed spread (pooled within-arch SD), the arch spread (between-arch SD with
  the seed noise taken out), their intraclass correlation, a one-way ANOVA, and the Spearman rho
  of top-1 against measured latency.

The seed-0 nets at search_quality's own length are taken from its record (--trained): they are
the same runs. Every training is kept under --workdir and skipped on a rerun. Prints one JSON object.
Usage: python benchmarks/recipe_signal.py [--epochs 3 6] [--seeds 2] [--archs 6] [--train-limit 5000]
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from search_quality import RECIPE, train_cell

RESULTS = Path(__file__).parent / "results"


def separation(runs: pd.DataFrame) -> dict:
    """Seed noise against arch differences, from a balanced arch x seed table of top-1."""
    by = runs.groupby("arch").top1
    k = int(by.size().min())
    msw = float(by.var(ddof=1).mean())  # within archs: seeds only
    msb = float(k * by.mean().var(ddof=1))  # between archs: arch effect plus seed noise / k
    means = runs.groupby("arch").agg(top1=("top1", "mean"), latency_ms=("latency_ms", "first"))
    return {"seeds": k, "archs": len(means),
            "seed_sd_points": round(100 * msw ** 0.5, 3),
            "arch_sd_points": round(100 * max(0.0, (msb - msw) / k) ** 0.5, 3),
            "icc": round((msb - msw) / (msb + (k - 1) * msw), 3),
            "anova_p": round(float(stats.f_oneway(*[g.to_numpy() for _, g in by]).pvalue), 4),
            "spearman_latency_top1": round(float(stats.spearmanr(means.latency_ms, means.top1).statistic), 3),
            "top1_mean_range": [round(float(means.top1.min()), 4), round(float(means.top1.max()), 4)],
            "per_arch": means.assign(sd=by.std(ddof=1)).sort_values("latency_ms").round(4).reset_index().to_dict("records")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("runs/recipe-signal"))
    ap.add_argument("--measured", type=Path, default=RESULTS / "search_quality_measured.json")
    ap.add_argument("--trained", type=Path, default=RESULTS / "search_quality_trained.json",
                    help="search_quality's seed-0 trainings, reused")
    ap.add_argument("--archs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=int, nargs="+", default=[3, 6])
    ap.add_argument("--train-limit", type=int, default=RECIPE["train_limit"],
                    help="training images; another than search_quality's needs a --workdir of its own")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    # train_cell's base is search_quality's recipe (its record's length); a.recipes are the lengths measured here
    a.recipes, a.epochs, a.width_mult, a.lr = a.epochs, RECIPE["epochs"], RECIPE["width_mult"], RECIPE["lr"]
    record = [r for r in json.loads(a.trained.read_text()) if f"train-limit {a.train_limit})" in r["data"]]
    a.trained_before = {r["arch"]: r for r in record}
    (a.workdir / "train").mkdir(parents=True, exist_ok=True)

    d = json.loads(a.measured.read_text())
    front = pd.DataFrame(d["front"]).assign(latency_ms=lambda f: f.arch.map(d["verify_ms"])).sort_values("latency_ms")
    chosen = front.iloc[np.linspace(0, len(front) - 1, a.archs).round().astype(int)]
    cells = [(x, s, e) for e in a.recipes for s in range(a.seeds) for x in chosen.arch]
    with ThreadPoolExecutor(a.jobs) as pool:
        done = list(pool.map(lambda c: {**train_cell(a, *c), "seed": c[1], "epochs": c[2]}, cells))  # the record's rows lack both
    runs = pd.DataFrame(done).assign(latency_ms=lambda r: r.arch.map(d["verify_ms"]))
    print(json.dumps({
        "recipe": f"{runs.data.iloc[0]}, lr {a.lr}, batch 64, width {a.width_mult}, cifar macro at 28 px; top-1 on the 10k test set",
        "latency": f"search_quality's verify session ({d['measured_at']}, {d['device']})",
        "by_epochs": {str(e): separation(g) for e, g in runs.groupby("epochs")},
        "wall_s": {str(e): round(float(g.process_wall_s.sum()), 1) for e, g in runs.groupby("epochs")}}, indent=2))


if __name__ == "__main__":
    main()
