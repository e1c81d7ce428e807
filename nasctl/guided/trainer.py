"""The trainer: any command that trains one arch and says its top-1; and trained.parquet, where
every result lands as it arrives.

A trainer command holds `{arch}` (the canonical arch string) and may hold `{dir}` (a fresh folder
for that arch, under the search's output), `{key}` (the arch id) and `{slot}` (0 .. jobs-1: which
of the parallel runs it is, for pinning a GPU). Each is filled in shell-quoted. The command
reports top-1, a fraction in [0, 1], by printing `top1=<value>` (the last one counts) or by
writing `{dir}/metrics.csv` with a `top1` column (as `nasctl retrain` does: its last value
counts). A scheduler is a trainer too: `srun --gres=gpu:1 ...`, or any submit-and-wait command,
as long as it blocks until the run is done and passes the report through.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from nasctl.errors import UserError
from nasctl.shellcmd import fill, placeholders
from nasctl.space.space import Arch
from nasctl.tables import read_table, write_table
from nasctl.validate import shown
from nasctl_agents.protocol import last_line

PLACEHOLDERS = ("arch", "dir", "key", "slot")
_TOP1 = re.compile(r"\btop1\s*=\s*(\S+)")
COLUMNS = ["arch_id", "arch", "status", "top1", "error", "wall_s", "exit_code", "slot", "command", "dir", "started_at", "finished_at"]


@dataclass(frozen=True)
class Trainer:
    template: str

    def __post_init__(self):
        if "arch" not in placeholders(self.template, PLACEHOLDERS, "--trainer"):
            raise UserError(f"--trainer {shown(self.template)}: the command must hold {{arch}}, where the arch to train goes")

    @classmethod
    def retrain(cls, space: str, data: str, epochs: int, train_limit: int | None = None) -> Trainer:
        """nasctl's own: `nasctl retrain` with the search's space, data and epochs."""
        limit = f" --train-limit {train_limit}" if train_limit else ""
        return cls(f"{shlex.quote(sys.executable)} -m nasctl retrain {{arch}} --space {shlex.quote(space)} "
                   f"--data {shlex.quote(data)} --epochs {epochs}{limit} -o {{dir}} --quiet")

    def run(self, arch: Arch, folder: Path, slot: int) -> dict:
        """Train one arch; a row for trained.parquet, status ok with its top-1 or error with why.
        Its output goes to `<folder>.log`; a folder left by a killed run is cleared first."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        cmd = fill(self.template, arch=arch.string, dir=folder, key=arch.id, slot=slot)
        env = {**os.environ, "NASCTL_SLOT": str(slot)}
        started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
        log = folder.with_name(folder.name + ".log")
        with open(log, "w") as out:
            code = subprocess.run(cmd, shell=True, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        text = log.read_text(errors="replace")
        row = {"arch_id": arch.id, "arch": arch.string, "top1": None, "error": None, "wall_s": time.perf_counter() - t0,
               "exit_code": code, "slot": slot, "command": cmd, "dir": str(folder), "started_at": started,
               "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if code != 0:
            return {**row, "status": "error", "error": f"exited with code {code}: {last_line(text, 'no output')}"}
        top1, why = read_top1(text, folder)
        return {**row, "status": "ok", "top1": top1} if why is None else {**row, "status": "error", "error": why}


def read_top1(text: str, folder: Path) -> tuple[float | None, str | None]:
    """(top-1, None), or (None, why): the last `top1=` printed, else metrics.csv's last top1."""
    found = _TOP1.findall(text)
    source = "printed top1="
    if found:
        value = found[-1]
    else:
        metrics = folder / "metrics.csv"
        try:
            col = pd.to_numeric(pd.read_csv(metrics)["top1"], errors="coerce").dropna()
        except (OSError, KeyError, ValueError, pd.errors.ParserError):
            return None, f"printed no top1=<value> and wrote no {metrics.name} with a top1 column ({last_line(text, 'no output')})"
        if col.empty:
            return None, f"{metrics.name} holds no top1 value"
        value, source = col.iloc[-1], f"{metrics.name} top1"
    try:
        v = float(value)
    except ValueError:
        return None, f"{source} {shown(str(value))} is not a number"
    if not (math.isfinite(v) and 0 <= v <= 1):
        return None, f"{source} {v:g} is not a fraction in [0, 1]"
    return v, None


class Trained:
    """trained.parquet: one row per trainer run, rewritten whole (atomically) as each arrives, so
    a kill loses only the runs in flight, and a rerun trains nothing twice."""

    def __init__(self, path: Path):
        self.path, self._lock = path, threading.Lock()
        self.frame = read_table(path) if path.exists() else pd.DataFrame(columns=COLUMNS)
        missing = set(COLUMNS) - set(self.frame.columns)
        if missing:
            raise UserError(f"{path}: not a trained.parquet of nasctl (no {', '.join(sorted(missing))})")

    def put(self, row: dict) -> None:
        with self._lock:
            new = pd.DataFrame([{c: row.get(c) for c in COLUMNS}])
            self.frame = new if self.frame.empty else pd.concat([self.frame, new], ignore_index=True)
            write_table(self.frame, self.path)

    def ok(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "ok"]
