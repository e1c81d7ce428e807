"""An emulated Raspberry Pi for the board tests: a Debian bookworm arm64 root filesystem (its own
Python 3.11, its own aarch64 onnxruntime and LiteRT wheels, its own OpenSSH server and a plain
device user), run through qemu-user-static (binfmt) in a network namespace of its own.

Built once per machine into a cache folder (`NASCTL_BOARD_CACHE`, default
~/.cache/nasctl-boards) and reused: `python tests/armboard.py build` builds it, or says where it
is. Every binary on the board (sshd, the shell, python3) is an aarch64 ELF that the kernel hands
to qemu-aarch64, so the agent meets aarch64 wheels, `platform.machine() == "aarch64"` and the
Python the board ships, as on a real Pi. Its timings mean nothing: the agent marks such rows
measured under emulation.

Build needs root, mmdebstrap, qemu-user-static and binfmt_misc (tests/setup-hosts.sh installs
and registers them); the wheels come from PyPI, the packages from Debian.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

CACHE = Path(os.environ.get("NASCTL_BOARD_CACHE", Path.home() / ".cache" / "nasctl-boards"))
ROOTFS = CACHE / "arm64-bookworm"
STAMP = ROOTFS / "etc" / "nasctl-board.json"  # written last: a build cut short has none
USER = "nasctl-pi"
PYTHON = "/opt/nasctl-device/bin/python"  # the board's venv, on its own python3
PACKAGES = ["python3", "python3-venv", "openssh-server", "procps", "iproute2", "ca-certificates"]
WHEELS = ["onnxruntime", "numpy", "ai-edge-litert"]
PLATFORMS = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"]


def unavailable() -> str | None:
    """Why the board cannot be built or started here, or None."""
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, ip netns, chroot)"
    for tool in ("mmdebstrap", "ip", "chroot", "ssh-keygen"):
        if not shutil.which(tool):
            return f"{tool} not installed (Debian: mmdebstrap, iproute2, openssh-client; tests/setup-hosts.sh)"
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not entry.exists() or "enabled" not in entry.read_text():
        return "no binfmt_misc entry for qemu-aarch64 (Debian: qemu-user-static; tests/setup-hosts.sh registers it)"
    return None


def _run(*argv, **kw) -> str:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True, **kw).stdout


def built() -> dict | None:
    """The build's record (seconds, bytes, versions) if a complete rootfs is cached."""
    try:
        return json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return None


def build(log=sys.stderr) -> dict:
    """The rootfs, built into the cache unless a complete one is there."""
    if (done := built()) is not None:
        return done
    why = unavailable()
    if why:
        raise RuntimeError(f"cannot build the arm64 board: {why}")
    t0 = time.monotonic()
    shutil.rmtree(ROOTFS, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"armboard: mmdebstrap bookworm arm64 -> {ROOTFS}", file=log)
    _run("mmdebstrap", "--mode=root", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}",
         "bookworm", ROOTFS)
    wheels = CACHE / "wheels-arm64"
    print("armboard: aarch64 wheels for the board's Python 3.11 from PyPI", file=log)
    _run(sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", *(f"--platform={p}" for p in PLATFORMS),
         "--python-version=3.11", "--implementation=cp", "-d", wheels, *WHEELS)
    shutil.copytree(wheels, ROOTFS / "tmp" / "wheels", dirs_exist_ok=True)
    chroot = ("chroot", ROOTFS)
    print("armboard: the board's venv and device user (under qemu)", file=log)
    _run(*chroot, "python3", "-m", "venv", "/opt/nasctl-device")
    _run(*chroot, PYTHON, "-m", "pip", "install", "-q", "--no-index", "--find-links=/tmp/wheels", *WHEELS)
    _run(*chroot, "useradd", "--create-home", "--shell", "/bin/sh", USER)
    _run(*chroot, "usermod", "-p", "*", USER)
    shutil.rmtree(ROOTFS / "tmp" / "wheels")
    versions = json.loads(_run(*chroot, PYTHON, "-c", (
        "import json, platform, onnxruntime, ai_edge_litert, importlib.metadata as m; "
        "print(json.dumps({'machine': platform.machine(), 'python': platform.python_version(), "
        "'onnxruntime': onnxruntime.__version__, 'ai-edge-litert': m.version('ai-edge-litert')}))")))
    size = int(_run("du", "-sbx", ROOTFS).split()[0])
    record = {"build_s": round(time.monotonic() - t0), "bytes": size, **versions}
    STAMP.write_text(json.dumps(record) + "\n")
    return record


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("build", "status"):
        sys.exit("usage: python tests/armboard.py build|status")
    rec = build() if sys.argv[1] == "build" else built()
    print(json.dumps({"rootfs": str(ROOTFS), **(rec or {"built": False})}))


