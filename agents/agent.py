#!/usr/bin/env python3
"""nasctl device agent: times model files on the device it runs on and streams JSON rows.

Python 3 standard library plus the runtime being timed (numpy comes with onnxruntime), because
boards have no torch and no nasctl: it is deployed as one zipapp with protocol.py (the message
keys and timing defaults the host imports too). The host runs the same zipapp for `--device
local`, so local and remote rows share one protocol.

    agent.py facts [--runtime R] [--sysfs-root DIR]   one JSON object of device facts
    agent.py serve --config JSON [--sysfs-root DIR]   read {"key", "model"} lines on stdin,
                                                      answer one JSON row per line on stdout
    agent.py build-engine --onnx F --engine F --shape NxCxHxW [--precision P]
                                                      a TensorRT engine by trtexec; one JSON line
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

AGENT_VERSION = "0.1.0"

try:  # beside this file: as a script, and inside the zipapp that is deployed
    import protocol as P
except ImportError:  # imported as the nasctl_agents package (the tests, the local host)
    from nasctl_agents import protocol as P


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


X86_CPU = re.compile(r"^vendor_id\s*:\s*(GenuineIntel|AuthenticAMD)", re.M)


def emulated(root: Path) -> str | None:
    """Why this Python runs under a CPU emulator (qemu-user through binfmt_misc), or None. Timings
    taken so describe the emulator on another CPU, never the board: the rows say so, and a fit
    on them is refused unless asked for."""
    machine = platform.machine()
    if machine in ("x86_64", "AMD64", "i686", "i386"):
        return None
    if X86_CPU.search(_read(root / "proc/cpuinfo") or ""):
        return f"{machine} Python on an x86 CPU (/proc/cpuinfo)"
    entry = _read(root / f"proc/sys/fs/binfmt_misc/qemu-{machine}") or ""
    if entry.startswith("enabled"):
        return f"{machine} binaries run by qemu-{machine} (binfmt_misc)"
    return None


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


def _ratio(cur: str | None, top: str | None) -> float | None:
    try:
        return int(cur) / int(top) if cur and top and int(top) > 0 else None
    except ValueError:
        return None


def cpu_clock_ratio(root: Path, cpus: set[int]) -> float | None:
    """Current over top clock of the fastest CPU this agent may run on, read just after a timed
    loop: the core that ran it is still at its load clock, so below 1 means a cap (thermal, power),
    not an idle core. None where cpufreq is absent (VMs)."""
    got = [_ratio(_read(root / f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq"),
                  _read(root / f"sys/devices/system/cpu/cpu{c}/cpufreq/cpuinfo_max_freq")) for c in sorted(cpus)]
    got = [r for r in got if r is not None]
    return max(got) if got else None


def devfreq_ratio(root: Path) -> float | None:
    """Lowest current over top clock of the devfreq devices (a Jetson's GPU and EMC): with clocks
    locked (jetson_clocks) any drop below the top is the board throttling."""
    got = []
    for d in sorted((root / "sys/class/devfreq").glob("*")):
        steps = (_read(d / "available_frequencies") or "").split()
        top = max((int(f) for f in steps if f.isdigit()), default=None)
        r = _ratio(_read(d / "cur_freq"), str(top) if top else _read(d / "max_freq"))
        if r is not None:
            got.append(r)
    return min(got) if got else None


def passive_trip_reached(root: Path) -> bool:
    """A thermal zone at or above its first passive trip point: the kernel is capping clocks."""
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        t = _read(zone / "temp")
        for kind in sorted(zone.glob("trip_point_*_type")):
            trip = _read(kind.with_name(kind.name.replace("_type", "_temp")))
            if _read(kind) == "passive" and t and trip and t.lstrip("-").isdigit() and trip.isdigit() \
                    and 0 < int(trip) <= int(t):
                return True
    return False


# vcgencmd get_throttled: the current-state bits (under-voltage, ARM clock capped, throttled, soft
# temperature limit); bits 16-19 only say it happened since boot.
PI_THROTTLE_NOW = 0xF


def pi_throttled() -> int | None:
    """A Raspberry Pi firmware's throttle bits, or None where there is no vcgencmd."""
    if not shutil.which("vcgencmd"):
        return None
    p = subprocess.run(["vcgencmd", "get_throttled"], capture_output=True, text=True, timeout=10)
    m = re.search(r"throttled=(0x[0-9a-fA-F]+)", p.stdout)
    return int(m.group(1), 16) if m else None


def battery_temp_c(root: Path) -> float | None:
    """An Android phone's battery temperature (sysfs gives tenths of a degree)."""
    t = _read(root / "sys/class/power_supply/battery/temp")
    return int(t) / 10 if t and t.lstrip("-").isdigit() else None


def thermal_state(root: Path, cpus: set[int]) -> dict:
    """Clocks and temperatures now; read right before and right after each arch's timed runs."""
    return {"temp_c": temperature_c(root), "clock_ratio": cpu_clock_ratio(root, cpus),
            "devfreq_ratio": devfreq_ratio(root), "passive_trip": passive_trip_reached(root),
            "pi_throttled": pi_throttled(), "battery_temp_c": battery_temp_c(root)}


def throttle_reasons(state: dict, p: dict, clocks_locked: bool) -> list[str]:
    """Why a timing ran on a throttled device (empty: it did not), from a `thermal_state`."""
    why = []
    if state["passive_trip"]:
        why.append("a thermal zone is at its passive trip point")
    if state["clock_ratio"] is not None and state["clock_ratio"] < p["min_clock_ratio"]:
        why.append(f"CPU clock at {state['clock_ratio']:.0%} of its top")
    if clocks_locked and state["devfreq_ratio"] is not None and state["devfreq_ratio"] < p["min_clock_ratio"]:
        why.append(f"locked GPU/EMC clock at {state['devfreq_ratio']:.0%} of its top")
    if state["pi_throttled"] and state["pi_throttled"] & PI_THROTTLE_NOW:
        why.append(f"vcgencmd get_throttled={state['pi_throttled']:#x}")
    return why


def cool_down(root: Path, p: dict) -> float:
    """Wait until the hottest zone is below `cooldown_c` (0: off), up to `cooldown_max_s`;
    returns the seconds waited."""
    limit, t0 = float(p["cooldown_c"]), time.monotonic()
    while limit > 0 and (temperature_c(root) or 0) >= limit and time.monotonic() - t0 < p["cooldown_max_s"]:
        time.sleep(min(1.0, p["cooldown_max_s"] - (time.monotonic() - t0)))
    return time.monotonic() - t0 if limit > 0 else 0.0


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
        if runtime == "tensorrt":
            import tensorrt

            return tensorrt.__version__
        if runtime == "tflite":
            return TfLite.interpreter()[0]
    except ImportError:
        return None
    return None


def facts(root: Path, runtime: str = "onnxruntime") -> dict:
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(root),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "emulated": emulated(root),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
        "governor": governor(root),
        "temp_c": temperature_c(root),
        "agent_version": AGENT_VERSION,
    }


