import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# Reference-net base speeds (nasctl.profile.drift) live under XDG_DATA_HOME: the tests' own, not the user's.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="nasctl-test-data-")

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
HELP_CSV = ROOT.parent / "shared" / "data" / "help-fbnet" / "fbnet_cifar100_latency.csv"


@pytest.fixture(scope="session", autouse=True)
def private_adb_server():
    """Every adb client the tests start talks to a server on the session's own port, stopped
    when the session ends: `devices --check` reaches the shipped android profile, and its adb
    would otherwise start the user's server on 5037 and leave it running after the suite."""
    os.environ["ANDROID_ADB_SERVER_PORT"] = str(6100 + os.getpid() % 800)
    yield
    if shutil.which("adb"):
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def fast_device() -> str:
    return str(DATA / "fast-cpu.toml")


@pytest.fixture
def help_csv() -> Path:
    if not HELP_CSV.exists():
        pytest.skip(f"shared HELP data not found at {HELP_CSV} (only in the project's workspace)")
    return HELP_CSV


def nasctl(*args, check=None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user or a CI script would."""
    env = {**kw.pop("env", os.environ), "NO_COLOR": "1"}
    p = subprocess.run([sys.executable, "-m", "nasctl", *map(str, args)], capture_output=True, text=True, env=env, **kw)
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p
