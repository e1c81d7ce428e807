"""Issue-8 figure: DCA-NAS budgets in the darts space, with and without the lookup graph.

For three --max-params budgets (deployment config: the darts space's defaults, 8 cells at 32x32),
one la-darts search each on the built-in digits data, then the same with --calibrate-budget: the
derived net's exact params against the budget, the search budget used, and wall time. The lookup
graph lands in WORKDIR/data (not the user's own store): the first calibrated search makes it
(its wall time includes the short searches), the others reuse it. Its points are printed too.
Prints one JSON object. Usage: python benchmarks/dca_budget.py [--budgets 0.12 0.16 0.2] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from clirun import nasctl
from nasctl.models.cost import arch_cost
from nasctl.space.space import load_space


def argmax_params(out: Path) -> float:
    """The derived net before the budget repair (arch.json's "argmax"), in millions."""
    return arch_cost(load_space("darts").parse(json.loads((out / "arch.json").read_text())["argmax"]))[1] / 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.12, 0.16, 0.2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--width-mult", type=float, default=0.25, help="of the supernet only; the budget counts the deployed net")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-dca"))
    a = ap.parse_args()
    os.environ["XDG_DATA_HOME"] = str((a.workdir / "data").resolve())
    out = {"epochs": a.epochs, "supernet_width_mult": a.width_mult, "budgets": {}}
    for b in a.budgets:
        row = {}
        for mode, extra in (("plain", []), ("lookup_graph", ["--calibrate-budget"])):
            t0 = time.perf_counter()
            s = nasctl("search", "--method", "la-darts", "--space", "darts", "--resolution", "16", "--max-params", f"{b}M",
                       "--epochs", a.epochs, "--width-mult", a.width_mult, *extra, "-o", a.workdir / f"{b}-{mode}")
            t = s["targets"][0]
            row[mode] = {"derived_params_m": s["params"] / 1e6, "argmax_params_m": argmax_params(a.workdir / f"{b}-{mode}"),
                         "over_budget": t["derived_over_budget"] - 1, "within_budget": s["params"] / 1e6 <= b, "search_budget_m": t["target"], "wall_s": time.perf_counter() - t0}
        out["budgets"][b] = row
    (graph,) = (a.workdir / "data" / "nasctl" / "lookup").glob("*.json")
    out["lookup_graph"] = {k: v for k, v in json.loads(graph.read_text()).items() if k != "key"}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
