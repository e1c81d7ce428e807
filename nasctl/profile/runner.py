"""The profiling loop: export archs to the shipped format, have the agent time them, store rows.

Exporting the next arch overlaps with timing the current one (a background thread with one
torch thread), so wall time is mostly time inside timed runs. Rows are stored one by one as
they arrive; an arch that fails to export or run becomes an error row and the loop goes on.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import queue
import tempfile
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from nasctl import __version__
from nasctl.device.profiles import DeviceProfile, aliases_of, list_profiles, load_device
from nasctl.device.transports import AgentDied, LinkLost, Session, Transport, open_transport
from nasctl.errors import DeviceUnreachable, NasctlError, UserError
from nasctl.profile.drift import RECENT, Reference, RefLog, reference_arch
from nasctl.profile.store import Store

if TYPE_CHECKING:
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
    reconnects: int = 0
    throttled: int = 0  # timed while the device throttled: kept, never fitted, measured again by retry_errors
    references: int = 0  # timings of the reference net (nasctl.profile.drift)
    reference_s: float = 0.0  # wall time they took: the cost of drift correction

    @property
    def overhead(self) -> float | None:
        """Share of wall time not spent inside timed runs."""
        return 1 - self.timed_s / self.wall_s if self.wall_s > 0 and self.measured else None

    def to_dict(self) -> dict:
        return {**asdict(self), "overhead": self.overhead}


def export_for_device(arch: Arch, device: DeviceProfile, workdir: Path) -> tuple[Arch, Path | None, str | None]:
    """(arch, model file, None), or (arch, None, why) when the net cannot be exported; (arch,
    None, None) for a device that times no file (`DeviceProfile.wants_model`)."""
    if not device.wants_model:
        return arch, None, None
    from nasctl.export.onnx import export_onnx
    from nasctl.export.tflite import export_tflite
    from nasctl.models import build

    path = workdir / f"{arch.id}.{'tflite' if device.runtime == 'tflite' else 'onnx'}"
    try:
        shape = device.input_shape(arch.space.params.resolution)
        if device.runtime == "tflite":
            export_tflite(build(arch).eval(), shape, path)
        else:
            export_onnx(build(arch), shape, path, device.opset)
        return arch, path, None
    except Exception as e:  # a net that cannot export is an error row, not a crash
        return arch, None, f"export: {type(e).__name__}: {e}".splitlines()[0][:500]


def _quiet(device: DeviceProfile) -> AbstractContextManager:
    """What the exporter and the timings share: a lock where the local agent's threads take every
    core the exporter could use, so that no export runs beside a timing (at 2 threads on 2 cores
    the reference read 7.8-8.0 ms before the exporter started and 9.1-9.8 ms beside it); else
    nothing, and exports overlap timings."""
    if device.transport != "local":
        return nullcontext()
    cores = os.sched_getaffinity(0)
    pinned = {int(c) for c in device.runtime_options.get("cpus", ())}
    free = cores - pinned if pinned else (cores if int(device.runtime_options.get("threads", 1)) < len(cores) else set())
    return nullcontext() if free else threading.Lock()


def _exporter(todo: list[Arch], device: DeviceProfile, workdir: Path, out: queue.Queue, stop: threading.Event,
              ends: int, quiet: AbstractContextManager):
    """Export archs in order into `out`, then one None per device worker to say "no more"."""
    import torch  # here, not at the top: `nasctl devices` and the transports need no torch

    torch.set_num_threads(1)  # leave the other cores to the agent's timed runs
    pinned = {int(c) for c in device.runtime_options.get("cpus", ())}
    if device.transport == "local" and pinned and os.sched_getaffinity(0) - pinned:
        os.sched_setaffinity(0, os.sched_getaffinity(0) - pinned)  # this thread only: off the agent's cores
    for arch in [*todo, *[None] * ends]:
        with quiet:
            item = None if arch is None else export_for_device(arch, device, workdir)
        while not stop.is_set():
            try:
                out.put(item, timeout=0.2)
                break
            except queue.Full:
                continue
        if stop.is_set():
            return


def base_row(arch: Arch, device: DeviceProfile, config_id: str, facts: dict) -> dict:
    from nasctl.models import arch_cost

    space = arch.space
    macs, params = arch_cost(arch)
    opts = device.runtime_options
    return {
        "arch_id": arch.id,
        "config_id": config_id,
        "arch": arch.string,
        "space": space.source,  # a built-in name or a space file: what reading the rows needs
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
        "machine": facts.get("machine"),
        "device_python": facts.get("python"),
        "emulated": facts.get("emulated"),  # why the timings describe an emulator, or None
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


def check_device(device: DeviceProfile, host: str | None = None, trust_new_host_key: bool = False,
                 on_note: Callable[[str], None] = lambda text: None) -> dict:
    """Connect, start the agent as a run would (power mode, energy source, runtime), return its
    facts; nothing is measured. A profile the device cannot honour fails here as in a run."""
    with open_transport(device, host, trust_new_host_key) as transport:
        try:
            return transport.start_agent(device.agent_config(device.resolution or 224), on_note).facts  # no model runs
        except AgentDied as e:
            raise DeviceUnreachable(str(e)) from None


def survey_devices(check: bool = False, timeout: float = 20.0) -> list[dict]:
    """Every device profile found (`list_profiles`), loaded; with `check`, each is reached and
    its agent started, all side by side, so one dead board costs `timeout` once, not per board."""
    found, devs = [], {}
    for name, path in list_profiles().items():
        try:
            dev = load_device(str(path))
            found.append({"name": name, "aliases": aliases_of(name), "transport": dev.transport,
                          "runtime": dev.runtime, "description": dev.description, "file": str(path)})
            devs[name] = dev
        except UserError as e:
            found.append({"name": name, "file": str(path), "error": str(e)})
    if not check:
        return found

    def probe(d):
        try:
            facts = check_device(devs[d["name"]])
            d.update(reachable=True, **{k: facts.get(k) for k in ("host", "cpu_model", "machine", "python", "runtime_version", "emulated")})
        except NasctlError as e:
            d.update(reachable=False, error=str(e))

    threads = [(d, threading.Thread(target=probe, args=(d,), daemon=True)) for d in found if d["name"] in devs]
    for _, t in threads:
        t.start()
    for d, t in threads:
        t.join(max(0.0, timeout))  # the threads run side by side: the joins overlap
        if t.is_alive():
            d.update(reachable=False, error=f"no answer within {timeout:g} s")
    return found


class Halted(Exception):
    """The run is stopping (Ctrl-C): the measurement in flight is dropped, never stored, and a
    rerun measures that arch (an interrupted measurement is not a failed one)."""


@dataclass
class _Device:
    """One board of the run: its transport, its running agent, its reference timings."""

    transport: Transport
    agent: Session
    config: dict
    reference: Reference | None = None
    quiet: AbstractContextManager = field(default_factory=nullcontext)  # held while timing (`_quiet`)
    halted: bool = False

    def halt(self) -> None:
        """Stop this board's agent now, mid-measurement if need be (called from another thread)."""
        self.halted = True
        self.agent.halt()

    def measure(self, key: str, model: str, arch: str = "") -> dict:
        """One row from the agent; a model that kills the agent is an error row, and the agent is
        started again (a lost link is not: it goes up to the caller). Once halted, nothing."""
        if self.halted:
            raise Halted
        try:
            with self.quiet:
                row = self.agent.measure(key, model, arch)
        except AgentDied as e:
            if self.halted:
                raise Halted from None
            if isinstance(e, LinkLost):
                raise
            self.agent = self.transport.start_agent(self.config)
            return {"status": "error", "error": f"agent died: {e}"}
        if self.halted:  # answered as it was stopped: the user asked to stop, not for this row
            raise Halted
        return row

    def time_reference(self, why: str) -> float:
        """Time the reference net now and log it (`nasctl.profile.drift`); returns the seconds spent."""
        ref, t0 = self.reference, time.perf_counter()
        ref.record(self.measure(f"ref-{ref.arch.id}", ref.model, ref.arch.string), self.agent.facts.get("host"), why, time.perf_counter())
        return time.perf_counter() - t0


