#!/usr/bin/env python3
"""nasctl device agent: times model files on the device it runs on and streams JSON rows.

Self-contained on purpose: Python 3 standard library plus the runtime being timed (numpy comes
with onnxruntime), because it is copied as one file to boards that have no torch and no nasctl.
The host runs the same file for `--device local`, so local and remote rows share one protocol.

    agent.py facts [--sysfs-root DIR]                 one JSON object of device facts
    agent.py serve --config JSON [--sysfs-root DIR]   read {"key", "model"} lines on stdin,
                                                      answer one JSON row per line on stdout
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

AGENT_VERSION = "0.1.0"

# Defaults of the timing protocol; a device profile's [protocol] table overrides them.
PROTOCOL = {
    "warmup_runs": 5,  # the first runs allocate and page in weights
    "warmup_s": 0.1,
    "min_runs": 10,
    "min_time_s": 1.0,  # at least this long inside timed runs: the CI then means something
    "max_runs": 2000,
    "max_time_s": 10.0,
    "ci_rel": 0.01,  # stop once the 95% CI of the median lies within +-1% of it
    # Another process loading the free cores (a compile, a pip install) slows a 1-thread run by
    # 15-20% here; the host's own exporter stays well below this share. Above it, time again.
    "max_other_busy": 0.8,
    "interference_retries": 2,
}


# ---- device facts ------------------------------------------------------------------------
def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_model(root: Path) -> str:
    text = _read(root / "proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        for line in text.splitlines():
            if line.split(":")[0].strip() == key:
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def governor(root: Path) -> str | None:
    return _read(root / "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")


def temperature_c(root: Path) -> float | None:
    """Hottest thermal zone, in degrees C (sysfs gives millidegrees)."""
    temps = []
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        t = _read(zone / "temp")
        if t and t.lstrip("-").isdigit():
            temps.append(int(t) / 1000)
    return max(temps) if temps else None


def loadavg_1m(root: Path) -> float | None:
    text = _read(root / "proc/loadavg")
    return float(text.split()[0]) if text else None


def cpu_jiffies(root: Path) -> tuple[int, int] | None:
    """(busy, total) jiffies over all CPUs, from the first line of /proc/stat."""
    text = _read(root / "proc/stat")
    if not text:
        return None
    v = [int(x) for x in text.splitlines()[0].split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v[:8]) - idle, sum(v[:8])


def own_jiffies(root: Path, exclude: tuple[int, ...] = ()) -> int:
    """CPU jiffies of this process plus the excluded ones (the local host's own exporter)."""
    t = os.times()
    total = round((t.user + t.system) * os.sysconf("SC_CLK_TCK"))
    for pid in exclude:
        text = _read(root / f"proc/{pid}/stat")
        if text:  # fields after the ")" of the command name: utime and stime are the 12th and 13th
            f = text.rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
    return total


def runtime_version(runtime: str) -> str | None:
    try:
        if runtime == "onnxruntime":
            import onnxruntime

            return onnxruntime.__version__
    except ImportError:
        return None
    return None


def facts(root: Path, runtime: str = "onnxruntime") -> dict:
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(root),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
        "governor": governor(root),
        "temp_c": temperature_c(root),
        "agent_version": AGENT_VERSION,
    }


