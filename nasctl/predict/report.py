"""The predictor's picture: predicted against measured on the held-out split, LUT beside it."""

from __future__ import annotations

import io

import numpy as np


def scatter_png(y: np.ndarray, preds: dict[str, np.ndarray], figs: dict[str, dict], title: str, unit: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
