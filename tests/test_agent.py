"""The device agent's statistics, protocol and facts (it runs on boards, so test it alone)."""

import json
import random
import subprocess
import sys

import pytest
from scipy import stats

from nasctl_agents import agent
from nasctl_agents.protocol import request


def test_median_ci_matches_binomial_order_statistics():
    rng = random.Random(0)
    xs = sorted(rng.gauss(10, 1) for _ in range(400))
    lo, hi = agent.median_ci(xs)
    # Exact binomial CI for the median via scipy, for the same ranks +-1.
    k = stats.binom.ppf(0.025, len(xs), 0.5)
    assert abs(xs.index(lo) - (k - 1)) <= 1
    assert lo < agent.statistics.median(xs) < hi


def test_summarize():
    s = agent.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["latency_ms"] == 3.0 and s["latency_min_ms"] == 1.0 and s["n_runs"] == 5
    assert s["latency_p90_ms"] == 100.0 and s["latency_mean_ms"] == 22.0


def test_protocol_stops_when_ci_is_tight_and_at_limits():
    fast = {"warmup_runs": 1, "warmup_s": 0, "min_runs": 10, "min_time_s": 0, "max_runs": 10_000, "max_time_s": 5}
    times, t0, t1 = agent.time_model(lambda: None, {**fast, "ci_rel": 0.5})
    assert 10 <= len(times) < 1000 and 0 < t1 - t0 < 5
    times, *_ = agent.time_model(lambda: None, {**fast, "ci_rel": -1, "max_runs": 77})  # never converges
    assert len(times) == 77


def test_facts_from_a_sysfs_root(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: ARMv8 Processor rev 0 (v8l)\n")
    (tmp_path / "proc/loadavg").write_text("0.50 0.40 0.30 1/100 42\n")
    for i, t in enumerate(["41500", "55250"]):
        z = tmp_path / f"sys/class/thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "temp").write_text(t)
    gov = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq"
    gov.mkdir(parents=True)
    (gov / "scaling_governor").write_text("performance\n")
    f = agent.facts(tmp_path)
    assert f["cpu_model"] == "ARMv8 Processor rev 0 (v8l)" and f["temp_c"] == 55.25
    assert f["governor"] == "performance" and agent.loadavg_1m(tmp_path) == 0.5
    assert agent.facts(tmp_path / "empty")["temp_c"] is None


def test_agent_runs_as_one_reproducible_zipapp(tmp_path, monkeypatch):
    """On a board the agent is one copied zipapp run by the system Python, named by its hash:
    two builds are byte-identical, so the remote folder changes only when the code does."""
    from nasctl.device.transports.base import agent_app

    app = agent_app()
    p = subprocess.run([sys.executable, str(app), "facts"], capture_output=True, text=True, cwd=tmp_path, check=True)
    f = json.loads(p.stdout)
    assert f["runtime"] == "onnxruntime" and f["runtime_version"] and f["agent_version"] == agent.AGENT_VERSION
    agent_app.cache_clear()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    again = agent_app()
    agent_app.cache_clear()
    assert again != app and again.name == app.name and again.read_bytes() == app.read_bytes()


def test_serve_turns_an_unloadable_model_into_an_error_row_and_goes_on(tmp_path):
    import torch

    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.randn(1, 3, 8, 8),), str(good), dynamo=False)
    bad.write_bytes(b"this is not an onnx model")
    cfg = {"runtime": "onnxruntime", "threads": 1, "input_shape": [1, 3, 8, 8],
           "protocol": {"warmup_runs": 1, "warmup_s": 0, "min_runs": 5, "min_time_s": 0, "max_time_s": 0.2}}
    # a bad model, a line that is not JSON, a request without its model: error rows; the agent goes on
    reqs = request("a", str(bad)) + "{not json\n" + json.dumps({"key": "c"}) + "\n" + request("b", str(good))
    p = subprocess.run([sys.executable, agent.__file__, "serve", "--config", json.dumps(cfg)],
                       input=reqs, capture_output=True, text=True, check=True)
    hello, a, junk, c, b = (json.loads(l) for l in p.stdout.splitlines())
    assert "facts" in hello
    assert a["key"] == "a" and a["status"] == "error" and a["error"].startswith("InvalidProtobuf")
    assert junk["key"] is None and junk["status"] == "error" and "not a JSON request line" in junk["error"]
    assert c["status"] == "error" and "needs string 'key' and 'model'" in c["error"]
    assert b["key"] == "b" and b["status"] in ("ok", "disturbed") and b["latency_ms"] > 0  # disturbed: other load here