def _take_batch(ready: queue.Queue, size: int, stop: threading.Event) -> list | None:
    """Wait for one exported model, then take whatever else is ready, up to `size`."""
    while not stop.is_set():
        try:
            first = ready.get(timeout=0.2)
            break
        except queue.Empty:
            continue
    else:
        return None
    if first is None:
        return None
    batch = [first]
    while len(batch) < size:
        try:
            item = ready.get_nowait()
        except queue.Empty:
            break
        if item is None:
            ready.put(item)  # the end marker is another worker's too
            break
        batch.append(item)
    return batch


def profile_archs(
    archs: list[Arch],
    space: SearchSpace,
    device: DeviceProfile,
    store: Store,
    *,
    hosts: list[str | None] = (None,),
    trust_new_host_key: bool = False,
    retry_errors: bool = False,
    on_start: Callable[[int, int], None] = lambda todo, skipped: None,
    on_row: Callable[[dict], None] = lambda row: None,
    on_note: Callable[[str], None] = lambda text: None,
) -> Summary:
    """Measure every arch not yet in `store` for this device config; returns a summary.

    With several hosts (boards of one kind), each takes the next exported model as soon as it is
    free, so faster boards measure more; each board's agent holds that board's lock.
    """
    t0 = time.perf_counter()
    if device.runtime == "tflite" and importlib.util.find_spec("litert_torch") is None:
        from nasctl.export.tflite import EXTRA

        raise UserError(f"device {device.name!r} times .tflite models: {EXTRA}")
    config = device.agent_config(space.params.resolution)
    reference = reference_arch(space, device)  # a bad one is bad input: refused before any device is reached or waited for
    devices: list[_Device] = []
    try:
        for host in hosts:
            transport = open_transport(device, host, trust_new_host_key)
            try:
                agent = transport.start_agent(config, on_note)
            except AgentDied as e:
                transport.close()
                raise DeviceUnreachable(str(e)) from None
            devices.append(_Device(transport, agent, config))
        ids = {device.config_id(space.definition_hash, space.params.resolution, d.agent.facts) for d in devices}
        if len(ids) > 1:
            raise UserError("these hosts are not the same kind of device (CPU or runtime version differ): "
                            + ", ".join(f"{d.agent.facts.get('host')}: {d.agent.facts.get('cpu_model')}, "
                                        f"{d.agent.facts.get('runtime_version')}" for d in devices))
        config_id = ids.pop()
        done = store.done(config_id, include_errors=not retry_errors)
        todo = [a for a in archs if a.id not in done]
        ref_arch = reference if todo else None
        on_start(len(todo), len(archs) - len(todo))
        summary = Summary(str(store.path), device.name, config_id, len(archs), len(archs) - len(todo), 0, 0, 0, 0.0, 0.0)
        stop, lock, failures = threading.Event(), threading.Lock(), []
        ready: queue.Queue = queue.Queue(maxsize=sum(d.transport.batch_size for d in devices))

        def work(d: _Device) -> None:
            try:
                while (batch := _take_batch(ready, d.transport.batch_size, stop)) is not None:
                    _measure_batch(d, batch, device, config_id, store, summary, lock, on_row)
                if d.reference is not None:
                    d.transport.unstage(d.reference.model)
            except BaseException as e:  # the first failure stops the run; stored rows stay
                failures.append(e)
                stop.set()

        with tempfile.TemporaryDirectory(prefix="nasctl-export-") as tmp:
            if ref_arch is not None:  # timed once on each board before the exporter starts, which would load the device
                _, ref_file, why = export_for_device(ref_arch, device, Path(tmp))
                if why:
                    raise NasctlError(f"the reference net {ref_arch.string} does not export: {why}")
                for d in devices:
                    d.reference = Reference(ref_arch, d.transport.stage([ref_file])[0] if ref_file else "", RefLog(store.path), config_id, device)
                    for _ in range(2 * RECENT):  # RECENT ok ones, so the rows' drift is known from the first
                        summary.reference_s += d.time_reference("start")
                        summary.references += 1
                        if len(d.reference.recent) == RECENT:
                            break
            quiet = _quiet(device)
            for d in devices:
                d.quiet = quiet
            threads = [threading.Thread(target=_exporter, args=(todo, device, Path(tmp), ready, stop, len(devices), quiet),
                                        daemon=True)]
            threads += [threading.Thread(target=work, args=(d,), daemon=True) for d in devices]
            for t in threads:
                t.start()
            try:
                for t in threads[1:]:
                    while t.is_alive():
                        t.join(0.2)
            except BaseException:  # Ctrl-C: each agent stops now, and what it was timing is not stored
                for d in devices:
                    d.halt()
                raise
            finally:
                stop.set()
                for t in threads:
                    t.join()
        if failures:
            raise failures[0]
    finally:
        for d in devices:
            d.transport.close()
    summary.reconnects = sum(d.transport.reconnects for d in devices)
    summary.wall_s = time.perf_counter() - t0
    return summary


