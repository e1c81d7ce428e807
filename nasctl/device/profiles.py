"""Device profiles: TOML files that say how a device is reached and how it measures.

A profile is looked up by name in $NASCTL_PROFILES (os.pathsep-separated folders), then
./profiles, then the profiles that ship with nasctl; or given as a path to a .toml file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from nasctl.errors import UserError
from nasctl.validate import OPSETS, shown

TRANSPORTS = ("local", "ssh", "adb", "command")
ALIASES = {"local": "local-cpu", "rpi": "rpi4"}  # the short names the docs and users use
RUNTIMES = ("onnxruntime", "tensorrt", "tflite")
# [protocol] keys that decide when the reference net is timed (nasctl.profile.drift), how long to
# cool down, and what counts as throttled: none changes a timing, so none is in the config id.
DRIFT_KEYS = ("reference", "ref_every", "ref_every_s")
SCHEDULE_KEYS = (*DRIFT_KEYS, "cooldown_c", "cooldown_max_s", "min_clock_ratio", "verify_max_drift")


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    transport: str
    runtime: str
    batch: int
    precision: str
    opset: int
    resolution: int | None
    runtime_options: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    energy: dict = field(default_factory=dict)
    power: dict = field(default_factory=dict)
    connection: dict = field(default_factory=dict)  # the [ssh] or [adb] table
    source: str = ""

    def input_shape(self, resolution: int) -> list[int]:
        r = self.resolution or resolution
        return [self.batch, 3, r, r]

    def agent_config(self, resolution: int) -> dict:
        """What the agent needs to time a model: runtime, its options, shape, protocol."""
        return {
            "runtime": self.runtime,
            **self.runtime_options,
            "input_shape": self.input_shape(resolution),
            "precision": self.precision,
            "protocol": self.protocol,
            "energy": {k: v for k, v in self.energy.items() if k != "sysfs_root"},
            **({"power": self.power} if self.power else {}),
        }

    @property
    def wants_model(self) -> bool:
        """Whether timing needs the exported model: a command device that never names {model}
        (a latency table) does not, and nothing is exported for it."""
        return self.transport != "command" or "{model}" in self.connection["command"]

    def command_target(self, host: str | None = None):
        from nasctl.device.transports.command import CommandTarget

        return CommandTarget(self.connection["command"], float(self.connection["timeout_s"]), host)

    def targets(self, hosts: list[str] | None = None, serials: list[str] | None = None) -> list[str | None]:
        """The boards to use: SSH hosts or adb serials given by the user (several shard a fleet),
        else the profile's own one (None); a command device's `{host}` values, likewise."""
        if hosts and serials:
            raise UserError("--host is for SSH devices, --serial for adb ones: not both")
        if hosts and self.transport == "command":
            if "{host}" not in self.connection["command"]:
                raise UserError(f"device {self.name!r} is a command without a {{host}} placeholder: --host does not apply")
            return list(hosts)
        if (hosts and self.transport != "ssh") or (serials and self.transport != "adb"):
            raise UserError(f"device {self.name!r} uses the {self.transport} transport: "
                            f"{'--host' if hosts else '--serial'} does not apply")
        return list(hosts or serials or [None])

    def config_id(self, space_hash: str, resolution: int, device_facts: dict) -> str:
        """Rows with the same config id were measured under the same conditions.

        It covers the network definition, the measurement settings and the kind of device (CPU
        and runtime version), so a resume never mixes rows from another kind of board or another
        setting, while boards of one kind (a fleet) share it; each row's `host` says which board.
        """
        doc = {
            "profile": self.name,
            "space": space_hash,
            # Energy sampling settings change no latency: rows stay comparable across them.
            "agent": {k: ({p: x for p, x in v.items() if p not in SCHEDULE_KEYS} if k == "protocol" else v)
                      for k, v in self.agent_config(resolution).items() if k != "energy"},
            "opset": self.opset,
            "cpu": device_facts.get("cpu_model"),
            "runtime_version": device_facts.get("runtime_version"),
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def profile_dirs() -> list[Path]:
    env = [Path(p) for p in os.environ.get("NASCTL_PROFILES", "").split(os.pathsep) if p]
    return [*env, Path("profiles"), Path(str(resources.files("nasctl_profiles")))]


def aliases_of(name: str) -> list[str]:
    """The short names that stand for a profile (`local` for `local-cpu`)."""
    return [a for a, n in ALIASES.items() if n == name]


def list_profiles() -> dict[str, Path]:
    """Profile name -> file, earlier folders shadowing later ones."""
    found: dict[str, Path] = {}
    for d in profile_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.toml")):
                found.setdefault(f.stem, f)
    return found


def load_device(ref: str) -> DeviceProfile:
    path = Path(ref)
    try:
        named = not (ref.endswith(".toml") or path.is_file())
    except OSError:  # a name too long to be a path is not one
        named = True
    if named:
        known = list_profiles()
        if ref not in known and ALIASES.get(ref) in known:
            ref = ALIASES[ref]
        if ref not in known:
            names = ", ".join(f"{k} ({', '.join(aliases_of(k))})" if aliases_of(k) else k for k in known)
            raise UserError(f"unknown device {shown(ref)} (profiles: {names}; or a .toml file)")
        path = known[ref]
    try:
        doc = tomllib.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read device profile {shown(ref)}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"device profile {shown(ref)}: not a text (TOML) file") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"device profile {ref}: {e}") from None
    return _from_doc(doc, str(path))


def _connection(doc: dict, transport: str, where: str) -> dict:
    """The [ssh] or [adb] table; a command device's `command` and `timeout_s`, checked."""
    if transport != "command":
        return dict(doc.get(transport, {}))
    from nasctl.device.transports.command import PLACEHOLDERS, TIMEOUT_S
    from nasctl.shellcmd import placeholders

    command, timeout = doc["command"], doc.get("timeout_s", TIMEOUT_S)
    if not isinstance(command, str) or not command.strip():
        raise UserError(f"{where}: command is the command line that times one arch, e.g. \"harness {{model}}\"")
    placeholders(command, PLACEHOLDERS, f"{where}: command")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise UserError(f"{where}: timeout_s must be a positive number of seconds")
    return {"command": command, "timeout_s": float(timeout)}


