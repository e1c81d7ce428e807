"""Arch files: what `nasctl sample` writes and every later step reads (Parquet or CSV).

Columns: arch_id, arch, space, macro, resolution, width_mult, num_classes, macs, params. Only
`arch` is required, so a plain CSV of arch strings (e.g. HELP's) works with --space.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from nasctl.errors import UserError
from nasctl.space.space import Arch, SearchSpace, load_space
from nasctl.space.zoo import is_zoo, zoo_entry
from nasctl.tables import read_table
from nasctl.validate import shown

PARAM_COLUMNS = ("macro", "resolution", "width_mult", "num_classes")


def _single(df: pd.DataFrame, col: str, path) -> object:
    values = df[col].dropna().unique()
    if len(values) > 1:
        raise UserError(f"{path}: archs of several {col} values in one file ({', '.join(map(str, values[:3]))})")
    return values[0].item() if hasattr(values[0], "item") else values[0]


def read_archs(path: str | Path, space: str | None = None, **params) -> tuple[SearchSpace, list[Arch]]:
    """The space and the archs of an arch file, in order (see `archs_from_frame`)."""
    return archs_from_frame(read_table(path), path, space, **params)


def archs_from_frame(df: pd.DataFrame, path, space: str | None = None, **params) -> tuple[SearchSpace, list[Arch]]:
    """The space (from --space or the table's `space` column) and the table's archs, in order.

    Params given here override the table's; the table's override the space's defaults. Every
    string is parsed, so a bad one fails before anything is measured or fitted.
    """
    if "arch" not in df:
        raise UserError(f"{path}: no 'arch' column")
    if df.empty:
        raise UserError(f"{path}: no archs")
    if space is None:
        if "space" not in df:
            raise UserError(f"{path}: no 'space' column; pass --space")
        space = str(_single(df, "space", path))
    file_params = {c: _single(df, c, path) for c in PARAM_COLUMNS if c in df and df[c].notna().any()}
    sp = load_space(space, **{**file_params, **{k: v for k, v in params.items() if v is not None}})
    archs = []
    for i, s in enumerate(df["arch"]):
        try:
            archs.append(sp.parse(s))
        except UserError as e:
            raise UserError(f"{path}: row {i}: {e}") from None
    return sp, archs


def arch_file(ref: str | Path) -> Path | None:
    """The arch.json that `ref` names (the file, or a folder holding one), or None for an arch
    string. A string too long to be a path is a string, not an error."""
    path = Path(ref)
    try:
        if path.is_dir():
            return path / "arch.json"
        return path if path.suffix == ".json" else None
    except OSError:  # e.g. a name longer than the filesystem allows
        return None


def read_arch_ref(ref: str, space: str | None = None, **params) -> Arch:
    """An arch from an `arch.json` (search or retrain output, or its folder), a published net
    (`zoo:NAME`) or a plain string.

    A string needs `space` (default proxyless); the json and the zoo carry their space and params. Params
    given here (e.g. the data's resolution and classes) override the stored ones.
    """
    if is_zoo(ref):  # a published net: its arch on its own space variant (or on `space`)
        return load_space(space or ref, **params).parse(zoo_entry(ref)["arch"])
    path = arch_file(ref)
    if path is not None:
        try:
            doc = json.loads(path.read_text())
            text, stored_space, stored = str(doc["arch"]), str(doc.get("space", "proxyless")), dict(doc.get("params", {}))
        except FileNotFoundError:
            raise UserError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path}: not an arch.json ({type(e).__name__}: {e})") from None
        sp = load_space(space or stored_space, **{**stored, **{k: v for k, v in params.items() if v is not None}})
        return sp.parse(text)
    if not any(c in str(ref) for c in "-|") and not str(ref).isdigit():  # |: NAS-Bench-201's; digits: a benchmark key
        raise UserError(f"{shown(ref)} is neither an arch.json, a folder holding one, a zoo:NAME, nor an arch string")
    return load_space(space or "proxyless", **params).parse(ref)
