"""Reading and writing row tables (Parquet or CSV, chosen by extension), atomically.

Every file nasctl writes goes through an `OutputSet` (`write_table` and `atomic_write` are sets of
one): a temp file in the same folder, fsync, then rename. A reader, or a kill -9, therefore sees
the old file or the new one, never half of one; a command's files written as one set appear
together or not at all; and a full disk is one line (`OutputError`), never a traceback.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow

from nasctl.errors import OutputError, UserError

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
    atomic_write(Path(path), table_bytes(df, path))


def table_bytes(df: pd.DataFrame, path: str | Path) -> bytes:
    """The file `write_table` would write, as bytes (for an `OutputSet`)."""
    fmt = table_format(path)
    buf = io.BytesIO()
    if fmt == "parquet":
        df.to_parquet(buf, index=False)
    else:
        df.to_csv(buf, index=False)
    return buf.getvalue()


def atomic_write(path: Path, data: bytes, *, output: bool = True) -> None:
    """Write bytes to a temp file beside `path`, fsync, rename: all of it or none of it.
    `output=False` for a cache, which is not work a failed command can say it kept."""
    with OutputSet(output=output) as out:
        out.write(path, data)


_written: set[Path] = set()  # outputs written whole since `forget_written` (the CLI calls it per command)


def written() -> list[Path]:
    """The outputs this command has written whole so far: what a later failure leaves kept."""
    return sorted(_written)


def forget_written() -> None:
    _written.clear()


class OutputSet:
    """Files that are written as one: all of them or none of the new ones.

    Each `write` stages a temp file beside its target and fsyncs it; only when the block ends
    without an error are all of them renamed into place (a rename needs no space). A full disk
    or any OSError while staging removes every temp file and raises `OutputError`, one line that
    names the path and the space left there.
    """

    def __init__(self, output: bool = True):
        self._staged: list[tuple[str, Path]] = []
        self._made: list[Path] = []  # folders this set created, removed again if it fails
        self._output = output

    def __enter__(self) -> OutputSet:
        return self

    def write(self, path: str | Path, data: bytes) -> None:
        path = Path(path)
        tmp = None
        try:
            if not path.parent.is_dir():  # made here, so removed again if the set fails
                self._made += reversed([p for p in (path.parent, *path.parent.parents) if not p.exists()])
                path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o666 & ~_UMASK)  # mkstemp makes 0600; a user expects their umask
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            self._discard()  # first, so that the error says the space there is once they are gone
            raise output_error(path, e) from None
        self._staged.append((tmp, path))

    def write_table(self, df: pd.DataFrame, path: str | Path) -> None:
        self.write(path, table_bytes(df, path))

    def _discard(self) -> None:
        for tmp, _ in self._staged:
            Path(tmp).unlink(missing_ok=True)
        for folder in reversed(self._made):  # deepest first; one that holds anything else stays
            try:
                folder.rmdir()
            except OSError:
                pass
        self._staged, self._made = [], []

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            self._discard()
            return
        try:
            for tmp, path in self._staged:
                os.replace(tmp, path)
                if self._output:
                    _written.add(path)
            for folder in {path.parent for _, path in self._staged}:
                dirfd = os.open(folder, os.O_RDONLY)
                try:
                    os.fsync(dirfd)
                finally:
                    os.close(dirfd)
        except OSError as e:
            self._discard()
            raise output_error(path, e) from None


def output_error(path: Path, e: OSError) -> OutputError:
    kept = written()
    said = f"; kept as last written: {', '.join(map(str, kept[:3]))}{f' and {len(kept) - 3} more' if len(kept) > 3 else ''}" if kept else ""
    return OutputError(f"cannot write {path}: {e.strerror or e}{_space_left(path)}{said}", kept=bool(kept))


def _space_left(path: Path) -> str:
    """ " (0 B free on /mnt/f)": the free space of the file system that holds `path`."""
    where = Path(os.path.abspath(path))
    while not where.exists() and where != where.parent:
        where = where.parent
    mount = where
    while not os.path.ismount(mount):
        mount = mount.parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return ""
    return f" ({_size(free)} free on {mount})"


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            break
        n /= 1000
    return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"


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