def _from_doc(doc: dict, source: str) -> DeviceProfile:
    where = f"device profile {source}"
    try:
        model = doc.get("model", {})
        transport = doc["transport"]
        dev = DeviceProfile(
            name=str(doc.get("name", Path(source).stem)),
            description=str(doc.get("description", "")),
            transport=transport,
            runtime=doc["runtime"],
            batch=int(model.get("batch", 1)),
            precision=str(model.get("precision", "fp32")),
            opset=int(model.get("opset", 17)),
            resolution=int(model["resolution"]) if "resolution" in model else None,
            runtime_options=dict(doc.get("runtime_options", {})),
            # A command times what it times: no reference net unless the profile names one.
            protocol={**({"reference": "off"} if transport == "command" else {}), **doc.get("protocol", {})},
            energy=dict(doc.get("energy", {})),
            power=dict(doc.get("power", {})),
            connection=_connection(doc, transport, where),
            source=source,
        )
    except KeyError as e:
        raise UserError(f"{where}: missing key {e.args[0]!r}") from None
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None
    if not isinstance(dev.protocol.get("reference", ""), str):
        raise UserError(f"{where}: [protocol] reference is an arch string (or \"off\")")
    for table in ("runtime_options", "protocol", "energy", "power"):
        bad = [k for k, v in getattr(dev, table).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and not 0 <= v < math.inf]
        if bad:  # TOML reads nan and inf; the agent would time, or sleep, by them
            raise UserError(f"{where}: [{table}] {', '.join(bad)} must be finite numbers >= 0")
    if dev.transport not in TRANSPORTS:
        raise UserError(f"{where}: transport must be one of {', '.join(TRANSPORTS)}")
    if dev.runtime not in RUNTIMES:
        raise UserError(f"{where}: runtime must be one of {', '.join(RUNTIMES)}")
    if not 1 <= dev.batch <= 4096 or not OPSETS[0] <= dev.opset <= OPSETS[1]:
        raise UserError(f"{where}: [model] needs 1 <= batch <= 4096 and {OPSETS[0]} <= opset <= {OPSETS[1]}")
    if dev.resolution is not None and not 8 <= dev.resolution <= 4096:
        raise UserError(f"{where}: [model] resolution must be 8-4096")
    if dev.runtime == "onnxruntime" and dev.precision != "fp32":
        raise UserError(f"{where}: onnxruntime profiles time fp32 models only")
    return dev
