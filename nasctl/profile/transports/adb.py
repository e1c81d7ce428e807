"""The adb transport: the real `adb` client (and its server) reaches an Android device.

The agent is pushed into a versioned folder under the profile's `workdir` and runs under the
phone's Python (Termux's, say) with LiteRT or onnxruntime; models go up in one `adb push` per
batch. Commands are one shlex-quoted string, as `adb shell` hands its words to the phone's shell.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from nasctl.errors import DeviceUnreachable, UserError
from nasctl.profile.transports.base import AgentSession, Transport, last_json
from nasctl.profile.transports.local import AGENT


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
        digest = hashlib.sha256(AGENT.read_bytes()).hexdigest()[:12]
        self._agent = posixpath.join(target.workdir, f"agent-{digest}", "agent.py")
        self._models = posixpath.join(target.workdir, f"models-{uuid.uuid4().hex[:12]}")
        self._proc: subprocess.Popen | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._shell("mkdir", "-p", posixpath.dirname(self._agent), self._models)
        self._adb("push", str(AGENT), self._agent)
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
                                    f"{(p.stderr or p.stdout).strip().splitlines()[-1:] or ['failed']}")
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
        raise DeviceUnreachable(f"adb: {said.splitlines()[-1] if said else 'no answer'}")

    def stage(self, models: list[Path]) -> list[str]:
        if models:
            self._adb("push", *map(str, models), self._models + "/")  # one push for the batch
        return [posixpath.join(self._models, m.name) for m in models]

    def unstage(self, remote: str) -> None:
        self._shell("rm", "-f", remote)

    def start_agent(self, config: dict, on_note=lambda text: None) -> AgentSession:
        if self.t.benchmark_model:
            return BenchmarkModelSession(self, config)
        self._stop()
        argv = [self.t.python, self._agent, "serve", "--config", json.dumps(config, sort_keys=True),
                "--sysfs-root", self.t.sysfs_root, "--lock", posixpath.join(self.t.workdir, "device.lock")]
        self._stderr.seek(0)
        self._stderr.truncate()
        self._proc = subprocess.Popen(self._argv("shell", shlex.join(argv)), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1)
        return AgentSession(self._proc.stdin, self._proc.stdout, self._describe_exit, on_note)

    def _describe_exit(self) -> str:
        code = self._proc.wait(timeout=30) if self._proc else None
        self._stderr.seek(0)
        tail = (self._stderr.read().strip().splitlines()[-1:] or [""])[0][:300]
        return f"agent on {self.t.serial or 'the device'} exited with code {code}: {tail}".rstrip(": ")

    def run_agent(self, args: list[str]) -> dict:
        p = subprocess.run(self._argv("shell", shlex.join([self.t.python, self._agent, *args])), capture_output=True, text=True)
        return last_json(p.stdout, f"{args[0]} on {self.t.serial or 'the device'}", p.stderr)

    def fetch(self, remote: str, local: Path) -> None:
        tmp = local.with_name(local.name + ".part")
        self._adb("pull", remote, str(tmp))
        tmp.replace(local)

    def _stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.stdin.close()  # shell v2 forwards the EOF: the agent stops, frees the lock
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def close(self) -> None:
        self._stop()
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
        tail = text.strip().splitlines()[-1:] or ["no output"]
        raise ValueError(f"benchmark_model printed no timings: {tail[0][:300]}")
    count, _first, _curr, lo, hi, avg, std = runs[-1]
    mean = float(avg) / 1e3
    return {"latency_ms": mean, "latency_stat": "mean", "latency_mean_ms": mean, "latency_min_ms": int(lo) / 1e3,
            "latency_max_ms": int(hi) / 1e3, "latency_std_ms": int(std) / 1e3, "latency_cv": int(std) / 1e3 / mean,
            "n_runs": int(count), "timed_s": int(count) * mean / 1e3, "init_ms": float(timings.group(1)) / 1e3,
            "first_inference_ms": float(timings.group(2)) / 1e3}


class BenchmarkModelSession:
    """Times each model with benchmark_model over `adb shell`; the profile's protocol becomes its
    warm-up and run limits. No agent runs, so there is no energy sampling: the row says why."""

    def __init__(self, transport: AdbTransport, config: dict):
        self._t, self._config = transport, config
        prop = {k: transport._shell("getprop", k).strip() for k in ("ro.product.model", "ro.board.platform",
                                                                       "ro.build.version.release", "ro.serialno")}
        self.facts = {"host": prop["ro.serialno"] or transport.t.serial, "runtime": "tflite",
                      "cpu_model": prop["ro.product.model"] + (f" ({prop['ro.board.platform']})" if prop["ro.board.platform"] else ""),
                      "os": f"Android {prop['ro.build.version.release']}".strip(), "runtime_version": "benchmark_model",
                      "agent_version": None, "energy_source": "none",
                      "energy_note": "benchmark_model mode: no agent on the phone samples power"}

    def measure(self, key: str, model: str) -> dict:
        p = {**{"warmup_runs": 5, "warmup_s": 0.1, "min_runs": 10, "min_time_s": 1.0, "max_time_s": 10.0},
             **self._config.get("protocol", {})}
        argv = [self._t._benchmark_model, f"--graph={model}", f"--num_threads={int(self._config.get('threads', 1))}",
                f"--warmup_runs={int(p['warmup_runs'])}", f"--warmup_min_secs={float(p['warmup_s'])}",
                f"--num_runs={int(p['min_runs'])}", f"--min_secs={float(p['min_time_s'])}",
                f"--max_secs={float(p['max_time_s'])}"]
        out = subprocess.run(self._t._argv("shell", shlex.join(argv)), capture_output=True, text=True)
        try:
            figures = parse_benchmark_model(out.stdout + out.stderr)
        except ValueError as e:
            return {"key": key, "status": "error", "error": str(e)}
        return {"key": key, "status": "ok", "provider": "benchmark_model", **figures, "energy_mj": None,
                "power_w_mean": None, "energy_source": "none", "energy_note": self.facts["energy_note"]}