# ---- energy --------------------------------------------------------------------------------
# Board-input rails already hold the total; where one exists the others are its parts.
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
# One regex for both tegrastats styles: "GPU 463/463" (JetPack 4) and "VDD_GPU_SOC 2340mW/2340mW"
# (with an optional third "/max" field); "RAM 4722/7844MB" and the like are not rails.
TEGRASTATS_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/\d+(?:mW)?)?(?=\s|$)")


class NoEnergySource(Exception):
    """Why energy_mj stays null: said on every row, never replaced by a made-up number."""


def total_mw(rails: dict[str, float]) -> float:
    for name in INPUT_RAILS:
        if name in rails:
            return rails[name]
    return sum(rails.values())


def ina3221_reader(root: Path):
    """Rail powers in mW from the INA3221 monitors: JetPack 4's iio layout, or mainline hwmon."""
    iio = sorted((root / "sys/bus/i2c/drivers/ina3221x").glob("*/iio:device*"))
    if iio:
        def read_iio():
            rails = {}
            for dev in iio:
                for f in sorted(dev.glob("in_power*_input")):
                    ch = f.name[len("in_power"):-len("_input")]
                    name = _read(dev / f"rail_name_{ch}") or f"{dev.parent.name}:{ch}"
                    rails[name] = float(_read(f))
            return rails
        return "ina3221:iio", read_iio
    hw = sorted((root / "sys/bus/i2c/drivers/ina3221").glob("*/hwmon/hwmon*"))
    if hw:
        def read_hwmon():
            rails = {}
            for dev in hw:
                for f in sorted(dev.glob("curr*_input")):
                    ch = f.name[len("curr"):-len("_input")]
                    if (dev / f"in{ch}_input").exists():
                        name = _read(dev / f"in{ch}_label") or f"{dev.name}:{ch}"
                        rails[name] = float(_read(dev / f"in{ch}_input")) * float(_read(f)) / 1000  # mV*mA
            return rails
        return "ina3221:hwmon", read_hwmon
    raise NoEnergySource(f"no INA3221 rails under {root}/sys/bus/i2c/drivers/ina3221x or ina3221")


