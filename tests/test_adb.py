"""Profiling through the real `adb` client and server, against the test adbd (tests/adbd.py)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from adbd import Adbd
from conftest import ctrl_c_mid_profile, nasctl, small_archs
from devicehost import DEVICE_PYTHON
from test_profile import SCHEMA

pytestmark = pytest.mark.skipif(shutil.which("adb") is None, reason="adb not installed (Debian: adb; tests/setup-hosts.sh)")
PHONE_PYTHON = DEVICE_PYTHON if os.path.exists(DEVICE_PYTHON) else sys.executable  # no torch there, where it exists


@pytest.fixture(scope="module")
def adb_server():
    """A private adb server, so the tests never touch the user's devices or server: its port is
    the session's (conftest.private_adb_server), which stops it when the session ends."""
    subprocess.run(["adb", "start-server"], check=True, capture_output=True)
    return os.environ["ANDROID_ADB_SERVER_PORT"]


def connect(adbd: Adbd) -> None:
    subprocess.run(["adb", "connect", adbd.serial], check=True, capture_output=True, timeout=30)
    subprocess.run(["adb", "-s", adbd.serial, "wait-for-any-device"], capture_output=True, timeout=60)  # a hang guard


@pytest.fixture(scope="module")
def phone(adb_server, tmp_path_factory):
    home = tmp_path_factory.mktemp("phone")
    d = Adbd(home)
    connect(d)
    yield d
    subprocess.run(["adb", "disconnect", d.serial], capture_output=True)
    d.close()


def profile_for(phone: Adbd, path, runtime: str = "onnxruntime", **adb) -> str:
    conf = {"serial": phone.serial, "python": PHONE_PYTHON, "workdir": str(phone.home / "nasctl"), **adb}
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in conf.items())
    path.write_text(f"""name = "testphone"
transport = "adb"
runtime = "{runtime}"
[adb]
{table}
[runtime_options]
threads = 1
[protocol]
warmup_runs = 2
min_runs = 20
min_time_s = 0.3
max_time_s = 1.0
max_other_busy = 1.0
""")
    return str(path)


@pytest.fixture
def archs(tmp_path):
    return small_archs(tmp_path / "archs.parquet", 5, seed=2)


def test_rows_arrive_through_adb_with_the_local_schema_and_resume(phone, archs, tmp_path):
    dev = profile_for(phone, tmp_path / "phone.toml")
    out = tmp_path / "lat.parquet"
    s = json.loads(nasctl("profile", "--device", dev, "--archs", archs, "-o", out, "--json", check=0).stdout)
    assert (s["measured"], s["errors"]) == (5, 0)
    df = pd.read_parquet(out)
    assert SCHEMA <= set(df.columns) and (df["transport"] == "adb").all() and (df["status"] == "ok").all()
    assert df["arch_id"].is_unique and (df["latency_ms"] > 0).all()
    assert not list((phone.home / "nasctl").glob("models-*"))  # staged models cleaned up
    again = json.loads(nasctl("profile", "--device", dev, "--archs", archs, "-o", out, "--json", check=0).stdout)
    assert (again["measured"], again["skipped"]) == (0, 5)


def test_ctrl_c_mid_profile_stores_nothing_for_the_arch_in_flight(phone, tmp_path):
    ctrl_c_mid_profile(profile_for(phone, tmp_path / "phone.toml"), tmp_path)


def test_serial_on_the_command_line_and_check(phone, tmp_path):
    dev = profile_for(phone, tmp_path / "phone.toml", serial="")
    p = nasctl("profile", "--device", dev, "--serial", phone.serial, "--check", "--json", check=0)
    (facts,) = json.loads(p.stdout)["hosts"]
    assert facts["runtime"] == "onnxruntime" and facts["agent_version"]


