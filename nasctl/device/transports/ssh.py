"""The SSH transport (paramiko): deploy the agent by SFTP, run it with a quoted argv, stream rows.

Host keys are checked against known_hosts; an unknown key is refused unless the user asked to
trust it on first use, and a changed key is always refused. The agent sends a heartbeat, so a
silent link is told apart from a long measurement; when the link drops, the session reconnects
with backoff, restarts the agent (it waits for the old one's device lock) and asks again for
the row in flight. Rows are only ever stored once received, so nothing is lost or duplicated.
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import shlex
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import paramiko

from nasctl.device.transports.base import AgentSession, LinkLost, Transport, agent_app, agent_digest, last_json
from nasctl.errors import DeviceUnreachable, UserError

# paramiko logs a traceback for each failed handshake; each becomes one line of ours instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in; `[ssh]` in the device profile, `--host` overriding it."""

    host: str
    user: str | None = None
    port: int = 22
    key: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    python: str = "python3"
    workdir: str = ".nasctl"  # relative to the login's home
    connect_timeout_s: float = 10.0
    heartbeat_s: float = 2.0
    link_timeout_s: float = 15.0  # no line (not even a heartbeat) for this long: the link is down
    reconnect_s: float = 300.0  # keep trying this long before giving up on the device
    upload_batch: int = 8
    sysfs_root: str = "/"

    @classmethod
    def from_profile(cls, table: dict, host: str | None = None, sysfs_root: str = "/") -> "SshTarget":
        """`host` is `[user@]address[:port]`, as on the command line; it overrides the profile."""
        doc = dict(table)
        if host:
            user, _, addr = host.rpartition("@")
            if not addr:
                raise UserError(f"--host {host!r} has no address (want [user@]address[:port])")
            if addr.count(":") == 1:  # a bare IPv6 address has several; give it in the profile
                addr, port = addr.split(":")
                doc["port"] = port
            doc.update(host=addr, **({"user": user} if user else {}))
        if not doc.get("host"):
            raise UserError("the device profile's [ssh] table names no host; pass --host user@address")
        unknown = set(doc) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"[ssh]: unknown key(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(cls.__dataclass_fields__)})")
        try:  # TOML and the command line give strings where numbers are meant
            nums = {k: (int if k in ("port", "upload_batch") else float)(v) for k, v in doc.items()
                    if k == "port" or k == "upload_batch" or k.endswith("_s")}
            t = cls(**{**doc, **nums, "sysfs_root": sysfs_root})
        except (TypeError, ValueError) as e:
            raise UserError(f"[ssh]: {e}") from None
        if not all(math.isfinite(v) for v in nums.values()):
            raise UserError(f"[ssh]: {', '.join(k for k, v in nums.items() if not math.isfinite(v))} must be finite")
        if t.heartbeat_s <= 0 or t.link_timeout_s <= 2 * t.heartbeat_s or t.upload_batch < 1:
            raise UserError("[ssh]: need heartbeat_s > 0, link_timeout_s > 2 * heartbeat_s, upload_batch >= 1")
        if not 1 <= t.port <= 65535:  # paramiko would wrap 99999 round to another port
            raise UserError(f"[ssh]: port {t.port} is not a TCP port (1-65535)")
        return t

    @property
    def where(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"


def connect(t: SshTarget, trust_new_host_key: bool = False) -> paramiko.SSHClient:
    """Log in with a key (or the ssh-agent), the host key checked; every failure is one line."""
    client = paramiko.SSHClient()
    known = Path(t.known_hosts).expanduser()
    if trust_new_host_key:
        known.parent.mkdir(parents=True, exist_ok=True)
        known.touch(exist_ok=True)
    if known.exists():
        client.load_host_keys(str(known))  # also where a trusted new key is saved
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy() if trust_new_host_key else paramiko.RejectPolicy())
    key = str(Path(t.key).expanduser()) if t.key else None
    if key and not Path(key).is_file():
        raise UserError(f"ssh key {t.key} does not exist")
    try:
        client.connect(t.host, t.port, username=t.user, key_filename=key, timeout=t.connect_timeout_s,
                       banner_timeout=t.connect_timeout_s, auth_timeout=t.connect_timeout_s,
                       allow_agent=True, look_for_keys=key is None)
    except paramiko.BadHostKeyException as e:
        raise UserError(f"ssh {t.where}: host key CHANGED (got {e.key.get_name()} "
                        f"{e.key.fingerprint}); refusing. If the device was really reinstalled, "
                        f"remove its line from {known}") from None
    except paramiko.PasswordRequiredException:
        raise UserError(f"ssh key {t.key} is encrypted; load it into ssh-agent") from None
    except paramiko.AuthenticationException as e:
        raise UserError(f"ssh {t.where}: authentication failed ({e}); "
                        f"check the user and that {t.key or 'your key'} is in its authorized_keys") from None
    except paramiko.SSHException as e:
        if "not found in known_hosts" in str(e):
            raise UserError(f"ssh {t.where}: host key unknown (not in {known}); refusing. Add it with "
                            f"ssh-keyscan, or pass --trust-new-host-key to trust it on first use") from None
        if "not a valid" in str(e) or "key" in str(e).lower() and key:
            raise UserError(f"ssh key {t.key}: {e}") from None
        raise DeviceUnreachable(f"ssh {t.where}: {e}") from None
    except (OSError, EOFError) as e:  # refused, no route, timed out, name not known
        raise DeviceUnreachable(f"ssh {t.where}: {getattr(e, 'strerror', None) or e or type(e).__name__}") from None
    return client


