"""The local transport: the agent runs as a subprocess of this machine's Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from nasctl.device.transports.base import AgentSession, ChildAgent, Transport, agent_app, last_json

# Two local profiles at once would time each other's load: the second waits for the first.
LOCK = Path.home() / ".cache" / "nasctl" / "local-agent.lock"


class LocalTransport(Transport):
    name = "local"

    def __init__(self, sysfs_root: str = "/"):
        self.sysfs_root = sysfs_root
        self._agent = ChildAgent("this host")

    def start_agent(self, config: dict, on_note=lambda text: None) -> AgentSession:
        # This process exports the next model while the agent times; that load is ours, not foreign.
        return self._agent.start([sys.executable, str(agent_app()), "serve", "--config", json.dumps(config),
                                  "--sysfs-root", self.sysfs_root, "--exclude-pid", str(os.getpid()), "--lock", str(LOCK)],
                                 on_note)

    def stage(self, models: list[Path]) -> list[str]:
        return [str(m) for m in models]

    def run_agent(self, args: list[str]) -> dict:
        p = subprocess.run([sys.executable, str(agent_app()), *args], capture_output=True, text=True)
        return last_json(p.stdout, f"local agent {args[0]}", p.stderr)

    def fetch(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def close(self) -> None:
        self._agent.stop()
