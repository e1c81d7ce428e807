"""`nasctl report RUN_DIR`: one self-contained HTML page (PNGs inlined) from what a run wrote.

It reads the files the other commands leave behind and draws whatever it finds: measured rows
(*.parquet / *.csv with a latency column), predictors (*.pt with their .json report), searches
(folders with arch.json + search.csv), retrains (metrics.csv). A missing piece is a missing
section, never an error; a folder with none of them is bad input.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from nasctl.errors import UserError
from nasctl.figures import png, pyplot
from nasctl.space.space import load_space
from nasctl.tables import atomic_write


@dataclass
class Found:
    rows: list[tuple[Path, pd.DataFrame]] = field(default_factory=list)
    predictors: list[Path] = field(default_factory=list)
    searches: list[tuple[Path, dict]] = field(default_factory=list)
    retrains: dict[str, tuple[Path, pd.DataFrame]] = field(default_factory=dict)  # arch -> run
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # damaged files, and why
    drift: list[tuple[Path, pd.DataFrame, pd.DataFrame]] = field(default_factory=list)  # rows file, its reference log, all its rows


class _Target(BaseModel):
    metric: str
    unit: str
    kind: str
    target: float
    predicted: float


class _Round(BaseModel):
    measured: dict[str, float]
    predicted: dict[str, float]
    gap: dict[str, float]


class _SearchDoc(BaseModel):
    """What the report reads of a search's arch.json; a file without it is skipped, and said."""

    arch: str
    method: str
    space: str
    targets: list[_Target]
    verify: list[_Round] | None = None


class _FitReport(BaseModel):
    class Figures(BaseModel):
        mape: float
        kendall_tau: float

    metric: str
    rows: int
    test_rows: int
    chosen: str
    test: dict[str, Figures]


