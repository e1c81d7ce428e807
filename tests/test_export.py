"""export: ONNX with parity in onnxruntime, TFLite with the [tflite] extra, TensorRT pieces."""

import importlib.util
import json
import time

import onnx
import pytest

from conftest import DATA, nasctl
from nasctl.export.trt import parse_export_times, parse_trtexec_log, trtexec_argv

TINY = str(DATA / "tiny.toml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "model"
    nasctl("retrain", "k7_e6-skip-k5_e3-skip", "--space", TINY, "--epochs", 1, "--batch", 64, "-o", out, check=0)
    return out


def test_onnx_export_parity_and_sidecar(trained, tmp_path):
    out = tmp_path / "model.onnx"
    info = json.loads(nasctl("export", trained, "--format", "onnx", "-o", out, "--json", check=0).stdout)
    onnx.checker.check_model(str(out), full_check=True)
    side = json.loads((tmp_path / "model.onnx.json").read_text())
    assert side["parity_max_abs_diff"] <= 1e-4 and side == {k: info[k] for k in side}
    assert side["arch"] == "k7_e6-skip-k5_e3-skip" and side["input_shape"] == [1, 3, 32, 32]
    assert len(side["source_checkpoint_sha256"]) == 64 and side["opset"] == 17


def test_onnx_dynamic_batch(trained, tmp_path):
    out = tmp_path / "dyn.onnx"
    nasctl("export", trained, "-o", out, "--dynamic-batch", "--batch", 2, check=0)
    dim = onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is None, reason="the [tflite] extra is not installed")
def test_tflite_export_parity(trained, tmp_path):
    out = tmp_path / "model.tflite"
    info = json.loads(nasctl("export", trained, "--format", "tflite", "-o", out, "--json", check=0).stdout)
    assert out.stat().st_size > 0 and info["parity_max_abs_diff"] <= 1e-3


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is not None, reason="the [tflite] extra is installed")
def test_tflite_without_the_extra_says_how_to_get_it(trained, tmp_path):
    p = nasctl("export", trained, "--format", "tflite", "-o", tmp_path / "m.tflite", check=2)
    assert "[tflite] extra" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_without_tensorrt_says_where_to_build(trained, tmp_path):
    p = nasctl("export", trained, "--format", "trt", "-o", tmp_path / "m.engine", check=2)
    assert "no TensorRT here" in p.stderr and list(tmp_path.iterdir()) == []


def test_trtexec_argv_is_a_list_that_cannot_inject():
    argv = trtexec_argv("/tmp/a b;rm -rf ~.onnx", "/tmp/x.engine", fp16=True, workspace_mb=2048, shape=[8, 3, 224, 224], times_json="/tmp/t.json")
    assert argv == ["trtexec", "--onnx=/tmp/a b;rm -rf ~.onnx", "--saveEngine=/tmp/x.engine", "--memPoolSize=workspace:2048M",
                    "--fp16", "--shapes=input:8x3x224x224", "--exportTimes=/tmp/t.json"]


# Written from trtexec's documented output (TensorRT 8.5, JetPack 5 on an AGX Xavier).
TRTEXEC_LOG = """&&&& RUNNING TensorRT.trtexec [TensorRT v8502] # trtexec --onnx=model.onnx --saveEngine=model.engine --fp16
[11/22/2026-10:00:00] [I] === Device Information ===
[11/22/2026-10:00:00] [I] Selected Device: Xavier
[11/22/2026-10:00:00] [I] Compute Capability: 7.2
[11/22/2026-10:00:00] [I] SMs: 8
[11/22/2026-10:00:00] [I] TensorRT version: 8.5.2
[11/22/2026-10:05:00] [I] === Performance summary ===
[11/22/2026-10:05:00] [I] Throughput: 421.5 qps
[11/22/2026-10:05:00] [I] GPU Compute Time: min = 2.25 ms, max = 3.10 ms, mean = 2.36 ms, median = 2.34 ms, percentile(90%) = 2.41 ms
&&&& PASSED TensorRT.trtexec [TensorRT v8502] # trtexec --onnx=model.onnx --saveEngine=model.engine --fp16
"""

