"""Published nets as named archs: `zoo:NAME` is the net's arch string on the space variant that
reproduces it (the base space `extends`-ed with the published macro), with the published counts.

A zoo file is a space file under [space] plus `arch`, `paper` and [published]; it only reads
TOML, so the space module can load a zoo space without a cycle.
"""

from __future__ import annotations

import tomllib
from importlib import resources

from nasctl.errors import UserError
from nasctl.validate import shown

PREFIX = "zoo:"
ZOO = resources.files("nasctl.space") / "zoo"


def zoo_names() -> list[str]:
    return sorted(p.name.removesuffix(".toml") for p in ZOO.iterdir() if p.name.endswith(".toml"))


def is_zoo(ref: object) -> bool:
    return str(ref).startswith(PREFIX)


def zoo_entry(ref: str) -> dict:
    """The zoo file that `zoo:NAME` names; an unknown name lists the zoo."""
    name = str(ref).removeprefix(PREFIX)
    if name not in zoo_names():
        raise UserError(f"unknown zoo net {shown(name)} (zoo: {', '.join(zoo_names())})")
    return tomllib.loads((ZOO / f"{name}.toml").read_text())
