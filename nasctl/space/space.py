"""Search spaces as data: a TOML file decoded into per-layer specs, and architectures as strings.

A space file names its ops, the macro-architectures it can be built on, and default parameters
(input resolution, width multiplier, classes). The built-in spaces ship as such files, so a user
space is no second-class citizen. An architecture is one op name per searchable layer, joined by
``-`` (the canonical string), as in timm's compact block strings.
"""

from __future__ import annotations

import functools
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np

from nasctl.errors import UserError
from nasctl.space import cells, nb201, schema
from nasctl.space.base import Arch, FreeLayers, Params, check_params, digest, macro_shape, new_params
from nasctl.space.cells import CellSpace
from nasctl.space.nb201 import Nb201Space
from nasctl.space.zoo import is_zoo, zoo_entry
from nasctl.validate import shown

SKIP = "skip"
_OP_RE = re.compile(r"^k(?P<k>[1-9]\d*)_e(?P<e>[1-9]\d*)(?:_g(?P<g>[1-9]\d*))?(?:_se(?P<se>[1-9]\d?|100))?$")


@dataclass(frozen=True)
class Op:
    """A decoded op name: ``kK_eE[_gG][_seR]`` is an MBConv block (with squeeze-and-excitation
    of R% of its input channels), ``skip`` an identity (or 1x1 conv)."""

    name: str
    kernel: int = 0
    expand: int = 0
    groups: int = 1
    se: int = 0

    @property
    def is_skip(self) -> bool:
        return self.name == SKIP