EXPORT_TIMES = json.dumps([
    {"count": 3},
    {"startEnqMs": 0.1, "endEnqMs": 0.2, "startComputeMs": 0.2, "endComputeMs": 2.5, "h2dMs": 0.05, "computeMs": 2.31, "d2hMs": 0.01, "latencyMs": 2.4, "endToEndMs": 2.5},
    {"startEnqMs": 2.6, "endEnqMs": 2.7, "startComputeMs": 2.7, "endComputeMs": 5.0, "h2dMs": 0.05, "computeMs": 2.35, "d2hMs": 0.01, "latencyMs": 2.45, "endToEndMs": 2.5},
    {"startEnqMs": 5.1, "endEnqMs": 5.2, "startComputeMs": 5.2, "endComputeMs": 7.5, "h2dMs": 0.05, "computeMs": 2.29, "d2hMs": 0.01, "latencyMs": 2.38, "endToEndMs": 2.5},
])


def test_trtexec_log_and_times_parsers():
    info = parse_trtexec_log(TRTEXEC_LOG)
    assert info["passed"] and info["tensorrt_version"] == "8.5.2" and info["gpu"] == "Xavier"
    assert info["compute_capability"] == "7.2" and info["gpu_compute_ms"]["median"] == 2.34
    assert not parse_trtexec_log("&&&& FAILED TensorRT.trtexec")["passed"]
    assert parse_export_times(EXPORT_TIMES) == [2.31, 2.35, 2.29]
    assert parse_export_times(EXPORT_TIMES, "latencyMs") == [2.4, 2.45, 2.38]
    with pytest.raises(ValueError):
        parse_export_times("[]")


TEARDOWN_S = 0.6


def test_agent_tensorrt_runtime_builds_on_the_device_and_times_from_export_times(tmp_path, monkeypatch):
    """A trtexec stand-in (documented log and --exportTimes format) on PATH, as on a Jetson."""
    from nasctl_agents import agent

    bin_ = tmp_path / "bin"
    bin_.mkdir()
    calls = tmp_path / "calls.jsonl"
    (bin_ / "trtexec").write_text(f"""#!{__import__('sys').executable}
import json, sys
args = sys.argv[1:]
open({str(calls)!r}, "a").write(json.dumps(args) + "\\n")
opts = dict(a[2:].split("=", 1) for a in args if "=" in a)
if "saveEngine" in opts:
    open(opts["saveEngine"], "wb").write(b"engine")
if "exportTimes" in opts:
    recs = [{{"count": 40}}] + [{{"startComputeMs": 3.0 * i, "endComputeMs": 3.0 * i + 2.3 + 0.01 * (i % 3),
             "computeMs": 2.3 + 0.01 * (i % 3), "latencyMs": 2.4}} for i in range(40)]
    open(opts["exportTimes"], "w").write(json.dumps(recs))
if "loadEngine" in opts:  # the timing run: inference, its prolog lines at once, then a slow teardown
    import time
    print("[I] Starting inference", flush=True)
    time.sleep(0.2)
    print("[I] Warmup completed 6 queries over 200 ms", flush=True)
    print("[I] Timing trace has 40 queries over 0.119 s", flush=True)
    time.sleep(TEARDOWN_S)
print({TRTEXEC_LOG!r})
""".replace("TEARDOWN_S", str(TEARDOWN_S)))
    (bin_ / "trtexec").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}:{__import__('os').environ['PATH']}")
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    rt = agent.TensorRT({"precision": "fp16", "workspace_mb": 512})
    cfg = {"input_shape": [8, 3, 224, 224], "protocol": {"warmup_s": 0.2, "min_time_s": 3, "min_runs": 20}}
    row = agent.measure(rt, str(model), cfg, tmp_path)
    build, timing = (json.loads(l) for l in calls.read_text().splitlines())
    assert build == [f"--onnx={model}", f"--saveEngine={tmp_path / 'm.engine'}", "--memPoolSize=workspace:512M",
                     "--fp16", "--shapes=input:8x3x224x224"]
    assert timing[:2] == [f"--loadEngine={tmp_path / 'm.engine'}", f"--exportTimes={tmp_path / 'm.engine'}.times.json"]
    assert "--warmUp=200" in timing and "--duration=3" in timing and "--iterations=20" in timing
    assert row["provider"] == "tensorrt" and row["tensorrt_version"] == "8.5.2" and row["gpu"] == "Xavier"
    assert row["n_runs"] == 40 and row["latency_ms"] == pytest.approx(2.31) and row["latency_min_ms"] == pytest.approx(2.3)
    assert row["timed_s"] == pytest.approx((3.0 * 39 + 2.3 + 0.01 * 0) / 1e3)
    # The energy window is the timed loop: it ends when trtexec reports the trace, not at its exit.
    prepared = rt.prepare(str(model), cfg["input_shape"])
    t0, t1 = prepared.time(cfg["protocol"])[1:]
    assert time.perf_counter() - t1 >= 0.8 * TEARDOWN_S and t1 - t0 == pytest.approx(0.1193)