from devicehost import CPUS, PORT, DeviceHost  # noqa: E402  (tests/ is on the path where the board is used)

# A Raspberry Pi 4's /proc/cpuinfo (Cortex-A72: implementer 0x41, part 0xd08), per core and board.
PI4_CORE = ("processor\t: {}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
            "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n")
PI4_BOARD = "Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"


class ArmBoard(DeviceHost):
    """The built rootfs as an SSH board: its own sshd (aarch64, under qemu) chrooted into the
    rootfs, in a network namespace of its own, letting in the device user with a fresh key."""

    def __init__(self, index: int = 0):
        if built() is None:
            raise RuntimeError(f"no arm64 board built at {ROOTFS}: python tests/armboard.py build")
        super().__init__(index)

    def _user(self) -> None:
        self.user = USER
        self.home = ROOTFS / "home" / USER
        entry = next(l for l in (ROOTFS / "etc" / "passwd").read_text().splitlines() if l.startswith(f"{USER}:"))
        self._uid, self._gid = (int(x) for x in entry.split(":")[2:4])

    def _keys(self) -> None:
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.dir / "host_ed25519")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key)
        shutil.copy(self.dir / "host_ed25519", ROOTFS / "etc" / "ssh" / "nasctl_host_ed25519")
        self._authorize(self._uid, self._gid)  # the board's own uid, from its /etc/passwd

    def _files(self) -> None:
        (ROOTFS / "etc" / "ssh" / "sshd_config.nasctl").write_text(
            f"Port {PORT}\nListenAddress {self.address}\nHostKey /etc/ssh/nasctl_host_ed25519\n"
            "PidFile /run/sshd-nasctl.pid\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\n"
            f"AllowUsers {self.user}\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n")

    def _sshd(self) -> None:
        """The board's own /proc (a Raspberry Pi 4's cpuinfo over this machine's, one core per CPU
        of /sys: the runtimes read both and crash on an x86 cpuinfo under an aarch64 Python) and
        binfmt_misc mounted, as Debian mounts it: there the agent reads that qemu runs it."""
        r = ROOTFS
        (self.dir / "cpuinfo").write_text("".join(PI4_CORE.format(i) for i in range(len(CPUS))) + PI4_BOARD)
        script = (f"hostname {self.netns} && mount -t proc proc {r}/proc && mount --bind {self.dir / 'cpuinfo'} {r}/proc/cpuinfo && "
                  f"mount -t binfmt_misc binfmt_misc {r}/proc/sys/fs/binfmt_misc && mount --rbind /dev {r}/dev && "
                  f"mount -t sysfs sys {r}/sys && mkdir -p {r}/run/sshd && "
                  f"exec chroot {r} /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config.nasctl")
        self._log = open(self.dir / "sshd.log", "w")
        self._proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "unshare", "--uts", "--mount", "sh", "-c", script],
                                      stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_for_sshd(60)  # sshd under qemu takes seconds to start

    def profile(self, path: Path, runtime: str = "onnxruntime", **ssh) -> Path:
        """A device profile for this board, after profiles/rpi4.toml: SSH, its own Python."""
        conf = {"host": self.address, "port": PORT, "user": self.user, "key": str(self.key),
                "known_hosts": str(self.known_hosts), "python": PYTHON, **ssh}
        table = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in conf.items())
        path.write_text(f"""name = "pi-emu"
transport = "ssh"
runtime = "{runtime}"
[ssh]
{table}
[model]
batch = 1
precision = "fp32"
[runtime_options]
threads = 1
[protocol]
warmup_runs = 1
warmup_s = 0.0
min_runs = 3
min_time_s = 0.05
max_time_s = 1.0
max_other_busy = 1.0
""")
        return path

    def close(self) -> None:
        """Everything in the board's namespace (sshd, a login's agent) dies with it; the rootfs stays."""
        pids = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True).stdout.split()
        if pids:
            subprocess.run(["kill", "-KILL", *pids], capture_output=True)
        (ROOTFS / "home" / USER / ".ssh" / "authorized_keys").unlink(missing_ok=True)
        super().close()
