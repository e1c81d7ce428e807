"""The local transport: the agent runs as a subprocess of this machine's Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

from nasctl.errors import DeviceUnreachable
from nasctl.profile.transports.base import AgentSession, Transport, last_json

AGENT = Path(str(resources.files("nasctl_agents") / "agent.py"))
# Two local profiles at once would time each other's load: the second waits for the first.
LOCK = Path.home() / ".cache" / "nasctl" / "local-agent.lock"


class LocalTransport(Transport):
    name = "local"

    def __init__(self, sysfs_root: str = "/"):
        self.sysfs_root = sysfs_root
        self._proc: subprocess.Popen | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")

    def start_agent(self, config: dict, on_note=lambda text: None) -> AgentSession:
        self.close()
        # This process exports the next model while the agent times; that load is ours, not foreign.
        cmd = [sys.executable, str(AGENT), "serve", "--config", json.dumps(config),
               "--sysfs-root", self.sysfs_root, "--exclude-pid", str(os.getpid()), "--lock", str(LOCK)]
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                text=True, bufsize=1,
            )
        except OSError as e:
            raise DeviceUnreachable(f"cannot start the local agent: {e}") from None
        return AgentSession(self._proc.stdin, self._proc.stdout, self._describe_exit, on_note)

    def _describe_exit(self) -> str:
        code = self._proc.wait(timeout=10) if self._proc else None
        self._stderr.seek(0)
        tail = self._stderr.read().strip().splitlines()[-1:] or [""]
        return f"local agent exited with code {code}: {tail[0][:300]}".rstrip(": ")

    def stage(self, models: list[Path]) -> list[str]:
        return [str(m) for m in models]

    def run_agent(self, args: list[str]) -> dict:
        p = subprocess.run([sys.executable, str(AGENT), *args], capture_output=True, text=True)
        return last_json(p.stdout, f"local agent {args[0]}", p.stderr)

    def fetch(self, remote: str, local: Path) -> None:
        shutil.copyfile(remote, local)

    def close(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None
