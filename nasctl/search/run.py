"""A whole `nasctl search`: set up, search with the chosen method, verify on a device, calibrate
once if the measurement misses, and write arch.json, search.csv and search.png.

The supernet trains at the data's resolution on the space's small-image macro and at its own
width; the predictors answer for the deployment configuration they were fitted on. The arch
string is the same in both (LA-DARTS's decoupling), so only the string crosses over.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import pandas as pd
import torch.distributed as dist

from nasctl.data import load_data
from nasctl.device import load_device
from nasctl.errors import NasctlError, UserError
from nasctl.predict import Predictor
from nasctl.search import METHODS
from nasctl.search.baselines import evolution_search, random_search
from nasctl.search.constraints import Constraint, build_constraints, derive, reachable
from nasctl.search.engine import SearchConfig, Searcher
from nasctl.search.ladarts import LADartsSearcher, check_space
from nasctl.search.singlepath import SinglePathSearcher
from nasctl.space.space import Arch, load_space
from nasctl.tables import OutputSet, to_json
from nasctl.train.loop import rank

# How far from its target a derived net may be predicted, as a fraction of --tolerance: the
# predictor's own error has to fit in what is left (see `_derive`).
DERIVE_SLACK = 0.1
# Where the calibration round's net misses too, the second is aimed this fraction of --tolerance
# past the target, on the side away from the miss (see `_calibration_round`).
SECOND_AIM = 0.5
VERIFY_BACKOFF_S = 5.0  # the first pause of a disturbed verify; each next one doubles
SEARCH_FILES = ("arch.json", "search.csv", "search.png", "verify.parquet")  # what -o receives


@dataclass(frozen=True)
class Job:
    space: str = "proxyless"
    data: str = "digits"
    train_limit: int | None = None
    predictors: tuple[str, ...] = ()
    target_ms: float | None = None
    target_mj: float | None = None
    max_params: str | None = None
    max_mflops: str | None = None
    width_mult: float = 0.5
    resolution: int | None = None
    verify: str | None = None
    host: str | None = None
    tolerance: float = 0.03
    verify_wait_s: float = 300.0  # how long, in all, a disturbed verify waits for a quiet device
    calibrate: bool = True
    calibrate_epochs: int | None = None
    calibrate_budget: bool = False  # DCA-NAS's lookup graph for --max-params / --max-mflops
    candidates: int = 5  # random
    population: int = 24  # evolution
    generations: int = 10


class Unverified(Exception):
    """The device stayed disturbed through every verify attempt: the result stands unmeasured."""


class Events:
    """What the CLI shows while a search runs; the library itself prints nothing."""

    def __init__(self, epoch: Callable[[dict], None] = lambda r: None, note: Callable[[str], None] = lambda t: None,
                 start: Callable[[], None] = lambda: None):
        self.epoch, self.note, self.start = epoch, note, start  # start: the inputs are good, the work begins


def search(job: Job, cfg: SearchConfig, out: Path, events: Events | None = None) -> dict:
    events = Events() if events is None else events
    t0 = time.perf_counter()
    if job.tolerance <= 0:
        raise UserError("--tolerance must be positive")
    if cfg.method in ("random", "evolution") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"--method {cfg.method} runs in one process; use torchrun for the gradient methods")
    predictors = [Predictor.load(p) for p in job.predictors]
    device = load_device(job.verify) if job.verify else None  # a bad name is said now, not after the search
    if job.host and (device is None or device.transport == "local"):
        raise UserError("--host names the SSH board or adb phone of --verify; "
                        + ("give --verify" if device is None else f"{device.name} is this machine"))
    data = load_data(job.data, job.resolution, job.train_limit)
    base = load_space(job.space)
    macro = "cifar" if data.resolution <= 64 and "cifar" in base.macros else None
    space = base.with_params(resolution=data.resolution, num_classes=data.num_classes, width_mult=job.width_mult, macro=macro)
    check_space(space, cfg)  # a wrong method for the space is the first thing to say, before any target range
    constraints = build_constraints(space, predictors, job.target_ms, job.target_mj, job.max_params, job.max_mflops)
    if job.verify and not any(c.name not in ("params", "mflops") for c in constraints):
        raise UserError("--verify measures latency or energy: give --target-ms or --target-mj with a --predictor")
    gradient = cfg.method in METHODS
    if job.calibrate_budget:
        _calibrate_budgets(job, cfg, space, constraints, events)
    kind = {"singlepath": SinglePathSearcher, "la-darts": LADartsSearcher}.get(cfg.method, Searcher)
    searcher = kind(space, data, constraints, SearchConfig(**{**asdict(cfg), "method": cfg.method if gradient else "lightnas"}))
    lead = rank() == 0
    events.start()
    trace: list[dict] = []
    if cfg.method == "random":
        arch, trace = random_search(searcher, job.candidates, events.epoch)
    elif cfg.method == "evolution":
        arch, trace = evolution_search(searcher, job.population, job.generations, events.epoch)
    else:
        searcher.run(cfg.epochs, on_epoch=events.epoch)
        arch = _derive(searcher, constraints, job, events)
    agree = _ranks_agree(searcher)
    rounds, status = [], {"state": "pending" if job.verify else "none"}

    def write() -> dict:  # before verifying too: a verify that fails must not lose the search
        return _write(out, job, cfg, searcher, arch, constraints, rounds, status, trace, data.name,
                      time.perf_counter() - t0, agree)

    if lead:
        write()
    try:
        if job.verify and lead:
            rounds.append(verify_round(arch, constraints, device, job, out, events))
            if searcher.world > 1 and not rounds[-1]["met"]:
                events.note("under torchrun the calibration round is skipped: rerun in one process to calibrate")
            elif gradient and job.calibrate and not rounds[-1]["met"]:
                for c in constraints:  # shift each measured model by its residual at this arch
                    m = rounds[-1]["measured"].get(c.name)
                    if m is not None:
                        c.offset += m - rounds[-1]["predicted"][c.name]
                extra = job.calibrate_epochs or max(3, cfg.epochs // 3)
                events.note(f"measured {gap_text(rounds[-1])}: calibrating the predictor by the residual, "
                            f"searching {extra} more epochs")
                searcher.run(extra, train_w=False, on_epoch=events.epoch)

                def measure(a: Arch) -> dict:
                    nonlocal arch
                    arch = a
                    write()
                    return verify_round(a, constraints, device, job, out, events)

                arch, picked = _calibration_round(searcher, constraints, arch, job, events, measure)
                rounds.append(picked)
            status = {"state": "verified" if job.verify else "none"}
    except Unverified as e:  # never a calibration from it: a disturbed figure is no residual
        status = {"state": "unverified", "reason": str(e)}
        events.note(f"verify: {e}; the result is kept, marked unverified")
    if searcher.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    if not lead:
        return {}
    return write()


def _calibrate_budgets(job: Job, cfg: SearchConfig, space, constraints: list[Constraint], events: Events) -> None:
    """Search each budget at the K' its lookup graph gives (see `budget`), never below what the
    space reaches."""
    from nasctl.search.budget import lookup_graph, search_budget

    budgets = [c for c in constraints if c.hard_max]
    if cfg.method != "la-darts" or not budgets:
        raise UserError("--calibrate-budget maps --max-params / --max-mflops budgets of --method la-darts")
    for c in budgets:
        lo, hi = reachable(space, c)
        graph = lookup_graph(job, cfg, c.name, lo, hi, max(2, cfg.epochs // 2), events.note)
        c.budget, c.target = c.target, max(lo, search_budget(graph, c.target))
        events.note(f"{c.name}: device budget {c.budget:.4g} M, searching at {c.target:.4g} M")


def _derive(searcher: Searcher, constraints: list[Constraint], job: Job, events: Events, anchor: Arch | None = None) -> Arch:
    """The argmax, fixed by `derive` where a learned λ's target is predicted off by more than
    DERIVE_SLACK of the tolerance, or where the derived net exceeds a budget: a budget is hard,
    and the softmax-weighted cost the search held under it is not the derived net's (measured: a
    0.2 M search derived 0.243 M). Otherwise fixed-λ methods keep their argmax: that is what they
    are.

    `anchor`: the net a verify round measured. The calibration round derives from it, not from
    the new argmax: the residual it measured is that net's own error more than the predictor's
    bias, so the offset holds for its near neighbours and not for a net of other layers (see
    DERIVE_SLACK and benchmarks/targets.py for the figures)."""
    s = searcher.state
    argmax, s.derived_from = s.arch(), None
    held = constraints if s.cfg.learned_lambda else [c for c in constraints if c.hard_max]
    if not held:
        return argmax
    start = anchor if anchor is not None and not all(c.hard_max for c in held) else argmax
    idx = derive(start.indices, s.probabilities(), s.space.flips(start.indices), held, job.tolerance * DERIVE_SLACK)
    if (idx != argmax.indices).any():
        fixed = s.space.from_indices(idx)
        figs = ", ".join(f"{c.name} {c.predict(start)[0]:.4g} -> {c.predict(fixed)[0]:.4g} "
                         f"({'budget' if c.hard_max else 'target'} {c.goal:g})" for c in held)
        what = "the measured arch, calibrated," if start is anchor else "the argmax"
        events.note(f"{what} is predicted off target or over budget: {int((idx != start.indices).sum())} layer(s) changed, {figs}")
        s.derived_from = argmax.string
        return fixed
    return argmax


def _calibration_round(searcher: Searcher, constraints: list[Constraint], anchor: Arch, job: Job, events: Events,
                       measure: Callable[[Arch], dict]) -> tuple[Arch, dict]:
    """Round 2: the net derived from the measured one onto the target (the predictor shifted by the
    measured residual), measured; where that one misses too, the net derived from the measured one
    at SECOND_AIM of the tolerance past the target, away from the miss, measured as well. The pick
    is the one that meets, else the nearer; the round's record lists both (`tried`).

    Why a second net: the first one's error is the measured net's own measurement error plus the
    error of the few layers changed, each about the size of the tolerance (issue 38: an 8.97 ms
    search measured its net 8.601, changed one layer predicted +0.357 ms, measured +0.649 ms,
    +3.1% from the target; the same two nets timed again afterwards differed by +0.476 ms). A
    third round would search again on one more residual; a second net beside the first, aimed
    at the other side, only needs the measurement."""
    first = _derive(searcher, constraints, job, events, anchor=anchor)
    tried = [(first, measure(first))]
    r = tried[0][1]
    if not r["met"]:
        worst = max(r["gap"].values(), key=abs)
        side = -1.0 if worst > 0 else 1.0
        aimed = [c if c.hard_max else replace(c, target=c.target * (1 + side * SECOND_AIM * job.tolerance)) for c in constraints]
        events.note(f"measured {gap_text(r)}: measuring a second net, aimed {side * SECOND_AIM * job.tolerance:+.1%} from the target")
        second = _derive(searcher, aimed, job, events, anchor=anchor)
        if second.string != first.string:
            tried.append((second, measure(second)))
    arch, best = min(tried, key=lambda t: (not t[1]["met"], max(abs(g) for g in t[1]["gap"].values())))
    brief = [{k: got[k] for k in ("arch", "predicted", "measured", "gap", "met")} for _, got in tried]
    return arch, {**best, "tried": brief}


def _ranks_agree(searcher: Searcher) -> float:
    """Largest difference between any rank's α and rank 0's: 0 when the ranks are one search."""
    if searcher.world == 1:
        return 0.0
    alpha = searcher.state.alpha.detach()
    ref = alpha.clone()
    dist.broadcast(ref, 0)
    diff = (ref - alpha).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def verify_round(arch: Arch, constraints: list[Constraint], dev, job: Job, out: Path, events: Events) -> dict:
    """Measure the arch at each predictor's deployment config on the device, interleaved with the
    reference net (`nasctl.profile.verify`): the figure is the arch's latency at the device's base
    speed (a drift-corrected predictor's base, else this machine's), the raw median beside it. A
    plain timing was fooled before: a LA-DARTS verify read 2.24 ms where re-measurements gave 1.59
    and 1.52."""
    measured, predicted, config, raw, timings = {}, {}, {}, {}, {}
    for c in constraints:
        if c.name in ("params", "mflops"):
            continue
        deploy = c.predictor.space()
        row = _measure(deploy.parse(arch.string), dev, out / "verify.parquet", job, events, c.predictor.meta.get("drift_correct"))
        col = c.name if c.name in row and pd.notna(row[c.name]) else {"ms": "latency_ms", "mJ": "energy_mj"}[c.unit]
        if col not in row or pd.isna(row[col]):
            raise NasctlError(f"verify on {dev.name}: the device measured no {col} ({row.get('energy_note') or 'no energy source'})")
        measured[c.name], predicted[c.name] = float(row[col]), c.predict(arch)[0]
        raw[c.name] = float(row["latency_raw_ms"]) if col == "latency_ms" else float(row[col])
        timings[c.name] = {"arch_ms": row["verify_timings_ms"], "reference_ms": row["verify_ref_timings_ms"],
                           "reference_base_ms": row["ref_base_ms"], "drift": row["drift"]}
        config[c.name] = {"measured": str(row["config_id"]), "predictor": c.predictor.meta.get("device", {}).get("config_id")}
        if config[c.name]["predictor"] and config[c.name]["predictor"] != config[c.name]["measured"]:
            events.note(f"verify: {dev.name} measured under config {row['config_id']}, the predictor was fitted on "
                        f"{config[c.name]['predictor']}: the gap includes the difference of devices")
    met = all(c.met(measured[c.name], job.tolerance) for c in constraints if c.name in measured)
    targets = {c.name: c.target for c in constraints if c.name in measured}
    return {"arch": arch.string, "device": dev.name, "measured": measured, "raw": raw, "predicted": predicted,
            "target": targets, "gap": {k: measured[k] / targets[k] - 1 for k in measured}, "met": met, "config_id": config,
            "timings": timings, "offsets": {c.name: c.offset for c in constraints}}


def _measure(a: Arch, dev, path: Path, job: Job, events: Events, drift: dict | None) -> dict:
    """One ok interleaved verify of `a`, stored at `path`. A failed one is measured once more,
    then the job fails. A disturbed one (a timing disturbed or throttled, the reference moved, the
    rounds disagree) is measured again after a pause that doubles (5, 10, 20 ... s) until
    `job.verify_wait_s` have passed; then `Unverified`."""
    from nasctl.profile import Store
    from nasctl.profile.verify import verify_interleaved

    store = Store(path)
    failed, waited, pause = 0, 0.0, VERIFY_BACKOFF_S
    while True:
        got = verify_interleaved(a, dev, store, job.host, base=drift, on_note=events.note)
        if got["status"] == "ok":
            return got
        if got["status"] == "error":
            failed += 1
            if failed > 1:
                raise NasctlError(f"verify on {dev.name}: error ({got.get('error')})")
            continue
        why = f"disturbed: {got['disturbed_reason']}"
        if waited >= job.verify_wait_s:
            raise Unverified(f"{dev.name} stayed {why} through {waited:.0f} s of waiting")
        pause = min(pause, job.verify_wait_s - waited)
        events.note(f"verify on {dev.name}: {why}; measuring again in {pause:.0f} s")
        time.sleep(pause)
        waited, pause = waited + pause, pause * 2


def gap_text(r: dict) -> str:
    return ", ".join(f"{k} {r['measured'][k]:.4g} against {r['target'][k]:.4g} ({r['gap'][k]:+.1%})" for k in r["measured"])


def _write(out: Path, job: Job, cfg: SearchConfig, searcher: Searcher, arch: Arch, constraints, rounds, status: dict,
           trace, data_name, wall_s: float, alpha_rank_max_diff: float) -> dict:
    """Write arch.json, search.csv and search.png (again after each verify round); `status` says
    whether the result was verified: none (no --verify), pending, verified or unverified (why)."""
    from nasctl.models.cost import arch_cost
    from nasctl.search.plot import search_png

    s = searcher.state
    deploy = constraints[0].predictor.space() if constraints else s.space
    probs = s.probabilities()
    targets = []
    for c in constraints:
        mean, std = c.predict(arch)
        budget = {"budget": c.goal, "derived_over_budget": mean / c.goal} if c.hard_max else {}
        targets.append({"metric": c.name, "unit": c.unit, "target": c.target, "kind": "max" if c.hard_max else "target", **budget,
                        "predicted": mean, "predicted_std": std, "offset": c.offset,
                        "lambda": searcher.multiplier(c), "met_predicted": c.met(mean, job.tolerance)})
    macs, params = arch_cost(deploy.parse(arch.string))
    doc = {
        "arch": arch.string, "arch_id": arch.id, "space": deploy.source, "params": deploy.params.__dict__,
        "method": cfg.method, "targets": targets, "macs": macs, "params_count": params,
        "alpha": [{op: float(p) for op, p in zip(s.space.ops, row) if s.space.allowed[i][s.space.ops.index(op)]}
                  for i, row in enumerate(probs)] if cfg.method in METHODS else None,
        "argmax": s.derived_from or arch.string, "verify": rounds, "verify_status": status["state"],
        "unverified_reason": status.get("reason"), "tolerance": job.tolerance,
        "search": {"data": data_name, "epochs": s.epoch, "steps": s.step, "wall_s": wall_s, "supernet_train_s": s.wall_s,
                   "world_size": searcher.world, "alpha_rank_max_diff": alpha_rank_max_diff,
                   "supernet": {"macro": s.space.params.macro, "resolution": s.space.params.resolution,
                                "width_mult": s.space.params.width_mult},
                   "config": asdict(cfg), "job": {k: v for k, v in asdict(job).items()}},
    }
    if trace:
        doc["candidates"] = trace
    rows = pd.DataFrame(s.rows if cfg.method in METHODS else trace)
    with OutputSet() as files:
        files.write(out / "arch.json", to_json(doc, indent=2).encode())
        files.write_table(rows, out / "search.csv")
        files.write(out / "search.png", search_png(rows, constraints, rounds, cfg.method, job.tolerance))
    return {"output": str(out), "arch": arch.string, "method": cfg.method, "targets": targets,
            "verify": rounds, "verify_status": status["state"], "unverified_reason": status.get("reason"),
            "wall_s": wall_s, "macs": macs, "params": params}
