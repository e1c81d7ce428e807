"""A device that is a command: its placeholders, its rows, its failures, and the places a device
is used (profile, --check, a fleet of {host}s, --verify)."""

import sys

import pandas as pd
import pytest

from conftest import nasctl, small_archs
from nasctl.device.transports.command import read_figures
from nasctl.shellcmd import fill

HARNESS = """\
import os, sys
arch, model, key = sys.argv[1], sys.argv[2], sys.argv[3]
mode = os.environ.get("MODE", "ok")
assert key and (model == "" or os.path.getsize(model) > 0)
if mode == "ok" or (mode == "some" and arch.count("k5") % 2 == 0):
    print("warming up")
    print(f"latency_ms={1 + len(arch) / 100:.4f} energy_mj=2.5")
elif mode == "some":
    sys.exit("simulator crashed")
elif mode == "none":
    print("done, but no figure")
elif mode == "hang":
    import time; time.sleep(60)
"""


@pytest.fixture
def device(tmp_path):
    (tmp_path / "harness.py").write_text(HARNESS)

    def make(command="{arch} {model} {key}", timeout=30):
        path = tmp_path / f"dev{abs(hash((command, timeout)))}.toml"
        path.write_text(f'name = "harness"\ntransport = "command"\nruntime = "onnxruntime"\ntimeout_s = {timeout}\n'
                        f'command = "{sys.executable} {tmp_path / "harness.py"} {command}"\n')
        return path
    return make


def test_placeholders_are_shell_quoted_and_figures_read_from_the_last_line():
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|"
    assert fill("run {arch} {model}", arch=arch, model="a b.onnx") == "run '|nor_conv_3x3~0|+|none~0|skip_connect~1|' 'a b.onnx'"
    assert read_figures("latency_ms=3\nwarm\nlatency_ms=2.5 energy_mj=1.25\n") == {"latency_ms": 2.5, "energy_mj": 1.25}
    assert read_figures("latency_ms=nan") == {} and read_figures("latency_ms=-1") == {}


def test_profile_times_each_arch_by_the_command_with_the_exported_model(device, tmp_path):
    archs = small_archs(tmp_path / "a.parquet", 4)
    out = tmp_path / "rows.parquet"
    nasctl("profile", "--device", device(), "--archs", archs, "-o", out, check=0)
    rows = pd.read_parquet(out)
    want = pd.read_parquet(archs)["arch"].map(lambda a: round(1 + len(a) / 100, 4))
    assert (rows["status"] == "ok").all() and list(rows["latency_ms"]) == list(want)
    assert (rows["energy_mj"] == 2.5).all() and (rows["transport"] == "command").all()
    assert "drift" not in rows or rows["drift"].isna().all()  # no reference net is timed
    again = nasctl("profile", "--device", device(), "--archs", archs, "-o", out, check=0)
    assert "4 skipped" in again.stdout  # a rerun resumes as with any device


@pytest.mark.parametrize("mode, says", [("some", "exited with code 1: simulator crashed"),
                                        ("none", "printed no latency_ms=<value> (done, but no figure)"),
                                        ("hang", "command timed out after 2 s")])
def test_a_failing_command_gives_error_rows_and_the_run_goes_on(device, tmp_path, mode, says):
    archs = small_archs(tmp_path / "a.parquet", 3 if mode != "hang" else 1)
    out = tmp_path / "rows.parquet"
    p = nasctl("profile", "--device", device(timeout=2), "--archs", archs, "-o", out, env={**__import__("os").environ, "MODE": mode})
    rows = pd.read_parquet(out)
    bad = rows[rows["status"] == "error"]
    assert p.returncode == 1 and len(rows) == len(pd.read_parquet(archs)) and len(bad) >= 1
    assert all(says in e for e in bad["error"])
    if mode == "some":
        assert (rows["status"] == "ok").any()


def test_no_model_is_exported_for_a_command_that_does_not_name_it(device, tmp_path):
    archs = small_archs(tmp_path / "a.parquet", 2)
    nasctl("profile", "--device", device("{arch} '' {key}"), "--archs", archs, "-o", tmp_path / "r.parquet", check=0)
    assert (pd.read_parquet(tmp_path / "r.parquet")["status"] == "ok").all()


def test_check_a_fleet_of_hosts_and_verify(device, tmp_path):
    p = nasctl("profile", "--device", device(), "--check", check=0)
    assert "a command:" in p.stdout and "run once per arch" in p.stdout
    fleet = device("{arch} {model} {host}")
    archs = small_archs(tmp_path / "a.parquet", 4)
    nasctl("profile", "--device", fleet, "--archs", archs, "-o", tmp_path / "f.parquet", "--host", "farm-a", "--host", "farm-b", check=0)
    assert set(pd.read_parquet(tmp_path / "f.parquet")["host"]) <= {"farm-a", "farm-b"}
    p = nasctl("profile", "--device", device(), "--archs", archs, "-o", tmp_path / "g.parquet", "--host", "x")
    assert p.returncode == 2 and "without a {host} placeholder" in p.stderr


@pytest.mark.parametrize("body, says", [
    ('command = "run {model} {gpu}"', "unknown placeholder(s) {gpu}"),
    ('command = "run {model"', "expected '}'"),
    ('command = ""', "command is the command line"),
    ('command = "run {model}"\ntimeout_s = -1', "timeout_s must be a positive number"),
    ("", "missing key 'command'"),
])
def test_bad_command_profiles_are_refused_in_one_line(tmp_path, body, says):
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\ntransport = "command"\nruntime = "onnxruntime"\n{body}\n')
    p = nasctl("profile", "--device", path, "--check")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and says in p.stderr, p.stderr