def parse_tegrastats(line: str) -> dict[str, float]:
    """Instantaneous mW per rail from one tegrastats line."""
    return {m.group(1): float(m.group(2)) for m in TEGRASTATS_RAIL.finditer(line)}


def tegrastats_reader(interval_ms: int = 20):
    if not shutil.which("tegrastats"):
        raise NoEnergySource("tegrastats not on PATH")
    proc = subprocess.Popen(["tegrastats", "--interval", str(interval_ms)], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL)
    latest: dict = {}

    def pump():
        for line in proc.stdout:
            rails = parse_tegrastats(line)
            if rails:
                latest["rails"] = rails
    threading.Thread(target=pump, daemon=True).start()
    t0 = time.perf_counter()
    while "rails" not in latest:
        if proc.poll() is not None or time.perf_counter() - t0 > 3:
            proc.kill()
            raise NoEnergySource("tegrastats printed no power rails")
        time.sleep(0.01)
    return "tegrastats", lambda: latest["rails"], proc


def nvml_reader():
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        pynvml.nvmlDeviceGetPowerUsage(h)
    except Exception as e:
        raise NoEnergySource(f"NVML unavailable: {type(e).__name__}") from None
    return "nvml", lambda: {"GPU": float(pynvml.nvmlDeviceGetPowerUsage(h))}


def battery_reader(root: Path):
    """Android: |current_now (uA) x voltage_now (uV)|; the sign of the current varies by vendor."""
    d = root / "sys/class/power_supply/battery"
    if not ((d / "current_now").exists() and (d / "voltage_now").exists()):
        raise NoEnergySource(f"no {d}/current_now and voltage_now")
    return "battery", lambda: {"BATTERY": abs(float(_read(d / "current_now")) * float(_read(d / "voltage_now"))) / 1e9}


class EnergyMeter:
    """Samples board power in a thread while the timed loop runs; integrates it to mJ."""

    def __init__(self, source: str, root: Path, period_s: float = 0.01):
        self.period_s, self.proc = period_s, None
        tried = []
        chain = {"ina3221": ("ina3221", "tegrastats", "nvml"), "tegrastats": ("tegrastats", "nvml")}.get(source, (source,))
        for name in chain:
            try:
                got = {"ina3221": lambda: ina3221_reader(root), "tegrastats": tegrastats_reader,
                       "nvml": nvml_reader, "battery": lambda: battery_reader(root)}[name]()
                self.name, self.read = got[0], got[1]
                self.proc = got[2] if len(got) > 2 else None
                self.rails = sorted(self.read())
                return
            except NoEnergySource as e:
                tried.append(str(e))
            except KeyError:
                tried.append(f"unknown energy source {name!r}")
        raise NoEnergySource("; ".join(tried))

    def __enter__(self):
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), total_mw(self.read())))
            except (TypeError, ValueError, OSError):  # a sensor read that failed or came back empty:
                pass  # skip that sample (integration spans the gap) rather than lose the meter
            self._stop.wait(self.period_s)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def window(self, t0: float, t1: float) -> tuple[float, float]:
        """(mJ, mean W) over [t0, t1]: trapezoids between samples, held flat at the edges."""
        pts = self.samples
        if not pts:
            raise NoEnergySource("no power samples during the timed runs")
        ts = [t for t, _ in pts]
        def at(t):
            i = bisect.bisect_left(ts, t)
            if i == 0:
                return pts[0][1]
            if i >= len(pts):
                return pts[-1][1]
            (ta, pa), (tb, pb) = pts[i - 1], pts[i]
            return pa + (pb - pa) * (t - ta) / (tb - ta) if tb > ta else pb
        inner = [(t, p) for t, p in pts if t0 < t < t1]
        knots = [(t0, at(t0)), *inner, (t1, at(t1))]
        mj = sum((tb - ta) * (pa + pb) / 2 for (ta, pa), (tb, pb) in zip(knots, knots[1:]))  # mW*s = mJ
        return mj, mj / (t1 - t0) / 1000

    def close(self):
        if self.proc is not None:
            self.proc.kill()


