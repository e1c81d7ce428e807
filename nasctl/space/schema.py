"""The space file's schema: types and ranges, checked before anything is built from it.

Strict types (no "16" or 16.0 where channels go, no float layers), finite numbers, and unknown
keys refused, so a typo is named rather than silently ignored. The file's own dict is kept as
it is after the check, so the definition hashes of stored rows do not move.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nasctl.errors import UserError

Channels = Annotated[int, Field(ge=1, le=100_000)]
Stride = Annotated[int, Field(ge=1, le=64)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Stem(_Strict):
    channels: Channels
    stride: Stride


class Fixed(_Strict):
    op: Name
    channels: Channels
    stride: Stride = 1


class Stage(_Strict):
    channels: Channels
    layers: Annotated[int, Field(ge=1, le=1_000)]
    stride: Stride


class Head(_Strict):
    channels: Channels


class _Macro(_Strict):
    """A macro may carry the input it is made for; `--macro` then brings it along."""

    resolution: Annotated[int, Field(ge=8, le=4096)] | None = None
    num_classes: Annotated[int, Field(ge=1, le=100_000)] | None = None


class LayerMacro(_Macro):
    stem: Stem
    fixed: list[Fixed] = []
    stages: Annotated[list[Stage], Field(min_length=1)]
    head: Head


class CellMacro(_Macro):
    cells: Annotated[int, Field(ge=3, le=1_000)]
    channels: Channels
    stem_multiplier: Annotated[int, Field(ge=1, le=64)] = 3


class Params(_Strict):
    macro: Name | None = None
    resolution: Annotated[int, Field(ge=8, le=4096)] | None = None
    width_mult: Annotated[float, Field(gt=0, le=8, allow_inf_nan=False)] = 1.0
    num_classes: Annotated[int, Field(ge=1, le=100_000)] | None = None


class _Space(_Strict):
    name: Name
    description: str = ""
    ops: Annotated[list[Name], Field(min_length=1, max_length=1_000)]
    params: Params


class LayerSpace(_Space):
    kind: Literal["layers"] = "layers"
    skip_on_reshape: Literal["forbid", "conv1x1", "conv1x1_bn"] = "forbid"
    activation: Literal["relu", "relu6"] = "relu6"
    expand_e1: bool = False
    keys: Literal["none", "digits"] = "none"
    macro: Annotated[dict[Name, LayerMacro], Field(min_length=1)]


class CellSpace(_Space):
    kind: Literal["cells"]
    macro: Annotated[dict[Name, CellMacro], Field(min_length=1)]


class Nb201Macro(_Macro):
    channels: Channels  # the first stage's; the other two double it
    cells: Annotated[int, Field(ge=1, le=1_000)]  # per stage


class Nb201Space(_Space):
    kind: Literal["nb201"]
    macro: Annotated[dict[Name, Nb201Macro], Field(min_length=1)]


def check(doc: dict, where: str) -> None:
    """Refuse a space document that does not fit the schema, with its first problem on one line."""
    model = {"cells": CellSpace, "nb201": Nb201Space}.get(doc.get("kind"), LayerSpace)
    try:
        model.model_validate(doc)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
        got = f" (got {first['input']!r})" if not isinstance(first.get("input"), (dict, list)) else ""
        more = f"; {e.error_count() - 1} more problem(s)" if e.error_count() > 1 else ""
        raise UserError(f"{where}: {loc}: {first['msg']}{got[:80]}{more}") from None


def overrides(kw: dict, where: str) -> dict:
    """Params given on top of a space's (options, an arch file's columns, an arch.json), checked
    like the file's own, but read leniently: a table's numpy integers or "32" are fine."""
    unknown = set(kw) - set(Params.model_fields)
    if unknown:
        raise UserError(f"{where}: unknown param(s) {', '.join(sorted(map(str, unknown)))} (known: {', '.join(Params.model_fields)})")
    try:
        got = Params.model_validate({k: v.item() if hasattr(v, "item") else v for k, v in kw.items()}, strict=False)
    except ValidationError as e:
        first = e.errors()[0]
        raise UserError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg']} (got {str(first['input'])[:60]!r})") from None
    return {k: getattr(got, k) for k in kw}
