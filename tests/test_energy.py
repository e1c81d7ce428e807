"""Energy on the agent: INA3221 (both sysfs layouts), tegrastats, battery; integrated to mJ.

A temp folder stands in for the board's sysfs (the agent's --sysfs-root), with rail values the
test writes and changes; the timed runs are real onnxruntime runs.
"""

import os
import stat
import threading
import time

import pytest
import torch

from nasctl_agents import agent

TEGRA_XAVIER_JP4 = ("RAM 2291/15692MB (lfb 3143x4MB) SWAP 0/7846MB CPU [3%@1190,1%@1190,off,off] EMC_FREQ 0% "
                    "GR3D_FREQ 0% AO@37C GPU@37.5C PMIC@100C AUX@36.5C CPU@38C thermal@37.2C "
                    "GPU 463/463 CPU 1234/1100 SOC 1700/1700 CV 0/0 VDDRQ 310/310 SYS5V 1900/1900")
TEGRA_ORIN = ("RAM 4722/30536MB (lfb 2x4MB) CPU [10%@2201,off] EMC_FREQ 3%@3199 GR3D_FREQ 12%@[1300,1300] "
              "cpu@52.968C gpu@47.625C VDD_GPU_SOC 5139mW/5139mW/5139mW VDD_CPU_CV 3268mW/3268mW/3268mW "
              "VIN_SYS_5V0 5500mW/5500mW/5500mW")


def test_one_regex_reads_both_tegrastats_styles():
    assert agent.parse_tegrastats(TEGRA_XAVIER_JP4) == {"GPU": 463, "CPU": 1234, "SOC": 1700, "CV": 0, "VDDRQ": 310, "SYS5V": 1900}
    assert agent.parse_tegrastats(TEGRA_ORIN) == {"VDD_GPU_SOC": 5139, "VDD_CPU_CV": 3268, "VIN_SYS_5V0": 5500}
    assert agent.parse_tegrastats("VDD_IN 4000mW/4000mW VDD_SYS_GPU 900mW/900mW") == {"VDD_IN": 4000, "VDD_SYS_GPU": 900}
    assert agent.total_mw({"VDD_IN": 4000, "VDD_SYS_GPU": 900}) == 4000  # input rail: the others are parts of it
    assert agent.total_mw({"GPU": 463, "CPU": 1234}) == 1697


def _iio(root, values):
    d = root / "sys/bus/i2c/drivers/ina3221x/1-0040/iio:device0"
    d.mkdir(parents=True, exist_ok=True)
    for ch, (name, mw) in enumerate(values.items()):
        (d / f"rail_name_{ch}").write_text(name + "\n")
        (d / f"in_power{ch}_input").write_text(f"{mw}\n")
    return d


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    f = tmp_path_factory.mktemp("m") / "m.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3)),
                      (torch.randn(1, 3, 64, 64),), str(f), dynamo=False)
    return str(f)


CFG = {"input_shape": [1, 3, 64, 64], "protocol": {"warmup_runs": 2, "warmup_s": 0, "min_time_s": 0.5, "max_time_s": 0.6, "max_other_busy": 1.01}}


def test_ina3221_iio_energy_is_power_times_time(tmp_path, onnx_model):
    _iio(tmp_path, {"GPU": 1500, "CPU": 2500, "SOC": 2000})  # 6 W in all
    meter = agent.EnergyMeter("ina3221", tmp_path, period_s=0.005)
    assert meter.name == "ina3221:iio" and meter.rails == ["CPU", "GPU", "SOC"]
    row = agent.measure(agent.OnnxRuntime({"threads": 1}), onnx_model, CFG, tmp_path, meter=meter)
    expected = 6000 * row["timed_s"] / row["n_runs"]  # mW x s = mJ, per inference
    assert row["energy_mj"] == pytest.approx(expected, rel=1e-6)
    assert row["power_w_mean"] == pytest.approx(6.0) and row["energy_source"] == "ina3221:iio"


@pytest.mark.timing
def test_changing_rail_power_is_integrated(tmp_path, onnx_model):
    d = _iio(tmp_path, {"GPU": 2000})
    """The meter's energy against the truth: the integral of the power the rail really showed
    (a logged 2 W / 8 W square wave) over the exact window the agent integrated."""
    meter = agent.EnergyMeter("ina3221", tmp_path, period_s=0.002)
    windows, integrate = [], meter.window
    meter.window = lambda t0, t1: windows.append((t0, t1)) or integrate(t0, t1)
    stop, flips = threading.Event(), [(time.perf_counter(), 2000.0)]  # (from when, mW): the initial 2 W

    def flip():
        hi = True
        while not stop.is_set():
            time.sleep(0.05)
            (d / "tmp").write_text("8000\n" if hi else "2000\n")
            (d / "tmp").rename(d / "in_power0_input")  # as sysfs: a read never sees half a value
            flips.append((time.perf_counter(), 8000.0 if hi else 2000.0))
            hi = not hi
    t = threading.Thread(target=flip)
    t.start()
    try:
        row = agent.measure(agent.OnnxRuntime({"threads": 1}), onnx_model, CFG, tmp_path, meter=meter)
    finally:
        stop.set()
        t.join()
    (t0, t1), = windows
    edges = [max(t0, min(t1, s)) for s, _ in flips] + [t1]
    truth_mj = sum(mw * (b - a) for (_, mw), a, b in zip(flips, edges, edges[1:]))
    assert {mw for _, mw in meter.samples} == {2000.0, 8000.0}  # whole values, both levels
    assert row["energy_mj"] * row["n_runs"] == pytest.approx(truth_mj, rel=0.08)
    assert row["power_w_mean"] == pytest.approx(truth_mj / (t1 - t0) / 1000, rel=0.08)


