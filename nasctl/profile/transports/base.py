"""One interface for reaching a device's agent, whatever carries the bytes (httpx-style).

A transport stages model files where the agent can read them and starts the agent; the agent
then speaks JSON lines over a pair of streams. The profiler only ever sees `Transport` and
`AgentSession`, so local, SSH and adb devices are driven by the same loop.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

from nasctl.errors import DeviceUnreachable, UserError


class AgentDied(Exception):
    """The agent's stream ended while a reply was due."""


class AgentSession:
    """The host end of a running agent: request lines out, JSON rows back."""

    def __init__(self, stdin, stdout, describe_exit):
        self._in, self._out, self._describe_exit = stdin, stdout, describe_exit
        hello = self._read()
        if "fatal" in hello:
            if hello.get("kind") == "config":
                raise UserError(f"device profile does not work on this device: {hello['fatal']}")
            raise DeviceUnreachable(f"agent could not start: {hello['fatal']}")
        self.facts: dict = hello["facts"]

    def _read(self) -> dict:
        """The next protocol line; a remote shell's own chatter (banners, warnings) is skipped."""
        while True:
            line = self._out.readline()
            if not line:
                raise AgentDied(self._describe_exit())
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    pass

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


class Transport(ABC):
    name: str

    @abstractmethod
    def start_agent(self, config: dict) -> AgentSession:
        """Start the agent with this measurement config; raise DeviceUnreachable if it can't."""

    @abstractmethod
    def stage(self, model: Path) -> str:
        """Make a model file readable by the agent; returns the path the agent should open."""

    @abstractmethod
    def unstage(self, remote: str) -> None:
        """Remove a staged model once it has been timed."""

    def close(self) -> None:
        """Stop the agent and free the connection."""
