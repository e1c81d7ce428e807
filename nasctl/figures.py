"""Figures drawn headless into PNG bytes. Every plot nasctl writes goes through these two, so
no command needs a display and every figure is closed once saved."""

from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported only when a figure is drawn: importing it
    costs the CLI's start-up about half a second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    pyplot().close(fig)
    return buf.getvalue()