# ---- statistics --------------------------------------------------------------------------
def median_ci(sorted_ms: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free 95% CI of the median from order statistics (binomial approximation)."""
    n = len(sorted_ms)
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return sorted_ms[lo], sorted_ms[hi]


def summarize(times_ms: list[float]) -> dict:
    s = sorted(times_ms)
    n = len(s)
    med = statistics.median(s)
    mean = statistics.fmean(s)
    std = statistics.stdev(s) if n > 1 else 0.0
    lo, hi = median_ci(s)
    return {
        "latency_ms": med,
        "latency_p90_ms": s[min(n - 1, math.ceil(0.9 * n) - 1)],
        "latency_mean_ms": mean,
        "latency_std_ms": std,
        "latency_min_ms": s[0],
        "latency_cv": std / mean if mean else None,
        "latency_ci_lo_ms": lo,
        "latency_ci_hi_ms": hi,
        "n_runs": n,
    }


def converged(times_ms: list[float], rel: float) -> bool:
    s = sorted(times_ms)
    med = statistics.median(s)
    lo, hi = median_ci(s)
    return max(med - lo, hi - med) <= rel * med


# ---- runtimes ----------------------------------------------------------------------------
class OnnxRuntime:
    """onnxruntime on the CPU provider (or another, by name)."""

    def __init__(self, config: dict):
        import numpy as np
        import onnxruntime as ort

        self.np, self.ort = np, ort
        self.threads = int(config.get("threads", 1))
        self.providers = config.get("providers", ["CPUExecutionProvider"])
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
        if missing:  # onnxruntime would fall back to the CPU silently and mislabel every row
            raise ConfigError(
                f"onnxruntime provider {', '.join(missing)} not available here "
                f"(available: {', '.join(ort.get_available_providers())})"
            )

    def load(self, model: str, input_shape: list[int]):
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = self.ort.ExecutionMode.ORT_SEQUENTIAL
        if self.threads > 1:
            # Spinning threads steal the core from anything else and wreck the timing.
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = self.ort.InferenceSession(model, so, providers=self.providers)
        name = sess.get_inputs()[0].name
        x = self.np.random.default_rng(0).standard_normal(input_shape, dtype=self.np.float32)
        feed = {name: x}
        return (lambda: sess.run(None, feed)), {"provider": sess.get_providers()[0]}


class ConfigError(Exception):
    """The measurement config cannot work on this device; nothing is measured."""


RUNTIMES = {"onnxruntime": OnnxRuntime}


# ---- the protocol --------------------------------------------------------------------------
def time_model(run, protocol: dict) -> tuple[list[float], float]:
    """Warm up, then time runs until the median's CI is tight or a limit is hit.

    Returns the per-run milliseconds and the seconds spent inside the timed loop.
    """
    p = {**PROTOCOL, **protocol}
    clock = time.perf_counter
    t0, k = clock(), 0
    while k < p["warmup_runs"] or clock() - t0 < p["warmup_s"]:
        run()
        k += 1
    times: list[float] = []
    start = clock()
    while True:
        a = clock()
        run()
        times.append((clock() - a) * 1e3)
        spent = clock() - start
        if len(times) >= p["max_runs"] or spent >= p["max_time_s"]:
            break
        if (
            len(times) >= p["min_runs"]
            and spent >= p["min_time_s"]
            and len(times) % 5 == 0
            and converged(times, p["ci_rel"])
        ):
            break
    return times, clock() - start


def other_busy(before, after, own: int, threads: int) -> float | None:
    """Busy share of the cores this process left free: all busy jiffies less its own."""
    ncpu = os.cpu_count() or 1
    if not (before and after) or ncpu < 2 or after[1] <= before[1]:
        return None
    other = max(0, (after[0] - before[0]) - own)
    per_cpu = (after[1] - before[1]) / ncpu
    return min(1.0, other / (per_cpu * (ncpu - min(threads, ncpu - 1))))


def measure(runtime, model: str, config: dict, root: Path, exclude: tuple[int, ...] = ()) -> dict:
    p = {**PROTOCOL, **config.get("protocol", {})}
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    run, runtime_info = runtime.load(model, config["input_shape"])
    load0 = loadavg_1m(root)
    for retries in range(int(p["interference_retries"]) + 1):
        cpu0, own0 = cpu_jiffies(root), own_jiffies(root, exclude)
        times, spent = time_model(run, p)
        busy = other_busy(cpu0, cpu_jiffies(root), own_jiffies(root, exclude) - own0, runtime.threads)
        if busy is None or busy <= p["max_other_busy"]:
            break
    disturbed = busy is not None and busy > p["max_other_busy"]
    return {
        # Timed under foreign load even after the retries: kept for the record, never fitted.
        "status": "disturbed" if disturbed else "ok",
        **runtime_info,
        **summarize(times),
        "converged": converged(times, p["ci_rel"]),
        "timed_s": spent,
        "loadavg_1m": load0,
        "other_cores_busy": busy,
        "interference_retries": retries,
        "governor": governor(root),
        "temp_c": temperature_c(root),
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }


def serve(config: dict, root: Path, exclude: tuple[int, ...] = ()) -> int:
    runtime_name = config.get("runtime", "onnxruntime")
    # The protocol owns the real stdout; whatever else writes to fd 1 (runtime logs, native
    # libraries) is sent to stderr, so it can never corrupt a row.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        if runtime_name not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime_name!r} (agent has: {', '.join(RUNTIMES)})")
        runtime = RUNTIMES[runtime_name](config)
    except ConfigError as e:
        out.write(json.dumps({"fatal": str(e), "kind": "config"}) + "\n")
        return 2
    except ImportError as e:
        out.write(json.dumps({"fatal": f"runtime {runtime_name} is not installed: {e}", "kind": "runtime"}) + "\n")
        return 3
    out.write(json.dumps({"facts": facts(root, runtime_name)}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            row = measure(runtime, req["model"], config, root, exclude)
        except Exception as e:  # a model that fails becomes an error row; the agent goes on
            row = {"status": "error", "error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
        out.write(json.dumps({"key": req["key"], **row}) + "\n")
        out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="nasctl-agent", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=AGENT_VERSION)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("facts")
    s = sub.add_parser("serve")
    s.add_argument("--config", required=True, help="JSON: runtime, threads, input_shape, protocol")
    s.add_argument("--exclude-pid", type=int, action="append", default=[],
                   help="a process whose CPU time is not foreign load (the local host exporting models)")
    f.add_argument("--runtime", default="onnxruntime")
    for p in (f, s):
        p.add_argument("--sysfs-root", default="/", help="where /proc and /sys are read from")
    a = ap.parse_args(argv)
    root = Path(a.sysfs_root)
    if a.cmd == "facts":
        print(json.dumps(facts(root, a.runtime)))
        return 0
    return serve(json.loads(a.config), root, tuple(a.exclude_pid))


if __name__ == "__main__":
    sys.exit(main())
