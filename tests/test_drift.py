"""Drift: the reference net, its log and base speed, drift columns, --drift-correct, the
throttling readings of the agent (fake sysfs trees), and the interleaved verify."""

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import DATA, nasctl, small_archs
from nasctl.device import load_device
from nasctl.models.cost import cost_table
from nasctl.predict import Predictor
from nasctl.profile import Store, profile_archs
from nasctl.profile.drift import RECENT, RefLog, base_speed, reference_arch
from nasctl.profile.verify import verify_interleaved
from nasctl.space.space import load_space
from nasctl_agents import agent

SPACE = load_space("proxyless").with_params(resolution=32, macro="cifar")


def _device(tmp_path, extra: str = "") -> Path:
    f = tmp_path / "dev.toml"
    f.write_text((DATA / "fast-cpu.toml").read_text() + extra)
    return f


def _archs(n: int, seed: int):
    idx = SPACE.draw(np.zeros((n, *SPACE.allowed.shape)), np.random.default_rng(seed))
    return [SPACE.from_indices(i) for i in idx]


def test_rows_carry_the_reference_speed_and_drift_against_the_configs_first_base(tmp_path):
    dev = load_device(str(_device(tmp_path)))
    a = Store(tmp_path / "a.parquet")
    s = profile_archs(_archs(3, 1), SPACE, dev, a)
    log = RefLog(a.path).frame()
    assert s.references == RECENT == 3 and list(log["why"]) == ["start"] * 3 and (log["status"] == "ok").all()
    base = base_speed(s.config_id, log["ref_arch_id"].iloc[0])["latency_ms"]
    assert base == pytest.approx(float(np.median(log["latency_ms"])))  # the first session's opening median
    rows = a.frame()
    assert (rows["ref_latency_ms"] == base).all() and np.allclose(rows["drift"], 1.0)
    # A second store of the same config is read against the same base, not its own first timing.
    b = Store(tmp_path / "b.parquet")
    profile_archs(_archs(2, 2), SPACE, dev, b)
    now = float(np.median(RefLog(b.path).frame()["latency_ms"]))
    assert np.allclose(b.frame()["drift"], now / base) and np.allclose(b.frame()["ref_latency_ms"], now)


