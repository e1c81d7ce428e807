"""Faults a user meets: a full disk and a Ctrl-C. Each ends in one line, the right exit code and a
store that tells the truth (the agent's side, stray bytes and Ctrl-C, is in test_agent.py)."""

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import DATA, ctrl_c_mid_profile, nasctl, small_archs
from nasctl.tables import read_table

TINY_ARCH = "k3_e3-k3_e3-k3_e3-k3_e3"  # a checkpoint of 257 kB, a model.pt of 137 kB


class Disk:
    """A file system of its own (a 2 MB tmpfs), filled up to leave a chosen number of bytes."""

    def __init__(self, path: Path):
        self.path = path
        self.filler = path / "filler"

    def leave(self, free: int) -> None:
        st = os.statvfs(self.path)
        with open(self.filler, "ab") as f:
            f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - free))

    def clear(self) -> None:
        self.filler.unlink(missing_ok=True)

    def files(self) -> list[str]:
        """Everything on it but the filler, temp files and empty folders included."""
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if p != self.filler)


@pytest.fixture
def disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full disk is a tmpfs of its own: mounting one needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield Disk(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def one_line_full(p: subprocess.CompletedProcess, disk: Disk, path: Path) -> str:
    """The error is one line that names the file, the cause and the space left where it lives."""
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith(f"nasctl: error: cannot write {path}: No space left on device (") and f"free on {disk.path})" in line, line
    return line


@pytest.fixture
def archs(tmp_path):
    return small_archs(tmp_path / "archs.parquet", 6, seed=4)


def test_profile_on_a_full_disk_keeps_the_rows_written_and_a_rerun_adds_the_rest(disk, archs, fast_device):
    out = disk.path / "rows.parquet"
    disk.leave(0)  # not even the first reference timing fits: nothing was kept, exit 2
    p = nasctl("profile", "--device", fast_device, "--archs", archs, "-o", out, "-q", check=2)
    one_line_full(p, disk, out.with_suffix(".ref.parquet"))
    assert not [f for f in disk.files() if not f.endswith(".lock")], disk.files()

    disk.clear()
    disk.leave(64_000)  # the reference log (7 kB) and one row (35 kB) fit; a store of two rows does not
    p = nasctl("profile", "--device", fast_device, "--archs", archs, "-o", out, "-q", check=1)
    assert "; kept as last written: " in one_line_full(p, disk, out)
    kept = read_table(out)  # the store is whole and readable, and every row in it is a real one
    assert 1 <= len(kept) < 6 and (kept["status"] == "ok").all() and kept["arch_id"].is_unique
    assert not [f for f in disk.files() if f.startswith(".")], "temp files left behind"

    disk.clear()
    nasctl("profile", "--device", fast_device, "--archs", archs, "-o", out, "-q", check=0)
    df = read_table(out)
    assert len(df) == 6 and df["arch_id"].is_unique and (df["status"] == "ok").all()
    assert set(df["arch_id"]) == set(read_table(archs)["arch_id"]) and set(kept["arch_id"]) <= set(df["arch_id"])


def test_retrain_on_a_full_disk_leaves_nothing_or_a_checkpoint_to_resume(disk):
    run = disk.path / "run"
    train = ("retrain", TINY_ARCH, "--space", DATA / "tiny.toml", "--epochs", 2, "--train-limit", 200, "-q")
    disk.leave(100_000)  # not one checkpoint: no run folder at all, exit 2
    p = nasctl(*train, "-o", run, check=2)
    one_line_full(p, disk, run / "checkpoint.pt")
    assert disk.files() == []

    disk.clear()
    disk.leave(400_000)  # epoch 1's set (run.json, checkpoint, metrics) fits; epoch 2's checkpoint beside it does not
    p = nasctl(*train, "-o", run, check=1)
    one_line_full(p, disk, run / "checkpoint.pt")
    assert disk.files() == ["run", "run/checkpoint.pt", "run/metrics.csv", "run/run.json"]
    assert len(pd.read_csv(run / "metrics.csv")) == 1

    disk.clear()
    nasctl("retrain", "--resume", run, "-q", check=0)
    assert len(pd.read_csv(run / "metrics.csv")) == 2 and (run / "model.pt").is_file() and (run / "arch.json").is_file()


def test_fit_predictor_on_a_full_disk_writes_its_three_files_or_none(disk):
    out = disk.path / "p.pt"
    fit = ("fit-predictor", DATA / "help-fbnet-40.csv", "--space", "fbnet", "--metric", "latency_ms", "--members", 2, "-o", out, "-q")
    disk.leave(32_000)  # the predictor (5 kB) and its report (2 kB) fit, its scatter (77 kB) does not
    p = nasctl(*fit, check=2)
    one_line_full(p, disk, out.with_suffix(".png"))
    assert disk.files() == []
    disk.clear()
    nasctl(*fit, check=0)
    assert disk.files() == ["p.json", "p.png", "p.pt"]


def test_ctrl_c_mid_profile_stores_nothing_for_the_arch_in_flight_and_a_rerun_measures_it(tmp_path, fast_device):
    ctrl_c_mid_profile(fast_device, tmp_path)