# ---- power mode (Jetson) ------------------------------------------------------------------
def power_mode() -> str | None:
    """nvpmodel's current mode name (e.g. MAXN), or None where there is no nvpmodel."""
    if not shutil.which("nvpmodel"):
        return None
    p = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=30)
    m = re.search(r"NV Power Mode:\s*(\S+)", p.stdout)
    return m.group(1) if m else None


def _sudo(*argv: str) -> bool:
    """Run a command as root only if sudo allows it without a password (never prompts)."""
    if not shutil.which("sudo"):
        return False
    return subprocess.run(["sudo", "-n", *argv], capture_output=True, timeout=60).returncode == 0


def ensure_power(cfg: dict) -> dict:
    """Check (and where allowed, set) the power mode the profile expects; refuse otherwise."""
    want = cfg.get("mode")
    current = power_mode()
    if not want:
        return {"power_mode": current, "clocks_locked": None}
    locked = False
    if current != want and cfg.get("set_if_allowed") and shutil.which("nvpmodel"):
        _sudo("nvpmodel", "-m", str(cfg.get("mode_id", 0)))
        current = power_mode()
    if current == want and cfg.get("set_if_allowed") and shutil.which("jetson_clocks"):
        locked = _sudo("jetson_clocks")
    if current != want and cfg.get("require", True):
        raise ConfigError(
            f"the board is in power mode {current or 'unknown (no nvpmodel)'}, the profile requires {want}: "
            f"run `sudo nvpmodel -m {cfg.get('mode_id', 0)}`, or allow the agent passwordless sudo for it"
        )
    return {"power_mode": current, "clocks_locked": locked}

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

    def prepare(self, model: str, input_shape: list[int]) -> "Prepared":
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
        return Prepared(lambda: sess.run(None, feed), {"provider": sess.get_providers()[0]})


class TfLite:
    """A .tflite model in the LiteRT interpreter (ai-edge-litert), or the older tflite-runtime."""

    def __init__(self, config: dict):
        import numpy as np

        self.np = np
        self.version, self.Interpreter = self.interpreter()
        self.threads = int(config.get("threads", 1))

    @staticmethod
    def interpreter():
        """(name and version, Interpreter class) of the first LiteRT flavour that imports."""
        from importlib.metadata import version

        try:
            from ai_edge_litert.interpreter import Interpreter

            return f"ai-edge-litert {version('ai-edge-litert')}", Interpreter
        except ImportError:
            from tflite_runtime.interpreter import Interpreter  # ImportError: no TFLite here

            return f"tflite-runtime {version('tflite-runtime')}", Interpreter

    def prepare(self, model: str, input_shape: list[int]) -> "Prepared":
        it = self.Interpreter(model_path=model, num_threads=self.threads)
        it.allocate_tensors()
        inp = it.get_input_details()[0]
        if list(inp["shape"]) != list(input_shape):
            raise ValueError(f"model input is {list(inp['shape'])}, the profile says {input_shape}")
        it.set_tensor(inp["index"], self.np.random.default_rng(0).standard_normal(input_shape).astype(inp["dtype"]))
        return Prepared(it.invoke, {"provider": "litert-cpu"})


