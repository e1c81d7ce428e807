import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Reference-net base speeds (nasctl.profile.drift) live under XDG_DATA_HOME: the tests' own, not the user's.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="nasctl-test-data-")

# Under xdist each worker gets its share of the cores, for torch here and (through the environment)
# in every nasctl it starts: OpenMP threads of two workers on the same cores spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
HELP_CSV = ROOT.parent / "shared" / "data" / "help-fbnet" / "fbnet_cifar100_latency.csv"
QUIET_MAX_BUSY = 0.25  # share of the whole machine that other work may use before a timing test skips


def pytest_configure(config):
    config.addinivalue_line("markers", "timing: compares real timings, so it needs a quiet machine: run alone "
                                       "(`-m timing`, no -n), it checks first and skips with the reason when the machine is busy")


def pytest_xdist_make_scheduler(config, log):
    """Under xdist (`-n`): a module that defines module-scoped fixtures (a profiled row set, a
    trained supernet, an sshd board) runs whole on one worker, so each fixture is made once;
    every other test is scheduled on its own. Largest units first (xdist's scope reordering).
    (xdist's own loadgroup no longer groups under pytest 9: it renames a node id attribute that
    pytest 9 does not read.)"""
    from xdist.scheduler import LoadScopeScheduling

    shared = {f"tests/{p.name}" for p in Path(__file__).parent.glob("test_*.py") if 'scope="module"' in p.read_text()}

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in shared else nodeid

    return ModuleFixtureScheduling(config, log)


def machine_busy(seconds: float = 1.0) -> float:
    """Share of all cores' time that went to work other than idle/iowait over `seconds` (/proc/stat);
    the test process sleeps meanwhile, so the share is other work's."""
    def jiffies():
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(f) - f[3] - f[4], sum(f)
    (b0, t0), _, (b1, t1) = jiffies(), time.sleep(seconds), jiffies()
    return (b1 - b0) / max(1, t1 - t0)


@pytest.fixture(autouse=True)
def quiet_machine(request):
    """A timing test's verdict compares real timings, so it runs only on a quiet machine: busy
    means skipped with the reason, never a failure that load caused."""
    if request.node.get_closest_marker("timing"):
        if os.environ.get("PYTEST_XDIST_WORKER"):
            pytest.skip("a timing test: runs in the serial pass (`pytest -m timing`), never beside other tests")
        busy = machine_busy()
        if busy > QUIET_MAX_BUSY:
            pytest.skip(f"a timing test on a busy machine: other work used {busy:.0%} of the CPU over 1 s "
                        f"(more than {QUIET_MAX_BUSY:.0%}); it compares real timings, so it would judge the load")


@pytest.fixture(scope="session", autouse=True)
def private_adb_server():
    """Every adb client the tests start talks to a server on the session's own port, stopped
    when the session ends: `devices --check` reaches the shipped android profile, and its adb
    would otherwise start the user's server on 5037 and leave it running after the suite."""
    with socket.socket() as s:  # a port free now; each xdist worker gets its own server
        s.bind(("127.0.0.1", 0))
        os.environ["ANDROID_ADB_SERVER_PORT"] = str(s.getsockname()[1])
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


def small_archs(path: Path, n: int, seed: int = 0) -> Path:
    """`n` proxyless archs at 32x32 (nets timed in a millisecond or less), written to `path`."""
    nasctl("sample", "--n", n, "--seed", seed, "--resolution", 32, "-o", path, check=0)
    return path


def slow_profile(src, dst: Path) -> Path:
    """A copy of a device profile in which every arch takes 3 s or more to time, so that a
    signal sent as a row lands finds the next arch in flight (and no reference net is timed:
    it would take as long)."""
    text = re.sub(r"(?m)^max_runs = .*\n", "", Path(src).read_text())
    text = re.sub(r"(?m)^min_time_s = .*$", "min_time_s = 3.0\nmax_runs = 1000000\nreference = \"off\"", text)
    text = re.sub(r"(?m)^max_time_s = .*$", "max_time_s = 6.0", text)
    assert "\nmin_time_s = 3.0\n" in text and "\nmax_time_s = 6.0\n" in text, f"{src}: no [protocol] times to slow down"
    dst.write_text(text)
    return dst


def ctrl_c_mid_profile(device, tmp_path: Path) -> None:
    """Profile 3 archs on `device` (slowed down by `slow_profile`) and press Ctrl-C as a terminal
    does, to nasctl's whole process group (a job of its own here, as a shell makes it), half a
    second after the first row is stored: the next arch is being timed then, its upload (which
    a Ctrl-C would end too) long done. One line, exit 130, and only real rows kept; a rerun
    measures the rest, the interrupted arch included, with no error row."""
    from nasctl.tables import read_table

    archs, out = small_archs(tmp_path / "three.parquet", 3, seed=5), tmp_path / "rows.parquet"
    device = slow_profile(device, tmp_path / "slow.toml")
    cmd = [sys.executable, "-m", "nasctl", "profile", "--device", str(device), "--archs", str(archs), "-o", str(out), "-q"]
    # SIGINT at its default, as at a terminal (a shell without job control would start it ignored)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while proc.poll() is None and not (out.exists() and len(read_table(out))):
            time.sleep(0.05)
        time.sleep(0.5)
        assert proc.poll() is None, f"the profile ended before a row could be interrupted: {proc.communicate()}"
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=300)  # a hang guard: it stops within one arch
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # never left running beside the rest of the suite
        proc.wait()
    assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "nasctl: interrupted" and "Traceback" not in stderr, stderr
    kept = read_table(out)
    assert 1 <= len(kept) < 3 and (kept["status"] == "ok").all(), kept[["arch_id", "status"]]
    s = json.loads(nasctl("profile", "--device", device, "--archs", archs, "-o", out, "--json", check=0).stdout)
    df = read_table(out)
    assert len(df) == 3 and df["arch_id"].is_unique and (df["status"] == "ok").all()
    assert (s["skipped"], s["measured"], s["errors"]) == (len(kept), 3 - len(kept), 0)