def test_unknown_and_unauthorized_devices_fail_clearly(adb_server, phone, tmp_path):
    p = nasctl("profile", "--device", profile_for(phone, tmp_path / "x.toml", serial="nosuchphone"), "--check", check=3)
    assert "device nosuchphone not found" in p.stderr and len(p.stderr.strip().splitlines()) == 1

    locked = Adbd(tmp_path, authorized=False)
    try:
        subprocess.run(["adb", "connect", locked.serial], capture_output=True, timeout=30)
        for _ in range(50):  # "authorizing" first, then "unauthorized" once the key exchange fails
            if f"{locked.serial}\tunauthorized" in subprocess.run(["adb", "devices"], capture_output=True, text=True).stdout:
                break
            time.sleep(0.1)
        p = nasctl("profile", "--device", profile_for(locked, tmp_path / "u.toml"), "--check", check=3)
        # "unauthorized", or "waiting for authorization" while the server retries its keys
        assert "RSA key prompt" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    finally:
        subprocess.run(["adb", "disconnect", locked.serial], capture_output=True)
        locked.close()


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None or importlib.util.find_spec("ai_edge_litert") is None,
                    reason="the [tflite] extra is not installed (litert-torch converts, ai-edge-litert times)")
def test_tflite_models_are_timed_in_litert_on_the_phone(phone, archs, tmp_path):
    """This host plays the phone: its Python has the LiteRT interpreter."""
    dev = profile_for(phone, tmp_path / "tfl.toml", runtime="tflite", python=sys.executable)
    out = tmp_path / "tfl.parquet"
    s = json.loads(nasctl("profile", "--device", dev, "--archs", archs, "-o", out, "--json", check=0).stdout)
    df = pd.read_parquet(out)
    assert s["measured"] == 5 and (df["status"] == "ok").all() and (df["provider"] == "litert-cpu").all()
    assert df["runtime_version"].str.startswith("ai-edge-litert").all() and (df["latency_ms"] > 0).all()


def test_a_tflite_device_without_the_extra_says_so(phone, archs, tmp_path):
    if importlib.util.find_spec("litert_torch") is not None:
        pytest.skip("the [tflite] extra is installed here")
    out = tmp_path / "tfl.parquet"
    p = nasctl("profile", "--device", profile_for(phone, tmp_path / "t.toml", runtime="tflite"), "--archs", archs,
               "-o", out, check=2)
    assert "[tflite] extra" in p.stderr and not out.exists()


# benchmark_model's output as TFLite's documentation shows it (times in microseconds).
BENCHMARK_MODEL_OUT = """STARTING!
Log parameter values verbosely: [0]
Num threads: [1]
Graph: [/data/local/tmp/model.tflite]
Loaded model /data/local/tmp/model.tflite
INFO: Initialized TensorFlow Lite runtime.
The input model file size (MB): 4.27635
Initialized session in 3.789ms.
Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=35 first=27296 curr=14099 min=13848 max=27296 avg=14330.1 std=2231

Running benchmark for at least 20 iterations and at least 0.3 seconds but terminate if exceeding 1 seconds.
count=71 first=14079 curr=14063 min=13850 max=14592 avg=14083.8 std=112

Inference timings in us: Init: 3789, First inference: 27296, Warmup (avg): 14330.1, Inference (avg): 14083.8
Memory footprint delta from the start of the tool (MB): init=5.07422 overall=10.6016
"""


def test_benchmark_model_output_is_parsed():
    from nasctl.device.transports.adb import parse_benchmark_model

    r = parse_benchmark_model(BENCHMARK_MODEL_OUT)
    assert r["n_runs"] == 71 and r["latency_ms"] == pytest.approx(14.0838) and r["latency_stat"] == "mean"
    assert (r["latency_min_ms"], r["latency_max_ms"], r["latency_std_ms"]) == (13.85, 14.592, 0.112)
    assert r["first_inference_ms"] == pytest.approx(27.296) and r["timed_s"] == pytest.approx(71 * 0.0140838)
    with pytest.raises(ValueError, match="no timings"):
        parse_benchmark_model("ERROR: Could not open 'x.tflite'.\nAborted")


