"""An arm64 board end to end (armboard.py): Debian bookworm arm64 with its own Python 3.11, aarch64
onnxruntime and sshd, run under qemu-user in its own network namespace. The agent deploys over
real SSH, measures, streams rows that carry the board's facts, resumes a cut link, and marks
every row as timed under emulation so that no predictor is fitted on it by accident.

The rootfs is built once per machine (about 4 minutes) into the cache, by the first test that
needs it; `python tests/armboard.py build` builds it by hand."""

import json
import os
import threading

import pandas as pd
import pytest
from armboard import ArmBoard, build, unavailable

from conftest import nasctl, small_archs
from nasctl.device import load_device
from nasctl.profile import Store, profile_archs
from nasctl.space.archfile import read_archs

why = unavailable()
pytestmark = pytest.mark.skipif(why is not None, reason=f"arm64 board: {why}")


@pytest.fixture(scope="module")
def pi():
    build()
    b = ArmBoard()
    yield b
    b.close()


@pytest.fixture
def board(pi, tmp_path):
    return pi.profile(tmp_path / "pi-emu.toml")


@pytest.fixture(scope="module")
def archs(tmp_path_factory):
    return small_archs(tmp_path_factory.mktemp("a") / "archs.parquet", 4, seed=2)


def test_check_reports_aarch64_the_boards_python_and_runtimes(board):
    (facts,) = json.loads(nasctl("profile", "--device", board, "--check", "--json", check=0).stdout)["hosts"]
    assert facts["machine"] == "aarch64" and facts["python"] == build()["python"] == "3.11.2"
    assert facts["runtime"] == "onnxruntime" and facts["runtime_version"] == build()["onnxruntime"]
    assert facts["cpu_model"] == "Raspberry Pi 4 Model B Rev 1.1" and "qemu-aarch64" in facts["emulated"]
    env = {**os.environ, "NASCTL_PROFILES": str(board.parent), "COLUMNS": "400"}
    listed = json.loads(nasctl("devices", "--check", "--timeout", 60, "--json", env=env).stdout)["devices"]  # exit 3: no xavier here
    pi = next(d for d in listed if d["name"] == "pi-emu")
    assert pi["reachable"] and (pi["machine"], pi["python"], pi["runtime_version"]) == ("aarch64", "3.11.2", build()["onnxruntime"])
    shown = nasctl("devices", "--check", "--timeout", 60, env=env).stdout
    assert f"Raspberry Pi 4 Model B Rev 1.1 (aarch64), Python 3.11.2, onnxruntime {build()['onnxruntime']}; EMULATED:" in shown


def test_rows_carry_the_boards_facts_and_are_marked_emulated(board, archs, tmp_path):
    out = tmp_path / "pi.parquet"
    s = json.loads(nasctl("profile", "--device", board, "--archs", archs, "-o", out, "--json", check=0).stdout)
    assert (s["measured"], s["errors"]) == (4, 0)
    df = pd.read_parquet(out)
    assert (df.status == "ok").all() and (df.machine == "aarch64").all() and (df.device_python == "3.11.2").all()
    assert df.emulated.str.contains("qemu-aarch64").all() and (df.transport == "ssh").all()
    rows = pd.concat([df] * 8, ignore_index=True)  # enough rows for a fit: the refusal is about what they are
    rows.to_parquet(tmp_path / "many.parquet")
    p = nasctl("fit-predictor", tmp_path / "many.parquet", "-o", tmp_path / "p.pt", check=2)
    assert "timed under emulation" in p.stderr and p.stderr.count("\n") == 1 and not (tmp_path / "p.pt").exists()


def test_a_cut_link_mid_stream_resumes(pi, board, archs, tmp_path):
    space, arch_list = read_archs(archs, None)
    store, rows, notes = Store(tmp_path / "cut.parquet"), [], []

    def cut_after_one(row):
        rows.append(row["arch_id"])
        if len(rows) == 1:
            pi.link(up=False)

    def note(text):
        notes.append(text)
        if "reconnecting" in text:
            threading.Timer(0.5, pi.link, kwargs={"up": True}).start()

    try:
        s = profile_archs(arch_list, space, load_device(str(board)), store, on_row=cut_after_one, on_note=note)
    finally:
        pi.link(up=True)
    df = pd.read_parquet(tmp_path / "cut.parquet")
    assert s.reconnects >= 1 and any("reconnecting" in n for n in notes)
    assert len(df) == 4 and df["arch_id"].is_unique and (df["status"] == "ok").all()
