"""search.png of a predictor-guided search: predicted top-1 against predicted latency over the
candidates, the trained nets at their measured top-1, the target as a line, the pick marked."""

from __future__ import annotations

import numpy as np

from nasctl.figures import png, pyplot


def guided_png(space, goals, pool, pick, trained, model, seed: int) -> bytes:
    """`model`: predicted top-1 for an (N, L) array of op indices, or None before there is one."""
    plt = pyplot()
    k = next((j for j, g in enumerate(goals) if g.c.unit in ("ms", "mJ")), 0)
    g = goals[k]
    fig, ax = plt.subplots(figsize=(7, 5))
    rng = np.random.default_rng(seed)
    show = rng.choice(len(pool.idx), min(len(pool.idx), 5000), replace=False)
    ok = trained.ok() if trained is not None else None
    if model is not None:
        ax.scatter(pool.pred[show, k], model(pool.idx[show]), s=3, c="0.75", label="candidates (predicted)")
    if ok is not None and len(ok):
        idx = np.array([pool.index(space.parse(a)) for a in ok["arch"]])
        ax.scatter(pool.pred[idx, k], ok["top1"], s=18, c="C0", label="trained (measured top-1)")
    if pick is not None:
        i = pick["i"]
        y = pick["top1"] if pick["top1"] is not None else (model(pool.idx[[i]])[0] if model else np.nan)
        ax.scatter([pool.pred[i, k]], [y], s=160, marker="*", c="C3", label="pick", zorder=5)
    ax.axvline(g.c.target, color="k", ls="--", lw=1, label=f"target {g.c.target:g} {g.c.unit}")
    ax.set_xlabel(f"predicted {g.label} ({g.c.unit})")
    ax.set_ylabel("top-1")
    ax.set_title(f"predictor-guided search on {space.name}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return png(fig)