def stand_in_benchmark_model(phone: Adbd, body: str) -> Path:
    """A phone with no Python: getprop and a benchmark_model stand-in (a shell script) in its bin/."""
    bin_ = phone.home / "bin"
    bin_.mkdir(exist_ok=True)
    (bin_ / "getprop").write_text('#!/bin/sh\ncase "$1" in ro.product.model) echo Pixel 7;; '
                                  'ro.board.platform) echo gs201;; ro.build.version.release) echo 14;; esac\n')
    (bin_ / "benchmark_model").write_text(f"#!/bin/sh\n{body}")
    for f in ("getprop", "benchmark_model"):
        (bin_ / f).chmod(0o755)
    return bin_


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None, reason="the [tflite] extra is not installed")
def test_a_phone_without_python_is_timed_with_benchmark_model(phone, archs, tmp_path):
    """A benchmark_model stand-in on the phone prints the documented output; its flags come
    from the profile's protocol."""
    bin_ = phone.home / "bin"
    stand_in_benchmark_model(phone, f"echo \"$@\" >> {bin_}/bm.calls\ncat <<'EOF'\n{BENCHMARK_MODEL_OUT}EOF\n")
    dev = profile_for(phone, tmp_path / "bm.toml", runtime="tflite", benchmark_model=str(bin_ / "benchmark_model"))
    out = tmp_path / "bm.parquet"
    s = json.loads(nasctl("profile", "--device", dev, "--archs", archs, "-o", out, "--json", check=0).stdout)
    df = pd.read_parquet(out)
    assert s["measured"] == 5 and (df["provider"] == "benchmark_model").all() and (df["latency_stat"] == "mean").all()
    assert (df["cpu_model"] == "Pixel 7 (gs201)").all() and df["energy_mj"].isna().all()
    calls = (bin_ / "bm.calls").read_text().splitlines()
    assert len(calls) == 5 and all("--num_threads=1" in c and "--num_runs=20" in c and ".tflite" in c for c in calls)


def test_a_benchmark_model_run_is_halted_mid_measurement(phone, tmp_path):
    """Ctrl-C while benchmark_model times a model: halt ends its `adb shell`; adbd then closes
    its pipes, so on the phone it dies at its next line of output (this stand-in prints one
    every 0.1 s, and would for 10 minutes)."""
    from nasctl.device import load_device
    from nasctl.device.transports import open_transport

    started = tmp_path / "started"
    bin_ = stand_in_benchmark_model(phone, f"echo $$ > {started}.part && mv {started}.part {started}\n"
                                    "for i in $(seq 6000); do echo running; sleep 0.1; done\n")
    dev = load_device(profile_for(phone, tmp_path / "bm.toml", runtime="tflite", benchmark_model=str(bin_ / "benchmark_model")))
    rows = []
    with open_transport(dev) as transport:
        session = transport.start_agent(dev.agent_config(32))
        assert session.facts["cpu_model"] == "Pixel 7 (gs201)"
        timing = threading.Thread(target=lambda: rows.append(session.measure("k", "/data/local/tmp/m.tflite")))
        timing.start()
        while not started.exists() and timing.is_alive():
            time.sleep(0.05)
        session.halt()
        timing.join(300)  # a hang guard: the stand-in runs for 600 s
        assert not timing.is_alive() and rows[0]["status"] == "error"  # what the caller drops, once halted
        on_phone = Path(f"/proc/{started.read_text().strip()}")
        guard = time.monotonic() + 300  # adbd's SIGHUP follows the closed stream: wait for it, not a set time
        while on_phone.exists() and time.monotonic() < guard:
            time.sleep(0.05)
    assert not on_phone.exists(), "benchmark_model left running on the phone"
    assert rows[0]["error"].startswith("benchmark_model printed no timings")
