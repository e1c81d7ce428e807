"""One interface for reaching a device's agent, whatever carries the bytes (httpx-style).

A transport stages model files where the agent can read them and starts the agent; the agent
then speaks JSON lines over a pair of streams. The profiler only ever sees `Transport` and
`AgentSession`, so local, SSH and adb devices are driven by the same loop.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

from nasctl.errors import DeviceUnreachable, NasctlError, UserError


class AgentDied(Exception):
    """The agent's stream ended while a reply was due."""


class LinkLost(AgentDied):
    """The connection to the device dropped (the agent itself may be fine): reconnect, not skip."""


class AgentSession:
    """The host end of a running agent: request lines out, JSON rows back."""

    def __init__(self, stdin, stdout, describe_exit, on_note=lambda text: None):
        self._in, self._out, self._describe_exit, self._on_note = stdin, stdout, describe_exit, on_note
        hello = self._read()
        if "fatal" in hello:
            if hello.get("kind") == "config":
                raise UserError(f"device profile does not work on this device: {hello['fatal']}")
            raise DeviceUnreachable(f"agent could not start: {hello['fatal']}")
        self.facts: dict = hello["facts"]

    def _read(self) -> dict:
        """The next protocol line; a remote shell's own chatter (banners, warnings) is skipped.

        Heartbeats only prove the link is alive (a stream with a read timeout raises
        TimeoutError when they stop, and that is a lost link, not a dead agent).
        """
        while True:
            try:
                line = self._out.readline()
            except TimeoutError as e:
                raise LinkLost(f"no word from the agent for too long ({e or 'read timed out'})") from None
            if not line:
                raise AgentDied(self._describe_exit())
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "waiting" in doc:
                    self._on_note(doc["waiting"])
                elif "beat" not in doc:
                    return doc

    def measure(self, key: str, model: str) -> dict:
        try:
            self._in.write(json.dumps({"key": key, "model": model}) + "\n")
            self._in.flush()
        except (BrokenPipeError, OSError):
            raise AgentDied(self._describe_exit()) from None
        row = self._read()
        if row.get("key") != key:
            raise AgentDied(f"agent answered for {row.get('key')!r}, expected {key!r}")
        return row


def last_json(text: str, where: str, stderr: str = "") -> dict:
    """The last JSON object line of a one-shot agent command; a "fatal" one is the device's refusal."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            doc = json.loads(line)
            if "fatal" in doc:
                raise NasctlError(f"{where}: {doc['fatal']}")
            return doc
    tail = stderr.strip().splitlines()[-1:] or ["no output"]
    raise DeviceUnreachable(f"{where}: the agent printed no result ({tail[0][:300]})")


class Transport(ABC):
    name: str
    batch_size = 1  # models staged at a time

    @abstractmethod
    def start_agent(self, config: dict, on_note=lambda text: None) -> AgentSession:
        """Start the agent with this measurement config; raise DeviceUnreachable if it can't.

        `on_note` hears what the user should know while waiting (device lock, reconnects)."""

    @abstractmethod
    def stage(self, models: list[Path]) -> list[str]:
        """Make model files readable by the agent, in one batch between timed runs (copying
        while a model is timed would load the device); returns the paths the agent opens."""

    def unstage(self, remote: str) -> None:  # noqa: B027 - a no-op where nothing was copied
        """Remove a staged copy once it has been timed (the host's file is the caller's)."""

    @abstractmethod
    def run_agent(self, args: list[str]) -> dict:
        """Run one agent subcommand to completion (e.g. build-engine); its last JSON line."""

    @abstractmethod
    def fetch(self, remote: str, local: Path) -> None:
        """Copy a file the agent made back to this host."""

    def close(self) -> None:  # noqa: B027 - a no-op where nothing is held
        """Stop the agent and free the connection."""
