"""The profiling loop: export archs to the shipped format, have the agent time them, store rows.

Exporting the next arch overlaps with timing the current one (a background thread with one
torch thread), so wall time is mostly time inside timed runs. Rows are stored one by one as
they arrive; an arch that fails to export or run becomes an error row and the loop goes on.
"""

from __future__ import annotations

import platform
import queue
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from nasctl import __version__
from nasctl.errors import DeviceUnreachable
from nasctl.export.onnx import export_onnx
from nasctl.models import arch_cost, build
from nasctl.profile.devices import DeviceProfile
from nasctl.profile.store import Store
from nasctl.profile.transports import AgentDied, open_transport
from nasctl.space.space import Arch, SearchSpace


@dataclass
class Summary:
    output: str
    device: str
    config_id: str
    total: int
    skipped: int
    measured: int
    errors: int
    disturbed: int
    wall_s: float
    timed_s: float

    @property
    def overhead(self) -> float | None:
        """Share of wall time not spent inside timed runs."""
        return 1 - self.timed_s / self.wall_s if self.wall_s > 0 and self.measured else None

    def to_dict(self) -> dict:
        return {**asdict(self), "overhead": self.overhead}


def _exporter(todo: list[Arch], device: DeviceProfile, workdir: Path, out: queue.Queue, stop: threading.Event):
    torch.set_num_threads(1)  # leave the other cores to the agent's timed runs
    for arch in todo:
        if stop.is_set():
            return
        path = workdir / f"{arch.id}.onnx"
        try:
            export_onnx(build(arch), device.input_shape(arch.space.params.resolution), path, device.opset)
            item = (arch, path, None)
        except Exception as e:  # a net that cannot export is an error row, not a crash
            item = (arch, None, f"export: {type(e).__name__}: {e}".splitlines()[0][:500])
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                break
            except queue.Full:
                continue


def _base_row(arch: Arch, device: DeviceProfile, config_id: str, facts: dict) -> dict:
    space = arch.space
    macs, params = arch_cost(arch)
    opts = device.runtime_options
    return {
        "arch_id": arch.id,
        "config_id": config_id,
        "arch": arch.string,
        "space": space.name,
        "space_hash": space.definition_hash[:16],
        "macro": space.params.macro,
        "resolution": space.params.resolution,
        "width_mult": space.params.width_mult,
        "num_classes": space.params.num_classes,
        "macs": macs,
        "params": params,
        "device": device.name,
        "transport": device.transport,
        "host": facts.get("host"),
        "cpu_model": facts.get("cpu_model"),
        "runtime": device.runtime,
        "runtime_version": facts.get("runtime_version"),
        "threads": opts.get("threads"),
        "batch": device.batch,
        "input_shape": "x".join(map(str, device.input_shape(space.params.resolution))),
        "precision": device.precision,
        "agent_version": facts.get("agent_version"),
        "nasctl_version": __version__,
        "host_python": platform.python_version(),
    }


def profile_archs(
    archs: list[Arch],
    space: SearchSpace,
    device: DeviceProfile,
    store: Store,
    *,
    retry_errors: bool = False,
    on_start: Callable[[int, int], None] = lambda todo, skipped: None,
    on_row: Callable[[dict], None] = lambda row: None,
) -> Summary:
    """Measure every arch not yet in `store` for this device config; returns a summary."""
    t0 = time.perf_counter()
    transport = open_transport(device)
    config = device.agent_config(space.params.resolution)
    try:
        agent = transport.start_agent(config)
    except AgentDied as e:
        raise DeviceUnreachable(str(e)) from None
    try:
        config_id = device.config_id(space.definition_hash, space.params.resolution, agent.facts)
        done = store.done(config_id, include_errors=not retry_errors)
        todo = [a for a in archs if a.id not in done]
        on_start(len(todo), len(archs) - len(todo))
        summary = Summary(str(store.path), device.name, config_id, len(archs), len(archs) - len(todo), 0, 0, 0, 0.0, 0.0)
        stop = threading.Event()
        ready: queue.Queue = queue.Queue(maxsize=1)
        with tempfile.TemporaryDirectory(prefix="nasctl-export-") as tmp:
            worker = threading.Thread(target=_exporter, args=(todo, device, Path(tmp), ready, stop), daemon=True)
            worker.start()
            try:
                for _ in todo:
                    arch, path, err = ready.get()
                    row = _base_row(arch, device, config_id, agent.facts)
                    if err is None:
                        staged = transport.stage(path)
                        try:
                            res = agent.measure(arch.id, staged)
                        except AgentDied as e:  # the arch killed the agent: record it, restart
                            res = {"status": "error", "error": f"agent died: {e}"}
                            agent = transport.start_agent(config)
                        transport.unstage(staged)
                        res.pop("key", None)
                        row.update(res)
                    else:
                        row.update(status="error", error=err)
                    store.put(row)
                    if row["status"] == "error":
                        summary.errors += 1
                    else:
                        summary.measured += 1
                        summary.timed_s += row["timed_s"]
                        summary.disturbed += row["status"] == "disturbed"
                    on_row(row)
            finally:
                stop.set()
                worker.join()
    finally:
        transport.close()
    summary.wall_s = time.perf_counter() - t0
    return summary
