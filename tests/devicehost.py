"""A "device host" for the SSH tests: real OpenSSH in its own network namespace.

The namespace is joined to this host by a veth pair, with addresses that exist only there, so
`ip link set ... down` really cuts the link. sshd runs as root in the namespace with a private
mount table, where a tmpfs that the test writes is bound over /sys/bus (INA3221 rail files) and
small `nvpmodel`/`tegrastats` stand-ins over /usr/local/bin; the test logs in as a plain user
with a key, and the agent runs there under a Python that has onnxruntime (no torch).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "nasctl-dev"
PORT = 2222
SSHD = "/usr/sbin/sshd"
CPUS = sorted(p.name for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*"))  # the board's CPUs are this machine's
DEVICE_PYTHON = os.environ.get("NASCTL_DEVICE_PYTHON", "/opt/nasctl-device/bin/python")

NVPMODEL = """#!/bin/sh
# nvpmodel stand-in: the mode is the word in mode.txt beside this script
case "$1" in
  -q) echo "NV Power Mode: $(cat /usr/local/bin/mode.txt)"; echo 0 ;;
  *) echo "NVPM ERROR: root privileges required" >&2; exit 1 ;;
esac
"""


def unavailable() -> str | None:
    """Why the device host cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (ip netns, sshd, a test user)"
    for tool in ("ip", "ssh-keygen", "useradd", SSHD):
        if not shutil.which(tool):
            return f"{tool} not installed (Debian: openssh-server, iproute2)"
    if subprocess.run([DEVICE_PYTHON, "-c", "import onnxruntime"], capture_output=True).returncode:
        return f"no device Python with onnxruntime at {DEVICE_PYTHON} (tests/setup-hosts.sh makes it)"
    return None


def _run(*argv: str, **kw) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