@pytest.mark.parametrize("threads", [1, len(os.sched_getaffinity(0))])
def test_no_export_runs_beside_a_timing_where_the_agent_takes_every_core(tmp_path, monkeypatch, threads):
    """At 2 threads on 2 cores the reference read 7.9 ms alone and 9.1-9.8 ms beside the exporter."""
    from nasctl.device.transports.base import AgentSession
    from nasctl.profile import runner

    spans = {"export": [], "time": []}

    def spanned(kind, fn):
        def wrapped(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spans[kind].append((t0, time.perf_counter()))
        return wrapped

    monkeypatch.setattr(runner, "export_for_device", spanned("export", runner.export_for_device))
    monkeypatch.setattr(AgentSession, "measure", spanned("time", AgentSession.measure))
    text = (DATA / "fast-cpu.toml").read_text().replace("threads = 1", f"threads = {threads}")
    (tmp_path / "dev.toml").write_text(text)
    profile_archs(_archs(6, 4), SPACE, load_device(str(tmp_path / "dev.toml")), Store(tmp_path / "s.parquet"))
    overlaps = sum(a < d and c < b for a, b in spans["export"] for c, d in spans["time"])
    assert len(spans["time"]) >= 6 + RECENT
    if threads >= len(os.sched_getaffinity(0)):
        assert overlaps == 0
    else:  # a core is free: exports overlap timings (else the run would be slower for nothing)
        assert overlaps > 0


def test_the_reference_is_timed_again_every_k_archs(tmp_path):
    dev = load_device(str(_device(tmp_path, 'ref_every = 2\n')))
    store = Store(tmp_path / "r.parquet")
    profile_archs(_archs(5, 3), SPACE, dev, store)
    log = RefLog(store.path).frame()
    assert list(log["why"]) == ["start"] * 3 + ["every"] * 2  # before the 3rd and the 5th arch


def test_schedule_keys_leave_the_config_id_alone_and_a_reference_can_be_off(tmp_path):
    facts = {"cpu_model": "x", "runtime_version": "1"}
    plain = load_device(str(_device(tmp_path))).config_id("h", 32, facts)
    (tmp_path / "s").mkdir()
    sched = load_device(str(_device(tmp_path / "s", 'ref_every = 3\nref_every_s = 5\ncooldown_c = 70\n')))
    assert sched.config_id("h", 32, facts) == plain
    (tmp_path / "o").mkdir()
    off = load_device(str(_device(tmp_path / "o", 'reference = "off"\n')))
    store = Store(tmp_path / "off.parquet")
    s = profile_archs(_archs(2, 4), SPACE, off, store)
    assert s.references == 0 and not RefLog(store.path).path.exists() and "drift" not in store.frame()


def test_default_reference_is_a_fixed_mid_cost_arch_and_a_bad_one_is_refused(tmp_path):
    dev = load_device(str(_device(tmp_path)))
    ref = reference_arch(SPACE, dev)
    assert ref == reference_arch(SPACE, dev)
    macs = cost_table(SPACE).of(np.stack([a.indices for a in _archs(400, 5)]))[0]
    mine = cost_table(SPACE).of(ref.indices[None])[0][0]
    assert np.quantile(macs, 0.3) < mine < np.quantile(macs, 0.7)
    (tmp_path / "bad").mkdir()
    bad = _device(tmp_path / "bad", 'reference = "k3_e3"\n')
    arch_file = tmp_path / "a.parquet"
    small_archs(arch_file, 2)
    p = nasctl("profile", "--device", bad, "--archs", arch_file, "-o", tmp_path / "x.parquet", check=2)
    assert "[protocol] reference" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.parquet").exists()


def _rows_with_drift(tmp_path, drift: np.ndarray) -> Path:
    """Rows whose latency is an exact table of MACs, times a drift each row also carries."""
    archs = _archs(len(drift), 6)
    macs = cost_table(SPACE).of(np.stack([a.indices for a in archs]))[0] / 1e6
    f = tmp_path / "rows.csv"
    pd.DataFrame({"arch": [a.string for a in archs], "space": "proxyless", "resolution": 32, "macro": "cifar",
                  "status": "ok", "latency_ms": macs * 0.01 * drift, "energy_mj": macs * 0.02, "ref_arch_id": "r",
                  "ref_latency_ms": 2.0 * drift, "drift": drift}).to_csv(f, index=False)
    return f


def test_fit_predictor_reads_latency_at_base_speed_where_rows_carry_drift(tmp_path):
    drift = np.where(np.arange(200) % 2, 1.0, 1.6)  # half the rows measured 60% slow
    f = _rows_with_drift(tmp_path, drift)
    on = json.loads(nasctl("fit-predictor", f, "-o", tmp_path / "on.pt", "--json", check=0).stdout)
    off = json.loads(nasctl("fit-predictor", f, "-o", tmp_path / "off.pt", "--no-drift-correct", "--json", check=0).stdout)
    assert on["test"]["lut"]["mape"] < 0.01 < off["test"]["lut"]["mape"]
    meta = Predictor.load(tmp_path / "on.pt").meta
    assert meta["drift_correct"]["base_ms"] == pytest.approx(2.0) and meta["drift_correct"]["drift_max"] == pytest.approx(1.6)
    assert Predictor.load(tmp_path / "off.pt").meta["drift_correct"] is None
    p = nasctl("fit-predictor", f, "--metric", "energy_mj", "--drift-correct", "-o", tmp_path / "e.pt", check=2)
    assert "not a latency" in p.stderr and not (tmp_path / "e.pt").exists()
    plain = tmp_path / "plain.csv"
    pd.read_csv(f).drop(columns=["drift"]).to_csv(plain, index=False)
    p = nasctl("fit-predictor", plain, "--drift-correct", "-o", tmp_path / "p.pt", check=2)
    assert "carry no drift" in p.stderr and len(p.stderr.strip().splitlines()) == 1


# ---- the agent's clocks and temperatures (a temp folder stands in for the board's sysfs) --------
@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    f = tmp_path_factory.mktemp("m") / "m.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)), (torch.randn(1, 3, 32, 32),), str(f), dynamo=False)
    return str(f)


CFG = {"input_shape": [1, 3, 32, 32], "protocol": {"warmup_runs": 2, "warmup_s": 0, "min_time_s": 0.05, "max_time_s": 0.1,
                                                   "max_other_busy": 1.01}}


def _sysfs(root: Path, clock: float = 1.0, temp_c: float = 50.0, trip_c: float | None = None, battery_c: float | None = None):
    for cpu in range(os.cpu_count()):
        d = root / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpuinfo_max_freq").write_text("1800000\n")
        (d / "scaling_cur_freq").write_text(f"{int(1800000 * clock)}\n")
    z = root / "sys/class/thermal/thermal_zone0"
    z.mkdir(parents=True, exist_ok=True)
    (z / "temp").write_text(f"{int(temp_c * 1000)}\n")
    if trip_c is not None:
        (z / "trip_point_0_type").write_text("passive\n")
        (z / "trip_point_0_temp").write_text(f"{int(trip_c * 1000)}\n")
    if battery_c is not None:
        b = root / "sys/class/power_supply/battery"
        b.mkdir(parents=True, exist_ok=True)
        (b / "temp").write_text(f"{int(battery_c * 10)}\n")


def _measure(root, onnx_model, **protocol):
    return agent.measure(agent.OnnxRuntime({"threads": 1}), onnx_model, {**CFG, "protocol": {**CFG["protocol"], **protocol}}, root)


def test_a_capped_clock_or_a_passive_trip_marks_the_row_throttled(tmp_path, onnx_model):
    _sysfs(tmp_path, clock=1.0, temp_c=55, battery_c=31.5)
    row = _measure(tmp_path, onnx_model)
    assert row["status"] == "ok" and not row["throttled"] and row["clock_ratio"] == 1.0 and row["battery_temp_c"] == 31.5
    _sysfs(tmp_path, clock=0.6)
    row = _measure(tmp_path, onnx_model)
    assert row["status"] == "throttled" and row["clock_ratio"] == pytest.approx(0.6) and "CPU clock at 60%" in row["throttle_reason"]
    assert _measure(tmp_path, onnx_model, min_clock_ratio=0)["status"] == "ok"  # the clock test off
    _sysfs(tmp_path, clock=1.0, temp_c=85, trip_c=80)
    row = _measure(tmp_path, onnx_model)
    assert row["status"] == "throttled" and "passive trip point" in row["throttle_reason"] and row["temp_c"] == 85


def test_vcgencmd_current_throttle_bits_count_and_past_ones_do_not(tmp_path, onnx_model, monkeypatch):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _sysfs(tmp_path)
    for bits, status in (("0x50005", "throttled"), ("0x50000", "ok")):
        (bin_ / "vcgencmd").write_text(f"#!/bin/sh\necho throttled={bits}\n")
        (bin_ / "vcgencmd").chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
        row = _measure(tmp_path, onnx_model)
        assert row["status"] == status and row["pi_throttled"] == int(bits, 16)


def test_cooldown_waits_for_the_hottest_zone_to_drop(tmp_path, onnx_model):
    _sysfs(tmp_path, temp_c=75)
    threading.Timer(1.0, lambda: _sysfs(tmp_path, temp_c=55)).start()
    row = _measure(tmp_path, onnx_model, cooldown_c=60, cooldown_max_s=20)
    # it waited for the drop (>= 1 s after the timer started) and the drop ended the wait, not the 20 s limit
    assert 0.9 < row["cooldown_s"] < 20 and row["temp_c_before"] == 55 and row["status"] == "ok"
    t0 = time.monotonic()
    _sysfs(tmp_path, temp_c=75)
    row = _measure(tmp_path, onnx_model, cooldown_c=60, cooldown_max_s=0.5)  # never cools: time anyway, after the limit
    assert row["cooldown_s"] >= 0.5 and row["temp_c_before"] == 75 and time.monotonic() - t0 >= 0.5


# ---- the interleaved verify ------------------------------------------------------------------
def test_interleaved_verify_reads_the_arch_at_the_base_speed(tmp_path):
    dev = load_device(str(_device(tmp_path)))
    arch = _archs(1, 7)[0]
    row = verify_interleaved(arch, dev, Store(tmp_path / "v.parquet"), base={"ref_arch_id": reference_arch(SPACE, dev).id,
                                                                                "base_ms": 1.0})
    raw, refs = row["verify_timings_ms"], row["verify_ref_timings_ms"]
    assert len(raw) == 3 and len(refs) == 4 and row["ref_base_ms"] == 1.0 and row["verify_rounds"] == 3
    corrected = [r * 1.0 / ((a + b) / 2) for r, a, b in zip(raw, refs, refs[1:])]
    assert row["latency_ms"] == pytest.approx(float(np.median(corrected))) and row["latency_raw_ms"] == pytest.approx(float(np.median(raw)))
    assert Store(tmp_path / "v.parquet").frame()["status"].tolist() == [row["status"]]
    # A predictor of another reference: this machine's base for the config is used (set now if none).
    other = verify_interleaved(arch, dev, Store(tmp_path / "w.parquet"), base={"ref_arch_id": "elsewhere", "base_ms": 1.0})
    assert other["ref_base_ms"] != 1.0 and other["ref_base_ms"] > 0