class Prepared:
    """A model ready to time in-process: the adaptive protocol calls `run` itself."""

    def __init__(self, run, info: dict):
        self.run, self.info = run, info

    def time(self, protocol: dict) -> tuple[list[float], float, float]:
        return time_model(self.run, protocol)


# trtexec: the argv (a list, never a shell string: paths cannot inject) and its two outputs.
_TRT_VERSION = re.compile(r"TensorRT version:\s*(\d+(?:\.\d+)+)")
_TRT_DEVICE = re.compile(r"Selected Device:\s*(.+?)\s*$", re.M)
_TRT_CC = re.compile(r"Compute Capability:\s*(\d+\.\d+)")
_TRT_PASSED = re.compile(r"&&&& PASSED TensorRT\.trtexec")
_TRT_TRACE_DONE = re.compile(r"(Warmup completed|Timing trace has) \d+ queries")  # printed when inference stops
_TRT_GPU_COMPUTE = re.compile(r"GPU Compute Time:\s*min = ([\d.]+) ms, max = ([\d.]+) ms, mean = ([\d.]+) ms, median = ([\d.]+) ms")


def trtexec_argv(onnx: str, engine: str, *, fp16: bool = False, int8: bool = False, workspace_mb: int = 1024,
                 shape: list[int] | None = None, times_json: str | None = None, trtexec: str = "trtexec") -> list[str]:
    """Build (and with `times_json`, time) an engine from ONNX."""
    argv = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", f"--memPoolSize=workspace:{int(workspace_mb)}M"]
    if fp16:
        argv.append("--fp16")
    if int8:
        argv.append("--int8")
    if shape is not None:
        argv.append("--shapes=input:" + "x".join(str(int(d)) for d in shape))
    if times_json is not None:
        argv.append(f"--exportTimes={times_json}")
    return argv


def parse_trtexec_log(text: str) -> dict:
    """TensorRT version, GPU, compute capability, pass/fail and the summary's GPU compute time."""
    out: dict = {"passed": bool(_TRT_PASSED.search(text))}
    for key, rx in (("tensorrt_version", _TRT_VERSION), ("gpu", _TRT_DEVICE), ("compute_capability", _TRT_CC)):
        m = rx.search(text)
        out[key] = m.group(1).strip() if m else None
    m = _TRT_GPU_COMPUTE.search(text)
    if m:
        out["gpu_compute_ms"] = dict(zip(("min", "max", "mean", "median"), map(float, m.groups())))
    return out


def parse_export_times(text: str, key: str = "computeMs") -> list[float]:
    """Per-inference milliseconds from `--exportTimes` JSON (a leading {"count": N} is skipped)."""
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not trtexec --exportTimes JSON: {e}") from None
    times = [float(r[key]) for r in records if isinstance(r, dict) and key in r]
    if not times:
        raise ValueError(f"no {key!r} in trtexec --exportTimes JSON")
    return times


def find_trtexec() -> str:
    found = shutil.which("trtexec") or ("/usr/src/tensorrt/bin/trtexec" if os.access("/usr/src/tensorrt/bin/trtexec", os.X_OK) else None)
    if not found:
        raise ImportError("trtexec not found (JetPack puts it in /usr/src/tensorrt/bin)")
    return found


def build_engine(trtexec: str, onnx: str, engine: str, **options) -> tuple[dict, str]:
    """`trtexec --saveEngine` here, on the device; returns what its log says and the log itself."""
    p = subprocess.run(trtexec_argv(onnx, engine, trtexec=trtexec, **options), capture_output=True, text=True)
    info = parse_trtexec_log(p.stdout)
    log = p.stdout + p.stderr
    if p.returncode != 0 or not info["passed"]:
        raise RuntimeError(f"trtexec could not build the engine: {P.last_line(log, f'exit {p.returncode}')}")
    return info, log