class DeviceHost:
    def __init__(self, index: int = 0, client_key: Path | None = None):
        """`index` tells boards of one test apart (own namespace, subnet and user); a board given
        `client_key` lets in the same key as another one."""
        tag = f"{os.getpid() % 10000}{index}"
        self.netns = f"nasctl-dev-{tag}"
        self.veth = f"ndh{tag}"  # host end; the device end is nds<tag>
        octet = (os.getpid() + 101 * index) % 250 + 1
        self.address = f"10.213.{octet}.2"
        self.user = f"{USER}{index or ''}"
        self._client_key = client_key
        self.dir = Path(tempfile.mkdtemp(prefix="nasctl-devhost-"))
        self.sys = self.dir / "sys"  # becomes the device's /sys/bus
        self.hw = self.dir / "hw"  # its thermal/ and cpu<N>/ become /sys/class/thermal and /sys/devices/system/cpu/cpu<N>
        self.bin = self.dir / "bin"  # becomes the device's /usr/local/bin
        self.key = self.dir / "client_ed25519"
        self.known_hosts = self.dir / "known_hosts"
        self._proc: subprocess.Popen | None = None
        try:
            self._user()
            self._keys()
            self._files()
            self._network(octet)
            self._sshd()
        except BaseException:
            self.close()
            raise

    def _user(self) -> None:
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            _run("useradd", "--create-home", "--shell", "/bin/sh", self.user)
        _run("usermod", "-p", "*", self.user)  # no password, but not "locked": sshd takes keys
        self.home = Path(pwd.getpwnam(self.user).pw_dir)

    def _keys(self) -> None:
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / "host_ed25519"))
        if self._client_key is None:
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        else:
            self.key = self._client_key
        pw = pwd.getpwnam(self.user)
        self._authorize(pw.pw_uid, pw.pw_gid)

    def _authorize(self, uid: int, gid: int) -> None:
        """The client key into the device user's authorized_keys (owned by `uid`:`gid`), and the
        host key into the client's known_hosts."""
        ssh = self.home / ".ssh"
        ssh.mkdir(mode=0o700, exist_ok=True)
        (ssh / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        for p in (ssh, ssh / "authorized_keys"):
            os.chown(p, uid, gid)
        (ssh / "authorized_keys").chmod(0o600)
        host_pub = (self.dir / "host_ed25519.pub").read_text().split()
        self.known_hosts.write_text(f"[{self.address}]:{PORT} {host_pub[0]} {host_pub[1]}\n")

    def _files(self) -> None:
        self.sys.mkdir()
        _run("mount", "-t", "tmpfs", "-o", "mode=755,size=1m", "nasctl-devsys", str(self.sys))
        self.hw.mkdir()
        _run("mount", "-t", "tmpfs", "-o", "mode=755,size=1m", "nasctl-devhw", str(self.hw))
        for d in ("thermal", *CPUS):
            (self.hw / d).mkdir()
        self.bin.mkdir(mode=0o755)
        (self.bin / "nvpmodel").write_text(NVPMODEL)
        (self.bin / "nvpmodel").chmod(0o755)
        self.set_mode("MAXN")
        (self.dir / "sshd_config").write_text(
            f"Port {PORT}\nListenAddress {self.address}\nHostKey {self.dir / 'host_ed25519'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\n"
            f"AllowUsers {self.user}\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n"
        )

    def _network(self, octet: int) -> None:
        peer = self.veth.replace("ndh", "nds")
        _run("ip", "netns", "add", self.netns)
        _run("ip", "link", "add", self.veth, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", self.netns)
        _run("ip", "addr", "add", f"10.213.{octet}.1/30", "dev", self.veth)
        _run("ip", "link", "set", self.veth, "up")
        for cmd in (["addr", "add", f"{self.address}/30", "dev", peer], ["link", "set", peer, "up"], ["link", "set", "lo", "up"]):
            _run("ip", "netns", "exec", self.netns, "ip", *cmd)

    def _sshd(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
        # `ip netns exec` gives the command its own mount table; the binds stay in there.
        # Its own UTS namespace too: the board has its own host name (the netns's name).
        hw = "".join(f"mount --bind {self.hw / d} /sys/devices/system/cpu/{d} && " for d in CPUS)
        script = (f"hostname {self.netns} && mount --bind {self.sys} /sys/bus && mount --bind {self.bin} /usr/local/bin && "
                  f"mount --bind {self.hw / 'thermal'} /sys/class/thermal && {hw}"
                  f"exec {SSHD} -D -e -f {self.dir / 'sshd_config'}")
        self._log = open(self.dir / "sshd.log", "w")
        self._proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", script],
                                      stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_for_sshd(10)

    def _wait_for_sshd(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                socket.create_connection((self.address, PORT), timeout=1).close()
                return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"sshd did not start: {(self.dir / 'sshd.log').read_text()[-500:]}") from None
                time.sleep(0.1)

    # -- what tests use -------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        (self.bin / "mode.txt").write_text(mode + "\n")

    def set_rails_mw(self, **rails: float) -> None:
        """INA3221 in the JetPack 4 iio layout: one in_power<N>_input (mW) + rail_name_<N> each."""
        dev = self.sys / "i2c/drivers/ina3221x/1-0040/iio:device0"
        dev.mkdir(parents=True, exist_ok=True)
        for i, (name, mw) in enumerate(rails.items()):
            (dev / f"rail_name_{i}").write_text(name + "\n")
            tmp = dev / f".in_power{i}_input"
            tmp.write_text(f"{int(mw)}\n")
            tmp.rename(dev / f"in_power{i}_input")  # the agent never reads half a number
        for f in dev.iterdir():  # rails of an earlier call that this one does not name
            if int(re.search(r"(\d+)", f.name).group(1)) >= len(rails):
                f.unlink()

    def set_thermal(self, temp_c: float, passive_trip_c: float | None = None) -> None:
        """One thermal zone at `temp_c`, with a passive trip point (where the kernel would cap clocks)."""
        zone = self.hw / "thermal" / "thermal_zone0"
        zone.mkdir(exist_ok=True)
        files = {"type": "cpu-thermal", "temp": int(temp_c * 1000)}
        if passive_trip_c is not None:
            files.update(trip_point_0_type="passive", trip_point_0_temp=int(passive_trip_c * 1000))
        for name, value in files.items():
            tmp = zone / f".{name}"
            tmp.write_text(f"{value}\n")
            tmp.rename(zone / name)

    def set_cpu_clock(self, ratio: float, top_khz: int = 2_000_000) -> None:
        """Every CPU's cpufreq: its clock now at `ratio` of its top."""
        for cpu in CPUS:
            d = self.hw / cpu / "cpufreq"
            d.mkdir(exist_ok=True)
            (d / "cpuinfo_max_freq").write_text(f"{top_khz}\n")
            (d / "scaling_cur_freq").write_text(f"{int(top_khz * ratio)}\n")

    def link(self, up: bool) -> None:
        _run("ip", "link", "set", self.veth, "up" if up else "down")

    def profile(self, path: Path, runtime: str = "onnxruntime", precision: str = "fp32", **ssh) -> Path:
        """A device profile for this host: fast protocol, INA3221 energy, MAXN required."""
        conf = {"host": self.address, "port": PORT, "user": self.user, "key": str(self.key),
                "known_hosts": str(self.known_hosts), "python": DEVICE_PYTHON,
                "heartbeat_s": 0.5, "link_timeout_s": 3.0, "reconnect_s": 60.0, **ssh}
        table = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in conf.items())
        path.write_text(f"""name = "testboard"
transport = "ssh"
runtime = "{runtime}"
[ssh]
{table}
[model]
batch = 1
precision = "{precision}"
[runtime_options]
threads = 1
[protocol]
warmup_runs = 2
warmup_s = 0.05
min_runs = 20
min_time_s = 0.3
max_time_s = 1.0
max_other_busy = 1.0
[energy]
source = "ina3221"
period_s = 0.005
[power]
mode = "MAXN"
mode_id = 0
require = true
set_if_allowed = false
""")
        return path

    def close(self) -> None:
        subprocess.run(["pkill", "-KILL", "-u", self.user], capture_output=True)
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._log.close()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True)
        subprocess.run(["umount", str(self.sys)], capture_output=True)
        subprocess.run(["umount", str(self.hw)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
