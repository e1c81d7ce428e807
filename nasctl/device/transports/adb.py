"""The adb transport: the real `adb` client (and its server) reaches an Android device.

The agent is pushed into a versioned folder under the profile's `workdir` and runs under the
phone's Python (Termux's, say) with LiteRT or onnxruntime; models go up in one `adb push` per
batch. Commands are one shlex-quoted string, as `adb shell` hands its words to the phone's shell.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from nasctl.device.transports.base import ChildAgent, Session, Transport, agent_app, agent_digest, last_json
from nasctl.errors import DeviceUnreachable, UserError
from nasctl_agents.protocol import KEY, TIMING, last_line


@dataclass(frozen=True)
class AdbTarget:
    """`[adb]` in the device profile; `--serial` overrides `serial`."""

    serial: str = ""  # empty: the only attached device
    adb: str = "adb"
    python: str = "python3"
    workdir: str = "/data/local/tmp/nasctl"
    upload_batch: int = 8
    # A phone without Python: TFLite's benchmark_model binary (its path on the phone, or a file
    # here that is pushed first) times each model instead of the agent.
    benchmark_model: str = ""
    sysfs_root: str = "/"

    @classmethod
    def from_profile(cls, table: dict, serial: str | None = None, sysfs_root: str = "/") -> "AdbTarget":
        doc = {**table, **({"serial": serial} if serial else {})}
        unknown = set(doc) - set(cls.__dataclass_fields__)
        if unknown:
            raise UserError(f"[adb]: unknown key(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(cls.__dataclass_fields__)})")
        try:
            return cls(**{**doc, "upload_batch": int(doc.get("upload_batch", 8)), "sysfs_root": sysfs_root})
        except (TypeError, ValueError) as e:
            raise UserError(f"[adb]: {e}") from None


# What `adb get-state` says when it cannot use the device, and what the user should do.
STATES = {
    "unauthorized": "device {s} is unauthorized: unlock it and accept this computer's RSA key prompt",
    "authorizing": "device {s} is waiting for authorization: unlock it and accept the RSA key prompt",
    "offline": "device {s} is offline: reconnect the cable or run `adb reconnect`",
    "more than one": "more than one device attached: pass --serial (see `adb devices`)",
    "no devices": "no Android device attached (see `adb devices`)",
    "not found": "device {s} not found (see `adb devices`)",
}


class AdbTransport(Transport):
    name = "adb"

    def __init__(self, target: AdbTarget):
        self.t = target
        self.batch_size = target.upload_batch
        if not shutil.which(target.adb):
            raise UserError(f"{target.adb} not found: install Android platform-tools (Debian: apt install adb)")
        self._check_state()
        self._agent = posixpath.join(target.workdir, f"agent-{agent_digest()}", "agent.pyz")
        self._models = posixpath.join(target.workdir, f"models-{uuid.uuid4().hex[:12]}")
        self._child = ChildAgent(target.serial or "the device")
        self._shell("mkdir", "-p", posixpath.dirname(self._agent), self._models)
        self._adb("push", str(agent_app()), self._agent)
        self._benchmark_model = target.benchmark_model
        if target.benchmark_model and Path(target.benchmark_model).is_file():  # a binary from here: push it
            self._benchmark_model = posixpath.join(target.workdir, "benchmark_model")
            self._adb("push", target.benchmark_model, self._benchmark_model)
            self._shell("chmod", "755", self._benchmark_model)

    def _argv(self, *args: str) -> list[str]:
        return [self.t.adb, *(["-s", self.t.serial] if self.t.serial else []), *args]

    def _adb(self, *args: str) -> str:
        p = subprocess.run(self._argv(*args), capture_output=True, text=True)
        if p.returncode != 0:
            raise DeviceUnreachable(f"adb {args[0]} on {self.t.serial or 'the device'}: "
                                    f"{last_line(p.stderr or p.stdout, 'failed')}")
        return p.stdout

    def _shell(self, *argv: str) -> str:
        return self._adb("shell", shlex.join(argv))

    def _check_state(self) -> None:
        p = subprocess.run(self._argv("get-state"), capture_output=True, text=True)
        said = (p.stdout + p.stderr).strip()
        if p.returncode == 0 and said == "device":
            return
        for key, msg in STATES.items():
            if key in said:
                raise DeviceUnreachable(msg.format(s=self.t.serial or "(default)"))
        raise DeviceUnreachable(f"adb: {last_line(said, 'no answer')}")

    def stage(self, models: list[Path]) -> list[str]:
        if models:
            self._adb("push", *map(str, models), self._models + "/")  # one push for the batch
        return [posixpath.join(self._models, m.name) for m in models]

    def unstage(self, remote: str) -> None:
        self._shell("rm", "-f", remote)

    def start_agent(self, config: dict, on_note=lambda text: None) -> Session:
        if self.t.benchmark_model:
            return BenchmarkModelSession(self, config)
        argv = [self.t.python, self._agent, "serve", "--config", json.dumps(config, sort_keys=True),
                "--sysfs-root", self.t.sysfs_root, "--lock", posixpath.join(self.t.workdir, "device.lock")]
        return self._child.start(self._argv("shell", shlex.join(argv)), on_note)

    def run_agent(self, args: list[str]) -> dict:
        p = subprocess.run(self._argv("shell", shlex.join([self.t.python, self._agent, *args])), capture_output=True, text=True)
        return last_json(p.stdout, f"{args[0]} on {self.t.serial or 'the device'}", p.stderr)

    def fetch(self, remote: str, local: Path) -> None:
        tmp = local.with_name(local.name + ".part")
        self._adb("pull", remote, str(tmp))
        tmp.replace(local)

    def close(self) -> None:
        self._child.stop()
        try:
            self._shell("rm", "-rf", self._models)
        except DeviceUnreachable:
            pass  # unplugged: a stale models folder is the only trace left


# benchmark_model's summary lines, as its documentation shows them (microseconds).
_BM_RUNS = re.compile(r"count=(\d+) first=(\d+) curr=(\d+) min=(\d+) max=(\d+) avg=([\d.e+]+) std=(\d+)")
_BM_TIMINGS = re.compile(r"Inference timings in us: Init: ([\d.]+), First inference: ([\d.]+), "
                         r"Warmup \(avg\): ([\d.e+]+), Inference \(avg\): ([\d.e+]+)")


def parse_benchmark_model(text: str) -> dict:
    """The timed runs' figures from benchmark_model's output: the last `count=...` line is the
    timed loop (the first is the warm-up). It prints no median: latency_ms is its mean, and the
    row says so (`latency_stat`)."""
    runs, timings = _BM_RUNS.findall(text), _BM_TIMINGS.search(text)
    if not runs or not timings:
        raise ValueError(f"benchmark_model printed no timings: {last_line(text, 'no output')}")
    count, _first, _curr, lo, hi, avg, std = runs[-1]
    mean = float(avg) / 1e3
    return {"latency_ms": mean, "latency_stat": "mean", "latency_mean_ms": mean, "latency_min_ms": int(lo) / 1e3,
            "latency_max_ms": int(hi) / 1e3, "latency_std_ms": int(std) / 1e3, "latency_cv": int(std) / 1e3 / mean,
            "n_runs": int(count), "timed_s": int(count) * mean / 1e3, "init_ms": float(timings.group(1)) / 1e3,
            "first_inference_ms": float(timings.group(2)) / 1e3}


class BenchmarkModelSession(Session):
    """Times each model with benchmark_model over `adb shell`; the profile's protocol becomes its
    warm-up and run limits. No agent runs, so there is no energy sampling: the row says why."""

    def __init__(self, transport: AdbTransport, config: dict):
        self._t, self._config, self._proc = transport, config, None
        prop = {k: transport._shell("getprop", k).strip() for k in ("ro.product.model", "ro.board.platform",
                                                                       "ro.build.version.release", "ro.serialno")}
        self.facts = {"host": prop["ro.serialno"] or transport.t.serial, "runtime": "tflite",
                      "cpu_model": prop["ro.product.model"] + (f" ({prop['ro.board.platform']})" if prop["ro.board.platform"] else ""),
                      "os": f"Android {prop['ro.build.version.release']}".strip(), "runtime_version": "benchmark_model",
                      "agent_version": None, "energy_source": "none",
                      "energy_note": "benchmark_model mode: no agent on the phone samples power"}

    def measure(self, key: str, model: str) -> dict:
        p = {**TIMING, **self._config.get("protocol", {})}  # the agent's defaults, as benchmark_model flags
        argv = [self._t._benchmark_model, f"--graph={model}", f"--num_threads={int(self._config.get('threads', 1))}",
                f"--warmup_runs={int(p['warmup_runs'])}", f"--warmup_min_secs={float(p['warmup_s'])}",
                f"--num_runs={int(p['min_runs'])}", f"--min_secs={float(p['min_time_s'])}",
                f"--max_secs={float(p['max_time_s'])}"]
        # Its own session, as the agent's (ChildAgent): the terminal's Ctrl-C is for nasctl.
        self._proc = subprocess.Popen(self._t._argv("shell", shlex.join(argv)), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, start_new_session=True)
        said, _ = self._proc.communicate()
        try:
            figures = parse_benchmark_model(said)
        except ValueError as e:
            return {KEY: key, "status": "error", "error": str(e)}
        return {KEY: key, "status": "ok", "provider": "benchmark_model", **figures, "energy_mj": None,
                "power_w_mean": None, "energy_source": "none", "energy_note": self.facts["energy_note"]}

    def halt(self) -> None:
        """Kill the `adb shell` in flight: adbd then ends benchmark_model on the phone."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