@functools.cache
def parse_op(name: str) -> Op:
    if name == SKIP:
        return Op(SKIP)
    m = _OP_RE.match(name)
    if not m:
        raise UserError(f"bad op name {name!r}: expected 'skip' or kK_eE[_gG][_seR], e.g. k3_e6 or k5_e3_se25")
    return Op(name, int(m["k"]), int(m["e"]), int(m["g"] or 1), int(m["se"] or 0))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8, never below 90% of v (MobileNetV2's rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


@dataclass(frozen=True)
class LayerSpec:
    """One searchable layer: its shape and the ops allowed there."""

    index: int
    in_ch: int
    out_ch: int
    stride: int
    in_hw: int
    ops: tuple[str, ...]

    @property
    def reshapes(self) -> bool:
        return self.stride != 1 or self.in_ch != self.out_ch


@dataclass(frozen=True)
class FixedSpec:
    """A non-searchable block of the macro (e.g. ProxylessNAS's first MBConv k3 e1)."""

    op: str
    in_ch: int
    out_ch: int
    stride: int
    in_hw: int


@dataclass(frozen=True)
class SearchSpace(FreeLayers):
    mlp: ClassVar = ((128, 64), "relu")  # the learned predictor: LightNAS's MLP
    absent: ClassVar = None  # no op marks an absent layer

    name: str
    description: str
    ops: tuple[str, ...]
    skip_on_reshape: str
    activation: str
    expand_e1: bool
    macros: dict = field(hash=False)  # compared: cost tables are cached per equal space
    params: Params = None
    source: str = ""
    keys: str = "none"  # "digits": a tabular benchmark's key, one op index per layer ("02012100")

    # ---- derived structure -------------------------------------------------------------
    @functools.cached_property
    def _macro(self) -> dict:
        return self.macros[self.params.macro]

    @property
    def stem_channels(self) -> int:
        return make_divisible(self._macro["stem"]["channels"] * self.params.width_mult)

    @property
    def stem_stride(self) -> int:
        return int(self._macro["stem"]["stride"])

    @property
    def head_channels(self) -> int:
        return make_divisible(self._macro["head"]["channels"] * max(1.0, self.params.width_mult))

    @functools.cached_property
    def fixed(self) -> tuple[FixedSpec, ...]:
        return self._layout[0]

    @functools.cached_property
    def layers(self) -> tuple[LayerSpec, ...]:
        return self._layout[1]

    @functools.cached_property
    def _layout(self):
        w = self.params.width_mult
        hw = math.ceil(self.params.resolution / self.stem_stride)
        ch, nominal = self.stem_channels, self._macro["stem"]["channels"]
        fixed = []
        for f in self._macro.get("fixed", []):
            out, s = make_divisible(f["channels"] * w), int(f.get("stride", 1))
            fixed.append(FixedSpec(f["op"], ch, out, s, hw))
            ch, hw, nominal = out, math.ceil(hw / s), f["channels"]
        layers = []
        for st in self._macro["stages"]:
            out = make_divisible(st["channels"] * w)
            for i in range(int(st["layers"])):
                s = int(st["stride"]) if i == 0 else 1
                ops = self.ops
                # decided on the unscaled widths: rounding at a small width multiplier can make
                # 80 and 96 channels equal, and an arch searched there must still deploy at 1.0
                if self.skip_on_reshape == "forbid" and (s != 1 or nominal != st["channels"]):
                    ops = tuple(o for o in ops if o != SKIP)
                layers.append(LayerSpec(len(layers), ch, out, s, hw, ops))
                ch, hw, nominal = out, math.ceil(hw / s), st["channels"]
        return tuple(fixed), tuple(layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @functools.cached_property
    def allowed(self) -> np.ndarray:
        """L x K boolean mask of the ops each layer may take."""
        m = np.zeros((self.num_layers, len(self.ops)), dtype=bool)
        for l in self.layers:
            m[l.index, [self.ops.index(o) for o in l.ops]] = True
        return m

    @functools.cached_property
    def structure_hash(self) -> str:
        """Hash of what defines the arch strings (ops, per-layer choices), not of the params.

        The same string names the same architecture at any resolution or macro, so arch ids stay
        stable when a search runs on the CIFAR macro and deploys on the ImageNet one.
        """
        doc = {"name": self.name, "ops": self.ops, "allowed": self.allowed.tolist()}
        return digest(doc)

    @functools.cached_property
    def definition_hash(self) -> str:
        """Hash of everything that changes the built network: the structure, macro and params."""
        doc = {
            "structure": self.structure_hash,
            "macro": macro_shape(self._macro),
            "skip_on_reshape": self.skip_on_reshape,
            "activation": self.activation,
            "expand_e1": self.expand_e1,
            "params": self.params.__dict__,
        }
        return digest(doc)

    def with_params(self, **overrides) -> SearchSpace:
        """The same space with some params changed (None values are ignored)."""
        params = new_params(self, overrides)
        return self if params is None else _validated(replace(self, params=params))

    # ---- architectures -----------------------------------------------------------------
    def parse(self, text: str) -> Arch:
        """Decode a canonical arch string (or the benchmark's key, in a space with digit keys);
        errors name the layer and the bad token."""
        text = str(text).strip()
        tokens = self._key_ops(text) if self.keys == "digits" and text.isdigit() else text.split("-")
        if len(tokens) != self.num_layers:
            raise UserError(
                f"arch has {len(tokens)} layers, space {self.name!r} has {self.num_layers}: {shown(text)}"
            )
        for layer, tok in zip(self.layers, tokens):
            if tok not in self.ops:
                raise UserError(
                    f"layer {layer.index}: unknown op {shown(tok)} in space {self.name!r} "
                    f"(ops: {', '.join(self.ops)})"
                )
            if tok not in layer.ops:
                raise UserError(
                    f"layer {layer.index}: op {tok!r} not allowed there "
                    f"(stride {layer.stride}, {layer.in_ch}->{layer.out_ch} channels: "
                    "skip cannot change the shape in this space)"
                )
        return Arch(self, tuple(tokens))

    def _key_ops(self, key: str) -> list[str]:
        if len(key) != self.num_layers:
            raise UserError(f"key {shown(key)} has {len(key)} digits, space {self.name!r} has {self.num_layers} layers")
        for i, d in enumerate(key):
            if int(d) >= len(self.ops):
                raise UserError(f"layer {i}: digit {d} of key {key} names no op in space {self.name!r} "
                                f"({', '.join(f'{k} {o}' for k, o in enumerate(self.ops))})")
        return [self.ops[int(d)] for d in key]

    def key(self, arch: Arch) -> str | None:
        """The arch as its benchmark writes it (digit keys), else None."""
        return "".join(map(str, arch.indices)) if self.keys == "digits" else None

    def to_string(self, ops: tuple[str, ...]) -> str:
        return "-".join(ops)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "layers": self.num_layers,
            "ops": list(self.ops),
            "params": self.params.__dict__,
            "size": int(np.prod(self.allowed.sum(1).astype(float))),
        }


BUILTIN = resources.files("nasctl.space") / "builtin"


def builtin_spaces() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in BUILTIN.iterdir() if p.name.endswith(".toml"))