class TensorRT:
    """TensorRT through trtexec. The engine is built here, on the device: engines are tied to
    the TensorRT version and GPU. trtexec runs its own loop, so the protocol's limits become its
    --warmUp/--duration/--iterations and the statistics come from its exported per-run times."""

    threads = 1

    def __init__(self, config: dict):
        self.trtexec = find_trtexec()
        precision = config.get("precision", "fp32")
        self.fp16, self.int8 = precision == "fp16", precision == "int8"
        self.workspace_mb = int(config.get("workspace_mb", 1024))

    def prepare(self, model: str, input_shape: list[int]) -> "TrtPrepared":
        engine = str(Path(model).with_suffix(".engine"))
        info, _ = build_engine(self.trtexec, model, engine, fp16=self.fp16, int8=self.int8,
                               workspace_mb=self.workspace_mb, shape=input_shape)
        return TrtPrepared(self.trtexec, engine, {
            "provider": "tensorrt", "tensorrt_version": info["tensorrt_version"], "gpu": info["gpu"]})


class TrtPrepared:
    def __init__(self, trtexec: str, engine: str, info: dict):
        self.trtexec, self.engine, self.info = trtexec, engine, info

    def time(self, protocol: dict) -> tuple[list[float], float, float]:
        """trtexec's own loop; the window (for energy) ends when trtexec reports the timing trace,
        which it prints as soon as inference stops, so its teardown stays outside."""
        p = {**P.TIMING, **protocol}
        times_json = self.engine + ".times.json"
        argv = [self.trtexec, f"--loadEngine={self.engine}", f"--exportTimes={times_json}",
                f"--warmUp={int(1000 * p['warmup_s'])}", f"--duration={max(1, math.ceil(p['min_time_s']))}",
                f"--iterations={int(p['min_runs'])}", "--avgRuns=1"]
        end, lines = None, []
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
            for line in proc.stdout:
                if end is None and _TRT_TRACE_DONE.search(line):
                    end = time.perf_counter()
                lines.append(line)
        if proc.returncode != 0:
            raise RuntimeError(f"trtexec timing failed: {P.last_line(''.join(lines), f'exit {proc.returncode}')}")
        end = end if end is not None else time.perf_counter()  # an unknown log format: up to the exit
        text = Path(times_json).read_text()
        times = parse_export_times(text)[: int(p["max_runs"])]
        span = (parse_export_times(text, "endComputeMs")[len(times) - 1] - parse_export_times(text, "startComputeMs")[0]) / 1e3
        return times, end - span, end


class ConfigError(Exception):
    """The measurement config cannot work on this device; nothing is measured."""


class DeviceBusy(Exception):
    """Another agent kept the device lock past the wait."""


RUNTIMES = {"onnxruntime": OnnxRuntime, "tensorrt": TensorRT, "tflite": TfLite}


# ---- the protocol --------------------------------------------------------------------------
def time_model(run, protocol: dict) -> tuple[list[float], float, float]:
    """Warm up, then time runs until the median's CI is tight or a limit is hit.

    Returns the per-run milliseconds and the timed loop's start and end (perf_counter seconds),
    the window that the energy meter integrates over.
    """
    p = {**P.TIMING, **protocol}
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
    return times, start, clock()


def other_busy(before, after, own: int, threads: int) -> float | None:
    """Busy share of the cores this process left free: all busy jiffies less its own."""
    ncpu = os.cpu_count() or 1
    if not (before and after) or ncpu < 2 or after[1] <= before[1]:
        return None
    other = max(0, (after[0] - before[0]) - own)
    per_cpu = (after[1] - before[1]) / ncpu
    return min(1.0, other / (per_cpu * (ncpu - min(threads, ncpu - 1))))


