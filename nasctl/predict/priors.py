"""Prior devices for a transfer fit (`transfer`): each one read as an L x K latency table."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nasctl.errors import UserError
from nasctl.models.cost import cost_table
from nasctl.predict.fit import fit_lut
from nasctl.predict.predictor import Predictor, load_rows
from nasctl.space.space import SearchSpace

PROJECTION_ARCHS = 4096  # archs on which a non-additive prior predictor is read as a table
ROW_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class Prior:
    path: str
    kind: str  # "predictor" or "rows"
    sha256: str
    metric: str
    device: str | None
    table: np.ndarray  # L x K

    def meta(self) -> dict:
        return {"path": self.path, "kind": self.kind, "sha256": self.sha256, "metric": self.metric, "device": self.device}


def load_prior(path: str | Path, space: SearchSpace, metric: str) -> Prior:
    """A prior device: a predictor file, or measured rows (Parquet/CSV) of `metric`, fitted here.
    It must be of the same space definition (ops, macro, resolution): a table of another
    resolution prices other nets."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such prior file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if path.suffix.lower() in ROW_SUFFIXES:
        rows = load_rows(path, metric, space.source)
        _same_space(path, rows.space.definition_hash, space)
        lut = fit_lut(rows.X, rows.y, features=cost_table(space).features())
        device = str(rows.frame["device"].iloc[0]) if "device" in rows.frame else None
        return Prior(str(path), "rows", digest, metric, device, lut.weight.detach().numpy().astype(float))
    p = Predictor.load(path)
    p.check_space(space)
    _same_space(path, p.meta["space"].get("definition_hash"), space)
    if p.meta["kind"] in ("lut", "robust"):
        table = p.module.weight.detach().numpy().astype(float)
    else:  # the additive table nearest to what it predicts, over many archs of the space
        idx = space.draw(np.zeros((PROJECTION_ARCHS,) + space.allowed.shape), np.random.default_rng(0))
        X = np.eye(len(space.ops), dtype=np.float32)[idx]
        table = fit_lut(X, p.predict_indices(idx)[0], shrink=False).weight.detach().numpy().astype(float)
    return Prior(str(path), "predictor", digest, p.metric, p.meta.get("device", {}).get("device"), table)


def _same_space(path: Path, definition_hash: str | None, space: SearchSpace) -> None:
    if definition_hash != space.definition_hash:
        raise UserError(f"{path}: a prior of another definition of space {space.name!r} (macro, resolution, "
                        f"width or classes differ: {str(definition_hash)[:12]} against {space.definition_hash[:12]})")