@pytest.fixture
def conv(tmp_path):
    import torch

    model = tmp_path / "conv.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3), (torch.randn(1, 3, 8, 8),), str(model), dynamo=False)
    return model


def serve_argv(protocol: dict) -> list[str]:
    """The deployed agent (the zipapp), serving a small conv's config."""
    from nasctl.device.transports.base import agent_app

    cfg = {"runtime": "onnxruntime", "threads": 1, "input_shape": [1, 3, 8, 8],
           "protocol": {"warmup_runs": 1, "warmup_s": 0, "min_runs": 5, "min_time_s": 0, "max_time_s": 0.2, **protocol}}
    return [sys.executable, str(agent_app()), "serve", "--config", json.dumps(cfg)]


def test_serve_answers_bytes_that_are_not_utf8_with_an_error_row_and_goes_on(conv):
    """A board's locale may decode strictly: a stray byte is an error row, never the agent's end."""
    import os

    reqs = b"\xff\xfe\n" + request("b", str(conv)).encode()
    p = subprocess.run(serve_argv({}), input=reqs, capture_output=True, check=True,
                       env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"})
    hello, junk, b = (json.loads(line) for line in p.stdout.splitlines())
    assert "facts" in hello
    assert junk["key"] is None and junk["status"] == "error" and "not a UTF-8 request line: b'\\xff\\xfe'" in junk["error"]
    assert b["key"] == "b" and b["status"] in ("ok", "disturbed") and b["latency_ms"] > 0


def test_serve_leaves_ctrl_c_to_the_host(conv):
    """A terminal's Ctrl-C reaches the agent too where it shares the terminal's process group
    (nasctl starts its own agents in a session of their own, but a board's shell may forward it):
    it is for the host, which stops the agent itself. The agent times on and answers."""
    import signal

    agent_proc = subprocess.Popen(serve_argv({"min_time_s": 1.0, "max_time_s": 2.0, "max_runs": 10**9}),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "facts" in json.loads(agent_proc.stdout.readline())  # its handlers are set before the hello
        agent_proc.stdin.write(request("a", str(conv)))
        agent_proc.stdin.flush()
        agent_proc.send_signal(signal.SIGINT)
        out, err = agent_proc.communicate(request("b", str(conv)), timeout=300)  # a hang guard
    finally:
        agent_proc.kill()
        agent_proc.wait()
    a, b = (json.loads(line) for line in out.splitlines())
    assert agent_proc.returncode == 0 and "KeyboardInterrupt" not in err, (agent_proc.returncode, err)
    assert (a["key"], b["key"]) == ("a", "b") and a["status"] in ("ok", "disturbed") and a["n_runs"] > 0


def test_foreign_load_on_the_free_cores_is_detected_and_retimed(tmp_path):
    import os

    import torch

    model = tmp_path / "m.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 8, 3), (torch.randn(1, 3, 32, 32),), str(model), dynamo=False)
    runtime = agent.OnnxRuntime({"threads": 1})
    # max_runs out of reach: this conv runs in ~10 us, so the default 2000 runs would end the
    # window after ~2 jiffies of /proc/stat, too few to read the spinners' share from
    cfg = {"input_shape": [1, 3, 32, 32], "protocol": {"warmup_runs": 1, "warmup_s": 0, "min_time_s": 0.6, "max_time_s": 0.8,
                                                       "max_runs": 10**9, "max_other_busy": 0.5}}
    spinner = "print('spinning', flush=True)\nwhile True: pass"
    spin = [subprocess.Popen([sys.executable, "-c", spinner], stdout=subprocess.PIPE, text=True) for _ in range((os.cpu_count() or 2) - 1)]
    try:
        assert all(p.stdout.readline() == "spinning\n" for p in spin)  # each spins before the timing starts
        row = agent.measure(runtime, str(model), cfg, agent.Path("/"))
    finally:
        for p in spin:
            p.kill()
            p.wait()
    if os.cpu_count() == 1:
        pytest.skip("one core: there is no free core to watch")
    assert row["other_cores_busy"] > 0.5 and row["interference_retries"] == 2
    assert row["status"] == "disturbed"  # kept for the record, never fitted