def measure(runtime, model: str, config: dict, root: Path, exclude: tuple[int, ...] = (), meter=None,
            energy_note: str | None = None, clocks_locked: bool = False) -> dict:
    p = {**P.TIMING, **config.get("protocol", {})}
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    prepared = runtime.prepare(model, config["input_shape"])
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cooled = cool_down(root, p)
    before = thermal_state(root, cpus)
    load0 = loadavg_1m(root)
    energy = {"energy_mj": None, "power_w_mean": None, "energy_source": meter.name if meter else "none",
              "energy_note": energy_note}
    for retries in range(int(p["interference_retries"]) + 1):  # noqa: B007 - the count is reported
        cpu0, own0 = cpu_jiffies(root), own_jiffies(root, exclude)
        with meter or contextlib.nullcontext():
            times, t0, t1 = prepared.time(p)
        busy = other_busy(cpu0, cpu_jiffies(root), own_jiffies(root, exclude) - own0, runtime.threads)
        if busy is None or busy <= p["max_other_busy"]:
            break
    if meter is not None:
        try:
            mj, watts = meter.window(t0, t1)
            energy.update(energy_mj=mj / len(times), power_w_mean=watts, energy_note=None)
        except NoEnergySource as e:
            energy["energy_note"] = str(e)
    after = thermal_state(root, cpus)
    throttled = throttle_reasons(before, p, clocks_locked) + throttle_reasons(after, p, clocks_locked)
    disturbed = busy is not None and busy > p["max_other_busy"]
    return {
        # Timed under foreign load even after the retries, or on a throttled device: kept for
        # the record, never fitted, measured again by --retry-errors.
        "status": "disturbed" if disturbed else "throttled" if throttled else "ok",
        "throttled": bool(throttled),
        "throttle_reason": "; ".join(dict.fromkeys(throttled)) or None,
        "clock_ratio": after["clock_ratio"],
        "clock_ratio_before": before["clock_ratio"],
        "devfreq_ratio": after["devfreq_ratio"],
        "pi_throttled": after["pi_throttled"],
        "battery_temp_c": after["battery_temp_c"],
        "temp_c_before": before["temp_c"],
        "cooldown_s": cooled,
        **prepared.info,
        **summarize(times),
        "converged": converged(times, p["ci_rel"]),
        "timed_s": t1 - t0,
        "loadavg_1m": load0,
        "other_cores_busy": busy,
        "interference_retries": retries,
        **energy,
        "governor": governor(root),
        "temp_c": after["temp_c"],
        "started_at": started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
    }


class Out:
    """The protocol stream: whole lines only, from the loop and the heartbeat thread alike."""

    def __init__(self, stream):
        self._stream, self._lock = stream, threading.Lock()

    def write(self, doc: dict) -> None:
        with self._lock:
            self._stream.write(json.dumps(doc) + "\n")
            self._stream.flush()


def heartbeat(out: Out, period_s: float) -> None:
    """Say "still here" every period, so the host can tell a long measurement from a dead link.

    When the host is gone the write fails (the SSH session closed our pipe): stop at once, so
    an orphaned agent never keeps timing, or holds the device lock, behind a reconnected one.
    """
    n = 0
    while True:
        time.sleep(period_s)
        n += 1
        try:
            out.write({P.BEAT: n})
        except (OSError, ValueError):
            os._exit(4)


def take_lock(path: str, out: Out, wait_s: float = 600.0):
    """One agent per device: a second one waits (the host is told) until the first is done."""
    import fcntl  # POSIX only; the agent runs on Linux boards

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")
    deadline, told = time.monotonic() + wait_s, False
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            f.seek(0), f.truncate(), f.write(str(os.getpid())), f.flush()
            return f
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.seek(0)
                raise DeviceBusy(f"device busy: another nasctl agent (pid {f.read().strip() or '?'}) "
                                  f"has held {path} for {wait_s:.0f} s") from None
            if not told:
                out.write({P.WAITING: f"device lock {path} is held by another agent; waiting"})
                told = True
            time.sleep(0.2)


