"""`nasctl profile --device local` end to end: real agent subprocess, real onnxruntime timings."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import nasctl, small_archs
from nasctl.tables import read_table

SCHEMA = {
    "arch_id", "config_id", "arch", "space", "macs", "params", "device", "host", "cpu_model",
    "runtime", "runtime_version", "threads", "batch", "input_shape", "precision", "status",
    "latency_ms", "latency_p90_ms", "latency_mean_ms", "latency_std_ms", "latency_min_ms",
    "latency_cv", "n_runs", "loadavg_1m", "other_cores_busy", "governor", "temp_c",
    "agent_version", "nasctl_version", "started_at", "finished_at",
    "energy_mj", "power_w_mean", "energy_source", "energy_note",
}


@pytest.fixture
def archs(tmp_path):
    return small_archs(tmp_path / "archs.parquet", 6)


@pytest.mark.parametrize("ext", ["parquet", "csv"])
def test_profile_then_resume_measures_nothing_twice(tmp_path, archs, fast_device, ext):
    out = tmp_path / f"lat.{ext}"
    p = nasctl("profile", "--device", fast_device, "--archs", archs, "-o", out, "--json", check=0)
    s = json.loads(p.stdout)
    assert (s["measured"], s["errors"], s["skipped"]) == (6, 0, 0)
    df = pd.read_parquet(out) if ext == "parquet" else pd.read_csv(out)
    assert SCHEMA <= set(df.columns)
    assert len(df) == 6 and df["arch_id"].is_unique and (df["status"] == "ok").all()
    assert (df["latency_ms"] > 0).all() and (df["latency_min_ms"] <= df["latency_ms"]).all()
    assert (df["latency_ms"] <= df["latency_p90_ms"]).all() and (df["n_runs"] >= 5).all()
    assert (df["input_shape"] == "1x3x32x32").all() and (df["threads"] == 1).all()
    assert df["config_id"].nunique() == 1 and (df["provider"] == "CPUExecutionProvider").all()
    assert df["energy_mj"].isna().all() and (df["energy_source"] == "none").all()
    assert (df["energy_note"] == "the device profile names no energy source").all()
    before = df.set_index("arch_id")["latency_ms"]

    p = nasctl("profile", "--device", fast_device, "--archs", archs, "-o", out, "--json", check=0)
    s = json.loads(p.stdout)
    assert (s["measured"], s["skipped"]) == (0, 6)
    df2 = pd.read_parquet(out) if ext == "parquet" else pd.read_csv(out)
    assert df2.set_index("arch_id")["latency_ms"].equals(before)


def test_new_device_config_gets_new_rows(tmp_path, archs, fast_device):
    out = tmp_path / "lat.parquet"
    nasctl("profile", "--device", fast_device, "--archs", archs, "-o", out, check=0)
    two = tmp_path / "two-threads.toml"
    two.write_text(open(fast_device).read().replace("threads = 1", "threads = 2"))
    s = json.loads(nasctl("profile", "--device", two, "--archs", archs, "-o", out, "--json", check=0).stdout)
    assert s["measured"] == 6
    df = pd.read_parquet(out)
    assert len(df) == 12 and df["config_id"].nunique() == 2
    assert df.groupby("config_id")["arch_id"].nunique().tolist() == [6, 6]


def test_failing_archs_become_error_rows(tmp_path, archs, fast_device, monkeypatch, capsys):
    """Every third net fails to export (a device profile can no longer ask for an opset that fails
    them all: it is refused on load); those become error rows, and the run goes on."""
    from nasctl.cli import run
    from nasctl.export import onnx  # the profiler's exporter imports it from here when it runs

    real = onnx.export_onnx
    seen = []

    def flaky(model, shape, path, opset):
        seen.append(path)
        if len(seen) % 3 == 0:
            raise RuntimeError("exporter gave up")
        return real(model, shape, path, opset)

    monkeypatch.setattr(onnx, "export_onnx", flaky)
    out = tmp_path / "lat.parquet"
    assert run(["profile", "--device", fast_device, "--archs", str(archs), "-o", str(out), "--json", "-q"]) == 1
    assert json.loads(capsys.readouterr().out)["errors"] == 2
    df = pd.read_parquet(out)
    bad = df[df["status"] == "error"]
    assert len(bad) == 2 and (df["status"] == "ok").sum() == 4
    assert bad["error"].str.startswith("export: RuntimeError: exporter gave up").all()
    # Error rows are not measured again unless asked.
    assert run(["profile", "--device", fast_device, "--archs", str(archs), "-o", str(out), "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 6


def test_agent_death_is_an_error_row_then_the_run_goes_on(tmp_path, archs, fast_device):
    slow = tmp_path / "slow.toml"  # each arch takes ~1 s, so the agent can be killed mid-arch
    slow.write_text(open(fast_device).read().replace("min_time_s = 0.02", "min_time_s = 1.0").replace("max_time_s = 0.3", "max_time_s = 2.0"))
    out = tmp_path / "lat.parquet"
    cmd = [sys.executable, "-m", "nasctl", "profile", "--device", str(slow), "--archs", str(archs), "-o", str(out), "--json", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    while proc.poll() is None and not (out.exists() and len(read_table(out)) >= 2):  # read_table: one complete file
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its agent could be killed"
    agents = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", r"agent-[0-9a-f]+\.pyz serve"], capture_output=True, text=True).stdout.split()
    assert len(agents) == 1
    os.kill(int(agents[0]), signal.SIGKILL)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    s = json.loads(stdout)
    assert (s["measured"], s["errors"]) == (5, 1)
    df = pd.read_parquet(out)
    assert len(df) == 6 and df["error"].dropna().str.contains("agent died").all()
    # --retry-errors measures the failed arch again and replaces its error row.
    s = json.loads(nasctl("profile", "--device", slow, "--archs", archs, "-o", out, "--json", "--retry-errors", check=0).stdout)
    assert (s["measured"], s["skipped"]) == (1, 5)
    df = pd.read_parquet(out)
    assert len(df) == 6 and (df["status"] == "ok").all()


def test_unavailable_provider_is_refused_before_measuring(tmp_path, archs, fast_device):
    dev = tmp_path / "noprov.toml"  # onnxruntime alone would fall back to the CPU silently
    dev.write_text(open(fast_device).read().replace("threads = 1", 'threads = 1\nproviders = ["NoSuchExecutionProvider"]'))
    out = tmp_path / "lat.parquet"
    p = nasctl("profile", "--device", dev, "--archs", archs, "-o", out, check=2)
    assert "NoSuchExecutionProvider not available" in p.stderr and not out.exists()


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--device", "nope"], "unknown device 'nope'"),
        (["--device", "xavier", "--host", "pi@"], "--host 'pi@' has no address"),
        (["--space", "nope"], "unknown space 'nope'"),
        (["--space", "fbnet"], "has 22"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, archs, fast_device, args, msg):
    out = tmp_path / "lat.parquet"
    base = {"--device": fast_device}
    base.update(dict(zip(args[::2], args[1::2])))
    flat = [x for kv in base.items() for x in kv]
    p = nasctl("profile", *flat, "--archs", archs, "-o", out, check=2)
    assert msg in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [archs]


def test_bad_arch_files(tmp_path, fast_device):
    out = tmp_path / "lat.parquet"
    bad_op = tmp_path / "bad.csv"
    bad_op.write_text("arch\n" + "-".join(["k3_e3"] * 5 + ["k4_e3"] + ["k3_e3"] * 15) + "\n")
    p = nasctl("profile", "--device", fast_device, "--space", "proxyless", "--archs", bad_op, "-o", out, check=2)
    assert "row 0: layer 5: unknown op 'k4_e3'" in p.stderr
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    p = nasctl("profile", "--device", fast_device, "--archs", garbage, "-o", out, check=2)
    assert "unreadable parquet file" in p.stderr
    p = nasctl("profile", "--device", fast_device, "--archs", tmp_path / "missing.parquet", "-o", out, check=2)
    assert "no such file" in p.stderr
    p = nasctl("profile", "--device", fast_device, "--archs", bad_op, "-o", tmp_path / "lat.txt", check=2)
    assert "unknown table format" in p.stderr
    assert not out.exists()


def test_kill_9_loses_at_most_the_arch_in_flight(tmp_path, fast_device):
    archs, out = tmp_path / "archs.parquet", tmp_path / "lat.parquet"
    small_archs(archs, 24, seed=7)
    cmd = [sys.executable, "-m", "nasctl", "profile", "--device", fast_device, "--archs", str(archs), "-o", str(out), "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True)
    seen = 0
    while proc.poll() is None:  # wait until the store holds some rows, reading it as we go
        if out.exists():
            seen = len(read_table(out))  # always a complete, valid file (read in one go, as nasctl does)
            if seen >= 6:
                break
        time.sleep(0.05)
    assert proc.poll() is None and seen >= 6, "run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # nasctl and its agent, with no chance to clean up
    proc.wait()
    partial = pd.read_parquet(out)
    assert 6 <= len(partial) < 24 and partial["arch_id"].is_unique

    s = json.loads(nasctl("profile", "--device", fast_device, "--archs", archs, "-o", out, "--json", check=0).stdout)
    df = pd.read_parquet(out)
    expected = set(pd.read_parquet(archs)["arch_id"])
    lost, dup = len(expected - set(df["arch_id"])), len(df) - df["arch_id"].nunique()
    assert (lost, dup) == (0, 0)
    assert s["skipped"] == len(partial) and s["measured"] == 24 - len(partial)
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")], "temp files left behind"


def test_two_processes_writing_one_row_file_keep_every_row(tmp_path):
    """Two profiles into one file (a fleet's boards run separately): no writer drops the other's rows."""
    from nasctl.profile import Store

    out = tmp_path / "rows.parquet"
    writer = ("import sys\nfrom nasctl.profile import Store\ns = Store(sys.argv[1])\n"
              "for i in range(60):\n    s.put({'arch_id': f'{sys.argv[2]}{i}', 'config_id': 'c', 'status': 'ok', 'latency_ms': float(i)})\n")
    procs = [subprocess.Popen([sys.executable, "-c", writer, str(out), w]) for w in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    rows = pd.read_parquet(out)
    assert len(rows) == 120 and set(rows.arch_id) == {f"{w}{i}" for w in "ab" for i in range(60)}
    s = Store(out)  # and a row put again replaces its old one, as before
    s.put({"arch_id": "a0", "config_id": "c", "status": "ok", "latency_ms": 9.0})
    assert len(pd.read_parquet(out)) == 120 and pd.read_parquet(out).set_index("arch_id").latency_ms["a0"] == 9.0
