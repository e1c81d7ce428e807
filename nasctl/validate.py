"""Checks that every command makes at its boundary, before any work starts.

A command refused here has written nothing: an output that cannot be written, or that would
replace one of the command's own inputs, is found before a search trains for minutes or a
profile measures its first arch, not after.
"""

from __future__ import annotations

import os
from pathlib import Path

from nasctl.errors import UserError

# Limits that a file, not only an option, can carry; kept here so that checking them loads no torch.
MAX_MEMBERS = 64  # ensemble members of a predictor: a file declaring millions would hang its load
OPSETS = (7, 20)  # the opsets torch's TorchScript ONNX exporter writes (torch.onnx._constants)


def shown(value: object, limit: int = 60) -> str:
    """A user's value as an error message shows it: quoted, and cut short when it is long."""
    text = str(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def output_path(path: Path, option: str = "--output", *, folder: bool = False, inputs: tuple = (),
                writes: tuple[str, ...] = ()) -> Path:
    """Refuse an output that is a folder (or, with `folder`, a file), lies under a file, or is, or
    would write over, one of `inputs`. `writes` names the files a folder output receives (or the
    sidecars beside a file output, as paths relative to its parent). Missing parents are fine:
    they are made when the output is written."""
    where = f"{option} {shown(path)}"
    try:
        p = Path(os.path.abspath(path))
        if p.exists() and p.is_dir() != folder:
            raise UserError(f"{where}: {'is not a folder' if folder else 'is a folder, not a file'}")
        for up in p.parents:
            if up.exists():
                if not up.is_dir():
                    raise UserError(f"{where}: {up} is a file, not a folder")
                break
        targets = [p / w for w in writes] if folder else [p, *(p.parent / w for w in writes)]
        for t in targets:
            if t.is_dir():
                raise UserError(f"{where}: {t} is a folder")
            for i in inputs:
                if i is not None and _same(t, Path(i)):
                    raise UserError(f"{where}: would write over the input {i}")
    except OSError as e:
        raise UserError(f"{where}: {e.strerror}") from None
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def require_suffix(path: Path, suffixes: tuple[str, ...], what: str, option: str = "--output") -> None:
    if path.suffix.lower() not in suffixes:
        raise UserError(f"{option} {shown(path)}: {what} must end in {' or '.join(suffixes)}")


def input_path(path: Path | None, option: str, *, folder: bool = False) -> Path | None:
    """Refuse an input that is missing, of the wrong kind, or whose name no filesystem takes."""
    if path is None:
        return None
    where = f"{option} {shown(path)}"
    try:
        if not path.exists():
            raise UserError(f"{where}: no such {'folder' if folder else 'file'}")
        if path.is_dir() != folder:
            raise UserError(f"{where}: {'is not a folder' if folder else 'is a folder, not a file'}")
    except OSError as e:
        raise UserError(f"{where}: {e.strerror}") from None
    return path