def load_space(name_or_path: str | Path, **params) -> SearchSpace | CellSpace | Nb201Space:
    """A built-in space by name, a user space from a TOML file, or a zoo net's (`zoo:NAME`);
    params override defaults.
    A file with ``kind = "cells"`` is a DARTS-style cell space (see `cells`), ``kind = "nb201"``
    NAS-Bench-201's (see `nb201`)."""
    ref = str(name_or_path)
    doc = None
    if is_zoo(ref):  # a published net's space variant
        doc, source = zoo_entry(ref)["space"], ref
    elif ref in builtin_spaces():
        text, source = (BUILTIN / f"{ref}.toml").read_text(), ref
    elif ref.endswith(".toml") or _is_file(ref):
        try:
            text, source = Path(ref).read_text(), str(Path(ref).resolve())
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read space file {shown(ref)}: {getattr(e, 'strerror', None) or 'not a text file'}") from None
    else:
        raise UserError(
            f"unknown space {shown(ref)} (built-in: {', '.join(builtin_spaces())}; a zoo:NAME; or a .toml file)"
        )
    try:
        doc = doc or tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"space file {ref}: {e}") from None
    if "extends" in doc:  # a variant names a built-in space and gives only the keys it changes
        base = doc.pop("extends")
        if base not in builtin_spaces():
            raise UserError(f"space {source}: extends {base!r}, which is not a built-in space ({', '.join(builtin_spaces())})")
        doc = deep_merge(tomllib.loads((BUILTIN / f"{base}.toml").read_text()), doc)
    return _from_doc(doc, source).with_params(**params)


def deep_merge(base: dict, over: dict) -> dict:
    """`over` on top of `base`, table by table: a variant that replaces [macro.imagenet] keeps
    the base's other macros. Lists and values are replaced whole."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _is_file(ref: str) -> bool:
    try:
        return Path(ref).is_file()
    except OSError:  # a name too long to be a path is not one
        return False


def _from_doc(doc: dict, source: str) -> SearchSpace | CellSpace | Nb201Space:
    where = f"space {source}"
    schema.check(doc, where)
    try:
        if doc.get("kind", "layers") == "cells":
            return cells.from_doc(doc, source, _params(doc, 32, 10))
        if doc.get("kind") == "nb201":
            return nb201.from_doc(doc, source, _params(doc, 32, 10))
        space = SearchSpace(
            name=str(doc["name"]),
            description=str(doc.get("description", "")),
            ops=tuple(doc["ops"]),
            skip_on_reshape=doc.get("skip_on_reshape", "forbid"),
            activation=doc.get("activation", "relu6"),
            expand_e1=bool(doc.get("expand_e1", False)),
            macros=doc["macro"],
            params=_params(doc, 224, 1000),
            source=source,
            keys=doc.get("keys", "none"),
        )
    except KeyError as e:
        raise UserError(f"{where}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None
    return _validated(space)


def _params(doc: dict, resolution: int, num_classes: int) -> Params:
    """A space file's [params]; what it leaves out comes from its macro's table, then the kind."""
    p = doc["params"]
    macro = str(p.get("macro", next(iter(doc["macro"]))))
    own = doc["macro"].get(macro, {})
    return Params(
        macro=macro,
        resolution=int(p.get("resolution", own.get("resolution", resolution))),
        width_mult=float(p.get("width_mult", 1.0)),
        num_classes=int(p.get("num_classes", own.get("num_classes", num_classes))),
    )


def _validated(space: SearchSpace) -> SearchSpace:
    where = check_params(space)
    if space.skip_on_reshape not in ("forbid", "conv1x1", "conv1x1_bn"):
        raise UserError(f"{where}: skip_on_reshape must be 'forbid', 'conv1x1' or 'conv1x1_bn'")
    if space.activation not in ("relu", "relu6"):
        raise UserError(f"{where}: activation must be 'relu' or 'relu6'")
    if len(set(space.ops)) != len(space.ops) or not space.ops:
        raise UserError(f"{where}: ops must be a non-empty list without repeats")
    for o in space.ops:
        parse_op(o)
    try:
        for m in space.macros.values():
            for f in m.get("fixed", []):
                parse_op(f["op"])
            if not m["stages"]:
                raise UserError(f"{where}: a macro needs at least one stage")
        layers = space.layers
    except KeyError as e:
        raise UserError(f"{where}: macro is missing key {e.args[0]!r}") from None
    bad = [l.index for l in layers if not l.ops]
    if bad:
        raise UserError(f"{where}: layers {bad} allow no op")
    for block in (*space.fixed, *layers):
        for name in (block.ops if isinstance(block, LayerSpec) else (block.op,)):
            o = parse_op(name)
            if o.is_skip:
                continue
            if o.kernel % 2 == 0:  # "same" padding k // 2 keeps the shape only for odd kernels
                raise UserError(f"{where}: op {name}: kernel sizes must be odd")
            if block.in_ch % o.groups or block.out_ch % o.groups:
                raise UserError(f"{where}: op {name} at {block.in_ch}->{block.out_ch} channels: "
                                f"its {o.groups} groups must divide both")
    return space