def test_window_integrates_trapezoids_and_holds_the_edges():
    m = agent.EnergyMeter.__new__(agent.EnergyMeter)
    m.samples = [(0.0, 1000.0), (1.0, 3000.0), (2.0, 3000.0)]
    assert m.window(0.0, 2.0) == pytest.approx((2000 + 3000, 2.5))  # mJ, mean W
    assert m.window(0.5, 1.5)[0] == pytest.approx(0.5 * (2000 + 3000) / 2 + 0.5 * 3000)
    assert m.window(2.0, 3.0)[0] == pytest.approx(3000)  # after the last sample: held flat


def test_hwmon_layout_prefers_the_input_rail(tmp_path):
    d = tmp_path / "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    d.mkdir(parents=True)
    for ch, (label, mv, ma) in enumerate([("VDD_IN", 5000, 1200), ("VDD_CPU_GPU_CV", 5000, 400), ("VDD_SOC", 5000, 300)], 1):
        (d / f"in{ch}_label").write_text(label)
        (d / f"in{ch}_input").write_text(str(mv))
        (d / f"curr{ch}_input").write_text(str(ma))
    meter = agent.EnergyMeter("ina3221", tmp_path)
    assert meter.name == "ina3221:hwmon"
    assert agent.total_mw(meter.read()) == pytest.approx(6000.0)  # 5 V x 1.2 A, not the sum


def test_android_battery(tmp_path):
    d = tmp_path / "sys/class/power_supply/battery"
    d.mkdir(parents=True)
    (d / "current_now").write_text("-850000")  # discharging, negative on this vendor
    (d / "voltage_now").write_text("3900000")
    meter = agent.EnergyMeter("battery", tmp_path)
    assert agent.total_mw(meter.read()) == pytest.approx(0.85 * 3.9 * 1000)


def test_tegrastats_stand_in_on_path(tmp_path, monkeypatch):
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    ts = bin_ / "tegrastats"
    ts.write_text(f"#!/bin/sh\nwhile true; do echo '{TEGRA_ORIN}'; sleep 0.02; done\n")
    ts.chmod(ts.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    meter = agent.EnergyMeter("ina3221", tmp_path)  # no INA3221 files: falls back to tegrastats
    try:
        assert meter.name == "tegrastats" and agent.total_mw(meter.read()) == 5139 + 3268 + 5500
    finally:
        meter.close()


def test_no_source_means_null_energy_and_a_reason(tmp_path, onnx_model, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no tegrastats
    with pytest.raises(agent.NoEnergySource, match="no INA3221 rails.*tegrastats not on PATH.*NVML"):
        agent.EnergyMeter("ina3221", tmp_path)
    row = agent.measure(agent.OnnxRuntime({"threads": 1}), onnx_model, CFG, tmp_path, energy_note="no energy source: x")
    assert row["energy_mj"] is None and row["energy_source"] == "none" and row["energy_note"] == "no energy source: x"


def _jetson_tools(tmp_path, mode: str):
    """nvpmodel / jetson_clocks / sudo stand-ins on PATH, keeping the mode in a state file."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    state = tmp_path / "mode"
    state.write_text(mode)
    tools = {
        "nvpmodel": f'#!/bin/sh\nif [ "$1" = "-q" ]; then echo "NV Power Mode: $(cat {state})"; echo 0; '
                    f'elif [ "$1" = "-m" ] && [ "$2" = "0" ]; then echo MAXN > {state}; fi\n',
        "jetson_clocks": f"#!/bin/sh\ntouch {tmp_path}/clocks-locked\n",
        "sudo": '#!/bin/sh\n[ "$1" = "-n" ] && shift\nexec "$@"\n',
    }
    for name, text in tools.items():
        (bin_ / name).write_text(text)
        (bin_ / name).chmod(0o755)
    return bin_


def _power_profile(tmp_path, fast_device, set_if_allowed: bool):
    f = tmp_path / "jetson.toml"
    f.write_text(open(fast_device).read() + f'\n[power]\nmode = "MAXN"\nmode_id = 0\nrequire = true\nset_if_allowed = {str(set_if_allowed).lower()}\n')
    return f


def test_maxn_required_and_not_set_is_refused(tmp_path, fast_device):
    """The profile demands MAXN, the board is in 15 W and the agent may not change it."""
    from conftest import nasctl, small_archs

    bin_ = _jetson_tools(tmp_path, "MODE_15W")
    archs, out = tmp_path / "a.parquet", tmp_path / "lat.parquet"
    small_archs(archs, 2)
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}"}
    p = nasctl("profile", "--device", _power_profile(tmp_path, fast_device, False), "--archs", archs, "-o", out, env=env, check=2)
    assert "power mode MODE_15W, the profile requires MAXN" in p.stderr and not out.exists()


def test_maxn_set_when_allowed_and_recorded_on_every_row(tmp_path, fast_device):
    import pandas as pd

    from conftest import nasctl, small_archs

    bin_ = _jetson_tools(tmp_path, "MODE_15W")
    archs, out = tmp_path / "a.parquet", tmp_path / "lat.parquet"
    small_archs(archs, 2)
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}"}
    nasctl("profile", "--device", _power_profile(tmp_path, fast_device, True), "--archs", archs, "-o", out, env=env, check=0)
    df = pd.read_parquet(out)
    assert (df["power_mode"] == "MAXN").all() and df["clocks_locked"].all()
    assert (tmp_path / "mode").read_text().strip() == "MAXN" and (tmp_path / "clocks-locked").exists()
