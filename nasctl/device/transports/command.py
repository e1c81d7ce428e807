"""A device that is a command: a harness nasctl does not know (a vendor SDK, a simulator, a farm
behind a web API, a tabular benchmark's latency table) times each arch, and nasctl only fills in
its placeholders and reads the figures off its output.

The profile says `transport = "command"` and `command = "... {model} {arch} ..."`. Each
placeholder is filled in shell-quoted: `{model}` the exported file (in the profile's runtime
format; not exported at all where the command does not name it), `{arch}` the canonical arch
string, `{key}` the arch id, `{host}` one of `--host`'s values (a fleet of harnesses). The
command reports `latency_ms=<value>` (and `energy_mj=<value>` where it has one) on its output;
the last of each counts. A non-zero exit, a timeout or a missing value is an error row, as for an
agent that dies, and the run goes on.
"""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from nasctl.device.transports.base import Session, Transport
from nasctl.errors import UserError
from nasctl.shellcmd import fill
from nasctl_agents import protocol as P

PLACEHOLDERS = ("model", "arch", "key", "host")
_FIGURE = re.compile(r"\b(latency_ms|energy_mj)\s*=\s*(\S+)")
TIMEOUT_S = 600.0  # a harness that hangs becomes an error row after this long (profile: timeout_s)


def read_figures(text: str) -> dict[str, float]:
    """The last `latency_ms=` and `energy_mj=` values printed; a value that is not a finite
    positive number is left out (and so reported as missing)."""
    out: dict[str, float] = {}
    for name, value in _FIGURE.findall(text):
        try:
            v = float(value)
        except ValueError:
            out.pop(name, None)
            continue
        if v > 0 and v < float("inf"):
            out[name] = v
        else:
            out.pop(name, None)
    return out


@dataclass(frozen=True)
class CommandTarget:
    template: str
    timeout_s: float
    host: str | None


class CommandSession(Session):
    """One command run per arch; `halt` kills the one in flight (its whole process group)."""

    def __init__(self, target: CommandTarget):
        self.target = target
        self._proc: subprocess.Popen | None = None
        self.halted = False
        self.facts = {"host": target.host or platform.node(), "cpu_model": f"command: {target.template}",
                      "machine": None, "python": None, "runtime_version": None, "agent_version": "command",
                      "emulated": None, "energy_source": "command", "os": platform.platform()}

    def measure(self, key: str, model: str, arch: str = "") -> dict:
        cmd = fill(self.target.template, model=model, arch=arch, key=key, host=self.target.host or "")
        started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        t0 = time.perf_counter()
        with tempfile.TemporaryFile("w+") as out:
            self._proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          text=True, start_new_session=True)
            try:
                code = self._proc.wait(timeout=self.target.timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                self._kill()
                code, timed_out = self._proc.wait(), True
            out.seek(0)
            text = out.read()
        row = {"timed_s": time.perf_counter() - t0, "started_at": started, "command_exit": code,
               "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "n_runs": None}
        figures = read_figures(text)
        if timed_out:
            why = f"command timed out after {self.target.timeout_s:g} s"
        elif code != 0:
            why = f"command exited with code {code}: {P.last_line(text, 'no output')}"
        elif "latency_ms" not in figures:
            why = f"command printed no latency_ms=<value> ({P.last_line(text, 'no output')})"
        else:
            return {**row, "status": "ok", "latency_ms": figures["latency_ms"], "energy_mj": figures.get("energy_mj"),
                    "energy_note": None if "energy_mj" in figures else "the command printed no energy_mj"}
        return {**row, "status": "error", "error": why[:500]}

    def _kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def halt(self) -> None:
        self.halted = True
        self._kill()


class CommandTransport(Transport):
    name = "command"

    def __init__(self, target: CommandTarget):
        self.target = target

    def start_agent(self, config: dict, on_note=lambda text: None) -> CommandSession:
        return CommandSession(self.target)

    def stage(self, models: list[Path]) -> list[str]:
        return [str(m) for m in models]

    def run_agent(self, args: list[str]) -> dict:
        raise UserError(f"a command device runs only its command: {args[0]} is an agent's job")

    def fetch(self, remote: str, local: Path) -> None:
        raise UserError("a command device has no files to fetch")
