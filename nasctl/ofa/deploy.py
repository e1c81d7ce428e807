"""`nasctl supernet search`: from one trained supernet, a ready net for every (device, target).

Per pair: the evolution (`evolve`), then the winner cut out of the supernet with its BN
recalibrated (`score.extract`) into <out>/<device>-<target><unit>/ (arch.json, model.pt), and,
with --verify, measured on the device as `nasctl search` measures (`search.run.verify_round`).
A verify that misses shifts that pair's predictor by the residual and evolves again, once: the
evolution costs seconds, so a calibration round costs one more measurement, not a search.

Everything given is checked before any work (the supernet, the predictors' spaces, every
target's reach, the device's name), so bad input writes nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nasctl.device import load_device
from nasctl.errors import UserError
from nasctl.models.cost import arch_cost
from nasctl.ofa.evolve import Evolution, Goal, check_accuracy, evolve, goals, pareto_png
from nasctl.ofa.score import extract
from nasctl.ofa.shrink import load_supernet
from nasctl.predict import Predictor
from nasctl.search.run import Events, Job, Unverified, gap_text, verify_round
from nasctl.space.sample import sample
from nasctl.tables import OutputSet, atomic_write, to_json

FILES = ("ofa.json", "ofa.csv")  # besides pareto-<device>.png and one folder per (device, target)
CLOUD = 2000  # uniformly drawn archs added to each Pareto plot, so it spans the device's whole range


@dataclass(frozen=True)
class Deploy:
    accuracy: str
    predictors: tuple[str, ...]
    targets: dict[str, dict[str, tuple[float, ...]]] = field(default_factory=dict)  # unit -> device ("" = all) -> targets
    max_params: str | None = None
    max_mflops: str | None = None
    verify: dict[str, str] = field(default_factory=dict)  # device name ("" = every device) -> device profile to measure on
    host: str | None = None
    tolerance: float = 0.03
    verify_wait_s: float = 300.0
    calibrate: bool = True
    evolution: Evolution = field(default_factory=Evolution)


def device_names(paths: tuple[str, ...]) -> dict[str, Predictor]:
    """Each predictor under its file's stem (cpu1.pt -> cpu1): the name of its output folders."""
    out: dict[str, Predictor] = {}
    for p in paths:
        name = Path(p).stem
        if name in out:
            raise UserError(f"--predictor: two predictors are named {name!r}; the output folders are named by the file stem")
        out[name] = Predictor.load(p)
    return out


def deploy(supernet: Path, d: Deploy, out: Path, events: Events | None = None) -> dict:
    events = events or Events()
    t_all = time.perf_counter()
    trained = load_supernet(supernet)
    space = trained.elastic.space
    acc = Predictor.load(d.accuracy)
    check_accuracy(acc, space)
    predictors = device_names(d.predictors)
    todo = goals(space, predictors, d.targets, d.max_params, d.max_mflops)
    devs = _devices(d, predictors)
    job = Job(host=d.host, tolerance=d.tolerance, verify_wait_s=d.verify_wait_s)
    band = d.tolerance / 3
    found = [evolve(space, g, acc, d.evolution, band) for g in todo]  # seconds; a pair no arch meets is said before any write
    events.start()
    splits = trained.splits()
    results, histories = [], {}
    for g, f in zip(todo, found):
        r = _one(trained, space, g, f, acc, d, band, out, splits, devs.get(g.device), job, events)
        histories.setdefault(g.device, []).append(r.pop("history"))
        results.append(r)
    table = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, (list, dict))} for r in results])
    with OutputSet() as files:
        for name, p in predictors.items():
            chosen = [r for r in results if r["device"] == name]
            cloud = np.concatenate([*histories[name], sample(space, min(CLOUD, int(space.describe()["size"])), d.evolution.seed)])
            xy = (p.predict_indices(cloud)[0], acc.predict_indices(cloud)[0])
            files.write(out / f"pareto-{name}.png", pareto_png(name, chosen[0]["unit"], xy, [
                {"target": r["target"], "predicted": r["predicted"] - r["offset"], "top1": r["predicted_top1"], "measured": r.get("measured")} for r in chosen]))
        files.write_table(table, out / "ofa.csv")
        doc = {"supernet": str(supernet), "space": space.source, "params": space.params.__dict__, "accuracy": d.accuracy,
               "predictors": {k: str(v) for k, v in zip(predictors, d.predictors)}, "band": band,
               "config": {k: v for k, v in asdict(d).items() if k not in ("accuracy", "predictors")},
               "results": results, "wall_s": time.perf_counter() - t_all}
        files.write(out / "ofa.json", to_json(doc, indent=2).encode())
    return doc


