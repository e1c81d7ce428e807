"""The predictor's picture: predicted against measured on the held-out split, LUT beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nasctl.figures import png, pyplot


def scatter_png(y: np.ndarray, preds: dict[str, np.ndarray], figs: dict[str, dict], title: str, unit: str) -> bytes:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(preds), figsize=(4.6 * len(preds), 4.4), squeeze=False)
    lo, hi = float(min(y.min(), *(p.min() for p in preds.values()))), float(max(y.max(), *(p.max() for p in preds.values())))
    for ax, (name, p) in zip(axes[0], preds.items()):
        f = figs[name]
        ax.scatter(y, p, s=6, alpha=0.5)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.plot([lo, hi], [1.1 * lo, 1.1 * hi], ":", color="grey", lw=1)
        ax.plot([lo, hi], [0.9 * lo, 0.9 * hi], ":", color="grey", lw=1)
        ax.set_title(f"{name}: MAPE {f['mape']:.2%}, tau {f['kendall_tau']:.3f}\n{f['within_10']:.1%} within ±10%", fontsize=9)
        ax.set_xlabel(f"measured ({unit})")
        ax.set_ylabel(f"predicted ({unit})")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return png(fig, dpi=110)


def save_fit(output: Path, pred, report: dict, holdout: tuple[np.ndarray, dict[str, np.ndarray]], title: str) -> dict:
    """Write a fitted predictor (.pt) with the sidecars `nasctl report` reads beside it: the
    held-out report (.json) and the scatter of the chosen model against the least-squares LUT
    (.png), as one set: all three or none. A predictor fitted through the library is then as
    visible as one from the CLI."""
    from nasctl.tables import OutputSet, to_json

    y, preds = holdout
    chosen = report["chosen"]
    base = report.get("baseline", "lut_ls")
    names = {f"nasctl ({chosen})": chosen, {"lut_ls": "least-squares LUT", "lut_cost": "cost-prior LUT, no priors"}[base]: base}
    png = scatter_png(y, {k: preds[v] for k, v in names.items()}, {k: report["test"][v] for k, v in names.items()}, title, report["unit"])
    report = {**report, "output": str(output)}
    with OutputSet() as files:
        files.write(output, pred.to_bytes())
        files.write(output.with_suffix(".json"), to_json(report, indent=2).encode())
        files.write(output.with_suffix(".png"), png)
    return report
