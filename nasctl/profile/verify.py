"""An interleaved verify: the candidate and the reference net timed alternately, so a device that
slows down while it is measured is seen, and read back to its base speed, instead of passing a
disturbance off as the candidate's latency (seen: +29% on a net that re-measured within 10%).

After one uncounted timing of each, the order is R C R C ... C R: every candidate timing sits between two reference timings, whose mean is
the device's speed at that moment. Each round's candidate figure is scaled by base / that speed
(`nasctl.profile.drift`); the result is the median over rounds, the raw median beside it. The
result is `disturbed` (to be measured again later, and never used to calibrate) when a timing
was disturbed or throttled, when the reference moved by more than `MAX_REF_SHIFT` within the
verify, when the rounds' corrected figures spread by more than `MAX_SPREAD`, or when the device
ran more than `MAX_DRIFT` off its base speed.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from nasctl.device.transports import AgentDied, open_transport
from nasctl.errors import DeviceUnreachable, NasctlError
from nasctl.profile.drift import RECENT, base_speed, reference_arch
from nasctl.profile.runner import base_row, export_for_device

if TYPE_CHECKING:
    from nasctl.device.profiles import DeviceProfile
    from nasctl.profile.store import Store
    from nasctl.space.space import Arch

ROUNDS = 3
# The reference moved more than this within one verify, or the rounds' corrected figures disagree
# by more: the device was not steady. On a quiet 2-core VM they reach 5.5-8.7% (benchmarks/drift.py
# verify, 2026-12-03); at 5% most quiet verifies there waited for nothing.
MAX_REF_SHIFT = 0.10
MAX_SPREAD = 0.10
# The device ran this much off its base speed: the correction is then an extrapolation, and a
# measured one was off (a 6 ms net read 13-16% high at drift 2.0 under a co-runner on its core,
# which slows short nets more than the 12 ms reference). Kept and reported, never calibrated on.
# Below it lies the drift this VM shows from hour to hour (3-16%), which the correction is for.
MAX_DRIFT = 0.20


def verify_interleaved(arch: Arch, device: DeviceProfile, store: Store, host: str | None = None,
                       rounds: int = ROUNDS, base: dict | None = None, on_note=lambda text: None) -> dict:
    """Time `arch` against the reference `rounds` times; store and return its row.

    `base`: a drift-corrected predictor's reference and base speed ({"ref_arch_id", "base_ms"}),
    which its rows were read at; where it names another reference, or is None, this machine's
    base for the config, set by this verify if the config has none yet."""
    ref = reference_arch(arch.space, device)
    if ref is None and device.transport == "command":
        return verify_command(arch, device, store, host, on_note)
    base_ms = base["base_ms"] if base and base.get("ref_arch_id") == (ref and ref.id) else None
    if ref is None:
        raise NasctlError(f"device {device.name}: an interleaved verify needs the reference net ([protocol] reference is off)")
    config = device.agent_config(arch.space.params.resolution)
    with tempfile.TemporaryDirectory(prefix="nasctl-verify-") as tmp, open_transport(device, host) as transport:
        models = {}
        for a in (arch, ref):
            _, path, why = export_for_device(a, device, Path(tmp))
            if why:
                raise NasctlError(f"verify: {a.string} does not export: {why}")
            models[a.id] = transport.stage([path])[0]
        try:
            agent = transport.start_agent(config, on_note)
        except AgentDied as e:
            raise DeviceUnreachable(str(e)) from None
        config_id = device.config_id(arch.space.definition_hash, arch.space.params.resolution, agent.facts)
        for a in (arch, ref):  # once each, not counted: a net's first timing in an agent ran 30% slow here
            agent.measure(f"warm-{a.id}", models[a.id])
        timings = [agent.measure(f"ref-{i}", models[ref.id]) if i % 2 == 0 else agent.measure(f"cand-{i}", models[arch.id])
                   for i in range(2 * rounds + 1)]
        facts = agent.facts
    refs, cands = timings[0::2], timings[1::2]
    bad = [t for t in timings if t.get("status") != "ok"]
    row = {**base_row(arch, device, config_id, facts), **cands[-1], "ref_arch_id": ref.id, "verify_rounds": rounds}
    row.pop("key", None)
    if any(t.get("status") == "error" for t in timings):
        row.update(status="error", error=next(t.get("error") for t in timings if t.get("status") == "error"))
        store.put(row)
        return row
    ref_ms = [float(t["latency_ms"]) for t in refs]
    if base_ms is None:
        first = None if bad else {"latency_ms": statistics.median(ref_ms[:RECENT]), "host": facts.get("host"),
                                  "at": refs[0].get("finished_at")}  # the opening median, as a profile sets it
        found = base_speed(config_id, ref.id, first)
        base_ms = found["latency_ms"] if found else None
    speed = [(a + b) / 2 for a, b in zip(ref_ms, ref_ms[1:])]
    raw = [float(t["latency_ms"]) for t in cands]
    corrected = [c * base_ms / s for c, s in zip(raw, speed)] if base_ms else raw
    shift, spread = max(ref_ms) / min(ref_ms) - 1, (max(corrected) - min(corrected)) / statistics.median(corrected)
    drift = statistics.median(speed) / base_ms if base_ms else None
    max_drift = float(device.protocol.get("verify_max_drift", MAX_DRIFT))  # 0: off
    why = ([f"{len(bad)} of {len(timings)} timings {', '.join(sorted({t['status'] for t in bad}))}"] if bad else []) \
        + ([f"the reference moved {shift:.1%} within the verify"] if shift > MAX_REF_SHIFT else []) \
        + ([f"the rounds disagree by {spread:.1%}"] if spread > MAX_SPREAD else []) \
        + ([f"the device ran at {1 / drift:.0%} of its base speed"] if drift and 0 < max_drift < abs(drift - 1) else [])
    row.update(status="disturbed" if why else "ok", disturbed_reason="; ".join(why) or None,
               latency_ms=statistics.median(corrected), latency_raw_ms=statistics.median(raw),
               ref_latency_ms=statistics.median(ref_ms), drift=drift,
               ref_base_ms=base_ms, ref_shift=shift, rounds_spread=spread,
               verify_timings_ms=raw, verify_ref_timings_ms=ref_ms)
    store.put(row)
    return row


def verify_command(arch: Arch, device: DeviceProfile, store: Store, host: str | None = None, on_note=lambda text: None) -> dict:
    """A command device's verify: its command run once. The harness is the user's (or a table),
    so nasctl has no reference net to interleave; what it prints is the figure."""
    config = device.agent_config(arch.space.params.resolution)
    with tempfile.TemporaryDirectory(prefix="nasctl-verify-") as tmp, open_transport(device, host) as transport:
        _, path, why = export_for_device(arch, device, Path(tmp))
        if why:
            raise NasctlError(f"verify: {arch.string} does not export: {why}")
        session = transport.start_agent(config, on_note)
        got = session.measure(f"cand-{arch.id}", transport.stage([path])[0] if path else "", arch.string)
        config_id = device.config_id(arch.space.definition_hash, arch.space.params.resolution, session.facts)
        row = {**base_row(arch, device, config_id, session.facts), **got, "verify_rounds": 1}
    ms = row.get("latency_ms")
    row.update(latency_raw_ms=ms, drift=None, ref_base_ms=None, ref_arch_id=None, disturbed_reason=None,
               verify_timings_ms=[ms] if ms is not None else [], verify_ref_timings_ms=[])
    store.put(row)
    return row
