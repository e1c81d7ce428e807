"""A fitted predictor: a torch module plus the metadata that says what it answers for.

Saved as a torch state_dict and JSON metadata in one file, loaded with ``weights_only=True``:
no pickled objects, so files survive library upgrades. Loading rebuilds the module from the
metadata and checks that the caller's space is the one it was fitted on.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field, ValidationError
from torch import nn

from nasctl import __version__
from nasctl.errors import UserError
from nasctl.models.cost import cost_table
from nasctl.predict.fit import FitConfig, fit_candidates, fit_lut
from nasctl.predict.metrics import figures
from nasctl.predict.models import ACTIVATIONS, MLP, Additive, Ensemble, Residual, uncertainty
from nasctl.predict.transfer import transfer_features
from nasctl.space.archfile import archs_from_frame
from nasctl.space.space import Arch, SearchSpace, load_space
from nasctl.tables import atomic_write, read_table, to_json
from nasctl.validate import MAX_MEMBERS

FORMAT = "nasctl-predictor/1"
LIGHTNAS_MLP = {"hidden": [128, 64], "activation": "relu"}  # files written before "mlp" was stored
MIN_ROWS = 30


def unit_of(metric: str) -> str:
    for suffix, unit in (("_ms", "ms"), ("_mj", "mJ"), ("_w", "W")):
        if metric.lower().endswith(suffix):
            return unit
    return ""


def _module(kind: str, L: int, K: int, members: int, mlp: dict) -> nn.Module:
    if kind in ("lut", "robust"):
        return Additive(L, K)
    ens = Ensemble([MLP(L, K, tuple(mlp["hidden"]), mlp["activation"]) for _ in range(members)])
    return ens if kind == "mlp" else Residual(Additive(L, K), ens)


def _members(module: nn.Module) -> int:
    ens = module.mlp if isinstance(module, Residual) else module
    return len(ens.members) if isinstance(ens, Ensemble) else 0


@dataclass
class Predictor:
    module: nn.Module
    meta: dict

    @property
    def metric(self) -> str:
        return self.meta["metric"]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable prediction for a (B, L, K) batch of (soft) one-hots."""
        return self.module(x)

    def check_space(self, space: SearchSpace) -> None:
        s = self.meta["space"]
        if space.structure_hash != s["structure_hash"]:
            raise UserError(
                f"predictor was fitted on space {s['name']!r} ({s['layers']} layers x {len(s['ops'])} ops), "
                f"not on {space.name!r} ({space.num_layers} x {len(space.ops)})"
            )

    def space(self) -> SearchSpace:
        s = self.meta["space"]
        return load_space(s["source"], **s["params"])

    def predict(self, archs: list[Arch], batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Mean and ensemble std for many archs, in the metric's unit."""
        idx = np.stack([a.indices for a in archs])
        return self.predict_indices(idx, batch)

    def predict_table(self, df, path) -> tuple:
        """An arch table (`nasctl sample`'s, or any with an `arch` column) with pred_<metric> and
        pred_<metric>_std added, in the predictor's space and params unless the table says more;
        and a summary of the predictions."""
        from nasctl.space.archfile import archs_from_frame

        space = self.space()
        sp, archs = archs_from_frame(df, path, space.source, **space.params.__dict__)
        self.check_space(sp)
        mean, std = self.predict(archs)
        m = self.metric
        summary = {"archs": len(df), "metric": m, "unit": self.meta["unit"],
                   "min": float(mean.min()), "median": float(np.median(mean)), "max": float(mean.max())}
        return df.assign(**{f"pred_{m}": mean, f"pred_{m}_std": std}), summary

    def predict_indices(self, idx: np.ndarray, batch: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        L, K = self.meta["space"]["layers"], len(self.meta["space"]["ops"])
        means, stds = [], []
        self.module.eval()
        device = next(self.module.parameters()).device  # the search may have moved it to the GPU
        with torch.no_grad():
            for chunk in np.array_split(idx, max(1, -(-len(idx) // batch))):
                x = torch.nn.functional.one_hot(torch.as_tensor(chunk, device=device), K).float().reshape(-1, L, K)
                means.append(self.module(x).cpu().numpy())
                stds.append(uncertainty(self.module, x).cpu().numpy())
        return np.concatenate(means), np.concatenate(stds)

    def to_bytes(self) -> bytes:
        """The .pt file's bytes, for an `OutputSet` (a predictor written with its report)."""
        buf = io.BytesIO()
        torch.save({"format": FORMAT, "meta": to_json(self.meta), "state_dict": self.module.state_dict()}, buf)
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        atomic_write(Path(path), self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise UserError(f"{path}: no such predictor file") from None
        except Exception as e:
            raise UserError(f"{path}: not a nasctl predictor ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise UserError(f"{path}: not a nasctl predictor file (format {FORMAT})")
        meta = _checked_meta(blob.get("meta"), path)
        s = meta["space"]
        module = _module(meta["kind"], s["layers"], len(s["ops"]), meta["members"], meta.get("mlp", LIGHTNAS_MLP))
        try:
            module.load_state_dict(blob.get("state_dict"))
        except (TypeError, KeyError, RuntimeError) as e:
            raise UserError(f"{path}: its weights do not match its metadata ({str(e).splitlines()[0][:200]})") from None
        return cls(module.eval(), meta)


class _Meta(BaseModel):
    """What loading needs from a predictor's metadata, checked before any module is built."""

    class Space(BaseModel):
        name: str
        source: str
        params: dict
        structure_hash: str
        layers: Annotated[int, Field(ge=1, le=10_000)]
        ops: Annotated[list[str], Field(min_length=1, max_length=10_000)]

    class Mlp(BaseModel):
        hidden: Annotated[list[Annotated[int, Field(ge=1, le=65_536)]], Field(min_length=1, max_length=16)]
        activation: Literal[tuple(ACTIVATIONS)]

    kind: Literal["lut", "robust", "mlp", "residual"]
    members: Annotated[int, Field(ge=0, le=MAX_MEMBERS)]
    metric: str
    unit: str
    space: Space
    mlp: Mlp | None = None


def _checked_meta(text, path) -> dict:
    try:
        meta = json.loads(text)
        _Meta.model_validate(meta)
    except (TypeError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        first = e.errors()[0] if isinstance(e, ValidationError) else None
        why = f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else str(e).splitlines()[0][:200]
        raise UserError(f"{path}: damaged predictor metadata ({why})") from None
    if meta["kind"] in ("mlp", "residual") and meta["members"] < 1:
        raise UserError(f"{path}: damaged predictor metadata (a {meta['kind']} predictor has members)")
    return meta


def space_meta(space: SearchSpace) -> dict:
    return {
        "name": space.name,
        "source": space.source,
        "params": space.params.__dict__,
        "structure_hash": space.structure_hash,
        "definition_hash": space.definition_hash,
        "layers": space.num_layers,
        "ops": list(space.ops),
    }


@dataclass
class TrainingRows:
    """Rows ready to fit: the space, one-hots, targets, and what was dropped on the way."""

    space: SearchSpace
    archs: list[Arch]
    X: np.ndarray
    y: np.ndarray
    frame: pd.DataFrame
    skipped_errors: int
    drift: dict | None = None  # with drift correction: the reference and its base speed


def drift_correct(df: pd.DataFrame, y: np.ndarray, metric: str, want: bool | None, path) -> tuple[np.ndarray, dict | None]:
    """Latency read at the device's base speed: each row over its `drift` (its reference net's
    timing over the config's first one, `nasctl.profile.drift`). None (the default) corrects
    where every row carries a drift; False never; True insists."""
    has = "drift" in df and len(df) and bool(pd.to_numeric(df["drift"], errors="coerce").gt(0).all())
    if want is False or (want is None and not (has and unit_of(metric) == "ms")):
        return y, None
    if unit_of(metric) != "ms":
        raise UserError(f"--drift-correct reads latency at the device's base speed: {metric} is not a latency (ms)")
    if not has:
        missing = len(df) if "drift" not in df else int((~pd.to_numeric(df["drift"], errors="coerce").gt(0)).sum())
        raise UserError(f"{path}: {missing} rows carry no drift (measured with no reference net); use --no-drift-correct")
    drift = pd.to_numeric(df["drift"]).to_numpy(float)
    base = (df["ref_latency_ms"] / df["drift"]).median()
    return y / drift, {"ref_arch_id": str(df["ref_arch_id"].iloc[0]), "base_ms": float(base),
                       "drift_min": float(drift.min()), "drift_max": float(drift.max())}


def load_rows(path: str | Path, metric: str, space: str | None = None, config_id: str | None = None,
              min_rows: int = MIN_ROWS, drift: bool | None = False, emulated: bool = False) -> TrainingRows:
    """Read measured rows and check them; every problem is a one-line UserError. `min_rows`:
    MIN_ROWS to fit and hold out a test split, fewer for a transfer fit; `drift`: see
    `drift_correct`; `emulated`: fit rows that were timed under a CPU emulator (refused unless
    asked for: they time qemu, not the board)."""
    df = read_table(path)
    if metric not in df:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        raise UserError(f"{path}: no column {metric!r} (numeric columns: {', '.join(numeric[:12])})")
    skipped = 0
    if "status" in df:
        ok = df["status"] == "ok"
        skipped = int((~ok).sum())
        df = df[ok]
    if not emulated and "emulated" in df and df["emulated"].notna().any():
        why = df["emulated"].dropna().iloc[0]
        raise UserError(f"{path}: {int(df['emulated'].notna().sum())} rows were timed under emulation ({why}): their "
                        "latencies describe the emulator, not the board; --allow-emulated fits them anyway")
    if "config_id" in df and df["config_id"].nunique() > 1:
        if config_id is None:
            ids = ", ".join(f"{k} ({n} rows)" for k, n in df["config_id"].value_counts().items())
            raise UserError(f"{path}: rows from several device configs, pick one with --config-id: {ids}")
        df = df[df["config_id"] == config_id]
    elif config_id is not None and "config_id" in df and config_id not in set(df["config_id"]):
        raise UserError(f"{path}: no rows with config_id {config_id}")
    y = pd.to_numeric(df[metric], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(y) | (y <= 0)
    if bad.any():
        raise UserError(f"{path}: {int(bad.sum())} rows have a missing, non-numeric or non-positive {metric}")
    if len(df) < min_rows:
        why = "to fit and hold out a test split" if min_rows >= MIN_ROWS else "for a fit with priors"
        raise UserError(f"{path}: {len(df)} usable rows (status ok), need at least {min_rows} {why}")
    df = df.reset_index(drop=True)
    y, corrected = drift_correct(df, y, metric, drift, path)
    sp, archs = archs_from_frame(df, path, space)
    X = np.stack([a.onehot() for a in archs])
    return TrainingRows(sp, archs, X, y, df, skipped, corrected)


def fit_predictor(rows: TrainingRows, metric: str, test: float = 0.2, seed: int = 0, cfg: FitConfig | None = None,
                  priors: tuple = ()):
    """Fit on a seeded (1 - test) split, report on the held-out rest beside the LUT.

    With `priors` (`priors.Prior`: devices already measured) the LUTs are transfer fits
    (`transfer`); under MIN_ROWS rows the transfer LUT alone is fitted on every row and the
    report's figures are its exact leave-one-out predictions, beside the cost-prior LUT's.

    Returns the predictor, the report, and the held-out (measured, {model: predicted}) pair.
    """
    hidden, activation = rows.space.mlp
    cfg = replace(cfg or FitConfig(seed=seed), hidden=hidden, activation=activation)
    if not 0 < test < 1:
        raise UserError("--test must be between 0 and 1")
    t0 = time.perf_counter()
    features = transfer_features(rows.space, [p.table for p in priors]) if priors else cost_table(rows.space).features()
    few = bool(priors) and len(rows.y) < MIN_ROWS
    if few:  # every row fits; each is scored by the fit on the others
        te = tr = np.arange(len(rows.y))
        y_te, preds = _few_rows(rows, features)
        model = fit_lut(rows.X, rows.y, features=features, shrink_mix=True).eval()
        chosen, baseline, choice_mae = "lut", "lut_cost", None
    else:
        perm = np.random.default_rng(seed).permutation(len(rows.y))
        nt = max(1, int(round(test * len(perm))))
        te, tr = perm[:nt], perm[nt:]
        cands = fit_candidates(rows.X[tr], rows.y[tr], cfg, features, shrink_mix=bool(priors))
        Xte = torch.as_tensor(rows.X[te], dtype=torch.float32)
        with torch.no_grad():
            preds = {k: m(Xte).numpy() for k, m in cands.models.items()}
        chosen, baseline, y_te, choice_mae = cands.chosen, "lut_ls", rows.y[te], cands.val_mae
        model = cands.models[chosen]
    fit_s = time.perf_counter() - t0
    report = {
        "metric": metric,
        "unit": unit_of(metric),
        "rows": int(len(rows.y)),
        "skipped_error_rows": rows.skipped_errors,
        "train_rows": int(len(tr)),
        "test_rows": 0 if few else int(len(te)),
        "validation": "leave-one-out" if few else "held-out split",
        "seed": seed,
        "chosen": chosen,
        "baseline": baseline,
        "choice_mae": choice_mae,
        "priors": [p.meta() for p in priors],
        "test": {"default": figures(y_te, preds[chosen]), **{k: figures(y_te, p) for k, p in preds.items()}},
        "fit_s": fit_s,
    }
    f = rows.frame
    if f"{metric}_std" in f:
        report["seed_spread"] = seed_spread(f.iloc[te], metric)
    meta = {
        "kind": chosen,
        "members": _members(model),
        "mlp": {"hidden": list(hidden), "activation": activation},
        "metric": metric,
        "unit": unit_of(metric),
        "space": space_meta(rows.space),
        "feature_layout": f"one-hot (layers={rows.space.num_layers}) x (ops={list(rows.space.ops)}), row-major",
        "device": {c: str(f[c].iloc[0]) for c in ("device", "config_id", "host", "cpu_model", "runtime", "batch", "input_shape") if c in f},
        "data_hash": hashlib.sha256(json.dumps([[a.string for a in rows.archs], rows.y.tolist()]).encode()).hexdigest()[:16],
        "figures": report["test"],
        "nasctl_version": __version__,
        "test_arch_ids": [] if few else [rows.archs[i].id for i in te],
        "priors": report["priors"],
        "features": "device features and prior tables" if priors else "cost features",
        "drift_correct": rows.drift,  # None: fitted on raw latency
    }
    return Predictor(model, meta), report, (y_te, preds)


def seed_spread(f: pd.DataFrame, metric: str) -> dict:
    """A table's own seed noise on the rows scored (its `<metric>_std`, over `trainings` runs a row
    where it says): a predictor whose held-out RMSE nears `noise_rmse` is as close as the table's
    figures allow, since each figure is itself only a mean of that many trainings."""
    std = pd.to_numeric(f[f"{metric}_std"], errors="coerce").to_numpy(float)
    n = pd.to_numeric(f["trainings"], errors="coerce").to_numpy(float) if "trainings" in f else np.ones_like(std)
    ok = np.isfinite(std) & (n >= 1)
    return {"column": f"{metric}_std", "rows": int(ok.sum()), "median_std": float(np.median(std[ok])),
            "noise_rmse": float(np.sqrt(np.mean(std[ok] ** 2 / n[ok])))} if ok.any() else {}


def _few_rows(rows: TrainingRows, features: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Leave-one-out predictions of the transfer LUT and of the cost-prior LUT without priors:
    with a few rows, every row is needed to fit, so each is predicted by the fit on the others."""
    n, cost = len(rows.y), cost_table(rows.space).features()
    preds = {"lut": np.empty(n), "lut_cost": np.empty(n)}
    for i in range(n):
        keep = np.arange(n) != i
        x = torch.as_tensor(rows.X[i : i + 1], dtype=torch.float32)
        with torch.no_grad():
            preds["lut"][i] = float(fit_lut(rows.X[keep], rows.y[keep], features=features, shrink_mix=True)(x))
            preds["lut_cost"][i] = float(fit_lut(rows.X[keep], rows.y[keep], features=cost)(x))
    return rows.y, preds


def exact_cost(space: SearchSpace, what: str) -> Predictor:
    """MACs (millions) or params (millions) as an Additive predictor: exact, differentiable."""
    t = cost_table(space)
    table, fixed = (t.macs, t.fixed_macs) if what == "mmacs" else (t.params, t.fixed_params)
    lut = Additive(*table.shape)
    with torch.no_grad():
        lut.weight.copy_(torch.as_tensor(table / 1e6, dtype=torch.float32))
        lut.bias.fill_(fixed / 1e6)
    meta = {"kind": "lut", "members": 0, "metric": what, "unit": "M", "space": space_meta(space), "exact": True}
    return Predictor(lut.eval(), meta)