def discover(run: Path) -> Found:
    if not run.is_dir():
        raise UserError(f"{run}: no such folder")
    f = Found()
    for p in sorted(run.rglob("*")):
        if p.name.startswith(".") or not p.is_file():
            continue
        try:
            _take(p, f)
        except (OSError, ValueError, KeyError, TypeError, UserError, pd.errors.ParserError) as e:
            f.skipped.append((p, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"))
    if not (f.rows or f.predictors or f.searches or f.retrains):
        raise UserError(f"{run}: nothing to report (no measured rows, predictors, searches or retrains)")
    return f


def _take(p: Path, f: Found) -> None:
    """File `p` under what it is, if it is anything the report draws."""
    if p.suffix in (".parquet", ".csv") and p.name not in ("search.csv", "metrics.csv"):
        try:
            df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
        except Exception:  # any other table of the user's: not ours to judge
            return
        if {"latency_ms", "status", "arch"} <= set(df.columns) and p.name != "verify.parquet":
            lat = pd.to_numeric(df.latency_ms, errors="coerce")
            f.rows.append((p, df[(df.status == "ok") & np.isfinite(lat) & (lat > 0)]))
            log = p.with_suffix(".ref" + p.suffix)  # nasctl.profile.drift's reference timings
            if log.exists():
                f.drift.append((p, pd.read_parquet(log) if p.suffix == ".parquet" else pd.read_csv(log), df))
    elif p.suffix == ".pt" and p.with_suffix(".json").exists() and p.with_suffix(".png").exists():
        doc = _FitReport.model_validate(json.loads(p.with_suffix(".json").read_text()))
        if not {"default", "lut_ls"} <= set(doc.test):
            raise ValueError("its .json report has no default and lut_ls figures")
        from nasctl.predict import Predictor

        Predictor.load(p)
        f.predictors.append(p)
    elif p.name == "arch.json" and (p.parent / "search.csv").exists():
        doc = json.loads(p.read_text())
        _SearchDoc.model_validate(doc)
        load_space(doc["space"]).parse(doc["arch"])
        f.searches.append((p.parent, doc))
    elif p.name == "metrics.csv" and (p.parent / "arch.json").exists():
        m = pd.read_csv(p)
        if "top1" not in m or m.empty:
            raise ValueError("no top1 column with rows")
        m["top1"] = pd.to_numeric(m["top1"])
        f.retrains[str(json.loads((p.parent / "arch.json").read_text())["arch"])] = (p.parent, m)


def _png(fig) -> str:
    """A figure as base64, to inline in the page."""
    return base64.b64encode(png(fig)).decode()


def latency_hist(rows: list[tuple[Path, pd.DataFrame]], run: Path) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for p, df in rows:
        ax.hist(df.latency_ms, bins=30, alpha=0.6, label=f"{p.relative_to(run)} ({len(df)} archs)")
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("archs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def drift_panel(log: pd.DataFrame, rows: pd.DataFrame) -> str:
    """The reference net's latency through the sessions of one row store: a flat line is a steady
    device; the throttled rows are marked where they were measured."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    at, ok = pd.to_datetime(log["at"], format="ISO8601"), log["status"] == "ok"
    ax.plot(at[ok], log["latency_ms"][ok], "o-", ms=4, label="reference, ok")
    if (~ok).any():
        ax.plot(at[~ok], log["latency_ms"][~ok], "x", color="tab:orange", label="reference, disturbed or throttled")
    hot = rows[rows["status"] == "throttled"] if "finished_at" in rows else rows.iloc[:0]
    for i, t in enumerate(pd.to_datetime(hot.get("finished_at", pd.Series(dtype=str)), format="ISO8601")):
        ax.axvline(t, color="tab:red", alpha=0.4, lw=1, label="throttled row" if i == 0 else None)
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("reference latency (ms)")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def layer_strip(archs: list[tuple[str, tuple[str, ...]]]) -> str:
    """Each arch as a row of cells: hue by kernel size, depth by expansion, grey for skip; a cell
    genotype's edges by op name, blank where the node does not keep the edge."""
    from nasctl.space.cells import NONE
    from nasctl.space.space import parse_op

    plt = pyplot()
    hues = {3: "Blues", 5: "Greens", 7: "Oranges"}
    fig, ax = plt.subplots(figsize=(9, 0.6 + 0.55 * len(archs)))
    for r, (label, ops) in enumerate(archs):
        for i, name in enumerate(ops):
            try:
                op = parse_op(name)
            except UserError:  # a cell op: one colour per op name
                op = None
            if name == NONE:
                color, text = "#f6f6f6", ""
            elif op is None:
                color, text = plt.get_cmap("tab10")(sum(map(ord, name)) % 10), name
            elif op.is_skip:
                color, text = "#dddddd", "skip"
            else:
                cmap = plt.get_cmap(hues.get(op.kernel, "Purples"))
                color, text = cmap(0.35 + 0.1 * min(op.expand, 6)), f"{op.kernel}/{op.expand}" + (f"\nse{op.se}" if op.se else "")
            ax.add_patch(plt.Rectangle((i, -r - 0.9), 0.95, 0.8, color=color))
            ax.text(i + 0.47, -r - 0.5, text, ha="center", va="center", fontsize=6)
        ax.text(-0.3, -r - 0.5, label, ha="right", va="center", fontsize=8)
    n = max(len(ops) for _, ops in archs)
    ax.set_xlim(-0.1, n)
    ax.set_ylim(-len(archs), 0)
    ax.axis("off")
    ax.set_title("layer strip: the op of each searchable layer (blue k3, green k5, orange k7; darker = e6) "
                 "or cell edge (by name; blank: not kept)", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def pareto(searches: list[tuple[Path, dict]], retrains: dict, run: Path) -> str | None:
    """Accuracy against latency per searched arch: retrained top-1 where a retrain of that arch
    exists, else the accuracy the search itself saw (supernet path or brief training)."""
    pts = []
    for d, doc in searches:
        lat = next((r["measured"].get("latency_ms") for r in reversed(doc.get("verify") or []) if "latency_ms" in r["measured"]), None)
        kind = "measured"
        if lat is None:
            t = next((t for t in doc["targets"] if t["unit"] == "ms"), None)
            lat, kind = (t["predicted"], "predicted") if t else (None, "")
        if lat is None:
            continue
        if doc["arch"] in retrains:
            acc, src = float(retrains[doc["arch"]][1]["top1"].iloc[-1]), "retrained"
        else:
            rows = pd.read_csv(d / "search.csv")
            col = "epoch_val_acc" if "epoch_val_acc" in rows else "val_acc"
            acc, src = float(rows[col].dropna().iloc[-1] if col == "epoch_val_acc" else rows[col].max()), "search-time"
        pts.append((doc["method"], str(d.relative_to(run)), lat, acc, kind, src))
    if not pts:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    markers = {"lightnas": "*", "singlepath": "P", "fbnet": "s", "proxyless": "D", "random": "o", "evolution": "^"}
    for m, name, lat, acc, kind, src in pts:
        ax.scatter(lat, acc, marker=markers.get(m, "x"), s=120 if m == "lightnas" else 50, label=f"{m}: {name} ({kind} ms, {src} acc)")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("top-1")
    ax.legend(fontsize=7)
    ax.set_title("accuracy against latency of the searched archs", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def measured_vs_predicted(predictor: Path, rows: list[tuple[Path, pd.DataFrame]], searches) -> str | None:
    """Every measured arch against the predictor, with the verify measurements on top."""
    from nasctl.predict import Predictor
    from nasctl.space.archfile import archs_from_frame

    pred = Predictor.load(predictor)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.4))
    drawn = False
    for p, df in rows:
        if df.empty or "latency_ms" != pred.metric:
            continue
        try:
            sp, archs = archs_from_frame(df, p)
            pred.check_space(sp)
        except UserError:
            continue
        mean, _ = pred.predict(archs)
        ax.scatter(df.latency_ms, mean, s=6, alpha=0.5, label=f"profiled archs ({len(df)})")
        drawn = True
    for _, doc in searches:
        for r in doc.get("verify") or []:
            if pred.metric in r["measured"]:
                ax.scatter(r["measured"][pred.metric], r["predicted"][pred.metric], marker="*", s=140, color="C3",
                           label=f"verify: {doc['method']}")
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    lo, hi = ax.get_xlim()
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("measured (ms)")
    ax.set_ylabel("predicted (ms)")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), fontsize=7)
    ax.set_title(f"{predictor.name}: measured against predicted", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def build_report(run: Path, output: Path | None = None) -> dict:
    f = discover(run)
    output = output or run / "report.html"
    sections: list[tuple[str, str]] = []
    if f.rows:
        sections.append(("Latency of the sampled archs", _img(latency_hist(f.rows, run))))
    for p, log, df in f.drift:
        ok = log[log["status"] == "ok"]["latency_ms"]
        text = (f"{len(log)} reference timings ({len(ok)} ok), from {ok.min():.4g} to {ok.max():.4g} ms; "
                f"{int((df['status'] == 'throttled').sum())} throttled rows") if len(ok) else f"{len(log)} reference timings, none ok"
        sections.append((f"Device drift ({p.relative_to(run)})", f"<p>{html.escape(text)}</p>" + _img(drift_panel(log, df))))
    for p in f.predictors:
        rep = json.loads(p.with_suffix(".json").read_text())
        d, lut = rep["test"]["default"], rep["test"]["lut_ls"]
        text = (f"{rep['metric']} on {rep['rows']} rows, held-out {rep['test_rows']}: chosen <b>{html.escape(rep['chosen'])}</b>, "
                f"MAPE {d['mape']:.2%}, Kendall τ {d['kendall_tau']:.3f} (least-squares LUT: MAPE {lut['mape']:.2%}, τ {lut['kendall_tau']:.3f})")
        sections.append((f"Predictor {p.relative_to(run)}", f"<p>{text}</p>" + _img(base64.b64encode(p.with_suffix(".png").read_bytes()).decode())))
    for d, doc in f.searches:
        figs = "; ".join(f"{t['metric']} predicted {t['predicted']:.4g} {t['unit']} against {t['kind']} {t['target']:g}" for t in doc["targets"])
        for i, r in enumerate(doc.get("verify") or []):
            figs += "; verify {}: {}".format(i + 1, ", ".join(f"{k} measured {v:.4g} ({r['gap'][k]:+.1%})" for k, v in r["measured"].items()))
        sections.append((f"Search {d.relative_to(run)} ({doc['method']})",
                         f"<p><code>{html.escape(doc['arch'])}</code></p><p>{html.escape(figs)}</p>"
                         + _img(base64.b64encode((d / "search.png").read_bytes()).decode())))
    if f.searches:
        par = pareto(f.searches, f.retrains, run)
        if par:
            sections.append(("Accuracy against latency", _img(par)))
        sections.append(("Searched archs as layer strips",
                         _img(layer_strip([(f"{doc['method']} ({d.relative_to(run)})", load_space(doc["space"]).parse(doc["arch"]).ops)
                                           for d, doc in f.searches]))))
    for p in f.predictors:
        mvp = measured_vs_predicted(p, f.rows, f.searches)
        if mvp:
            sections.append((f"Measured against predicted ({p.relative_to(run)})", _img(mvp)))
    for arch, (d, m) in f.retrains.items():
        sections.append((f"Retrain {d.relative_to(run)}", f"<p><code>{html.escape(arch)}</code>: top-1 {m.top1.iloc[-1]:.2%} "
                         f"after {len(m)} epochs</p>" + _table(m)))
    if f.skipped:
        sections.append(("Files not drawn", "<ul>" + "".join(f"<li><code>{html.escape(str(p.relative_to(run)))}</code>: "
                                                               f"{html.escape(why)}</li>" for p, why in f.skipped) + "</ul>"))
    body = "\n".join(f"<section><h2>{html.escape(t)}</h2>\n{c}</section>" for t, c in sections)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nasctl report: {html.escape(run.name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}}
img{{max-width:100%;border:1px solid #eee}} code{{font-size:0.85em;word-break:break-all}}
table{{border-collapse:collapse;font-size:0.85em}} td,th{{border:1px solid #ddd;padding:2px 6px;text-align:right}}
section{{margin-bottom:2em}}</style></head>
<body><h1>nasctl report: {html.escape(str(run))}</h1>
{body}
</body></html>
"""
    atomic_write(output, page.encode())
    return {"output": str(output), "sections": [t for t, _ in sections]}


def _img(b64: str) -> str:
    return f'<img alt="figure" src="data:image/png;base64,{b64}">'


def _table(df: pd.DataFrame) -> str:
    return df.round(4).to_html(index=False, border=0)

