"""search.png: is the search landing on its target, and what did λ do to get there."""

from __future__ import annotations

import pandas as pd

from nasctl.figures import png, pyplot


def search_png(rows: pd.DataFrame, constraints, rounds: list[dict], method: str, tolerance: float) -> bytes:
    plt = pyplot()
    n = max(1, len(constraints))
    fig, axes = plt.subplots(2, n, figsize=(6 * n, 6.4), squeeze=False, sharex="col")
    x = rows["step"] if "step" in rows else rows.iloc[:, 0]
    for j, c in enumerate(constraints):
        ax = axes[0][j]
        if c.name in rows:
            ax.plot(x, rows[c.name], lw=0.6, alpha=0.5, label="sampled arch (predicted)")
        if f"argmax_{c.name}" in rows:
            e = rows.dropna(subset=[f"argmax_{c.name}"])
            ax.plot(e["step"], e[f"argmax_{c.name}"], "o-", ms=3, label="argmax α (predicted)")
        ax.axhline(c.target, color="k", ls="--", lw=1, label=f"target {c.target:g} {c.unit}")
        if not c.hard_max:
            ax.axhspan(c.target * (1 - tolerance), c.target * (1 + tolerance), color="grey", alpha=0.15)
        for k, r in enumerate(rounds):
            if c.name in r["measured"]:
                ax.axhline(r["measured"][c.name], color=f"C{3 + k}", lw=1.2, label=f"measured, round {k + 1}")
        ax.set_ylabel(f"{c.name} ({c.unit})")
        ax.set_title(f"{method}: {c.name} against the target", fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
        ax2 = axes[1][j]
        if f"lambda_{c.name}" in rows:
            ax2.plot(x, rows[f"lambda_{c.name}"], color="C2", label="λ")
        ax2.set_ylabel("λ")
        if "tau" in rows:
            t = ax2.twinx()
            t.plot(x, rows["tau"], color="C1", lw=0.8, ls=":", label="τ")
            t.set_ylabel("τ")
        ax2.set_xlabel("step" if "step" in rows else rows.columns[0])
    fig.tight_layout()
    return png(fig)