def serve(config: dict, root: Path, exclude: tuple[int, ...] = (), heartbeat_s: float = 0.0,
          lock: str | None = None) -> int:
    runtime_name = config.get("runtime", "onnxruntime")
    # A Ctrl-C at the host's terminal reaches every process in its group, and over some links
    # (a pty, a shell that forwards it) the board's too: it is for the host, which then stops
    # this agent itself (a SIGTERM, or a closed link). Dying of it here would turn the model
    # in flight into a failed measurement.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns the real stdout; whatever else writes to fd 1 (runtime logs, native
    # libraries) is sent to stderr, so it can never corrupt a row.
    out = Out(os.fdopen(os.dup(1), "w", buffering=1))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if heartbeat_s > 0:
        threading.Thread(target=heartbeat, args=(out, heartbeat_s), daemon=True).start()
    try:
        lock_file = take_lock(lock, out) if lock else None  # held until serve returns
        if runtime_name not in RUNTIMES:
            raise ConfigError(f"unknown runtime {runtime_name!r} (agent has: {', '.join(RUNTIMES)})")
        if config.get("cpus"):  # pinned before the runtime starts its threads, which inherit it
            try:
                os.sched_setaffinity(0, {int(c) for c in config["cpus"]})
            except (OSError, ValueError, TypeError) as e:
                raise ConfigError(f"cannot pin the agent to CPUs {config['cpus']}: {e}") from None
        runtime = RUNTIMES[runtime_name](config)
        power = ensure_power(config.get("power", {}))
    except ConfigError as e:
        out.write({P.FATAL: str(e), P.KIND: "config"})
        return 2
    except DeviceBusy as e:
        out.write({P.FATAL: str(e), P.KIND: "busy"})
        return 3
    except ImportError as e:
        out.write({P.FATAL: f"runtime {runtime_name} is not installed: {e}", P.KIND: "runtime"})
        return 3
    meter, note = None, None
    source = config.get("energy", {}).get("source", "none")
    if source == "none":
        note = "the device profile names no energy source"
    else:
        try:
            meter = EnergyMeter(source, root, float(config["energy"].get("period_s", 0.01)))
        except NoEnergySource as e:
            note = f"no energy source: {e}"
    hello = facts(root, runtime_name)
    hello.update(energy_source=meter.name if meter else "none", energy_rails=meter.rails if meter else [], energy_note=note, **power)
    out.write({P.FACTS: hello})
    try:
        _serve_loop(runtime, config, root, exclude, meter, note, power, out)
    finally:
        if meter is not None:
            meter.close()
        if lock_file is not None:
            lock_file.close()
    return 0


def _serve_loop(runtime, config, root, exclude, meter, note, power, out) -> None:
    # Raw bytes, whatever the locale decodes stdin with (a board's may be strict, or not UTF-8):
    # read_request decodes each line inside the handler, so a stray byte is an error row.
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        key = None
        try:  # a bad request line, like a model that fails, is an error row; the agent goes on
            key, model = P.read_request(line)
            row = measure(runtime, model, config, root, exclude, meter, note, bool(power.get("clocks_locked")))
        except Exception as e:
            row = {"status": "error", "error": f"{type(e).__name__}: {e}".splitlines()[0][:500]}
        out.write({P.KEY: key, **row, **power})


def build_engine_command(a) -> int:
    """Build, keep the log beside the engine (the host fetches both), say where as JSON."""
    log_path = a.engine + ".log"
    try:
        info, log = build_engine(find_trtexec(), a.onnx, a.engine, fp16=a.precision == "fp16",
                                 int8=a.precision == "int8", workspace_mb=a.workspace_mb,
                                 shape=[int(d) for d in a.shape.split("x")])
    except (ImportError, RuntimeError, OSError) as e:
        print(json.dumps({P.FATAL: str(e)}))
        return 1
    Path(log_path).write_text(log)
    print(json.dumps({"engine": a.engine, "log": log_path, **info, "host": socket.gethostname()}))
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
    s.add_argument("--heartbeat", type=float, default=0.0, help="seconds between {\"beat\"} lines (0: none)")
    s.add_argument("--lock", help="lock file that keeps one agent at a time on this device")
    f.add_argument("--runtime", default="onnxruntime")
    b = sub.add_parser("build-engine", help="build a TensorRT engine from ONNX with trtexec; one JSON line")
    b.add_argument("--onnx", required=True)
    b.add_argument("--engine", required=True)
    b.add_argument("--shape", required=True, help="e.g. 8x3x224x224")
    b.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    b.add_argument("--workspace-mb", type=int, default=1024)
    for p in (f, s):
        p.add_argument("--sysfs-root", default="/", help="where /proc and /sys are read from")
    a = ap.parse_args(argv)
    if a.cmd == "build-engine":
        return build_engine_command(a)
    root = Path(a.sysfs_root)
    if a.cmd == "facts":
        print(json.dumps(facts(root, a.runtime)))
        return 0
    return serve(json.loads(a.config), root, tuple(a.exclude_pid), a.heartbeat, a.lock)


if __name__ == "__main__":
    sys.exit(main())
