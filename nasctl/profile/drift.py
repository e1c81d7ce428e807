"""Drift: one fixed reference net, timed through every session, so that a row measured while the
device ran slow (another process on its core, heat, a clock that moved) can be read at the
device's base speed.

The reference is timed when a session starts, then every `ref_every` archs or `ref_every_s`
seconds ([protocol] keys, which schedule timings and change none, so they stay out of the
config id). Its timings go to a log beside the row store (`rows.ref.parquet` for
`rows.parquet`), which the report draws. The median of the first session's opening timings of a
(config, reference) pair on this machine is that config's base, kept under
$XDG_DATA_HOME/nasctl/references, so every store and every verify of the config is read against
one speed. Each row carries `ref_latency_ms`,
the median of the board's last (up to 3) ok reference timings before it, and `drift`, that over
the base.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from filelock import FileLock

from nasctl.device.profiles import DRIFT_KEYS
from nasctl.errors import UserError
from nasctl.tables import atomic_write, read_table, write_table

if TYPE_CHECKING:
    from nasctl.device.profiles import DeviceProfile
    from nasctl.space.space import Arch, SearchSpace

DEFAULTS = {"ref_every": 20, "ref_every_s": 120.0}
# A session starts with this many reference timings, and a row's device speed is the median of the
# board's last this many ok ones: under a co-runner on the agent's core one timing window is off
# by up to 10% (measured: 29.3 then 24.4 ms), the median of three by far less.
RECENT = 3
LOG_COLUMNS = ["config_id", "ref_arch_id", "session", "host", "at", "why", "status", "latency_ms", "other_cores_busy",
               "throttled", "clock_ratio", "temp_c"]


def settings(device: DeviceProfile) -> dict:
    """The schedule: `reference` "off" times no reference (and rows get no drift)."""
    return {**DEFAULTS, **{k: device.protocol[k] for k in DRIFT_KEYS if k in device.protocol}}


def reference_arch(space: SearchSpace, device: DeviceProfile) -> Arch | None:
    """The profile's `[protocol] reference` arch, or by default the arch of median MACs among 255
    drawn with seed 0: mid-cost, so its timing slows as a typical row's does, and the same arch
    on every run of this space."""
    text = settings(device).get("reference")
    if text == "off":
        return None
    if text:
        try:
            return space.parse(str(text))
        except UserError as e:
            raise UserError(f"device profile {device.source}: [protocol] reference: {e}") from None
    from nasctl.models.cost import cost_table

    idx = space.draw(np.zeros((255, *space.allowed.shape)), np.random.default_rng(0))
    macs, _ = cost_table(space).of(idx)
    return space.from_indices(idx[np.argsort(macs, kind="stable")[len(macs) // 2]])


def _base_file(config_id: str, ref_arch_id: str) -> Path:
    root = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return root / "nasctl" / "references" / f"{config_id}-{ref_arch_id}.json"


def base_speed(config_id: str, ref_arch_id: str, first: dict | None = None) -> dict | None:
    """The config's base speed ({"latency_ms", "at", "host"}) on this machine. With `first`,
    that becomes the base if there is none yet."""
    path = _base_file(config_id, ref_arch_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.exists():
            return json.loads(path.read_text())
        if first is not None:
            atomic_write(path, json.dumps(first).encode(), output=False)
        return first


class RefLog:
    """Every reference timing of a row store, appended under a file lock (fleets share it)."""

    def __init__(self, store_path: Path):
        self.path = store_path.with_suffix(".ref" + store_path.suffix)
        self._lock = FileLock(f"{self.path}.lock")

    def frame(self) -> pd.DataFrame:
        return read_table(self.path) if self.path.exists() else pd.DataFrame(columns=LOG_COLUMNS)

    def put(self, row: dict) -> None:
        with self._lock:
            df = self.frame()
            new = pd.DataFrame([{k: row.get(k) for k in LOG_COLUMNS}])
            write_table(new if df.empty else pd.concat([df, new], ignore_index=True), self.path)


class Reference:
    """One board's reference timings in one session: when the next is due, and the latest ok one."""

    def __init__(self, arch: Arch, model: str, log: RefLog, config_id: str, device: DeviceProfile):
        s = settings(device)
        self.arch, self.model, self.log, self.config_id = arch, model, log, config_id
        self.every, self.every_s = int(s["ref_every"]), float(s["ref_every_s"])
        self.session = uuid.uuid4().hex[:12]
        self.recent: list[float] = []
        found = base_speed(config_id, arch.id)
        self.base = found["latency_ms"] if found else None
        self._since, self._at = 0, None

    @property
    def latest(self) -> float | None:
        """The board's speed now: the median of its recent ok reference timings."""
        return float(np.median(self.recent)) if self.recent else None

    def due(self, now: float) -> bool:
        return (not self.recent or (self.every > 0 and self._since >= self.every)
                or (self.every_s > 0 and now - self._at >= self.every_s))

    def record(self, row: dict, host: str | None, why: str, now: float) -> dict:
        """Log one timing of the reference; an ok one joins the recent ones (whose median becomes
        the config's base once there are RECENT, if it has none yet). A disturbed or throttled one
        leaves the recent ones as they were, and the reference is due again before the next arch."""
        entry = {**row, "config_id": self.config_id, "ref_arch_id": self.arch.id, "session": self.session, "host": host,
                 "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "why": why}
        self.log.put(entry)
        if row.get("status") == "ok":
            self.recent, self._since, self._at = [*self.recent, float(row["latency_ms"])][-RECENT:], 0, now
            if self.base is None and len(self.recent) == RECENT:  # the first session's opening median
                first = {"latency_ms": self.latest, "at": entry["at"], "host": host}
                self.base = base_speed(self.config_id, self.arch.id, first)["latency_ms"]
        return entry

    def columns(self) -> dict:
        """What the next row carries; counts it towards the next reference timing."""
        self._since += 1
        return {"ref_arch_id": self.arch.id, "ref_latency_ms": self.latest,
                "drift": self.latest / self.base if self.latest and self.base else None}
