"""One interface for reaching a device's agent, whatever carries the bytes (httpx-style).

A transport stages model files where the agent can read them and starts the agent; the agent
then speaks JSON lines over a pair of streams. The profiler only ever sees `Transport` and
`Session` (an agent's, or adb's benchmark_model), so local, SSH and adb devices are driven by
the same loop.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import subprocess
import tempfile
import zipfile
from abc import ABC, abstractmethod
from importlib import resources
from pathlib import Path

from nasctl.errors import DeviceUnreachable, NasctlError, UserError
from nasctl_agents import protocol as P

AGENT_FILES = ("agent.py", "protocol.py")  # stdlib-only: what runs on the board


@functools.cache
def agent_app() -> Path:
    """The agent as one zipapp (agent.py, protocol.py, a __main__), built reproducibly: fixed
    timestamps and order, so its content hash, which names the remote folder, changes only
    when the code does. Cached per hash under ~/.cache/nasctl."""
    from nasctl.tables import atomic_write

    src = resources.files("nasctl_agents")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        files = {"__main__.py": b"import sys\n\nfrom agent import main\n\nsys.exit(main())\n",
                 **{name: (src / name).read_bytes() for name in AGENT_FILES}}
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr, info.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    data = buf.getvalue()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nasctl"
    path = root / f"agent-{hashlib.sha256(data).hexdigest()[:12]}.pyz"
    if not path.exists():  # named by its content, and written whole (atomic_write)
        atomic_write(path, data, output=False)
    return path


def agent_digest() -> str:
    """What names an agent build on a device (its folder): the zipapp's content hash."""
    return agent_app().name.removeprefix("agent-").removesuffix(".pyz")


class AgentDied(Exception):
    """The agent's stream ended while a reply was due."""


class LinkLost(AgentDied):
    """The connection to the device dropped (the agent itself may be fine): reconnect, not skip."""


class Session(ABC):
    """What the profiler talks to once a device is ready: its facts, then one row per model."""

    facts: dict

    @abstractmethod
    def measure(self, key: str, model: str, arch: str = "") -> dict:
        """Time one staged model (of the arch string `arch`, which a command device passes on);
        a row carrying `key` (status error, not an exception, when the model fails: only a dead
        agent or a lost link raises)."""

    @abstractmethod
    def halt(self) -> None:
        """Stop now, from another thread, even mid-measurement (the user pressed Ctrl-C): a
        `measure` in flight ends soon, with AgentDied or a row the caller must not keep."""


class AgentSession(Session):
    """The host end of a running agent: request lines out, JSON rows back."""

    def __init__(self, stdin, stdout, describe_exit, on_note=lambda text: None, kill=lambda: None):
        self._in, self._out, self._describe_exit, self._on_note, self._kill = stdin, stdout, describe_exit, on_note, kill
        self.halted = False
        hello = self._read()
        if P.FATAL in hello:
            if hello.get(P.KIND) == "config":
                raise UserError(f"device profile does not work on this device: {hello[P.FATAL]}")
            raise DeviceUnreachable(f"agent could not start: {hello[P.FATAL]}")
        self.facts: dict = hello[P.FACTS]

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
                raise AgentDied("stopped by the host" if self.halted else self._describe_exit())
            if line.startswith("{"):
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if P.WAITING in doc:
                    self._on_note(doc[P.WAITING])
                elif P.BEAT not in doc:
                    return doc

    def measure(self, key: str, model: str, arch: str = "") -> dict:
        try:
            self._in.write(P.request(key, model))
            self._in.flush()
        except (BrokenPipeError, OSError):
            raise AgentDied(self._describe_exit()) from None
        row = self._read()
        if row.get(P.KEY) != key:
            raise AgentDied(f"agent answered for {row.get(P.KEY)!r}, expected {key!r}")
        return row

    def halt(self) -> None:
        """`kill` ends the agent's process or its link now: closing its input would only stop it
        once the model in flight is timed."""
        self.halted = True
        self._kill()


class ChildAgent:
    """An agent in a child process of this host, the local transport's (python) and adb's
    (`adb shell`): started with pipes, stopped by closing its stdin (adb's shell v2 forwards the
    EOF), its stderr kept to say why it died. It runs in a session of its own, out of reach of
    the terminal's Ctrl-C, which is for nasctl: nasctl then stops it (`Session.halt`)."""

    def __init__(self, where: str):
        self.where, self.proc = where, None
        self._stderr = tempfile.TemporaryFile(mode="w+")

    def start(self, argv: list[str], on_note) -> AgentSession:
        self.stop()
        self._stderr.seek(0)
        self._stderr.truncate()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                         text=True, bufsize=1, start_new_session=True)
        except OSError as e:
            raise DeviceUnreachable(f"cannot start the agent on {self.where}: {e}") from None
        return AgentSession(self.proc.stdin, self.proc.stdout, self._describe_exit, on_note, self.proc.terminate)

    def _describe_exit(self) -> str:
        code = self.proc.wait(timeout=30) if self.proc else None
        self._stderr.seek(0)
        return f"agent on {self.where} exited with code {code}: {P.last_line(self._stderr.read())}".rstrip(": ")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


def last_json(text: str, where: str, stderr: str = "") -> dict:
    """The last JSON object line of a one-shot agent command; a "fatal" one is the device's refusal."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            doc = json.loads(line)
            if P.FATAL in doc:
                raise NasctlError(f"{where}: {doc[P.FATAL]}")
            return doc
    raise DeviceUnreachable(f"{where}: the agent printed no result ({P.last_line(stderr, 'no output')})")


class Transport(ABC):
    """Reaches one device. A context manager: `with open_transport(...) as t:` closes it."""

    name: str
    batch_size = 1  # models staged at a time
    reconnects = 0  # links lost and re-established (SSH counts them; a pipe never reconnects)

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @abstractmethod
    def start_agent(self, config: dict, on_note=lambda text: None) -> Session:
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