def _devices(d: Deploy, predictors: dict[str, Predictor]) -> dict:
    """The device profile each predictor's nets are verified on (none: not verified)."""
    unknown = [n for n in d.verify if n and n not in predictors]
    if unknown:
        raise UserError(f"--verify {unknown[0]}=...: no --predictor is named {unknown[0]} (given: {', '.join(predictors)})")
    devs = {n: load_device(d.verify.get(n, d.verify.get(""))) for n in predictors if d.verify.get(n, d.verify.get(""))}
    if d.host and not any(dev.transport != "local" for dev in devs.values()):
        raise UserError("--host names the SSH board or adb phone of --verify; " + ("give --verify" if not devs else "every --verify device is this machine"))
    return devs


def _one(trained, space, g: Goal, found: dict, acc: Predictor, d: Deploy, band: float, out: Path, splits, dev, job: Job,
         events: Events) -> dict:
    """Extract and (with a device) verify one pair's evolved arch; on a miss, one calibration
    round: evolve again with the predictor shifted by the residual."""
    folder = out / g.name
    rounds: list[dict] = []
    history = []
    status = "none"
    while True:
        history.append(found["history"])
        arch = space.from_indices(found["indices"])
        t0 = time.perf_counter()
        c = g.target
        pred = c.predict(arch)[0]
        macs, params = arch_cost(c.predictor.space().parse(arch.string))
        row = {"pair": g.name, "device": g.device, "metric": c.name, "unit": c.unit, "target": c.target, "arch": arch.string,
               "arch_id": arch.id, "predicted": pred, "offset": c.offset, "predicted_top1": found["top1"],
               "evaluated": found["evaluated"], "search_s": found["wall_s"], "macs_deploy": macs, "params_deploy": params,
               "budgets": {b.name: {"budget": b.target, "count": b.predict(arch)[0]} for b in g.constraints[1:]}}
        got = extract(trained, arch.string, folder, splits, extra={"ofa": {**row, "verify": rounds}})
        row.update(top1_heldout=got["top1_heldout"], extract_s=time.perf_counter() - t0, output=str(folder))
        events.epoch(row)
        if dev is None:
            break
        try:
            rounds.append(verify_round(arch, [c], dev, job, folder, events))
        except Unverified as e:
            status = f"unverified: {e}"
            events.note(f"{g.name}: {e}; the result is kept, marked unverified")
            break
        status = "verified"
        v = rounds[-1]
        row.update(measured=v["measured"][c.name], gap=v["gap"][c.name], met=v["met"])
        if v["met"] or not d.calibrate or len(rounds) > 1:
            break
        c.offset += v["measured"][c.name] - v["predicted"][c.name]
        events.note(f"{g.name}: measured {gap_text(v)}: calibrating the predictor by the residual, evolving again")
        found = evolve(space, g, acc, d.evolution, band)
    row.update(verify_status=status, verify=rounds, history=np.concatenate(history))
    if rounds:  # arch.json says what was measured
        doc = json.loads((folder / "arch.json").read_text())
        doc["ofa"] = {k: v for k, v in row.items() if k != "history"}
        atomic_write(folder / "arch.json", to_json(doc, indent=2).encode())
    return row