def _measure_batch(d: _Device, batch: list, device: DeviceProfile, config_id: str, store: Store,
                   summary: Summary, lock: threading.Lock, on_row: Callable[[dict], None]) -> None:
    """Upload the batch's models in one go, then time them one by one and store each row."""
    exported = [path for _, path, err in batch if path is not None]
    staged = {None: "", **dict(zip(exported, d.transport.stage(exported)))}
    for arch, path, err in batch:
        if d.reference is not None and err is None and d.reference.due(time.perf_counter()):
            spent = d.time_reference("again" if d.reference.latest is None else "every")
            with lock:
                summary.references += 1
                summary.reference_s += spent
        row = base_row(arch, device, config_id, d.agent.facts)
        if d.reference is not None:
            row.update(d.reference.columns())
        if err is None:
            res = d.measure(arch.id, staged[path], arch.string)
            if path is not None:
                d.transport.unstage(staged[path])
                path.unlink(missing_ok=True)
            res.pop("key", None)
            row.update(res)
        else:
            row.update(status="error", error=err)
        with lock:
            store.put(row)
            if row["status"] == "error":
                summary.errors += 1
            else:
                summary.measured += 1
                summary.timed_s += row["timed_s"]
                summary.disturbed += row["status"] == "disturbed"
                summary.throttled += row["status"] == "throttled"
            on_row(row)