class SshTransport(Transport):
    name = "ssh"

    def __init__(self, target: SshTarget, trust_new_host_key: bool = False):
        self.t = target
        self.trust = trust_new_host_key
        self.reconnects = 0
        self.on_note = lambda text: None  # the running session's, so a reconnect from any path is heard
        self.batch_size = target.upload_batch
        self._staged: dict[str, Path] = {}  # remote path -> host file, to upload again after a drop
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._chan: paramiko.Channel | None = None
        self._stderr: list[str] = []
        self._connect()
        home = self._sftp.normalize(".")
        self._work = posixpath.join(home, self.t.workdir)
        self._models = posixpath.join(self._work, f"models-{uuid.uuid4().hex[:12]}")
        self._agent = self._deploy_agent()
        self._sftp.mkdir(self._models)

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> None:
        self._client = connect(self.t, self.trust)
        self.trust = False  # a key trusted once is in known_hosts; a later change is refused
        self._client.get_transport().set_keepalive(max(1, int(self.t.heartbeat_s)))
        # A 64 MiB window instead of 2 MiB: uploads no longer stall on window updates (127 -> 178
        # MB/s over a veth here; more over a link with real latency).
        self._sftp = paramiko.SFTPClient.from_transport(self._client.get_transport(), window_size=1 << 26)
        self._sftp.get_channel().settimeout(self.t.link_timeout_s)

    def reconnect(self, why: str, since: int) -> int:
        """Reconnect, unless the link was already replaced after connection number `since` (an
        upload may have done it first); returns the current connection's number. Backs off 1, 2,
        4 ... 30 s between tries, for up to reconnect_s."""
        if self.reconnects != since:
            return self.reconnects
        self.on_note(f"{why}; reconnecting")
        self._drop()
        deadline, wait = time.monotonic() + self.t.reconnect_s, 1.0
        while True:
            try:
                self._connect()
                self.reconnects += 1
                return self.reconnects
            except DeviceUnreachable as e:
                if time.monotonic() + wait > deadline:
                    raise DeviceUnreachable(f"{why}; no connection again within {self.t.reconnect_s:.0f} s: {e}") from None
            time.sleep(wait)
            wait = min(30.0, 2 * wait)

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._sftp = self._chan = None

    # -- files ------------------------------------------------------------------------------
    def _mkdirs(self, path: str) -> None:
        parts = []
        while path not in ("", "/"):
            parts.append(path)
            path = posixpath.dirname(path)
        for p in reversed(parts):
            try:
                self._sftp.stat(p)
            except FileNotFoundError:
                self._sftp.mkdir(p)

    def _put(self, local: Path, remote: str) -> None:
        """Upload to a temporary name and rename, so a dropped link never leaves half a file."""
        try:
            if self._sftp.stat(remote).st_size == local.stat().st_size:
                return
        except FileNotFoundError:
            pass
        tmp = f"{remote}.part"
        self._sftp.put(str(local), tmp)
        self._sftp.posix_rename(tmp, remote)

    def _deploy_agent(self) -> str:
        """One folder per agent build (`agent-<hash of the zipapp>`): redeploys only what changed."""
        folder = posixpath.join(self._work, f"agent-{agent_digest()}")
        self._mkdirs(folder)
        path = posixpath.join(folder, "agent.pyz")
        self._put(agent_app(), path)
        return path

    def stage(self, models: list[Path]) -> list[str]:
        out = []
        for m in models:
            remote = posixpath.join(self._models, m.name)
            self._with_link(lambda m=m, remote=remote: self._put(m, remote))
            self._staged[remote] = m
            out.append(remote)
        return out

    def restage(self) -> None:
        """Upload the staged models again after a reconnect (a new session may find them gone)."""
        for remote, local in list(self._staged.items()):
            self._put(local, remote)

    def unstage(self, remote: str) -> None:
        self._staged.pop(remote, None)
        try:
            self._sftp.remove(remote)
        except (OSError, AttributeError):  # gone, or the link is down: removed with the folder at close
            pass

    def _with_link(self, op):
        """Run an SFTP operation; a dropped link means reconnect and do it again."""
        while True:
            try:
                return op()
            except (OSError, EOFError, paramiko.SSHException) as e:
                if self._client is not None and self._client.get_transport().is_active() and not isinstance(e, TimeoutError):
                    raise DeviceUnreachable(f"ssh {self.t.where}: sftp: {e}") from None
                self.reconnect(f"link to {self.t.where} lost during upload ({e})", self.reconnects)

    def fetch(self, remote: str, local: Path) -> None:
        tmp = local.with_name(local.name + ".part")
        self._with_link(lambda: self._sftp.get(remote, str(tmp)))
        tmp.replace(local)

    def run_agent(self, args: list[str]) -> dict:
        """One agent subcommand, quoted like the server; it may run long (an engine build)."""
        chan = self._client.get_transport().open_session(timeout=self.t.connect_timeout_s)
        chan.exec_command(shlex.join([self.t.python, self._agent, *args]))
        out = chan.makefile("r").read().decode(errors="replace")
        err = chan.makefile_stderr("r").read().decode(errors="replace")
        return last_json(out, f"{args[0]} on {self.t.where}", err)

    # -- the agent --------------------------------------------------------------------------
    def start_agent(self, config: dict, on_note=lambda text: None) -> AgentSession:
        self.on_note = on_note
        return SshSession(self, config, on_note)

    def open_agent(self, config: dict):
        """Start `agent serve` over a new channel; its (stdin, stdout)."""
        argv = [self.t.python, self._agent, "serve", "--config", json.dumps(config, sort_keys=True),
                "--sysfs-root", self.t.sysfs_root, "--heartbeat", str(self.t.heartbeat_s),
                "--lock", posixpath.join(self._work, "device.lock")]
        chan = self._client.get_transport().open_session(timeout=self.t.connect_timeout_s)
        chan.settimeout(self.t.link_timeout_s)
        chan.exec_command(shlex.join(argv))  # quoted: nothing in the config can reach the shell
        self._chan, self._stderr = chan, []
        err = chan.makefile_stderr("r")
        threading.Thread(target=self._drain, args=(err, self._stderr), daemon=True).start()
        return chan.makefile_stdin("w"), chan.makefile("r")

    def kill_agent(self) -> None:
        """Close the agent's channel: sshd then closes its pipes, and its next heartbeat, within
        heartbeat_s, fails and ends it (agent.heartbeat)."""
        if self._chan is not None:
            self._chan.close()

    @staticmethod
    def _drain(stream, sink: list[str]) -> None:
        try:
            for line in stream:
                sink.append(line.rstrip())
                del sink[:-20]
        except (OSError, EOFError):
            pass

    def describe_exit(self) -> str:
        chan = self._chan
        if chan is None or not chan.get_transport().is_active():
            raise LinkLost(f"ssh link to {self.t.where} closed")
        code = chan.recv_exit_status() if chan.status_event.wait(10) else None
        if code in (None, -1):
            raise LinkLost(f"ssh session to {self.t.where} ended without an exit status")
        tail = (self._stderr[-1:] or [""])[0][:300]
        hint = " (is python3 installed and onnxruntime importable there?)" if code == 127 or "No module" in tail else ""
        return f"agent on {self.t.where} exited with code {code}: {tail}{hint}".rstrip(": ")

    def close(self) -> None:
        if self._client is None:
            return
        try:
            if self._chan is not None and not self._chan.closed:
                self._chan.shutdown_write()  # EOF on the agent's stdin: it stops and frees the lock
                self._chan.status_event.wait(5)
            self._sftp.chdir(self._models)
            for name in self._sftp.listdir():
                self._sftp.remove(name)
            self._sftp.rmdir(self._models)
        except (OSError, EOFError, paramiko.SSHException):
            pass  # link down: a stale models folder is the only trace left behind
        self._drop()


class SshSession(AgentSession):
    """An agent session that survives a dropped link: reconnect, restart, ask again."""

    def __init__(self, transport: SshTransport, config: dict, on_note):
        self._t, self._config = transport, config
        self._generation = transport.reconnects  # which connection this agent's streams belong to
        super().__init__(*transport.open_agent(config), transport.describe_exit, on_note, transport.kill_agent)

    def _restart(self, why: Exception) -> None:
        host = self.facts.get("host")
        while True:
            self._generation = self._t.reconnect(f"link to {self._t.t.where} lost ({why})", self._generation)
            try:
                self._t.restage()
                AgentSession.__init__(self, *self._t.open_agent(self._config), self._t.describe_exit, self._on_note, self._t.kill_agent)
            except (LinkLost, OSError, EOFError, paramiko.SSHException) as e:
                why = e
                continue
            if self.facts.get("host") != host:
                raise DeviceUnreachable(f"after reconnecting, {self._t.t.where} is another device "
                                        f"({self.facts.get('host')!r}, was {host!r})")
            return

    def measure(self, key: str, model: str, arch: str = "") -> dict:
        while True:
            try:
                return super().measure(key, model, arch)
            except LinkLost as e:
                if self.halted:
                    raise
                self._restart(e)
