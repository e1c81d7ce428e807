"""Reading and writing row tables (Parquet or CSV, chosen by extension), atomically.

Every file nasctl writes goes through `write_table`: a temp file in the same folder, fsync, then
rename. A reader, or a kill -9, therefore sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow

from nasctl.errors import UserError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


def table_format(path: str | Path) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown table format (use .parquet or .csv)")
    return fmt


def read_table(path: str | Path) -> pd.DataFrame:
    fmt = table_format(path)
    try:
        # One read of the whole file, then parse: pyarrow opens a path more than once (footer,
        # then pages), and a writer's rename in between mixes two versions ("Page was smaller").
        data = io.BytesIO(Path(path).read_bytes())
        return pd.read_parquet(data) if fmt == "parquet" else pd.read_csv(data)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, ValueError, pyarrow.ArrowException, pd.errors.ParserError) as e:
        raise UserError(f"{path}: unreadable {fmt} file ({str(e).splitlines()[0]})") from None


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    fmt = table_format(path)
    buf = io.BytesIO()
    if fmt == "parquet":
        df.to_parquet(buf, index=False)
    else:
        df.to_csv(buf, index=False)
    atomic_write(Path(path), buf.getvalue())


def atomic_write(path: Path, data: bytes) -> None:
    """Write bytes to a temp file beside `path`, fsync, rename: all of it or none of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a user expects their umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def to_json(doc, indent: int | None = None) -> str:
    """JSON that every parser reads: a NaN or an infinity becomes null (json.dumps would write a
    bare NaN, which JSON.parse and jq reject), and anything else non-finite is refused."""
    return json.dumps(_finite(doc), indent=indent, allow_nan=False)


def _finite(x):
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


_UMASK = _umask()
